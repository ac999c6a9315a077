"""
Tests for L{zmqrelay.roles.notifyrelay.NotificationRelay}: over real ZeroMQ
sockets (C{inproc://}, a fake reactor), what ZeroMQ itself does with a slow
subscriber and with a subscription that waited for room, which fakes cannot
show; over fake sockets, the bounds on subscriptions and the options that
bound a slow subscriber.
"""

import zmq
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import FakeSocketFactory

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


# Over fake sockets: the bounds on subscriptions and what a slow subscriber costs.

def _relay(test, **settings):
    """
    A started L{NotificationRelay} over fake sockets.

    @return: (relay, its XPUB, its XSUB).
    """
    factory = FakeSocketFactory()
    config = NodeConfig("r", **settings) if settings else None
    relay = NotificationRelay(factory, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", None, config)
    relay.start()
    [xpub] = factory.ofKind("xpub")
    [xsub] = factory.ofKind("xsub")
    return relay, xpub, xsub


def _notification(seq, topic=b"t"):
    return protocol.encodeNotification(topic, {"server": "s", "inc": "i", "seq": seq}, b"x")


class SubscriptionBoundTests(SynchronousTestCase):
    """
    What subscribers can make a relay forward upstream is bounded, and a
    prefix refused for want of room goes upstream once there is room.
    """

    def setUp(self):
        self.relay, self.xpub, self.xsub = _relay(self, maxSubscriptions=2)

    def subscribe(self, *topics):
        for topic in topics:
            self.xpub.receive([b"\x01" + topic])

    def unsubscribe(self, *topics):
        for topic in topics:
            self.xpub.receive([b"\x00" + topic])

    def test_subscribeAndUnsubscribeForwarded(self):
        """
        A subscription and its end travel upstream unchanged.
        """
        self.subscribe(b"news")
        self.unsubscribe(b"news")
        self.assertEqual(self.xsub.sent, [[b"\x01news"], [b"\x00news"]])

    def test_defaultTableSize(self):
        """
        A relay forwards 100000 prefixes unless its config says otherwise.
        """
        relay = NotificationRelay(FakeSocketFactory(), "inproc://a", "inproc://b")
        self.assertEqual(relay.maxSubscriptions, notifyrelay.MAX_SUBSCRIPTIONS)
        self.assertEqual(notifyrelay.MAX_SUBSCRIPTIONS, 100000)
        self.assertEqual(NodeConfig("r").maxSubscriptions, 100000)
        self.assertEqual(self.relay.maxSubscriptions, 2)

    def test_tooManyPrefixesWait(self):
        """
        Beyond maxSubscriptions distinct prefixes, a new one stays at this
        relay (counted) until a forwarded one ends: then it goes upstream,
        right after that end.
        """
        self.subscribe(b"a", b"b", b"c")
        self.assertEqual(self.xsub.sent, [[b"\x01a"], [b"\x01b"]])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 1)
        self.unsubscribe(b"a")
        self.assertEqual(self.xsub.sent[2:], [[b"\x00a"], [b"\x01c"]])
        self.assertEqual(self.relay.counters["late-subscriptions"], 1)
        self.assertEqual(self.relay.counters["subscriptions"], 4)
        # c is forwarded now: its end goes upstream like any other.
        self.unsubscribe(b"c")
        self.assertEqual(self.xsub.sent[4:], [[b"\x00c"]])

    def test_waitingGoUpstreamInOrder(self):
        """
        Refused prefixes go upstream in the order they came, one per slot
        that frees up.
        """
        self.subscribe(b"a", b"b", b"c", b"d")
        del self.xsub.sent[:]
        self.unsubscribe(b"b")
        self.unsubscribe(b"a")
        self.unsubscribe(b"c")
        self.assertEqual(
            self.xsub.sent, [[b"\x00b"], [b"\x01c"], [b"\x00a"], [b"\x01d"], [b"\x00c"]]
        )
        self.assertEqual(self.relay.counters["late-subscriptions"], 2)

    def test_endOfWaitingPrefix(self):
        """
        A refused prefix whose subscribers all leave while it waits is
        forgotten: it does not go upstream when room frees up, and its end
        is not forwarded either.
        """
        self.subscribe(b"a", b"b", b"c", b"d")
        self.unsubscribe(b"c")
        self.unsubscribe(b"a")
        self.assertEqual(self.xsub.sent[2:], [[b"\x00a"], [b"\x01d"]])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 3)
        self.unsubscribe(b"b")
        self.assertEqual(self.xsub.sent[4:], [[b"\x00b"]])

    def test_waitingListBounded(self):
        """
        At most maxSubscriptions refused prefixes wait; one more is
        forgotten (counted), never forwarded, and its end is not forwarded.
        """
        self.subscribe(b"a", b"b", b"c", b"d", b"e")
        self.assertEqual(self.relay.counters["forgotten-subscriptions"], 1)
        self.assertEqual(self.relay.counters["refused-subscriptions"], 3)
        self.unsubscribe(b"e")
        self.unsubscribe(b"a", b"b")
        self.unsubscribe(b"c", b"d")
        self.assertEqual(
            [f[0] for f in self.xsub.sent[2:]],
            [b"\x00a", b"\x01c", b"\x00b", b"\x01d", b"\x00c", b"\x00d"],
        )
        self.assertEqual(self.relay.counters["refused-subscriptions"], 4)

    def test_repeatedSubscriptionForwardedOnce(self):
        """
        A prefix reported again while forwarded or waiting is not forwarded
        again (one end upstream undoes it) nor queued twice, and is counted
        as refused.
        """
        self.subscribe(b"a", b"b", b"c", b"a", b"c")
        self.assertEqual(self.relay.counters["refused-subscriptions"], 3)
        self.unsubscribe(b"a")
        self.unsubscribe(b"b")
        self.assertEqual(
            [f[0] for f in self.xsub.sent], [b"\x01a", b"\x01b", b"\x00a", b"\x01c", b"\x00b"]
        )

    def test_longPrefixRefused(self):
        """
        A prefix longer than MAX_PREFIX is not forwarded, now or later.
        """
        self.subscribe(b"x" * (notifyrelay.MAX_PREFIX + 1))
        self.assertEqual(self.xsub.sent, [])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 1)
        self.subscribe(b"a")
        self.unsubscribe(b"a")
        self.assertEqual(self.xsub.sent, [[b"\x01a"], [b"\x00a"]])

    def test_malformedFromSubscriber(self):
        """
        Anything but a one-frame subscription or end is counted, not
        forwarded.
        """
        self.xpub.receive([b"\x02a"])
        self.xpub.receive([b"\x01a", b"more"])
        self.assertEqual(self.xsub.sent, [])
        self.assertEqual(self.relay.counters["malformed"], 2)


class SlowSubscriberFakeTests(SynchronousTestCase):
    """
    The XPUB holds at most C{subHwm} notifications per subscriber, and a
    notification that some subscriber's full queue refuses still reaches
    the others (counted C{slow-dropped}).
    """

    def setUp(self):
        self.relay, self.xpub, self.xsub = _relay(self, subHwm=7, hwm=500)
        self.raw = self.xpub.socket

    def answers(self, *results):
        """
        Make the XPUB's next sends succeed or fail as C{results} say,
        noting the value of C{XPUB_NODROP} at each.
        """
        results = list(results)
        self.nodrop = []

        def send(frames):
            self.nodrop.append(self.raw.options[zmq.XPUB_NODROP])
            if results.pop(0):
                self.xpub.sent.append(frames)
                return True
            return False

        self.xpub.send = send

    def test_optionsBeforeBind(self):
        """
        The XPUB's send high-water mark is subHwm, its kernel send buffer
        SUBSCRIBER_SNDBUF, and XPUB_NODROP is on, all before it binds (each
        connection takes the options the socket had when it was bound).
        """
        factory = FakeSocketFactory()
        seen = []
        relay = NotificationRelay(
            factory, "inproc://s", "inproc://p", None, NodeConfig("r", subHwm=7)
        )
        realSocket = factory.socket

        def socket(kind, onMessage, options=None):
            sock = realSocket(kind, onMessage, options)
            bind = sock.bind

            def noting(address):
                seen.append((kind, dict(sock.socket.options)))
                return bind(address)

            sock.bind = noting
            return sock

        factory.socket = socket
        relay.start()
        [options] = [o for kind, o in seen if kind == "xpub"]
        self.assertEqual(options[zmq.SNDHWM], 7)
        self.assertEqual(options[zmq.SNDBUF], notifyrelay.SUBSCRIBER_SNDBUF)
        self.assertEqual(options[zmq.XPUB_NODROP], 1)

    def test_defaultSubscriberHwm(self):
        """
        Without a config, or by default, a subscriber gets 1000 queued
        notifications.
        """
        relay = NotificationRelay(FakeSocketFactory(), "inproc://a", "inproc://b")
        self.assertEqual(relay.subscriberHwm, 1000)
        self.assertEqual(NodeConfig("r").subHwm, 1000)

    def test_upstreamKeepsNodeHwm(self):
        """
        The connection to the upstream relay is made with the socket's own
        high-water mark and the kernel's buffer sizing; the subscriber
        bounds are back in force for what connects later.
        """
        self.raw.options[zmq.SNDHWM] = 7
        del self.raw.history[:]
        at = []
        connect = self.xpub.connect

        def noting(address):
            at.append(dict(self.raw.options))
            connect(address)

        self.xpub.connect = noting
        self.relay._upstreamHwm = 500
        self.relay.connectUpstream("tcp://cloud:5557")
        self.assertEqual(self.xpub.connected, ["tcp://cloud:5557"])
        self.assertEqual((at[0][zmq.SNDHWM], at[0][zmq.SNDBUF]), (500, -1))
        self.assertEqual(self.raw.options[zmq.SNDHWM], 7)
        self.assertEqual(self.raw.options[zmq.SNDBUF], notifyrelay.SUBSCRIBER_SNDBUF)

    def test_fastPath(self):
        """
        A notification every subscriber has room for is sent once, with
        XPUB_NODROP on, and nothing is counted as dropped.
        """
        self.answers(True)
        self.xsub.receive(_notification(1))
        self.assertEqual(self.nodrop, [1])
        self.assertEqual(len(self.xpub.sent), 1)
        self.assertEqual(
            (self.relay.counters["slow-dropped"], self.relay.counters["dropped"]), (0, 0)
        )

    def test_slowSubscriberSkipped(self):
        """
        A notification refused because some subscriber's queue is full is
        sent again without XPUB_NODROP (so the others get it), which is
        then switched back on; it counts as slow-dropped.
        """
        self.answers(False, True, True)
        self.xsub.receive(_notification(1))
        self.xsub.receive(_notification(2))
        self.assertEqual(self.nodrop, [1, 0, 1])
        self.assertEqual(self.raw.options[zmq.XPUB_NODROP], 1)
        self.assertEqual(len(self.xpub.sent), 2)
        self.assertEqual(self.relay.counters["slow-dropped"], 1)
        self.assertEqual(self.relay.counters["dropped"], 0)
        self.assertEqual(self.relay.counters["notifications"], 2)

    def test_droppedForAll(self):
        """
        A notification refused even without XPUB_NODROP counts as dropped,
        and XPUB_NODROP is still switched back on.
        """
        self.answers(False, False)
        self.xsub.receive(_notification(1))
        self.assertEqual(self.raw.options[zmq.XPUB_NODROP], 1)
        self.assertEqual(
            (self.relay.counters["slow-dropped"], self.relay.counters["dropped"]), (0, 1)
        )


class RelayOptionsTests(SynchronousTestCase):
    """
    Both relay roles take C{--max-subscriptions} and C{--sub-hwm}.
    """

    def test_options(self):
        """
        The cloud's and a proxy's options set the relay's table size and
        per-subscriber high-water mark, 100000 and 1000 by default.
        """
        from zmqrelay.tools.tap import cloud, proxy

        for module in (cloud, proxy):
            base = ["--lan-only"] if module is proxy else []
            options = module.Options()
            options.parseOptions(base)
            config = options.nodeConfig()
            self.assertEqual((config.maxSubscriptions, config.subHwm), (100000, 1000))
            options = module.Options()
            options.parseOptions(base + ["--max-subscriptions", "3", "--sub-hwm", "50"])
            config = options.nodeConfig()
            self.assertEqual((config.maxSubscriptions, config.subHwm), (3, 50))

    def test_positive(self):
        """
        Neither option takes zero.
        """
        from twisted.python.usage import UsageError

        from zmqrelay.tools.tap import cloud

        for name in ("--max-subscriptions", "--sub-hwm"):
            self.assertRaises(UsageError, cloud.Options().parseOptions, [name, "0"])
