"""
Tests for L{zmqrelay.core.routing}: the route table and the in-flight table.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.routing import AWAY, InFlight, Route, RouteTable


class _Peer:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<_Peer {self.name}>"


class RouteTableTests(SynchronousTestCase):
    """
    L{RouteTable} resolves server ids and service names.
    """

    def setUp(self):
        self.table = RouteTable()
        self.p1 = _Peer("p1")
        self.p2 = _Peer("p2")

    def test_serverId(self):
        """
        A server id resolves to its route.
        """
        self.table.add(Route("s1", self.p1, "i1", ["echo"]))
        route = self.table.resolve("s1")
        self.assertEqual((route.serverId, route.peer, route.incarnation), ("s1", self.p1, "i1"))
        self.assertEqual(route.services, ("echo",))
        self.assertIs(self.table.get("s1"), route)
        self.assertEqual(len(self.table), 1)

    def test_unknown(self):
        """
        An unknown target resolves to None; get() does not look at services.
        """
        self.table.add(Route("s1", self.p1, "i1", ["echo"]))
        self.assertIsNone(self.table.resolve("nothing"))
        self.assertIsNone(self.table.get("echo"))

    def test_serverIdWinsOverService(self):
        """
        A target naming both a server id and a service goes to that server.
        """
        self.table.add(Route("a", self.p1, "i1", ["x"]))
        self.table.add(Route("x", self.p2, "i2", []))
        for _ in range(3):
            self.assertEqual(self.table.resolve("x").serverId, "x")

    def test_roundRobin(self):
        """
        Requests for a service rotate over every server that offers it.
        """
        for sid in ("s1", "s2", "s3"):
            self.table.add(Route(sid, self.p1, "i", ["echo"]))
        got = [self.table.resolve("echo").serverId for _ in range(6)]
        self.assertEqual(sorted(got[:3]), ["s1", "s2", "s3"])
        self.assertEqual(got[3:], got[:3])

    def test_replaceRoute(self):
        """
        Adding a server again replaces its route and its services.
        """
        self.table.add(Route("s1", self.p1, "i1", ["old"]))
        self.table.add(Route("s1", self.p2, "i2", ["new"]))
        self.assertIsNone(self.table.resolve("old"))
        self.assertIs(self.table.resolve("new").peer, self.p2)
        self.assertEqual(len(self.table), 1)

    def test_remove(self):
        """
        remove() forgets a server and its services; removing twice is harmless.
        """
        self.table.add(Route("s1", self.p1, "i1", ["echo"]))
        self.table.add(Route("s2", self.p1, "i2", ["echo"]))
        self.assertEqual(self.table.remove("s1").serverId, "s1")
        self.assertIsNone(self.table.remove("s1"))
        self.assertEqual({self.table.resolve("echo").serverId for _ in range(3)}, {"s2"})
        self.table.remove("s2")
        self.assertIsNone(self.table.resolve("echo"))

    def test_removePeer(self):
        """
        removePeer() forgets every server behind that peer and no other.
        """
        self.table.add(Route("s1", self.p1, "i", ["echo"]))
        self.table.add(Route("s2", self.p1, "i", ["echo"]))
        self.table.add(Route("s3", self.p2, "i", ["echo"]))
        gone = self.table.removePeer(self.p1)
        self.assertEqual(sorted(r.serverId for r in gone), ["s1", "s2"])
        self.assertEqual(list(self.table.servers()), ["s3"])
        self.assertEqual({self.table.resolve("echo").serverId for _ in range(3)}, {"s3"})
        self.assertEqual(self.table.removePeer(self.p1), [])


class InFlightTests(SynchronousTestCase):
    """
    L{InFlight} remembers forwarded requests.
    """

    def setUp(self):
        self.table = InFlight()
        self.client = _Peer("client")
        self.server = _Peer("server")
        self.other = _Peer("other")

    def test_forwardIds(self):
        """
        Each request gets a fresh forward id and keeps what it was given.
        """
        a = self.table.add(self.client, 7, self.server, 10.0, "ctx")
        b = self.table.add(self.client, 7, self.server, 10.0)
        self.assertNotEqual(a.forwardId, b.forwardId)
        self.assertEqual(
            (a.origin, a.originId, a.target, a.deadline, a.context),
            (self.client, 7, self.server, 10.0, "ctx"),
        )
        self.assertEqual(len(self.table), 2)

    def test_popFromTarget(self):
        """
        The answer from the request's target pops it, once.
        """
        pending = self.table.add(self.client, 1, self.server, 10.0)
        self.assertIs(self.table.pop(pending.forwardId, self.server), pending)
        self.assertIsNone(self.table.pop(pending.forwardId, self.server))
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.countFrom(self.client), 0)

    def test_popChecksPeer(self):
        """
        An answer from another peer does not pop the request.
        """
        pending = self.table.add(self.client, 1, self.server, 10.0)
        self.assertIsNone(self.table.pop(pending.forwardId, self.other))
        self.assertIsNone(self.table.pop(pending.forwardId, self.client))
        self.assertIs(self.table.pop(pending.forwardId), pending)

    def test_popUnknown(self):
        """
        Popping an unknown id gives None.
        """
        self.assertIsNone(self.table.pop(999))

    def test_dropPeerReturnsRequestsToIt(self):
        """
        dropPeer() returns the requests that went to the peer and forgets those from it.
        """
        toServer = self.table.add(self.client, 1, self.server, 10.0)
        fromServer = self.table.add(self.server, 2, self.client, 10.0)
        unrelated = self.table.add(self.other, 3, self.client, 10.0)
        lost = self.table.dropPeer(self.server)
        self.assertEqual(lost, [toServer])
        self.assertIsNone(self.table.pop(fromServer.forwardId))
        self.assertEqual(len(self.table), 1)
        self.assertIs(self.table.pop(unrelated.forwardId, self.client), unrelated)
        self.assertEqual(self.table.countFrom(self.client), 0)
        self.assertEqual(self.table.dropPeer(self.server), [])

    def test_expire(self):
        """
        expire() forgets exactly the requests whose deadline passed.
        """
        early = self.table.add(self.client, 1, self.server, 5.0)
        late = self.table.add(self.client, 2, self.server, 10.0)
        self.assertEqual(self.table.expire(4.9), [])
        self.assertEqual(self.table.expire(5.0), [early])
        self.assertEqual(len(self.table), 1)
        self.assertEqual(self.table.countFrom(self.client), 1)
        self.assertEqual(self.table.expire(20.0), [late])
        self.assertEqual(self.table.countFrom(self.server), 0)

    def test_limit(self):
        """
        A full table refuses new requests until one is answered.
        """
        table = InFlight(limit=2)
        first = table.add(self.client, 1, self.server, 10.0)
        table.add(self.client, 2, self.server, 10.0)
        self.assertIsNone(table.add(self.client, 3, self.server, 10.0))
        table.pop(first.forwardId)
        self.assertIsNotNone(table.add(self.client, 3, self.server, 10.0))

    def test_countFrom(self):
        """
        countFrom() counts a peer's requests still in flight.
        """
        self.assertEqual(self.table.countFrom(self.client), 0)
        pendings = [self.table.add(self.client, i, self.server, 10.0) for i in range(3)]
        self.table.add(self.other, 9, self.server, 10.0)
        self.assertEqual(self.table.countFrom(self.client), 3)
        self.table.pop(pendings[0].forwardId)
        self.assertEqual(self.table.countFrom(self.client), 2)
        self.assertEqual(self.table.countFrom(self.other), 1)

    def test_countFromIgnoresRequestsToThePeer(self):
        """
        countFrom() counts only what the peer sent: messages to it awaiting its answer are not in its budget.
        """
        asked = self.table.add(self.client, 1, self.server, 10.0)
        toClient = [self.table.add(self.server, i, self.client, 10.0) for i in range(3)]
        self.assertEqual(self.table.countFrom(self.client), 1)
        self.assertEqual(self.table.countFrom(self.server), 3)
        self.table.pop(toClient[0].forwardId, self.client)
        self.assertEqual(self.table.countFrom(self.server), 2)
        self.table.expire(20.0)
        self.assertEqual((self.table.countFrom(self.client), self.table.countFrom(self.server)), (0, 0))
        self.assertIsNone(self.table.pop(asked.forwardId))
        self.table.add(self.client, 2, self.server, 10.0)
        self.table.add(self.server, 5, self.client, 10.0)
        self.table.dropPeer(self.server)
        self.assertEqual((self.table.countFrom(self.client), self.table.countFrom(self.server)), (0, 0))

    def test_clear(self):
        """
        clear() returns and forgets everything.
        """
        self.table.add(self.client, 1, self.server, 10.0)
        self.assertEqual(len(self.table.clear()), 1)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(self.table.countFrom(self.client), 0)


class StickyChoiceTests(SynchronousTestCase):
    """
    L{RouteTable.choose}: a request's retries go to the server that took it
    while that server lives.
    """

    def setUp(self):
        self.table = RouteTable(stickyLimit=3)
        self.peer = _Peer("p")
        for sid in ("a1", "a2"):
            self.table.add(Route(sid, self.peer, sid + "-inc", ["echo"]))

    def test_retrySticks(self):
        """
        The same request key gets the same server however often round-robin moves on.
        """
        key = ("c1", "i1", 7)
        first = self.table.choose("echo", key, 0.0, 10.0)
        others = [self.table.choose("echo", ("c1", "i1", n), 0.0, 10.0).serverId for n in range(2)]
        self.assertEqual(set(others), {"a1", "a2"})
        for _ in range(3):
            self.assertIs(self.table.choose("echo", key, 1.0, 10.0), first)

    def test_lostServerMakesRetryWait(self):
        """
        A server lost without a goodbye may still run what it took: its requests get AWAY, not another server.
        """
        key = ("c1", "i1", 7)
        chosen = self.table.choose("echo", key, 0.0, 10.0).serverId
        self.table.remove(chosen, clean=False)
        self.assertIs(self.table.choose("echo", key, 1.0, 10.0), AWAY)
        self.assertIs(self.table.choose("echo", ("c9", "i9", 1), 1.0, 10.0, prefer=chosen), AWAY)
        self.assertNotEqual(self.table.choose("echo", ("c1", "i1", 8), 1.0, 10.0).serverId, chosen)

    def test_sameIncarnationBackServesRetry(self):
        """
        The server back with the same incarnation (it was frozen) gets the retry.
        """
        key = ("c1", "i1", 7)
        chosen = self.table.choose("echo", key, 0.0, 10.0).serverId
        self.table.remove(chosen, clean=False)
        self.table.add(Route(chosen, self.peer, chosen + "-inc", ["echo"]))
        self.assertEqual(self.table.choose("echo", key, 1.0, 10.0).serverId, chosen)

    def test_newIncarnationFreesRetry(self):
        """
        The server back with a new incarnation lost what it took: the retry may go anywhere.
        """
        key = ("c1", "i1", 7)
        chosen = self.table.choose("echo", key, 0.0, 10.0).serverId
        self.table.add(Route(chosen, self.peer, "new", ["echo"]))
        self.assertIsInstance(self.table.choose("echo", key, 1.0, 10.0), Route)

    def test_goodbyeFreesRetry(self):
        """
        After a clean goodbye (it answered all it took) the retry goes to another server.
        """
        key = ("c1", "i1", 7)
        chosen = self.table.choose("echo", key, 0.0, 10.0).serverId
        self.table.remove(chosen, clean=True)
        route = self.table.choose("echo", key, 1.0, 10.0)
        self.assertNotEqual(route.serverId, chosen)

    def test_preferNamedServer(self):
        """
        A server named by the client or the upstream relay (prefer) is chosen and remembered.
        """
        key = ("c1", "i1", 7)
        self.assertEqual(self.table.choose("echo", key, 0.0, 10.0, prefer="a2").serverId, "a2")
        self.assertEqual(self.table.choose("echo", key, 0.0, 10.0, prefer="a1").serverId, "a2")
        self.assertEqual(
            self.table.choose("echo", ("c", "i", 1), 0.0, 10.0, prefer="a2", preferInc="old").serverId,
            "a1",
        )

    def test_drainingSkippedForNewButNotRetries(self):
        """
        A draining server gets no new request, but the retries of those it took.
        """
        key = ("c1", "i1", 7)
        self.table.choose("echo", key, 0.0, 10.0, prefer="a1")
        self.table.setDraining("a1")
        for n in range(2):
            self.assertEqual(self.table.choose("echo", ("c2", "i", n), 0.0, 10.0).serverId, "a2")
        self.assertEqual(self.table.choose("echo", key, 0.0, 10.0).serverId, "a1")

    def test_entriesExpireAndAreBounded(self):
        """
        Entries end at their deadline, and past the limit the oldest go first, counted.
        """
        sticky = self.table.sticky
        for n in range(5):
            self.table.choose("echo", ("c", "i", n), 0.0, 5.0 + n)
        self.assertEqual(len(sticky), 3)
        self.assertEqual(sticky.evicted, 2)
        self.assertIsNone(sticky.get(("c", "i", 0), 0.0))
        self.assertEqual(self.table.expire(7.5), 1)
        self.assertEqual(len(sticky), 2)
        self.assertIsNone(sticky.get(("c", "i", 3), 8.0))

    def test_knownTargets(self):
        """
        Names once offered stay known after their servers go; others are not.
        """
        self.table.remove("a1", clean=True)
        self.table.remove("a2", clean=True)
        self.assertTrue(self.table.isKnown("echo"))
        self.assertTrue(self.table.isKnown("a1"))
        self.assertFalse(self.table.isKnown("nobody"))
        self.assertIsNone(self.table.choose("echo", ("c", "i", 1), 0.0, 1.0))
