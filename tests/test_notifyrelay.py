"""
Tests for L{zmqrelay.roles.notifyrelay.NotificationRelay} over real ZeroMQ sockets
(C{inproc://}, a fake reactor): what ZeroMQ itself does with a slow
subscriber and with a subscription that waited for room, which fakes cannot
show.
"""

import zmq
from twisted.trial.unittest import SynchronousTestCase

from tests.test_zmq import FakeReactor
from zmqrelay.core import protocol
from zmqrelay.roles import notifyrelay
from zmqrelay.edge._zmq import SocketFactory, SocketOptions
from zmqrelay.core.config import NodeConfig
from zmqrelay.roles.notifyrelay import NotificationRelay

#: How long a test waits for ZeroMQ to pass on what it was given (ms); on
#: inproc it is there at once, this only bounds a broken test.
WAIT = 2000


def notification(seq, topic=b"t"):
    return protocol.encodeNotification(topic, {"server": "s", "inc": "i", "seq": seq}, b"n%d" % seq)


class RealRelayMixin:
    """
    A started relay on inproc endpoints, a raw XPUB publishing into it (it
    also sees the subscriptions the relay forwards), and raw SUBs.
    """

    def startRelay(self, **settings):
        self.reactor = FakeReactor()
        self.factory = SocketFactory(self.reactor, SocketOptions(hwm=100, readBudget=1000))
        self.addCleanup(self.factory.shutdown)
        name = f"{type(self).__name__}-{id(self):x}"
        self.relay = NotificationRelay(
            self.factory, f"inproc://{name}-sub", f"inproc://{name}-pub", 4096,
            NodeConfig("r", **settings),
        )
        self.subEndpoint, self.pubEndpoint = self.relay.start()
        self.addCleanup(self.relay.stop)
        self.publisher = self.rawSocket(zmq.XPUB)
        self.publisher.connect(self.subEndpoint)

    def rawSocket(self, kind, **options):
        sock = zmq.Socket(self.factory.context, kind)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        self.addCleanup(sock.close)
        return sock

    def subscriber(self, prefix, rcvhwm=10):
        sub = self.rawSocket(zmq.SUB, RCVHWM=rcvhwm)
        sub.connect(self.pubEndpoint)
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
        return sub

    def pump(self):
        """
        Let the relay read what both its sockets have.
        """
        self.relay.xpub.doRead()
        self.relay.xsub.doRead()
        self.reactor.advance(0)

    def upstream(self, count):
        """
        @return: the next C{count} subscription frames the relay forwarded
            to the publisher, then check that no more came.
        """
        frames = []
        while len(frames) < count and self.publisher.poll(WAIT):
            frames.append(self.publisher.recv())
        self.assertEqual(self.publisher.poll(0), 0, "more subscriptions than expected")
        return frames

    def publish(self, frames):
        self.publisher.send_multipart(frames)
        self.pump()

    def drain(self, sub):
        """
        @return: the seq of every notification C{sub} can read now.
        """
        seqs = []
        while True:
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return seqs
            seqs.append(protocol.decodeNotification(frames)[1].header["seq"])


class SlowSubscriberTests(RealRelayMixin, SynchronousTestCase):
    """
    One subscriber that never reads costs the relay a bounded queue, and
    costs the others nothing.
    """

    def setUp(self):
        self.startRelay(subHwm=10)
        self.fast = self.subscriber(b"t")
        self.slow = self.subscriber(b"t")
        self.pump()
        self.assertEqual(self.upstream(1), [b"\x01t"])

    def test_socketOptions(self):
        """
        The XPUB has the subscriber high-water mark and kernel send buffer.
        """
        raw = self.relay.xpub.socket
        self.assertEqual(raw.getsockopt(zmq.SNDHWM), 10)
        self.assertEqual(raw.getsockopt(zmq.SNDBUF), notifyrelay.SUBSCRIBER_SNDBUF)

    def test_fastSubscriberGetsEverything(self):
        """
        While one subscriber never reads, the one that reads gets every
        notification in order; the slow one gets at most what its queues
        hold (10 at the relay + 10 at its own socket over inproc); nothing
        is raised or logged as an error, and the slow subscriber's falling
        behind is counted once: ZeroMQ then skips it without telling.
        """
        received = []
        for seq in range(300):
            self.publish(notification(seq))
            received.extend(self.drain(self.fast))
        self.assertEqual(received, list(range(300)))
        slow = self.drain(self.slow)
        self.assertEqual(slow, list(range(20)))
        counters = self.relay.counters
        self.assertEqual(counters["notifications"], 300)
        self.assertEqual(counters["slow-dropped"], 1)
        self.assertEqual(counters["dropped"], 0)

    def test_eachStallCounted(self):
        """
        A subscriber that catches up gets notifications again, and falling
        behind again counts again.
        """
        for seq in range(50):
            self.publish(notification(seq))
            self.drain(self.fast)
        self.assertEqual(self.drain(self.slow), list(range(20)))
        received = []
        for seq in range(50, 100):
            self.publish(notification(seq))
            received.extend(self.drain(self.fast))
        self.assertEqual(received, list(range(50, 100)))
        # It had read all it had: the next 20 reached it, then it was full.
        self.assertEqual(self.drain(self.slow), list(range(50, 70)))
        self.assertEqual(self.relay.counters["slow-dropped"], 2)

    def test_slowSubscriberLeaves(self):
        """
        Once the slow subscriber has gone, notifications flow to the others
        with nothing more dropped.
        """
        for seq in range(50):
            self.publish(notification(seq))
            self.drain(self.fast)
        self.slow.close()
        self.pump()
        received = []
        for seq in range(50, 150):
            self.publish(notification(seq))
            received.extend(self.drain(self.fast))
        self.assertEqual(received, list(range(50, 150)))
        self.assertEqual(self.relay.counters["slow-dropped"], 1)


class WaitingSubscriptionTests(RealRelayMixin, SynchronousTestCase):
    """
    A prefix refused while the table is full reaches the publisher once
    room frees up, and then serves every subscriber of it.
    """

    def test_refusedPrefixServedLater(self):
        """
        With room for one prefix: 'a' is forwarded, 'c' refused; a second
        subscriber of 'c' is not even reported to the relay (ZeroMQ reports
        a prefix once); when 'a' ends, 'c' goes upstream and both its
        subscribers get what is published on it.
        """
        self.startRelay(maxSubscriptions=1)
        first = self.subscriber(b"a")
        self.pump()
        self.assertEqual(self.upstream(1), [b"\x01a"])
        early = self.subscriber(b"c")
        self.pump()
        late = self.subscriber(b"c")
        self.pump()
        self.assertEqual(self.upstream(0), [])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 1)
        first.setsockopt(zmq.UNSUBSCRIBE, b"a")
        self.pump()
        self.assertEqual(self.upstream(2), [b"\x00a", b"\x01c"])
        self.publish(notification(1, b"c"))
        self.assertTrue(early.poll(WAIT) and late.poll(WAIT))
        self.assertEqual((self.drain(early), self.drain(late)), ([1], [1]))
        self.assertEqual(self.relay.counters["late-subscriptions"], 1)
