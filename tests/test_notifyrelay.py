"""
Tests for L{zmqrelay.roles.notifyrelay.NotificationRelay} and its data plane
(L{zmqrelay.edge.plane}): over real ZeroMQ sockets (C{inproc://}, the plane's
threads, a fake reactor for the subscription side), what ZeroMQ itself does
with a slow subscriber, an upstream, a subscription that waited for room;
over fake sockets and a fake plane, the bounds on subscriptions and what the
relay hands its plane.
"""

import time

import zmq
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import FakeSocketFactory

from tests.test_zmq import FakeReactor
from zmqrelay.core import protocol
from zmqrelay.edge import security
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
    A started relay on inproc endpoints (its data plane in threads, its
    subscription socket in a fake reactor), a raw XPUB publishing into it
    (it also sees the subscriptions the relay forwards), and raw SUBs.
    """

    def startRelay(self, tcp=False, guarded=False, **settings):
        self.reactor = FakeReactor()
        self.factory = SocketFactory(self.reactor, SocketOptions(hwm=100, readBudget=1000, maxMessageSize=8192))
        self.addCleanup(self.factory.shutdown)
        name = f"{type(self).__name__}-{id(self):x}"
        sub, pub = ("tcp://127.0.0.1:*",) * 2 if tcp else (f"inproc://{name}-sub", f"inproc://{name}-pub")
        self.relay = NotificationRelay(
            self.factory, sub, pub, 4096,
            NodeConfig("r", **settings), reactor=self.reactor if guarded else None,
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
        Let the relay's reactor read the subscriptions its plane passed up
        (they come from another thread: wait briefly for them).
        """
        for _ in range(20):
            self.relay.xpub.doRead()
            self.reactor.advance(0)
            if not self.relay.xpub.socket.poll(5):
                break

    def upstream(self, count):
        """
        @return: the next C{count} subscription frames the relay forwarded
            to the publisher, then check that no more came.
        """
        frames = []
        for _ in range(WAIT // 10):
            if len(frames) >= count:
                break
            self.pump()
            while self.publisher.poll(10):
                frames.append(self.publisher.recv())
        self.pump()
        self.assertEqual(self.publisher.poll(20), 0, "more subscriptions than expected")
        return frames

    def publish(self, frames):
        self.publisher.send_multipart(frames)

    def drain(self, sub, wait=0):
        """
        @return: the seq of every notification C{sub} can read now (after
            waiting up to C{wait} ms for the first).
        """
        seqs = []
        if wait and not sub.poll(wait):
            return seqs
        while True:
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return seqs
            seqs.append(protocol.decodeNotification(frames)[1].header["seq"])

    def settle(self, sub):
        """
        Wait until nothing more reaches C{sub} for a moment.
        """
        while sub.poll(50):
            return False
        return True


class SlowSubscriberTests(RealRelayMixin, SynchronousTestCase):
    """
    One subscriber that never reads costs the relay a bounded queue, and
    costs the others nothing.
    """

    def setUp(self):
        self.startRelay(subHwm=10)
        self.fast = self.subscriber(b"t")
        self.slow = self.subscriber(b"t")
        self.assertEqual(self.upstream(1), [b"\x01t"])

    def test_socketOptions(self):
        """
        The subscribers' XPUB has the subscriber high-water mark and kernel
        send buffer, and drops for a full subscriber (never waits).
        """
        raw = self.relay.plane.fanout.backend
        self.assertEqual(raw.getsockopt(zmq.SNDHWM), 10)
        self.assertEqual(raw.getsockopt(zmq.SNDBUF), notifyrelay.SUBSCRIBER_SNDBUF)

    def test_fastSubscriberGetsEverything(self):
        """
        While one subscriber never reads, the one that reads gets every
        notification in order; the slow one gets at most what its queues
        hold (10 at the relay + 10 at its own socket over inproc), the
        first ones, with nothing dropped where the relay never drops.
        """
        received = []
        for seq in range(300):
            self.publish(notification(seq))
            received.extend(self.drain(self.fast, WAIT))
        self.assertEqual(received, list(range(300)))
        slow = self.drain(self.slow)
        self.assertLessEqual(len(slow), 20)
        self.assertEqual(slow, list(range(len(slow))))
        counters = self.relay.counters
        self.assertEqual(counters["notifications"], 300)
        self.assertEqual(counters["delivered"], 300)
        self.assertEqual(counters["dropped"], 0)

    def test_slowSubscriberCatchesUp(self):
        """
        A subscriber that catches up gets notifications again.
        """
        for seq in range(50):
            self.publish(notification(seq))
            self.drain(self.fast, WAIT)
        self.assertEqual(self.drain(self.slow), list(range(20)))
        received = []
        for seq in range(50, 100):
            self.publish(notification(seq))
            received.extend(self.drain(self.fast, WAIT))
        self.assertEqual(received, list(range(50, 100)))
        later = self.drain(self.slow, WAIT)
        self.assertTrue(later and later[0] >= 50 and later == list(range(later[0], later[-1] + 1)))

    def test_slowSubscriberLeaves(self):
        """
        Once the slow subscriber has gone, notifications flow to the others
        with nothing dropped.
        """
        for seq in range(50):
            self.publish(notification(seq))
            self.drain(self.fast, WAIT)
        self.slow.close()
        received = []
        for seq in range(50, 150):
            self.publish(notification(seq))
            received.extend(self.drain(self.fast, WAIT))
        self.assertEqual(received, list(range(50, 150)))
        self.assertEqual(self.relay.counters["dropped"], 0)


class SlowConsumerCutTests(RealRelayMixin, SynchronousTestCase):
    """
    Over real TCP connections: a subscriber that never reads is cut off
    once the relay holds more than C{--sub-bytes} for it (issue 7, defect
    5), while one that reads keeps its connection and gets everything.
    """

    def setUp(self):
        self.startRelay(tcp=True, guarded=True, subHwm=10000, subBytes=512 * 1024)
        self.guard = self.relay.slow
        self.fast = self.subscriber(b"t", rcvhwm=100000)
        self.slow = self.subscriber(b"t", rcvhwm=1, RCVBUF=4096)
        self.assertEqual(self.upstream(1), [b"\x01t"])
        self.watch(2)

    def subscriber(self, prefix, rcvhwm=10, **options):
        sub = self.rawSocket(zmq.SUB, RCVHWM=rcvhwm, **options)
        sub.connect(self.pubEndpoint)
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
        return sub

    def watch(self, count):
        """
        Read the plane's monitor until the guard watches C{count}
        connections.
        """
        monitor = self.relay.plane._monitor
        deadline = time.monotonic() + WAIT / 1000.0
        while len(self.guard) != count and time.monotonic() < deadline:
            monitor.socket.poll(10)
            monitor.doRead()
        self.assertEqual(len(self.guard), count)

    def test_slowOneCut(self):
        """
        2 MiB published, 1 KiB at a time: the subscriber that reads nothing
        is cut once (counted, with what was held for it), the one that
        reads gets every notification in order and is still watched.
        """
        received = []
        payload = b"x" * 1024
        for seq in range(2048):
            frames = protocol.encodeNotification(
                b"t", {"server": "s", "inc": "i", "seq": seq}, payload)
            self.publish(frames)
            if seq % 64 == 63:
                received.extend(self.drain(self.fast, WAIT))
                self.relay.plane._monitor.doRead()
                self.guard.check()
        received.extend(self.drain(self.fast, WAIT))
        while len(received) < 2048 and self.fast.poll(WAIT):
            received.extend(self.drain(self.fast))
        self.assertEqual(received, list(range(2048)))
        counters = self.relay.counters
        self.assertEqual(counters["slow-cut"], 1)
        self.assertGreater(counters["slow-cut-bytes"], 512 * 1024)
        self.assertEqual(counters["dropped"], 0)
        self.relay.plane._monitor.doRead()
        self.watch(1)

    def test_slowOneReadsAgain(self):
        """
        Once the cut subscriber reads again, it sees its connection end,
        reconnects by itself (watched again), subscribes anew and gets new
        notifications.
        """
        self.test_slowOneCut()
        deadline = time.monotonic() + WAIT / 1000.0
        while len(self.guard) < 2 and time.monotonic() < deadline:
            self.drain(self.slow, 10)
            self.relay.plane._monitor.doRead()
        self.watch(2)
        deadline = time.monotonic() + WAIT / 1000.0
        got = []
        seq = 5000
        while not got and time.monotonic() < deadline:
            self.publish(notification(seq))
            seq += 1
            got = self.drain(self.slow, 50)
        self.assertTrue(got)


class ProxyThreadTests(SynchronousTestCase):
    """
    The reactor never waits long on a plane thread that does not answer.
    """

    def test_statisticsWhileBusy(self):
        """
        While the thread runs something else (not its proxy), a short wait
        for its figures gives up at once with the last figures; the late
        answer is not taken for the next command's.
        """
        import threading

        from zmqrelay.edge.plane import ProxyThread

        context = zmq.Context()
        self.addCleanup(context.term)
        front = context.socket(zmq.XSUB)
        back = context.socket(zmq.XPUB)
        for sock in (front, back):
            sock.setsockopt(zmq.LINGER, 0)
        thread = ProxyThread(context, "test", front, back)
        thread.start()
        self.addCleanup(thread.stop)
        first = thread.statistics()
        self.assertEqual(len(first), 8)
        release = threading.Event()
        thread.call(lambda: release.wait(5))
        began = time.monotonic()
        self.assertEqual(thread.statistics(0.05), first)
        self.assertLess(time.monotonic() - began, 1.0)
        # Still unanswered: the next short ask does not wait at all.
        began = time.monotonic()
        self.assertEqual(thread.statistics(0.5), first)
        self.assertLess(time.monotonic() - began, 0.4)
        release.set()
        # The answer to the abandoned STATISTICS comes now, and is dropped.
        self.assertEqual(len(thread.statistics()), 8)
        thread.call(lambda: None)
        self.assertEqual(len(thread.statistics()), 8)


class PlaneTests(RealRelayMixin, SynchronousTestCase):
    """
    The data plane: frames untouched, frames over the size limit not
    passed on, an upstream that never drops silently, threads ended on stop.
    """

    def test_framesUntouched(self):
        """
        What a publisher sends reaches a subscriber frame for frame, and is
        counted once.
        """
        self.startRelay()
        sub = self.subscriber(b"t")
        self.upstream(1)
        frames = notification(7)
        self.publish(frames)
        self.assertTrue(sub.poll(WAIT))
        self.assertEqual(sub.recv_multipart(), frames)
        counters = self.relay.counters
        self.assertEqual((counters["notifications"], counters["delivered"]), (1, 1))
        self.assertEqual(counters["notification-bytes"], sum(len(f) for f in frames))

    def test_tooLargeFrameNotPassedOn(self):
        """
        A frame over the node's socket message size limit (MAXMSGSIZE) is
        not passed on (libzmq cuts that publisher; over TCP, where frames
        are decoded); what comes after it on another connection still is.
        """
        self.startRelay(tcp=True)
        # The plane's XSUB bounds each frame as the node's sockets do.
        limit = self.relay.plane.intake.frontend.getsockopt(zmq.MAXMSGSIZE)
        self.assertGreater(limit, 0)
        sub = self.subscriber(b"t")
        self.upstream(1)
        self.publish([b"t", b"x" * (limit + 1)])
        self.assertEqual(sub.poll(200), 0)
        other = self.rawSocket(zmq.XPUB)
        other.connect(self.subEndpoint)
        self.assertTrue(other.poll(WAIT))
        other.recv()
        other.send_multipart(notification(1))
        self.assertEqual(self.drain(sub, WAIT), [1])

    def test_upstream(self):
        """
        A proxy's relay publishes upstream what the upstream subscribed to,
        counted; the upstream's subscriptions are checked and forwarded to
        the publishers like any subscriber's.
        """
        self.startRelay()
        cloud = self.rawSocket(zmq.XSUB)
        cloudEndpoint = "inproc://cloud-" + str(id(self))
        cloud.bind(cloudEndpoint)
        self.relay.connectUpstream(cloudEndpoint)
        cloud.send(b"\x01t")
        self.assertEqual(self.upstream(1), [b"\x01t"])
        self.publish(notification(3))
        self.assertTrue(cloud.poll(WAIT))
        self.assertEqual(cloud.recv_multipart(), notification(3))
        self.assertEqual(self.relay.counters["upstream"], 1)

    def test_upstreamNeverDropsSilently(self):
        """
        An upstream that does not read: what finds its queue full is dropped
        at once and counted, and the relay goes on.
        """
        self.startRelay()
        cloud = self.rawSocket(zmq.XSUB, RCVHWM=1)
        cloudEndpoint = "inproc://cloud-" + str(id(self))
        cloud.bind(cloudEndpoint)
        self.relay.connectUpstream(cloudEndpoint)
        cloud.send(b"\x01t")
        self.upstream(1)
        for seq in range(400):
            self.publish(notification(seq))
        for _ in range(100):
            if self.relay.counters["dropped"]:
                break
            self.publisher.poll(20)
        self.assertGreater(self.relay.counters["dropped"], 0)

    def test_stalledUpstreamDoesNotStallSubscribers(self):
        """
        While the upstream relay reads nothing (stopped, or slow), local
        subscribers still get every notification at once: the upstream's
        drops never hold up the intake.
        """
        self.startRelay()
        cloud = self.rawSocket(zmq.XSUB, RCVHWM=1)
        cloudEndpoint = "inproc://cloud-" + str(id(self))
        cloud.bind(cloudEndpoint)
        self.relay.connectUpstream(cloudEndpoint)
        cloud.send(b"\x01t")
        sub = self.subscriber(b"t", rcvhwm=5000)
        self.upstream(1)
        # Our publisher waits (up to 2 s a send) rather than drop while the
        # relay's intake is full, so a machine too busy to run the relay's
        # thread for a moment loses nothing here; an intake held up by the
        # upstream would make a send time out (zmq.Again).
        self.publisher.setsockopt(zmq.XPUB_NODROP, 1)
        self.publisher.setsockopt(zmq.SNDTIMEO, 2000)
        # More than every queue on the way up holds: an upstream thread that
        # waited for room would hold each of the rest up.
        count = 1500
        seqs = []
        started = time.monotonic()
        for seq in range(count):
            self.publish(notification(seq))
            if seq % 100 == 99:
                seqs += self.drain(sub)
        # An intake that waited on the upstream (100 ms a notification, as
        # SEND_WAIT) would take tens of seconds here.
        self.assertLess(time.monotonic() - started, 10.0)
        for _ in range(50):
            if len(seqs) == count:
                break
            seqs += self.drain(sub, 100)
        self.assertEqual(seqs, list(range(count)))
        self.assertGreater(self.relay.counters["dropped"], 0)

    def test_stopEndsThreads(self):
        """
        Stopping ends every thread of the plane and keeps the counters.
        """
        self.startRelay()
        cloudEndpoint = "inproc://cloud-" + str(id(self))
        self.rawSocket(zmq.XSUB).bind(cloudEndpoint)
        self.relay.connectUpstream(cloudEndpoint)
        sub = self.subscriber(b"t")
        self.upstream(1)
        self.publish(notification(1))
        self.assertEqual(self.drain(sub, WAIT), [1])
        threads = [self.relay.plane.intake, self.relay.plane.fanout, self.relay.plane.upstream]
        self.relay.stop()
        self.assertEqual([t._thread.is_alive() for t in threads], [False] * 3)
        self.assertEqual(self.relay.counters["notifications"], 1)


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
        self.assertEqual(self.upstream(1), [b"\x01a"])
        early = self.subscriber(b"c")
        self.pump()
        late = self.subscriber(b"c")
        self.assertEqual(self.upstream(0), [])
        self.assertEqual(self.relay.counters["refused-subscriptions"], 1)
        first.setsockopt(zmq.UNSUBSCRIBE, b"a")
        self.assertEqual(self.upstream(2), [b"\x00a", b"\x01c"])
        self.publish(notification(1, b"c"))
        self.assertTrue(early.poll(WAIT) and late.poll(WAIT))
        self.assertEqual((self.drain(early), self.drain(late)), ([1], [1]))
        self.assertEqual(self.relay.counters["late-subscriptions"], 1)


# Over fake sockets: the bounds on subscriptions and what a slow subscriber costs.

def _relay(test, **settings):
    """
    A started L{NotificationRelay} over fake sockets and a fake plane.

    @return: (relay, its subscription XPUB, its plane).
    """
    factory = FakeSocketFactory()
    config = NodeConfig("r", **settings) if settings else None
    relay = NotificationRelay(factory, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", None, config)
    relay.start()
    [xpub] = factory.ofKind("xpub")
    [plane] = factory.planes
    return relay, xpub, plane


class SubscriptionBoundTests(SynchronousTestCase):
    """
    What subscribers can make a relay forward upstream is bounded, and a
    prefix refused for want of room goes upstream once there is room.
    """

    def setUp(self):
        self.relay, self.xpub, self.xsub = _relay(self, maxSubscriptions=2)
        # The plane sends upstream what the relay lets through.

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


class PlaneSettingsTests(SynchronousTestCase):
    """
    The relay gives its plane the subscriber bounds and the security of
    each socket, and counts what the plane counts.
    """

    def test_subscriberBounds(self):
        """
        The plane gets subHwm and SUBSCRIBER_SNDBUF for each subscriber, and
        the inproc endpoint of the relay's subscription socket.
        """
        relay, xpub, plane = _relay(self, subHwm=7)
        self.assertEqual((plane.subscriberHwm, plane.subscriberSndbuf),
                         (7, notifyrelay.SUBSCRIBER_SNDBUF))
        self.assertEqual(xpub.bound, [plane.subscriptions])
        self.assertTrue(plane.subscriptions.startswith("inproc://"))

    def test_defaultSubscriberHwm(self):
        """
        Without a config, or by default, a subscriber gets 10,000 queued
        notifications (its bytes are bounded by C{--sub-bytes}).
        """
        relay = NotificationRelay(FakeSocketFactory(), "inproc://a", "inproc://b")
        self.assertEqual(relay.subscriberHwm, 10000)
        self.assertEqual(NodeConfig("r").subHwm, 10000)

    def test_curve(self):
        """
        With CURVE, the publishers' XSUB binds in the PUBLISH domain (only
        proxies and servers), the subscribers' XPUB in SUBSCRIBE, and the
        upstream is dialled with that hop's server key.
        """
        public, secret = zmq.curve_keypair()
        serverPublic, _ = zmq.curve_keypair()
        curve = security.CurveConfig(
            public, secret, {"tcp://cloud:5555": serverPublic}, security.KeyRegistry()
        )
        factory = FakeSocketFactory()
        relay = NotificationRelay(factory, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", None,
                                  NodeConfig("r", curve=curve))
        relay.start()
        [plane] = factory.planes
        self.assertEqual(plane.publisherOptions.curve["domain"], security.PUBLISH)
        self.assertEqual(plane.subscriberOptions.curve["domain"], security.SUBSCRIBE)
        relay.connectUpstream("tcp://cloud:5557", "tcp://cloud:5555")
        endpoint, options = plane.upstream
        self.assertEqual(endpoint, "tcp://cloud:5557")
        self.assertEqual(options.curve["serverkey"], serverPublic)

    def test_countersMerged(self):
        """
        The relay's counters hold the plane's figures and its own, and keep
        the plane's last figures after it stops.
        """
        relay, xpub, plane = _relay(self)
        plane.figures.update(notifications=5, dropped=2)
        self.assertEqual((relay.counters["notifications"], relay.counters["dropped"]), (5, 2))
        relay.stop()
        self.assertTrue(plane.stopped)
        self.assertEqual(relay.counters["notifications"], 5)


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
            self.assertEqual((config.maxSubscriptions, config.subHwm), (100000, 10000))
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


class SubscriptionBatchTests(SynchronousTestCase):
    """
    With a reactor, subscriptions go upstream in one batch per reactor turn.
    """

    def test_oneBatchPerTurn(self):
        """
        Many (un)subscriptions read in one turn reach the plane as one call,
        in order, once the turn is over; stopping drops a pending batch and
        leaves no timer.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        factory = FakeSocketFactory()
        relay = NotificationRelay(
            factory, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", None, NodeConfig("r"), reactor=clock
        )
        relay.start()
        [xpub] = factory.ofKind("xpub")
        [plane] = factory.planes
        for i in range(100):
            xpub.receive([b"\x01t%d" % i])
        xpub.receive([b"\x00t0"])
        self.assertEqual(plane.sent, [])
        clock.advance(0)
        self.assertEqual(plane.calls, 1)
        self.assertEqual(plane.sent[:2], [[b"\x01t0"], [b"\x01t1"]])
        self.assertEqual(plane.sent[-1], [b"\x00t0"])
        self.assertEqual(len(plane.sent), 101)
        xpub.receive([b"\x01late"])
        relay.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(plane.calls, 1)
