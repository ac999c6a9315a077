"""
Tests for L{zmqrelay.roles.client}: how a request's attempts move between paths.

The client role's everyday behaviour is tested in L{tests.test_roles}; here,
the request and its attempts when more than one path is up.
"""

from twisted.internet.defer import CancelledError

from zmqrelay.core import errors, protocol
from zmqrelay.roles.client import Client

from tests.fakes import welcomeFrames
from tests.test_roles import RoleTestCase


class AttemptsOnTwoPathsTests(RoleTestCase):
    """
    A client attached through a proxy and the cloud.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(
            self.config("c1", requestTimeout=0.5, attempts=3),
            cloud="inproc://cloud", proxy="inproc://proxy",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.start(self.client)
        self.cloud, self.proxy = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))
        self.proxy.receive(welcomeFrames("proxy1", role="proxy"))

    def moveToTheCloud(self):
        """
        Send a request, which goes by the proxy; the proxy says no-route, so
        it goes on by the cloud.

        @return: the request's Deferred and the id both attempts used.
        """
        d = self.client.request("echo", b"q")
        [first] = self.proxy.ofType(protocol.REQUEST)
        rid = first.header["id"]
        self.proxy.receive(protocol.encode(
            protocol.ERROR, {"id": rid, "code": protocol.E_NO_ROUTE, "msg": "not here"}))
        self.clock.advance(0)
        [second] = self.cloud.ofType(protocol.REQUEST)
        self.assertEqual(second.header["id"], rid)
        return d, rid

    def test_replyFromAnEarlierPath(self):
        """
        A reply that comes by a path the request has left still answers it,
        and the attempt waiting on the other path is forgotten.
        """
        d, rid = self.moveToTheCloud()
        self.proxy.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")
        self.assertEqual(len(self.client.calls), 0)
        # The cloud's answer, when it comes, is late.
        late = self.client.calls.late
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"again"))
        self.assertEqual(self.client.calls.late, late + 1)
        # Counted where operations see it.
        self.assertEqual(self.client.stats()["calls.late"], late + 1)

    def test_errorFromAnEarlierPath(self):
        """
        An error that comes by a path the request has left does not settle
        it: the attempt on the other path goes on.
        """
        d, rid = self.moveToTheCloud()
        self.proxy.receive(protocol.encode(
            protocol.ERROR, {"id": rid, "code": protocol.E_TARGET_LOST, "msg": "gone"}))
        self.assertNoResult(d)
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")

    def test_serverTimeoutIsFinal(self):
        """
        A server's ERR timeout (it names the server: its handler did not finish by the deadline)
        ends the request: the server keeps that answer for the request id, so a retry would fetch
        it again. A relay's ERR timeout (no C{server}) is retried as before.
        """
        d = self.client.request("echo", b"q")
        [first] = self.proxy.ofType(protocol.REQUEST)
        self.proxy.receive(protocol.encode(protocol.ERROR, {
            "id": first.header["id"], "code": protocol.E_TIMEOUT, "msg": "handler too slow",
            "server": "s1", "sinc": "s1-inc"}))
        self.failureResultOf(d, errors.RequestTimeout)
        self.assertEqual(len(self.proxy.ofType(protocol.REQUEST)), 1)
        d = self.client.request("echo", b"q")
        [_, second] = self.proxy.ofType(protocol.REQUEST)
        self.proxy.receive(protocol.encode(protocol.ERROR, {
            "id": second.header["id"], "code": protocol.E_TIMEOUT, "msg": "deadline passed before forwarding"}))
        self.clock.advance(0.05)
        self.assertNoResult(d)
        self.assertEqual(len(self.proxy.ofType(protocol.REQUEST)) + len(self.cloud.ofType(protocol.REQUEST)), 3)
        self.clock.advance(1)
        self.failureResultOf(d, errors.RelayError)

    def test_takenTargetIsNotUnknown(self):
        """
        A target one path took (it answered target-lost, then went down) is not called unknown at
        the deadline because the path still up says no-route: Unavailable, not NoRoute.
        """
        cloud, proxy = self.cloud, self.proxy
        d = self.client.request("echo", b"q")
        [first] = proxy.ofType(protocol.REQUEST)
        proxy.receive(protocol.encode(protocol.ERROR, {
            "id": first.header["id"], "code": protocol.E_NO_ROUTE, "msg": "not here"}))
        [second] = cloud.ofType(protocol.REQUEST)
        cloud.receive(protocol.encode(protocol.ERROR, {
            "id": second.header["id"], "code": protocol.E_TARGET_LOST, "msg": "server died"}))
        cloud.receive(protocol.encode(protocol.BYE, {}))
        self.clock.advance(0.5)
        self.failureResultOf(d, errors.Unavailable)

    def test_requestForgottenHoweverItEnds(self):
        """
        A request the client tracks is forgotten once it is answered, fails,
        or is cancelled.
        """
        answered, rid = self.moveToTheCloud()
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a"))
        self.successResultOf(answered)
        refused = self.client.request("x" * 10, b"q" * (8 * 1024 * 1024))
        self.failureResultOf(refused, errors.TooLarge)
        cancelled = self.client.request("echo", b"q")
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertEqual(self.client._attempts, {})
        self.assertEqual(len(self.client.calls), 0)


class DuplicateMessageTests(RoleTestCase):
    """
    A directed message (MSG) that comes twice, through two cloud nodes,
    after the first died with it in flight (PROTOCOL.md 21.4), is
    acknowledged each time and handed to the application once.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(
            self.config("c1"), cloud="inproc://cloud", proxy="inproc://proxy",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.got = []
        self.client.messageHandler = lambda sender, payload: self.got.append((sender, payload))
        self.start(self.client)
        self.cloud, self.proxy = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))
        self.proxy.receive(welcomeFrames("proxy1", role="proxy"))

    def message(self, link, rid, payload, **fields):
        header = {"id": rid, "to": "c1", "from": "s1"}
        header.update(fields)
        link.receive(protocol.encode(protocol.MESSAGE, header, payload))

    def acks(self, link):
        return [m.header["id"] for m in link.ofType(protocol.REPLY)]

    def test_onceToTheApplication(self):
        """
        The same C{from} and C{mid} twice (each hop's C{id} differs): two
        acknowledgements, one delivery, one duplicate counted.
        """
        self.message(self.cloud, 7, b"hello", mid="inc1/3")
        self.message(self.proxy, 90, b"hello", mid="inc1/3")
        self.assertEqual(self.got, [("s1", b"hello")])
        self.assertEqual(self.acks(self.cloud), [7])
        self.assertEqual(self.acks(self.proxy), [90])
        self.assertEqual(self.client.counters["duplicate-messages"], 1)
        self.assertEqual(self.client.counters["messages"], 1)

    def test_otherServerOrIncarnation(self):
        """
        Another server, or another incarnation of the same one, with the
        same number is another message.
        """
        self.message(self.cloud, 1, b"a", mid="inc1/3")
        self.message(self.cloud, 2, b"b", mid="inc2/3")
        self.message(self.cloud, 3, b"c", mid="inc1/3", **{"from": "s2"})
        self.assertEqual([p for _, p in self.got], [b"a", b"b", b"c"])

    def test_withoutMid(self):
        """
        A MSG without C{mid} (a server of an older release) is handed on
        every time it comes, as before.
        """
        self.message(self.cloud, 1, b"a")
        self.message(self.cloud, 2, b"a")
        self.assertEqual(len(self.got), 2)

    def test_badMid(self):
        """
        A C{mid} that is not a string is refused (ERR bad-message) and not
        handed on.
        """
        self.message(self.cloud, 4, b"a", mid=12)
        self.assertEqual(self.got, [])
        [err] = self.cloud.ofType(protocol.ERROR)
        self.assertEqual((err.header["id"], err.header["code"]), (4, protocol.E_BAD_MESSAGE))

    def test_memoryBounded(self):
        """
        Only the last C{MESSAGE_MEMORY} are remembered; an overlong C{mid}
        is never remembered.
        """
        from zmqrelay.roles import client as clientModule

        self.patch(clientModule, "MESSAGE_MEMORY", 3)
        for n in range(5):
            self.message(self.cloud, n, b"x", mid=f"i/{n}")
        self.assertEqual(len(self.client._messages), 3)
        self.message(self.cloud, 10, b"x", mid="i/0")
        self.assertEqual(len(self.got), 6)
        long = "i/" + "9" * 300
        self.message(self.cloud, 11, b"y", mid=long)
        self.message(self.cloud, 12, b"y", mid=long)
        self.assertEqual(len(self.got), 8)


class InFlightWindowTests(RoleTestCase):
    """
    A client keeps at most the C{inflight} its attach node announced in
    WELCOME in flight through it (PROTOCOL.md 10.6); the rest wait in the
    client, within their deadlines, instead of being refused at the node
    (where each refusal is a strike).
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(
            self.config("c1", requestTimeout=1.0, attempts=1),
            cloud="inproc://cloud", proxy="inproc://proxy",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.start(self.client)
        self.cloud, self.proxy = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))
        self.proxy.receive(welcomeFrames("proxy1", role="proxy", inflight=2))

    def sent(self, link):
        return [m.header["id"] for m in link.ofType(protocol.REQUEST)]

    def request(self, *args, **kw):
        """
        C{self.client.request}; a request a test does not look at may end
        any way (when the client stops, if not before), and that is expected.
        """
        d = self.client.request("echo", b"q", *args, **kw)
        self.addCleanup(d.addErrback, lambda f: f.trap(errors.RelayError, CancelledError))
        return d

    def reply(self, link, rid):
        link.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a%d" % rid))

    def test_staysWithinInflight(self):
        """
        Four requests through a proxy that allows two: two are sent, and
        each answer lets one more go; all four are answered.
        """
        ds = [self.request() for _ in range(4)]
        self.assertEqual(len(self.sent(self.proxy)), 2)
        self.assertEqual(self.sent(self.cloud), [])
        self.assertEqual(self.client.counters["waited-for-room"], 2)
        first, second = self.sent(self.proxy)
        self.reply(self.proxy, first)
        self.assertEqual(len(self.sent(self.proxy)), 3)
        self.reply(self.proxy, second)
        rest = self.sent(self.proxy)[2:]
        self.assertEqual(len(rest), 2)
        for rid in rest:
            self.reply(self.proxy, rid)
        self.assertEqual(
            sorted(self.successResultOf(d) for d in ds),
            sorted(b"a%d" % rid for rid in self.sent(self.proxy)),
        )
        self.assertEqual(self.client.calls.outstanding(self.client.links[1]), 0)

    def test_errorsAndTimeoutsMakeRoomToo(self):
        """
        An attempt that ends with an error or a timeout frees its place as
        an answer does.
        """
        ds = [self.request(timeout=0.5) for _ in range(3)]
        first, second = self.sent(self.proxy)
        self.proxy.receive(protocol.encode(
            protocol.ERROR, {"id": first, "code": protocol.E_HANDLER, "msg": "no"}))
        self.failureResultOf(ds[0], errors.RelayError)
        self.assertEqual(len(self.sent(self.proxy)), 3)
        self.clock.advance(0.5)
        for d in ds[1:]:
            self.failureResultOf(d, errors.RequestTimeout)
        self.assertEqual(self.client._roomWaiters, {})

    def test_waitedTheWholeTimeout(self):
        """
        A request that found no room for its whole timeout fails with
        over-limit, saying so: it was never sent, so it did not run.
        """
        held = [self.request(timeout=10.0) for _ in range(2)]
        late = self.request(timeout=0.5)
        self.clock.advance(0.5)
        failure = self.failureResultOf(late, errors.OverLimit)
        self.assertIn("2 requests already in flight through proxy1", str(failure.value))
        self.assertEqual(len(self.sent(self.proxy)), 2)
        self.assertEqual(self.client._roomWaiters, {})
        for d in held:
            self.assertNoResult(d)

    def test_cancelWhileWaiting(self):
        """
        A request cancelled while it waits for room is forgotten: the room
        that frees later goes to nobody.
        """
        held = [self.request() for _ in range(2)]
        waiting = self.request()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(self.client._roomWaiters, {})
        self.reply(self.proxy, self.sent(self.proxy)[0])
        self.assertEqual(len(self.sent(self.proxy)), 2)
        self.successResultOf(held[0])

    def test_failFastDoesNotWait(self):
        """
        A fail-fast request finds the node full: over-limit at once.
        """
        for _ in range(2):
            self.request()
        d = self.request(failFast=True)
        self.failureResultOf(d, errors.OverLimit)
        self.assertEqual(len(self.sent(self.proxy)), 2)

    def test_linkDownWakesThoseWaiting(self):
        """
        When the full path goes, those waiting for room there take another.
        """
        for _ in range(2):
            self.request(timeout=5.0)
        waiting = self.request(timeout=5.0)
        self.assertEqual(self.sent(self.cloud), [])
        self.proxy.receive(protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.clock.advance(0)
        # The two it had taken come back to be retried; the one that waited
        # goes too, first.
        self.assertEqual(len(self.sent(self.cloud)), 3)
        [rid] = set(self.sent(self.cloud)) - set(self.sent(self.proxy))
        self.assertEqual(self.sent(self.cloud)[0], rid)
        self.reply(self.cloud, rid)
        self.assertEqual(self.successResultOf(waiting), b"a%d" % rid)

    def test_noPathAfterWaitingIsNotOverLimit(self):
        """
        A request that waited for room, and then lost every path, ends as
        one with no path does, not as one that found no room.
        """
        for _ in range(2):
            self.request(timeout=0.5)
        waiting = self.request(timeout=0.5)
        self.cloud.receive(protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.proxy.receive(protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.clock.advance(0.5)
        self.failureResultOf(waiting, errors.NotConnected)


class RequestContractTests(RoleTestCase):
    """
    What C{Client.request} promises about its arguments, its attempts and how it fails
    (L{zmqrelay.interfaces.IClient.request}, README.md "Writing a client").
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(
            self.config("c1", requestTimeout=2.0, attempts=3),
            cloud="inproc://cloud", servers=["inproc://a1"],
            reactor=self.clock, socketFactory=self.factory,
        )
        self.start(self.client)
        self.cloud, self.direct = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))

    def test_badArguments(self):
        """
        A target that is not str or a payload that is not bytes fails with TypeError; a timeout
        that is not positive or attempts below 1 with ValueError (not silently the defaults).
        """
        self.failureResultOf(self.client.request(b"echo", b"q"), TypeError)
        self.failureResultOf(self.client.request("echo", "q"), TypeError)
        for kw in ({"timeout": 0}, {"timeout": -1.0}, {"timeout": "1"}, {"timeout": float("inf")},
                   {"timeout": float("nan")}, {"timeout": True}, {"attempts": 0}, {"attempts": 1.5}):
            self.failureResultOf(self.client.request("echo", b"q", **kw), ValueError)
        self.assertEqual(self.cloud.ofType(protocol.REQUEST), [])
        self.assertEqual(self.client._attempts, {})

    def test_sysIsKeywordOnly(self):
        """
        The fifth positional argument is C{failFast}, as in L{IClient.request}; C{sys} is given by
        name only.
        """
        d = self.client.request("echo", b"q", 1.0, 1, True)
        d.addErrback(lambda f: None)
        [sent] = self.cloud.ofType(protocol.REQUEST)
        self.assertNotIn("sys", sent.header)
        self.assertIs(sent.header["hold"], False)
        self.assertRaises(TypeError, self.client.request, "echo", b"q", 1.0, 1, False, "ping")

    def test_targetLostBacksOff(self):
        """
        Attempts cut short by target-lost do not use up the attempts (the timeout bounds them), and
        are retried after 0.05 s, 0.1 s, ... at most 0.5 s: never in a tight loop.
        """
        d = self.client.request("echo", b"q")
        times = []
        while not d.called and self.clock.seconds() < 2.0:
            for message in self.cloud.ofType(protocol.REQUEST)[len(times):]:
                times.append(self.clock.seconds())
                self.cloud.receive(protocol.encode(protocol.ERROR, {
                    "id": message.header["id"], "code": protocol.E_TARGET_LOST, "msg": "gone"}))
            self.clock.advance(0.01)
        self.failureResultOf(d, errors.RelayError)
        gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
        for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.4]):
            self.assertLessEqual(abs(gap - expected), 0.011, gaps)
        self.assertTrue(all(gap <= 0.51 for gap in gaps), gaps)
        self.assertGreater(len(times), 3)
        self.assertLess(len(times), 10)

    def test_unknownWhileAPathIsDown(self):
        """
        With the direct path down, a target the cloud does not know is waited for within the
        timeout (the down path might reach it), then fails with NoRoute, not Unavailable.
        """
        d = self.client.request("nobody", b"q")
        [sent] = self.cloud.ofType(protocol.REQUEST)
        self.cloud.receive(protocol.encode(protocol.ERROR, {
            "id": sent.header["id"], "code": protocol.E_NO_ROUTE, "msg": "no such server"}))
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.failureResultOf(d, errors.NoRoute)

    def test_stopEndsWaitsForChange(self):
        """
        Whoever waits for a change of the links (L{Client.whenChanged}) is told when the client
        stops: every link went down with it.
        """
        d = self.client.whenChanged()
        self.assertNoResult(d)
        self.successResultOf(self.client.stopService())
        self.assertIsNone(self.successResultOf(d))

    def test_failFastShutdownUsesAnAttempt(self):
        """
        With failFast (no budget to bound retries), ERR shutdown uses up an attempt: a node that
        keeps saying it is stopping ends the request after its attempts.
        """
        d = self.client.request("echo", b"q", 1.0, 2, True)
        answered = 0
        for _ in range(10):
            requests = self.cloud.ofType(protocol.REQUEST)
            for message in requests[answered:]:
                self.cloud.receive(protocol.encode(protocol.ERROR, {
                    "id": message.header["id"], "code": protocol.E_SHUTDOWN, "msg": "stopping"}))
            answered = len(requests)
            self.clock.advance(0.6)
        self.failureResultOf(d, errors.ShuttingDown)
        self.assertEqual(len(self.cloud.ofType(protocol.REQUEST)), 2)



class RefusedEverywhereTests(RoleTestCase):
    """
    A client every path refuses learns it at once when it waits for a path.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(self.config("mallory"), cloud="inproc://cloud",
                             reactor=self.clock, socketFactory=self.factory)
        self.start(self.client)
        [self.cloud] = self.dealers()

    def test_whenConnectedFailsOnRefusal(self):
        """
        A REJECT auth (a CURVE key bound to another id) fails L{Client.whenConnected} at once with
        that refusal, not with a timeout ten seconds later.
        """
        d = self.client.whenConnected(10.0)
        self.cloud.receive(protocol.encode(protocol.REJECT, {
            "code": protocol.E_AUTH, "msg": "this key is bound to id 'alice', not 'mallory'", "versions": [1]}))
        self.failureResultOf(d, errors.AuthenticationFailed)

    def test_overLimitIsNoRefusal(self):
        """
        A REJECT over-limit (a cooldown) is temporary: the wait goes on.
        """
        d = self.client.whenConnected(10.0)
        d.addErrback(lambda f: None)
        self.cloud.receive(protocol.encode(protocol.REJECT, {
            "code": protocol.E_OVER_LIMIT, "msg": "cooling down", "retry": 2.0, "versions": [1]}))
        self.assertNoResult(d)

    def test_welcomeInAnotherVersionIsARefusal(self):
        """
        A WELCOME naming a version we did not offer is a refusal like a REJECT: the wait fails at once.
        """
        d = self.client.whenConnected(10.0)
        self.cloud.receive(welcomeFrames("cloud", role="cloud", version=9))
        self.failureResultOf(d, errors.VersionMismatch)
