"""
Tests for L{zmqrelay.node}: the notification relay's subscription bounds and
the forwarder's deadline cap.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import FakeSocketFactory
from zmqrelay import node, protocol
from zmqrelay.config import NodeConfig
from zmqrelay.node import Forwarder, NotificationRelay


class SubscriptionBoundTests(SynchronousTestCase):
    """
    What subscribers can make a relay forward upstream is bounded.
    """

    def setUp(self):
        self.factory = FakeSocketFactory()
        self.relay = NotificationRelay(self.factory, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        self.relay.start()
        [self.xpub] = self.factory.ofKind("xpub")
        [self.xsub] = self.factory.ofKind("xsub")

    def test_subscribeAndUnsubscribeForwarded(self):
        """
        A subscription and its end travel upstream unchanged.
        """
        self.xpub.receive([b"\x01news"])
        self.xpub.receive([b"\x00news"])
        self.assertEqual(self.xsub.sent, [[b"\x01news"], [b"\x00news"]])

    def test_tooManyPrefixesRefused(self):
        """
        Beyond MAX_SUBSCRIPTIONS distinct prefixes, new ones stay at this relay
        (counted), and their ends are not forwarded either.
        """
        self.patch(node, "MAX_SUBSCRIPTIONS", 2)
        for topic in (b"a", b"b", b"c"):
            self.xpub.receive([b"\x01" + topic])
        self.xpub.receive([b"\x00c"])
        self.assertEqual(self.xsub.sent, [[b"\x01a"], [b"\x01b"]])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 2)
        self.xpub.receive([b"\x00a"])
        self.xpub.receive([b"\x01c"])
        self.assertEqual(self.xsub.sent[-2:], [[b"\x00a"], [b"\x01c"]])

    def test_longPrefixRefused(self):
        """
        A prefix longer than MAX_PREFIX is not forwarded.
        """
        self.xpub.receive([b"\x01" + b"x" * (node.MAX_PREFIX + 1)])
        self.assertEqual(self.xsub.sent, [])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 1)


class _Peer:
    role = protocol.CLIENT
    nodeId = "p"
    maxSize = 4096

    def __init__(self):
        self.sent = []

    def send(self, msgtype, header, payload=b""):
        self.sent.append((msgtype, header, payload))
        return True


class SizeTests(SynchronousTestCase):
    """
    A relay forwards nothing a peer announced it would not accept.
    """

    def setUp(self):
        self.clock = Clock()
        self.forwarder = Forwarder(self.clock, NodeConfig("r"))
        self.origin, self.target = _Peer(), _Peer()

    def test_requestTooLargeForTarget(self):
        """
        A request larger than its next hop accepts is answered ERR too-large
        and not forwarded.
        """
        message = protocol.Message(1, protocol.REQUEST, {"id": 4, "to": "s"}, b"x" * 4000)
        self.forwarder.forward(self.origin, message, self.target)
        self.assertEqual(self.target.sent, [])
        [(msgtype, header, _)] = self.origin.sent
        self.assertEqual((msgtype, header["id"], header["code"]), (protocol.ERROR, 4, protocol.E_TOO_LARGE))
        self.assertEqual(len(self.forwarder.inflight), 0)

    def test_answerTooLargeForOrigin(self):
        """
        An answer larger than the asker accepts becomes ERR too-large.
        """
        message = protocol.Message(1, protocol.REQUEST, {"id": 4, "to": "s"}, b"q")
        self.forwarder.forward(self.origin, message, self.target)
        [(_, forwarded, _)] = self.target.sent
        reply = protocol.Message(1, protocol.REPLY, {"id": forwarded["id"]}, b"r" * 4000)
        self.forwarder.answer(self.target, reply)
        [(msgtype, header, payload)] = self.origin.sent
        self.assertEqual((msgtype, header["id"], header["code"]), (protocol.ERROR, 4, protocol.E_TOO_LARGE))


class DeadlineCapTests(SynchronousTestCase):
    """
    A client cannot pin relay state with an enormous deadline.
    """

    def test_ttlCapped(self):
        """
        A forwarded request's deadline is at most MAX_TTL_MS away, and is
        forgotten once that passes.
        """
        clock = Clock()
        forwarder = Forwarder(clock, NodeConfig("r"))
        origin, target = _Peer(), _Peer()
        message = protocol.Message(1, protocol.REQUEST, {"id": 1, "to": "s", "ttl": 2**40}, b"")
        forwarder.forward(origin, message, target)
        [(_, header, _)] = target.sent
        self.assertEqual(header["ttl"], node.MAX_TTL_MS)
        clock.advance(node.MAX_TTL_MS / 1000.0)
        forwarder.expire()
        self.assertEqual(len(forwarder.inflight), 0)
