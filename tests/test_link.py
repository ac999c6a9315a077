"""
Tests for L{zmqrelay.edge.link}: the DEALER side of a hop, driven through fake
sockets and a L{Clock}.
"""

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import errors, protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.edge.link import CONNECTED, CONNECTING, STOPPED, WAITING, UpstreamLink

from tests.fakes import FakeSocketFactory, LinkOwner, welcomeFrames

UPSTREAM = "inproc://upstream"


class LinkTestCase(SynchronousTestCase):
    """
    An L{UpstreamLink} with a fixed retry delay, a fake socket factory and a Clock.
    """

    settings = {}
    retryDelay = 1.0

    def setUp(self):
        self.clock = Clock()
        self.config = NodeConfig("me", incarnation="my-inc", **self.settings)
        self.owner = LinkOwner()
        self.factory = FakeSocketFactory()
        policy = None if self.retryDelay is None else (lambda attempt: self.retryDelay)
        self.link = UpstreamLink(
            self.owner, self.config, self.clock, self.factory, UPSTREAM, "up", retryPolicy=policy
        )
        # Whatever a test does, stopping must leave nothing scheduled.
        self.addCleanup(self.stopAndCheck)

    def stopAndCheck(self):
        self.link.stop()
        self.assertEqual(self.link.state, STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(all(s.closed for s in self.factory.sockets))

    @property
    def socket(self):
        return self.factory.sockets[-1]

    def connect(self, **welcome):
        self.link.start()
        self.socket.receive(welcomeFrames(**welcome))
        self.assertEqual(self.link.state, CONNECTED)
        return self.socket


class ConnectTests(LinkTestCase):
    """
    CONNECTING -> CONNECTED, and what happens when no WELCOME comes.
    """

    def test_helloSent(self):
        """
        start() makes a DEALER, connects it, and sends HELLO with our identity.
        """
        self.link.start()
        self.assertEqual(self.link.state, CONNECTING)
        self.assertEqual(self.socket.kind, "dealer")
        self.assertEqual(self.socket.connected, [UPSTREAM])
        [hello] = self.socket.messages()
        self.assertEqual(hello.type, protocol.HELLO)
        h = hello.header
        self.assertEqual((h["id"], h["role"], h["inc"]), ("me", "client", "my-inc"))
        self.assertEqual(h["versions"], list(protocol.SUPPORTED_VERSIONS))
        self.assertEqual(h["hb"], 1000)
        self.assertEqual(h["services"], ["svc"])
        self.stopAndCheck()

    def test_startTwice(self):
        """
        start() on a running link does nothing.
        """
        self.link.start()
        self.link.start()
        self.assertEqual(len(self.factory.sockets), 1)
        self.stopAndCheck()

    def test_welcome(self):
        """
        WELCOME makes the link CONNECTED and tells the owner.
        """
        self.connect(nodeId="proxy-1", role="proxy", incarnation="p-inc")
        self.assertTrue(self.link.alive)
        self.assertEqual(self.owner.ups, [self.link])
        self.assertEqual((self.link.nodeId, self.link.role, self.link.incarnation),
                         ("proxy-1", "proxy", "p-inc"))
        self.assertEqual(self.link.welcome["id"], "proxy-1")
        # Only the heartbeat ticker is left: the hello timer is gone.
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.stopAndCheck()

    def test_sendOnlyWhenConnected(self):
        """
        send() refuses before WELCOME and queues after it.
        """
        self.link.start()
        self.assertFalse(self.link.send(protocol.REQUEST, {"id": 1}))
        sock = self.connect()
        self.assertTrue(self.link.send(protocol.REQUEST, {"id": 2}, b"p"))
        self.assertEqual(sock.messages()[-1].header, {"id": 2})
        self.stopAndCheck()

    def test_noWelcomeRetries(self):
        """
        Without WELCOME, the socket is closed after helloTimeout and a new one tried after backoff.
        """
        self.link.start()
        first = self.socket
        self.clock.advance(self.config.helloTimeout)
        self.assertEqual(self.link.state, WAITING)
        self.assertTrue(first.closed)
        self.assertEqual(len(self.factory.sockets), 1)
        self.clock.advance(self.retryDelay)
        self.assertEqual(len(self.factory.sockets), 2)
        self.assertEqual(self.link.state, CONNECTING)
        self.assertEqual(self.socket.messages()[0].type, protocol.HELLO)
        self.assertEqual(self.owner.downs, [])
        self.stopAndCheck()

    def test_ignoredWhileConnecting(self):
        """
        Before WELCOME, other messages are ignored and counted (before-welcome), malformed ones as
        malformed.
        """
        self.link.start()
        self.socket.receive(protocol.encode(protocol.REQUEST, {"id": 1}))
        self.socket.receive([b"junk"])
        self.assertEqual(self.owner.received, [])
        self.assertEqual((self.link.counters["malformed"], self.link.counters["before-welcome"]), (1, 1))
        self.assertEqual(self.link.state, CONNECTING)
        self.stopAndCheck()

    def test_welcomeWithUnknownVersion(self):
        """
        A WELCOME choosing a version we do not speak counts as a refusal.
        """
        self.link.start()
        self.socket.receive(welcomeFrames(version=9))
        self.assertEqual(self.link.state, WAITING)
        self.assertEqual(self.owner.ups, [])
        self.assertIsInstance(self.link.lastError, errors.VersionMismatch)
        self.stopAndCheck()


class RejectTests(LinkTestCase):
    """
    After REJECT the link waits, and never loops tightly.
    """

    settings = {"rejectDelay": 5.0}
    retryDelay = 0.1

    def reject(self, sock):
        sock.receive(protocol.encode(protocol.REJECT, {
            "code": protocol.E_VERSION, "msg": "no common version", "versions": [9]}))

    def test_waitsRejectDelay(self):
        """
        A REJECT holds the next attempt back for rejectDelay, with a typed lastError.
        """
        self.link.start()
        self.reject(self.socket)
        self.assertEqual(self.link.state, WAITING)
        self.assertIsInstance(self.link.lastError, errors.VersionMismatch)
        self.assertEqual(self.link.counters["rejects"], 1)
        self.clock.advance(4.99)
        self.assertEqual(len(self.factory.sockets), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.factory.sockets), 2)
        self.stopAndCheck()

    def test_waitsRetryOfOverLimit(self):
        """
        A REJECT C{over-limit} with C{retry} longer than the reject delay (what is left of the id's
        cooldown) holds the next HELLO back that long: sooner would be refused again (PROTOCOL.md 6.4).
        A C{retry} out of range is clamped to 60 s; one that is not a number is ignored.
        """
        self.link.start()
        for retry, wait in ((8.5, 8.5), (1.0, 5.0), (1e9, 60.0), (-3, 5.0), ("soon", 5.0), (True, 5.0)):
            sockets = len(self.factory.sockets)
            self.socket.receive(protocol.encode(protocol.REJECT, {
                "code": protocol.E_OVER_LIMIT, "msg": "cooling down", "retry": retry}))
            self.assertIsInstance(self.link.lastError, errors.OverLimit)
            self.clock.advance(wait - 0.01)
            self.assertEqual(len(self.factory.sockets), sockets, retry)
            self.clock.advance(0.01)
            self.assertEqual(len(self.factory.sockets), sockets + 1, retry)
        self.stopAndCheck()

    def test_noTightLoop(self):
        """
        An upstream that always rejects gets at most one attempt per rejectDelay.
        """
        self.link.start()
        answered = set()
        for _ in range(1000):
            sock = self.socket
            if id(sock) not in answered:
                answered.add(id(sock))
                self.reject(sock)
            self.clock.advance(0.1)
        # 100 seconds of a rejecting upstream.
        self.assertLessEqual(self.link.counters["connects"], 100 / 5.0 + 1)
        self.assertGreaterEqual(self.link.counters["connects"], 100 / 5.0 - 1)
        self.stopAndCheck()

    def test_errorWhileConnecting(self):
        """
        An ERR in answer to our HELLO is a refusal too (no tight loop).
        """
        self.link.start()
        self.socket.receive(protocol.encode(protocol.ERROR, {"code": protocol.E_TOO_LARGE, "msg": "big"}))
        self.assertIsInstance(self.link.lastError, errors.TooLarge)
        self.clock.advance(4.9)
        self.assertEqual(len(self.factory.sockets), 1)
        self.stopAndCheck()

    def test_rejectWhileConnected(self):
        """
        A REJECT on a live session ends it ('rejected') and waits rejectDelay.
        """
        self.connect()
        self.reject(self.socket)
        self.assertEqual(self.owner.downs, [(self.link, "rejected")])
        self.assertEqual(self.link.state, WAITING)
        self.clock.advance(4.9)
        self.assertEqual(len(self.factory.sockets), 1)
        self.stopAndCheck()


class SessionTests(LinkTestCase):
    """
    A live session: heartbeats, silence, goodbyes and restarts upstream.
    """

    def test_stallIsNotSilence(self):
        """
        A tick far later than scheduled (this process was starved) does not count against the upstream.
        """
        self.connect()
        self.clock.advance(0.5)
        self.clock.advance(2.5)
        self.assertEqual(self.owner.downs, [])
        self.assertEqual(self.link.counters["stalls"], 1)
        self.clock.pump([0.5] * 7)
        self.assertEqual(self.owner.downs, [(self.link, "heartbeat-timeout")])

    def test_longStallStartsAFreshSession(self):
        """
        After a stall longer than the upstream's liveness window (it has
        ended our session and failed what it had sent us), the link drops
        its socket, with whatever waits in it, and says HELLO again at once
        on a new one.
        """
        first = self.connect()
        self.clock.advance(0.5)
        self.clock.advance(5.0)
        self.assertEqual(self.owner.downs, [(self.link, "stalled")])
        self.assertTrue(first.closed)
        self.clock.advance(0)
        fresh = self.factory.sockets[-1]
        self.assertIsNot(fresh, first)
        self.assertEqual([m.type for m in fresh.messages()], [protocol.HELLO])

    def test_queuedMessageReadBeforeGivingUp(self):
        """
        Before giving the upstream up, the link reads what its socket holds.
        """
        socket = self.connect()
        socket.doRead = lambda: socket.receive(protocol.encode(protocol.HEARTBEAT, {}))
        self.clock.pump([0.5] * 10)
        self.assertEqual(self.owner.downs, [])

    def test_drainingUpstream(self):
        """
        HB with drain marks the link draining and tells the owner; a new session clears it.
        """
        drained = []
        self.owner.linkDraining = drained.append
        socket = self.connect()
        socket.receive(protocol.encode(protocol.HEARTBEAT, {"drain": True}))
        self.assertTrue(self.link.draining)
        self.assertEqual(drained, [self.link])
        socket.receive(protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.clock.advance(10)
        self.factory.sockets[-1].receive(welcomeFrames())
        self.assertFalse(self.link.draining)

    def test_heartbeatsSent(self):
        """
        An idle link sends a heartbeat about every heartbeat interval.
        """
        sock = self.connect()
        sock.clear()
        for _ in range(4):
            self.clock.advance(0.5)
            sock.receive(protocol.encode(protocol.HEARTBEAT, {}))
        self.assertEqual(len(sock.ofType(protocol.HEARTBEAT)), 2)
        self.assertEqual(self.owner.received, [])
        self.stopAndCheck()

    def test_silenceDropsAndReconnects(self):
        """
        Silence for heartbeat * liveness: linkDown('heartbeat-timeout'), then a new socket and HELLO.
        """
        first = self.connect()
        self.clock.pump([0.5] * 6)
        self.assertEqual(self.owner.downs, [])
        self.clock.advance(0.5)
        self.assertEqual(self.owner.downs, [(self.link, "heartbeat-timeout")])
        self.assertEqual(self.link.state, WAITING)
        self.assertTrue(first.closed)
        self.clock.advance(self.retryDelay)
        self.assertEqual(len(self.factory.sockets), 2)
        self.assertEqual(self.socket.messages()[0].type, protocol.HELLO)
        self.socket.receive(welcomeFrames())
        self.assertEqual(self.owner.ups, [self.link, self.link])
        self.stopAndCheck()

    def test_helloFirstRehellos(self):
        """
        ERR hello-first on a live session (upstream restarted) re-hellos at once.
        """
        self.connect()
        self.socket.receive(protocol.encode(protocol.ERROR, {"code": protocol.E_HELLO_FIRST, "msg": "?"}))
        self.assertEqual(self.owner.downs, [(self.link, "upstream-restarted")])
        self.clock.advance(0)
        self.assertEqual(len(self.factory.sockets), 2)
        self.assertEqual(self.socket.messages()[0].type, protocol.HELLO)
        self.stopAndCheck()

    def test_byeReconnects(self):
        """
        BYE from upstream ends the session and a reconnect follows.
        """
        self.connect()
        self.socket.receive(protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.assertEqual(self.owner.downs, [(self.link, "bye")])
        self.clock.advance(self.retryDelay)
        self.assertEqual(self.link.state, CONNECTING)
        self.stopAndCheck()

    def test_messagesToOwner(self):
        """
        Other messages go to the owner; its ProtocolErrors are counted, not raised.
        """
        sock = self.connect()
        sock.receive(protocol.encode(protocol.REPLY, {"id": 1}, b"x"))
        self.owner.messageError = protocol.ProtocolError(protocol.E_BAD_MESSAGE, "bad")
        sock.receive(protocol.encode(protocol.REPLY, {"id": 2}, b"y"))
        sock.receive([b"not", b"a message"])
        self.assertEqual([m.header["id"] for _, m in self.owner.received], [1, 2])
        self.assertEqual(self.link.counters["malformed"], 2)
        self.assertTrue(self.link.alive)
        self.stopAndCheck()

    def test_errorsOtherThanHelloFirst(self):
        """
        An ERR answering a request goes to the owner and keeps the session.
        """
        sock = self.connect()
        sock.receive(protocol.encode(protocol.ERROR, {"id": 4, "code": protocol.E_NO_ROUTE}))
        self.assertEqual(len(self.owner.received), 1)
        self.assertTrue(self.link.alive)
        self.stopAndCheck()

    def test_stopWhileConnected(self):
        """
        stop() says BYE, tells the owner 'shutdown' and cancels every timer.
        """
        sock = self.connect()
        self.stopAndCheck()
        self.assertEqual(sock.sent[-1][1], protocol.BYE)
        self.assertEqual(self.owner.downs, [(self.link, "shutdown")])

    def test_stopWhileWaiting(self):
        """
        stop() while waiting to retry cancels the retry.
        """
        self.link.start()
        self.clock.advance(self.config.helloTimeout)
        self.assertEqual(self.link.state, WAITING)
        self.stopAndCheck()
        self.clock.advance(100)
        self.assertEqual(len(self.factory.sockets), 1)
        self.assertEqual(self.owner.downs, [])


class BackoffTests(LinkTestCase):
    """
    The default retry policy: exponential backoff with a ceiling.
    """

    retryDelay = None
    settings = {"reconnectInitial": 0.5, "reconnectMax": 4.0, "helloTimeout": 1.0}

    def test_backoffBounded(self):
        """
        Attempts against a silent upstream space out, but never beyond reconnectMax (plus jitter).
        """
        self.link.start()
        starts = [0.0]
        count = 1
        for _ in range(600):
            self.clock.advance(0.1)
            if len(self.factory.sockets) != count:
                count = len(self.factory.sockets)
                starts.append(self.clock.seconds())
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        self.assertGreater(len(gaps), 5)
        self.assertGreater(gaps[-1], gaps[0])
        for gap in gaps:
            self.assertLessEqual(gap, 1.0 + 4.0 + 1.0 + 0.2)
        self.stopAndCheck()


class WhenUpTests(LinkTestCase):
    """
    L{UpstreamLink.whenUp}: wait for a session, with a deadline.
    """

    def test_alreadyUp(self):
        """
        whenUp() on a connected link fires at once with it.
        """
        self.connect()
        self.assertIs(self.successResultOf(self.link.whenUp(1.0)), self.link)
        self.stopAndCheck()

    def test_firesOnWelcome(self):
        """
        whenUp() fires when WELCOME arrives, and its timer is cancelled.
        """
        self.link.start()
        d = self.link.whenUp(10.0)
        self.assertNoResult(d)
        self.socket.receive(welcomeFrames())
        self.assertIs(self.successResultOf(d), self.link)
        self.stopAndCheck()

    def test_timeout(self):
        """
        whenUp() fails with RequestTimeout when no session comes in time.
        """
        self.link.start()
        d = self.link.whenUp(2.0)
        self.clock.advance(2.0)
        self.failureResultOf(d, errors.RequestTimeout)
        self.assertEqual(self.link._waiters, [])
        self.stopAndCheck()

    def test_cancel(self):
        """
        Cancelling whenUp() forgets the waiter and its timer.
        """
        self.link.start()
        d = self.link.whenUp(20.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.link._waiters, [])
        self.stopAndCheck()

    def test_stopFailsWaiters(self):
        """
        stop() fails pending whenUp() Deferreds with ShuttingDown.
        """
        self.link.start()
        d = self.link.whenUp(20.0)
        self.stopAndCheck()
        self.failureResultOf(d, errors.ShuttingDown)


class BackoffPolicyTests(SynchronousTestCase):
    """
    The default reconnect policy.
    """

    def test_growsAndStaysWithinMaximum(self):
        """
        Delays double from the initial one, never exceed the maximum, and
        jitter only scales them down (to half at most).
        """
        from zmqrelay.edge.link import backoffPolicy

        high = backoffPolicy(0.25, 4.0, jitter=lambda: 0.999999)
        low = backoffPolicy(0.25, 4.0, jitter=lambda: 0.0)
        self.assertAlmostEqual(high(1), 0.25, places=5)
        self.assertAlmostEqual(high(2), 0.5, places=5)
        self.assertAlmostEqual(low(2), 0.25, places=5)
        self.assertAlmostEqual(high(100), 4.0, places=5)
        self.assertAlmostEqual(low(10**6), 2.0, places=5)


class UnreadableFromUpstreamTests(LinkTestCase):
    """
    A REQ or MSG from the upstream that the owner cannot read is answered; one it does not take is not.
    """

    def test_badRequestAnswered(self):
        """
        The owner finds a REQ malformed: ERR bad-message with its id goes back up.
        """
        socket = self.connect()
        self.owner.messageError = protocol.ProtocolError(protocol.E_BAD_MESSAGE, "no creq")
        socket.receive(protocol.encode(protocol.REQUEST, {"id": 9}))
        [error] = [m for m in socket.messages() if m.type == protocol.ERROR]
        self.assertEqual((error.header["id"], error.header["code"]), (9, protocol.E_BAD_MESSAGE))
        self.stopAndCheck()

    def test_unexpectedTypeOnlyCounted(self):
        """
        A known type the owner does not take from upstream (a REQ at a client) is counted, not answered.
        """
        socket = self.connect()
        self.owner.messageError = protocol.ProtocolError(protocol.E_UNKNOWN_TYPE, "unexpected REQ")
        socket.receive(protocol.encode(protocol.REQUEST, {"id": 9}))
        self.assertEqual([m for m in socket.messages() if m.type == protocol.ERROR], [])
        self.assertEqual(self.link.counters["malformed"], 1)
        self.stopAndCheck()
