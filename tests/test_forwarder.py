"""
Tests for L{zmqrelay.roles.forwarder}: size and deadline limits, and the
window toward each next hop with its round-robin over client ids.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.roles import hop
from zmqrelay.roles.forwarder import Forwarder


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
        self.assertEqual(header["ttl"], hop.MAX_TTL_MS)
        clock.advance(hop.MAX_TTL_MS / 1000.0)
        forwarder.expire()
        self.assertEqual(len(forwarder.inflight), 0)


class _Hop(_Peer):
    """
    A next hop: a peer of role proxy, remembered by identity.
    """

    role = protocol.PROXY

    def __init__(self, nodeId="down"):
        _Peer.__init__(self)
        self.nodeId = nodeId


class _Client(_Peer):
    def __init__(self, nodeId):
        _Peer.__init__(self)
        self.nodeId = nodeId


class WindowTests(SynchronousTestCase):
    """
    At most a window of requests is outstanding toward a next hop; the rest
    wait, taken round-robin over client ids as answers come back.
    """

    def setUp(self):
        self.clock = Clock()
        self.forwarder = Forwarder(self.clock, NodeConfig("r", forwardWindow=2, maxInFlight=50))
        self.hop = _Hop()
        self.addCleanup(self.forwarder.stop)

    def request(self, origin, rid, ttl=5000):
        message = protocol.Message(1, protocol.REQUEST, {"id": rid, "to": "s", "ttl": ttl}, b"q")
        self.forwarder.forward(origin, message, self.hop, {"client": origin.nodeId})

    def answerFirst(self):
        """
        The next hop answers the oldest request it has.
        """
        msgtype, header, _ = self.hop.sent.pop(0)
        self.forwarder.answer(self.hop, protocol.Message(1, protocol.REPLY, {"id": header["id"]}, b"r"))
        return header

    def test_windowBoundsOutstanding(self):
        """
        Beyond the window nothing more goes to the next hop; requests wait.
        """
        flooder = _Client("flood")
        for rid in range(10):
            self.request(flooder, rid)
        self.assertEqual(len(self.hop.sent), 2)
        self.assertEqual(self.forwarder.waiting(self.hop), 8)
        self.assertEqual(self.forwarder.counters["queued"], 8)

    def test_wellBehavedClientServedNextRound(self):
        """
        A client that sends one request while another has a long queue gets
        it forwarded after at most one more of the flooder's.
        """
        flooder, good = _Client("flood"), _Client("good")
        for rid in range(100):
            self.request(flooder, rid)
        self.request(good, 1000)
        self.answerFirst()
        self.answerFirst()
        forwarded = [h["client"] for _, h, _ in self.hop.sent]
        self.assertEqual(forwarded, ["flood", "good"])

    def test_answersGoBackAndWindowRefills(self):
        """
        Every answer reaches its origin and lets one waiting request go.
        """
        client = _Client("c")
        for rid in range(5):
            self.request(client, rid)
        for _ in range(5):
            self.answerFirst()
        self.assertEqual([h["id"] for _, h, _ in client.sent], [0, 1, 2, 3, 4])
        self.assertEqual(self.forwarder.waiting(), 0)
        self.assertEqual(len(self.hop.sent), 0)

    def test_waitingCountsAsInFlight(self):
        """
        A client's waiting requests count against its in-flight budget.
        """
        client = _Client("c")
        for rid in range(51):
            self.request(client, rid)
        [(msgtype, header, _)] = client.sent
        self.assertEqual((msgtype, header["id"], header["code"]), (protocol.ERROR, 50, protocol.E_OVER_LIMIT))

    def test_waitedTimeComesOffTheTtl(self):
        """
        A request that waited is forwarded with what is left of its time to
        live; one whose deadline passed while it waited is dropped.
        """
        client = _Client("c")
        self.request(client, 1)
        self.request(client, 2)
        self.request(client, 3, ttl=3000)
        self.request(client, 4, ttl=1000)
        self.clock.advance(2.0)
        self.forwarder.expire()
        self.assertEqual(self.forwarder.waiting(), 1)
        self.assertEqual(self.forwarder.counters["queue-expired"], 1)
        self.answerFirst()
        header = self.hop.sent[-1][1]
        self.assertEqual(header["ttl"], 1000)

    def test_nextHopGoneFailsWaiting(self):
        """
        When the next hop goes, what was sent to it fails with target-lost and
        what waited for it with no-route (it was never sent: safe elsewhere).
        """
        client = _Client("c")
        for rid in range(4):
            self.request(client, rid)
        self.forwarder.peerGone(self.hop, "heartbeat-timeout")
        codes = sorted((h["id"], h["code"]) for _, h, _ in client.sent)
        self.assertEqual(codes, [
            (0, protocol.E_TARGET_LOST), (1, protocol.E_TARGET_LOST),
            (2, protocol.E_NO_ROUTE), (3, protocol.E_NO_ROUTE),
        ])
        self.assertEqual(self.forwarder.waiting(), 0)
        self.request(client, 9)
        self.assertEqual(len(self.hop.sent), 3)

    def test_originGoneForgetsItsWaiting(self):
        """
        When a client goes, its waiting requests are forgotten and its
        forwarded ones free their room for the others.
        """
        flooder, good = _Client("flood"), _Client("good")
        for rid in range(10):
            self.request(flooder, rid)
        self.request(good, 1)
        self.forwarder.peerGone(flooder, "bye")
        self.assertEqual([h["client"] for _, h, _ in self.hop.sent[-1:]], ["good"])
        self.assertEqual(self.forwarder.waiting(), 0)

    def test_originGoneFindsItsWaitingUnderAnyKey(self):
        """
        A client's waiting requests are found and forgotten even if some
        waited under another key than its id; the others' stay.
        """
        flooder, good = _Client("flood"), _Client("good")
        for rid in range(40):
            self.request(flooder, rid)
        message = protocol.Message(1, protocol.REQUEST, {"id": 99, "to": "s", "ttl": 5000}, b"q")
        self.forwarder.forward(flooder, message, self.hop, {"client": "someone-else"})
        self.request(good, 1)
        self.assertGreater(self.forwarder.waiting(), 1)
        sent = len(self.hop.sent)
        self.forwarder.peerGone(flooder, "bye")
        # The room the flooder's forwarded requests held goes to the others,
        # never to its own waiting ones.
        self.assertEqual([h["client"] for _, h, _ in self.hop.sent[sent:]], ["good"])
        self.assertEqual(self.forwarder.waiting(), 0)
        self.assertEqual(self.forwarder._waitingFrom, {})

    def test_directedMessagesNotWindowed(self):
        """
        MSGs toward a client are not held by the window (only requests are).
        """
        server, client = _Hop("s1"), _Client("c")
        for rid in range(5):
            message = protocol.Message(1, protocol.MESSAGE, {"id": rid, "to": "c"}, b"m")
            self.forwarder.forward(server, message, client)
        self.assertEqual(len(client.sent), 5)

    def test_noWindow(self):
        """
        With a window of 0, everything is forwarded at once.
        """
        forwarder = Forwarder(self.clock, NodeConfig("r", forwardWindow=0))
        client = _Client("c")
        for rid in range(10):
            message = protocol.Message(1, protocol.REQUEST, {"id": rid, "to": "s"}, b"q")
            forwarder.forward(client, message, self.hop)
        self.assertEqual(len(self.hop.sent), 10)


class InFlightStrikeTests(SynchronousTestCase):
    """
    A refusal for requests in flight is a strike against the client.
    """

    def test_inFlightRefusalStrikes(self):
        """
        Each request refused for the in-flight limit strikes its origin.
        """

        class Striking(_Client):
            strikes = 0

            def strike(self):
                self.strikes += 1

        forwarder = Forwarder(Clock(), NodeConfig("r", maxInFlight=2, forwardWindow=0))
        client, target = Striking("c"), _Hop()
        for rid in range(5):
            message = protocol.Message(1, protocol.REQUEST, {"id": rid, "to": "s"}, b"q")
            forwarder.forward(client, message, target)
        self.assertEqual(client.strikes, 3)


class ParkedTests(SynchronousTestCase):
    """
    A request for a target that exists but has no reachable instance is
    held at the relay until a route appears (an event), or its ttl ends.
    """

    def setUp(self):
        from zmqrelay.core.routing import Route, RouteTable

        self.Route = Route
        self.clock = Clock()
        self.forwarder = Forwarder(self.clock, NodeConfig("r"))
        self.routes = RouteTable()
        self.old = _Hop("old-hop")
        self.routes.add(Route("s1", self.old, "inc-1", ("echo",)))
        self.routes.remove("s1", clean=False)
        self.client = _Client("c")
        self.client.incarnation = "c-inc"
        self.addCleanup(self.forwarder.stop)

    def ask(self, rid=7, ttl=3000, to="echo"):
        message = protocol.Message(1, protocol.REQUEST, {"id": rid, "to": to, "ttl": ttl}, b"q")
        self.forwarder.clientRequest(self.client, message, self.routes, "cloud")

    def test_heldUntilARouteAppears(self):
        """
        Nothing is answered while no instance is reachable; the route's
        arrival sends the request on, with what is left of its ttl.
        """
        self.ask()
        self.assertEqual(self.client.sent, [])
        self.assertEqual(self.forwarder.parked(), 1)
        self.clock.advance(1.0)
        new = _Hop("new-hop")
        self.routes.add(self.Route("s2", new, "inc-2", ("echo",)))
        [(msgtype, header, _)] = new.sent
        self.assertEqual((msgtype, header["creq"], header["ttl"]), (protocol.REQUEST, 7, 2000))
        self.assertEqual(self.forwarder.parked(), 0)

    def test_answeredNoRouteAtItsDeadline(self):
        """
        If no route appears within its ttl, the request is answered ERR
        no-route with known: true.
        """
        self.ask(ttl=1000)
        self.clock.advance(0.85)
        self.assertEqual(self.client.sent, [])
        # A tenth of the ttl (at most 0.1 s) before it ends: the answer must
        # reach the client within its own deadline.
        self.clock.advance(0.05)
        [(msgtype, header, _)] = self.client.sent
        self.assertEqual((msgtype, header["code"], header.get("known")), (protocol.ERROR, protocol.E_NO_ROUTE, True))
        self.assertEqual(self.forwarder.parked(), 0)

    def test_holdFalseAnsweredAtOnce(self):
        """
        A request that says hold: false (a fail-fast client) is answered
        no-route, known, at once.
        """
        message = protocol.Message(
            1, protocol.REQUEST, {"id": 8, "to": "echo", "ttl": 3000, "hold": False}, b"q"
        )
        self.forwarder.clientRequest(self.client, message, self.routes, "cloud")
        [(msgtype, header, _)] = self.client.sent
        self.assertEqual((header["code"], header.get("known")), (protocol.E_NO_ROUTE, True))
        self.assertEqual(self.forwarder.parked(), 0)

    def test_unknownTargetAnsweredAtOnce(self):
        """
        A target nobody ever offered is answered no-route at once.
        """
        self.ask(to="nothing")
        [(msgtype, header, _)] = self.client.sent
        self.assertEqual((header["code"], header.get("known")), (protocol.E_NO_ROUTE, None))

    def test_noTimerLeft(self):
        """
        Once nothing is held, no timer is left.
        """
        self.ask()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.routes.add(self.Route("s2", _Hop("new"), "inc-2", ("echo",)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_originGoneForgetsHeld(self):
        """
        A client that goes takes its held requests with it.
        """
        self.ask()
        self.forwarder.peerGone(self.client, "bye")
        self.assertEqual(self.forwarder.parked(), 0)
        new = _Hop("new-hop")
        self.routes.add(self.Route("s2", new, "inc-2", ("echo",)))
        self.assertEqual(new.sent, [])
