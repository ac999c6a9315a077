"""
Tests for L{zmqrelay.edge.front}: the ROUTER side of a hop, driven through a fake
socket and a L{Clock}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.core.errors import Rejected
from zmqrelay.edge.front import CUT_GRACE, Front

from tests.fakes import FakeSocketFactory, FrontOwner, helloFrames


class FrontTestCase(SynchronousTestCase):
    """
    A started L{Front} with a fake ROUTER socket.
    """

    settings = {}

    def setUp(self):
        self.clock = Clock()
        self.config = NodeConfig("front-node", incarnation="front-inc", **self.settings)
        self.owner = FrontOwner()
        self.factory = FakeSocketFactory()
        self.front = Front(self.owner, self.config, self.clock, self.factory, "tcp://127.0.0.1:*")
        self.endpoint = self.front.start()
        self.socket = self.factory.sockets[0]
        # Whatever a test does, stopping must leave nothing scheduled.
        self.addCleanup(self.stopFront)

    def stopFront(self):
        self.front.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def receive(self, routingId, frames):
        self.socket.receive([routingId] + list(frames))

    def hello(self, routingId, nodeId, incarnation="inc-1", **kw):
        self.receive(routingId, helloFrames(nodeId, incarnation, **kw))
        return self.front.sessions.get(routingId)

    def sentTo(self, routingId, msgtype=None):
        return [
            m for r, m in self.socket.messages(routed=True)
            if r == routingId and (msgtype is None or m.type == msgtype)
        ]

    def request(self, rid=1, **extra):
        header = {"id": rid, "to": "s1"}
        header.update(extra)
        return protocol.encode(protocol.REQUEST, header, b"payload")


class StartStopTests(FrontTestCase):
    """
    Binding, stopping and saying goodbye.
    """

    def test_bind(self):
        """
        start() makes one ROUTER socket, binds it and returns the endpoint bound.
        """
        self.assertEqual(self.socket.kind, "router")
        self.assertEqual(self.socket.bound, [self.endpoint])
        self.assertTrue(self.endpoint.startswith("tcp://127.0.0.1:"))
        self.assertEqual(self.front.endpoint, self.endpoint)
        self.stopFront()

    def test_stop(self):
        """
        stop() says BYE to every peer, closes the socket and leaves no timers.
        """
        self.hello(b"r1", "c1")
        self.socket.clear()
        self.stopFront()
        byes = self.sentTo(b"r1", protocol.BYE)
        self.assertEqual([m.header["reason"] for m in byes], ["shutdown"])
        self.assertTrue(self.socket.closed)
        self.assertEqual(self.front.sessions, {})
        self.assertFalse(self.front.sendTo(object(), protocol.HEARTBEAT, {}))


class HelloTests(FrontTestCase):
    """
    The HELLO / WELCOME handshake.
    """

    settings = {"versions": (1, 2, 3)}

    def test_welcome(self):
        """
        HELLO gets a WELCOME with the highest common version, and the peer joins.
        """
        session = self.hello(b"r1", "c1", versions=(2, 3, 4))
        self.assertIsNotNone(session)
        self.assertEqual(session.version, 3)
        self.assertEqual((session.nodeId, session.role, session.incarnation), ("c1", "client", "inc-1"))
        [welcome] = self.sentTo(b"r1", protocol.WELCOME)
        self.assertEqual(welcome.version, 3)
        self.assertEqual(welcome.header["version"], 3)
        self.assertEqual(welcome.header["versions"], [1, 2, 3])
        self.assertEqual(welcome.header["id"], "front-node")
        self.assertEqual(welcome.header["inc"], "front-inc")
        self.assertEqual(welcome.header["you"], "c1")
        self.assertEqual(welcome.header["max"], self.config.maxMessageSize)
        self.assertEqual(welcome.header["extra"], "yes")
        self.assertEqual(self.owner.joined, [session])
        self.assertIs(self.front.byNode["c1"], session)

    def test_noCommonVersion(self):
        """
        No common version: REJECT naming our versions, and no session.
        """
        self.receive(b"r1", protocol.encode(protocol.HELLO, {
            "id": "c1", "role": "client", "inc": "i", "versions": [7, 8]}, b"", 7))
        [reject] = self.sentTo(b"r1", protocol.REJECT)
        self.assertEqual(reject.header["code"], protocol.E_VERSION)
        self.assertEqual(reject.header["versions"], [1, 2, 3])
        # Without a session, written in our highest version (PROTOCOL.md 3.1).
        self.assertEqual(reject.version, 3)
        self.assertIn("[7, 8]", reject.header["msg"])
        self.assertEqual(self.front.sessions, {})
        self.assertEqual(self.owner.joined, [])
        self.assertEqual(self.front.counters["rejected"], 1)

    def test_badHello(self):
        """
        A HELLO without a valid id, role, incarnation or versions is rejected as bad-message.
        """
        for header in (
            {"role": "client", "inc": "i", "versions": [1]},
            {"id": "c", "inc": "i", "versions": [1]},
            {"id": "c", "role": "client", "versions": [1]},
            {"id": "c", "role": "client", "inc": "i"},
            {"id": 5, "role": "client", "inc": "i", "versions": [1]},
            {"id": "", "role": "client", "inc": "i", "versions": [1]},
            {"id": "x" * 300, "role": "client", "inc": "i", "versions": [1]},
            {"id": "c", "role": "client", "inc": "i", "versions": [1], "hb": "fast"},
        ):
            self.socket.clear()
            self.receive(b"r1", protocol.encode(protocol.HELLO, header))
            [reject] = self.sentTo(b"r1", protocol.REJECT)
            self.assertEqual(reject.header["code"], protocol.E_BAD_MESSAGE)
        self.assertEqual(self.front.sessions, {})

    def test_ownerRejects(self):
        """
        A Rejected raised by the owner's peerHello becomes a REJECT with its code.
        """
        self.owner.reject = Rejected("no servers here")
        self.hello(b"r1", "s1", role="server")
        [reject] = self.sentTo(b"r1", protocol.REJECT)
        self.assertEqual(reject.header["code"], protocol.E_REJECTED)
        self.assertEqual(reject.header["msg"], "no servers here")
        self.assertEqual(self.front.sessions, {})

    def test_messageBeforeHello(self):
        """
        A message from a stranger gets ERR hello-first, echoing its request id.
        """
        self.receive(b"r9", self.request(rid=42))
        [error] = self.sentTo(b"r9", protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_HELLO_FIRST)
        self.assertEqual(error.header["id"], 42)
        self.assertEqual(self.owner.received, [])

    def test_errorLogNamesPeerAsText(self):
        """
        The log event of a refused message carries the peer as text (its id, or a stranger's routing
        id in hex), so JSON log lines hold it (README "Logs"), not an object they cannot write.
        """
        from twisted.logger import capturedLogs

        self.hello(b"r1", "c1")
        self.owner.messageError = protocol.ProtocolError(protocol.E_BAD_MESSAGE, "bad")
        with capturedLogs() as events:
            self.receive(b"r1", self.request(rid=5))
            self.receive(b"r9", self.request(rid=6))
        peers = [e["peer"] for e in events if "code" in e]
        self.assertEqual(peers, ["c1", b"r9".hex()])

    def test_helloFirstCounted(self):
        """
        The ERR hello-first answers to strangers are counted by code, as every ERR sent is.
        """
        self.receive(b"r9", self.request(rid=42))
        self.receive(b"r8", self.request(rid=43))
        self.assertEqual(self.front.errors[protocol.E_HELLO_FIRST], 2)

    def test_errorBeforeHelloNotAnswered(self):
        """
        An ERR from a stranger is not answered with ERR hello-first (nobody answers an ERR with an
        ERR, PROTOCOL.md 10): it is counted and logged.
        """
        self.receive(b"r9", protocol.encode(protocol.ERROR, {"id": 4, "code": "bad-message", "msg": "?"}))
        self.assertEqual(self.sentTo(b"r9"), [])
        self.assertEqual(self.front.counters["errors-unanswered"], 1)

    def test_malformedErrorNotAnswered(self):
        """
        An ERR from a peer that its owner finds malformed (no C{id} where one is needed) is counted
        as malformed and not answered.
        """
        self.hello(b"r1", "c1")
        self.owner.messageError = protocol.ProtocolError(protocol.E_BAD_MESSAGE, "header field 'id' is required")
        self.receive(b"r1", protocol.encode(protocol.ERROR, {"code": "over-limit", "msg": "slow down"}))
        self.assertEqual(self.sentTo(b"r1", protocol.ERROR), [])
        self.assertEqual((self.front.counters["malformed"], self.front.counters["errors-unanswered"]), (1, 1))
        # A malformed REQ is answered, as before.
        self.receive(b"r1", self.request(rid=5))
        [error] = self.sentTo(b"r1", protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (5, protocol.E_BAD_MESSAGE))

    def test_byeBeforeHello(self):
        """
        A BYE from a stranger is dropped without an answer.
        """
        self.receive(b"r9", protocol.encode(protocol.BYE, {}))
        self.assertEqual(self.socket.sent, [])

    def test_sameIncarnationNewRoutingId(self):
        """
        The same process on a new connection keeps its session (no leave, no join).
        """
        session = self.hello(b"r1", "c1", "inc-1")
        again = self.hello(b"r2", "c1", "inc-1")
        self.assertIs(again, session)
        self.assertEqual(session.routingId, b"r2")
        self.assertNotIn(b"r1", self.front.sessions)
        self.assertEqual(self.owner.joined, [session])
        self.assertEqual(self.owner.left, [])
        self.assertEqual(len(self.sentTo(b"r2", protocol.WELCOME)), 1)
        self.assertTrue(session.alive)
        self.assertEqual(self.owner.resumed, [session])

    def test_otherIdSameRoutingIdIsNotResumed(self):
        """
        A HELLO naming another node id is a new session, even with the same
        incarnation on the same connection: ids are never renamed in place.
        """
        session = self.hello(b"r1", "c1", "inc-1")
        other = self.hello(b"r1", "c2", "inc-1")
        self.assertIsNot(other, session)
        self.assertEqual(other.nodeId, "c2")
        self.assertEqual(self.owner.resumed, [])
        self.assertEqual([(s.nodeId, r) for s, r in self.owner.left], [("c1", "replaced")])

    def test_reHelloSameRoutingId(self):
        """
        A repeated HELLO on the same connection is welcomed again, keeping the session.
        """
        session = self.hello(b"r1", "c1", "inc-1")
        self.assertIs(self.hello(b"r1", "c1", "inc-1"), session)
        self.assertEqual(len(self.sentTo(b"r1", protocol.WELCOME)), 2)
        self.assertEqual(self.owner.joined, [session])

    def test_newIncarnationReplaces(self):
        """
        A new incarnation of a node replaces the old session: it leaves ('replaced') and gets BYE.
        """
        old = self.hello(b"r1", "c1", "inc-1")
        new = self.hello(b"r2", "c1", "inc-2")
        self.assertIsNot(new, old)
        self.assertEqual(self.owner.left, [(old, "replaced")])
        self.assertEqual(self.owner.joined, [old, new])
        self.assertFalse(old.alive)
        self.assertEqual([m.header["reason"] for m in self.sentTo(b"r1", protocol.BYE)], ["replaced"])
        self.assertEqual(list(self.front.sessions), [b"r2"])
        self.assertIs(self.front.byNode["c1"], new)


class MessageTests(FrontTestCase):
    """
    Messages from peers with a session, and bad input.
    """

    settings = {"maxMessageSize": 1000}

    def test_messageToOwner(self):
        """
        A request from a session goes to the owner, with the session.
        """
        session = self.hello(b"r1", "c1")
        self.receive(b"r1", self.request(rid=5))
        [(got, message)] = self.owner.received
        self.assertIs(got, session)
        self.assertEqual((message.type, message.header["id"], message.payload), (protocol.REQUEST, 5, b"payload"))

    def test_heartbeatNotForwarded(self):
        """
        Heartbeats from a peer are handled by the front, not the owner.
        """
        self.hello(b"r1", "c1")
        self.receive(b"r1", protocol.encode(protocol.HEARTBEAT, {}))
        self.assertEqual(self.owner.received, [])

    def test_malformed(self):
        """
        Malformed frames get ERR bad-message, are counted, and raise nothing.
        """
        self.hello(b"r1", "c1")
        self.socket.clear()
        for frames in (
            [b"garbage"],
            [],
            [b"ZRLY\x01", protocol.REQUEST, b"\xc1"],
            [b"ZRLY\x01", protocol.REQUEST, protocol.encodeHeader([1])],
        ):
            self.receive(b"r1", frames)
            self.receive(b"stranger", frames)
        errors = [m for _, m in self.socket.messages(routed=True)]
        self.assertEqual(len(errors), 8)
        self.assertEqual({m.type for m in errors}, {protocol.ERROR})
        self.assertEqual({m.header["code"] for m in errors}, {protocol.E_BAD_MESSAGE})
        self.assertEqual(self.front.counters["malformed"], 8)
        self.assertEqual(self.owner.received, [])

    def test_ownerProtocolError(self):
        """
        A ProtocolError from the owner goes back as ERR with its code, counted by kind.
        """
        self.hello(b"r1", "c1")
        self.owner.messageError = protocol.ProtocolError(protocol.E_UNKNOWN_TYPE, "what?")
        self.receive(b"r1", protocol.encode(b"NEWTYPE", {"id": 3}))
        self.owner.messageError = protocol.ProtocolError(protocol.E_BAD_MESSAGE, "bad field")
        self.receive(b"r1", self.request(rid=4))
        errors = self.sentTo(b"r1", protocol.ERROR)
        self.assertEqual(
            [(m.header["code"], m.header["id"]) for m in errors],
            [(protocol.E_UNKNOWN_TYPE, 3), (protocol.E_BAD_MESSAGE, 4)],
        )
        self.assertEqual(self.front.counters["unknown-type"], 1)
        self.assertEqual(self.front.counters["malformed"], 1)

    def test_tooLarge(self):
        """
        A message over the size limit gets ERR too-large and never reaches the owner.
        """
        self.hello(b"r1", "c1")
        self.receive(b"r1", protocol.encode(protocol.REQUEST, {"id": 8}, b"x" * 1000))
        [error] = self.sentTo(b"r1", protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_TOO_LARGE)
        self.assertIn("1000", error.header["msg"])
        self.assertEqual(self.owner.received, [])
        self.assertEqual(self.front.counters["too-large"], 1)
        self.receive(b"stranger", [b"y" * 2000])
        self.assertEqual(self.sentTo(b"stranger", protocol.ERROR)[0].header["code"], protocol.E_TOO_LARGE)

    def test_bye(self):
        """
        BYE ends the session: the owner hears 'bye' and no BYE is sent back.
        """
        session = self.hello(b"r1", "c1")
        self.socket.clear()
        self.receive(b"r1", protocol.encode(protocol.BYE, {}))
        self.assertEqual(self.owner.left, [(session, "bye")])
        self.assertEqual(self.socket.sent, [])
        self.assertEqual(self.front.sessions, {})
        self.assertEqual(self.front.byNode, {})

    def test_strangerErrorsBounded(self):
        """
        A flood of bad messages from strangers gets a bounded number of answers.
        """
        for i in range(300):
            self.receive(b"s%d" % i, [b"junk"])
        self.assertEqual(self.front.counters["malformed"], 300)
        self.assertLessEqual(len(self.socket.sent), Front.strangerReplies)
        self.assertGreater(len(self.socket.sent), 0)

    def test_peers(self):
        """
        peers() lists sessions, optionally of one role.
        """
        self.hello(b"r1", "c1")
        self.hello(b"r2", "s1", role="server")
        self.assertEqual(len(self.front.peers()), 2)
        self.assertEqual([s.nodeId for s in self.front.peers("server")], ["s1"])


class HeartbeatTests(FrontTestCase):
    """
    Heartbeats both ways.
    """

    def test_heartbeatsOnIdle(self):
        """
        An idle session gets a heartbeat about every heartbeat interval.
        """
        self.hello(b"r1", "c1")
        self.socket.clear()
        for _ in range(4):
            self.clock.advance(0.5)
            self.receive(b"r1", protocol.encode(protocol.HEARTBEAT, {}))
        self.assertEqual(len(self.sentTo(b"r1", protocol.HEARTBEAT)), 2)

    def test_noHeartbeatWhenBusy(self):
        """
        A session we keep sending to gets no heartbeats.
        """
        session = self.hello(b"r1", "c1")
        self.socket.clear()
        for _ in range(8):
            self.clock.advance(0.25)
            session.send(protocol.MESSAGE, {"id": 1})
            self.receive(b"r1", protocol.encode(protocol.HEARTBEAT, {}))
        self.assertEqual(self.sentTo(b"r1", protocol.HEARTBEAT), [])

    def test_silentPeerDropped(self):
        """
        A peer silent for heartbeat * liveness is dropped with 'heartbeat-timeout'.
        """
        session = self.hello(b"r1", "c1")
        step = self.config.heartbeat / 2
        self.clock.pump([step] * int(self.config.liveness * 2))
        self.assertEqual(self.owner.left, [])
        self.clock.advance(step)
        self.assertEqual(self.owner.left, [(session, "heartbeat-timeout")])
        self.assertEqual(self.front.sessions, {})
        self.assertEqual(self.sentTo(b"r1", protocol.BYE)[-1].header["reason"], "heartbeat-timeout")

    def test_talkingPeerKept(self):
        """
        A peer that keeps sending heartbeats stays, however long.
        """
        self.hello(b"r1", "c1")
        for _ in range(40):
            self.clock.advance(1.0)
            self.receive(b"r1", protocol.encode(protocol.HEARTBEAT, {}))
        self.assertEqual(self.owner.left, [])

    def test_heartbeatForms(self):
        """
        A plain HB (the fast path), one with extra frames, and one with a
        drain field all keep the session; an HB with a bad signature is
        malformed; none reaches the owner.
        """
        session = self.hello(b"r1", "c1")
        sig, hb, header, payload = protocol.encode(protocol.HEARTBEAT, {})
        for frames in ([sig, hb, header, payload], [sig, hb, header, payload, b"extra"],
                       [sig, hb, header]):
            self.clock.advance(1.0)
            self.receive(b"r1", frames)
            self.assertEqual(session.lastSeen, self.clock.seconds())
        self.receive(b"r1", [b"ZRLX\x01", hb, header, payload])
        self.assertEqual(self.front.counters["malformed"], 1)
        self.receive(b"r1", protocol.encode(protocol.HEARTBEAT, {"drain": True}))
        self.assertTrue(session.draining)
        self.assertEqual(self.owner.received, [])

    def test_peerHeartbeatRespected(self):
        """
        A peer announcing a slower heartbeat gets a longer timeout.
        """
        session = self.hello(b"r1", "c1", hb=4000)
        self.assertEqual(session.heartbeat, 4.0)
        self.clock.pump([0.5] * 20)
        self.assertEqual(self.owner.left, [])
        self.clock.pump([0.5] * 6)
        self.assertEqual(self.owner.left, [(session, "heartbeat-timeout")])


    def test_welcomeHeartbeatExact(self):
        """
        WELCOME's C{hb} is the larger of ours and the HELLO's, to the
        millisecond (PROTOCOL.md 6.3): 1001 is 1001, not 1000 after a trip
        through floating-point seconds.
        """
        for i, hb in enumerate((1001, 1003, 2999, 59999)):
            routingId = b"r%d" % i
            self.hello(routingId, f"c{i}", hb=hb)
            [welcome] = self.sentTo(routingId, protocol.WELCOME)
            self.assertEqual(welcome.header["hb"], hb)


class StarvationTests(FrontTestCase):
    """
    Liveness judged on what arrived, not on when the reactor got round to it.
    """

    def test_stallExpelsNobody(self):
        """
        A tick far later than scheduled (this process was starved) extends every peer's deadline by the stall.
        """
        session = self.hello(b"r1", "c1")
        self.clock.advance(0.5)
        self.clock.advance(5.0)
        self.assertEqual(self.owner.left, [])
        self.assertEqual(self.front.counters["stalls"], 1)
        self.clock.pump([0.5] * 6)
        self.assertEqual(self.owner.left, [(session, "heartbeat-timeout")])

    def test_requestsQueuedBeforeALongStallDropped(self):
        """
        After a stall longer than a peer's liveness window, the requests read
        before the next tick (sent before the peer gave up on us) are dropped,
        not run; later ones are served.
        """
        self.hello(b"r1", "c1")
        self.clock.advance(0.5)
        self.clock.advance(5.0)
        self.receive(b"r1", self.request(rid=1))
        self.assertEqual(self.owner.received, [])
        self.assertEqual(self.front.counters["stale"], 1)
        self.clock.advance(0.5)
        self.receive(b"r1", self.request(rid=2))
        self.assertEqual([m.header["id"] for _, m in self.owner.received], [2])

    def test_shortStallKeepsRequests(self):
        """
        A stall within the liveness window drops nothing.
        """
        self.hello(b"r1", "c1")
        self.clock.advance(0.5)
        self.clock.advance(2.0)
        self.receive(b"r1", self.request(rid=1))
        self.assertEqual([m.header["id"] for _, m in self.owner.received], [1])

    def test_queuedHeartbeatReadBeforeExpelling(self):
        """
        Before declaring a peer gone, the front reads what its socket holds: a waiting HB keeps the peer.
        """
        session = self.hello(b"r1", "c1")
        self.socket.doRead = lambda: self.socket.receive([b"r1"] + protocol.encode(protocol.HEARTBEAT, {}))
        self.clock.pump([0.5] * 8)
        self.assertEqual(self.owner.left, [])
        del self.socket.doRead
        self.clock.pump([0.5] * 7)
        self.assertEqual(self.owner.left, [(session, "heartbeat-timeout")])

    def test_drainingPeerReported(self):
        """
        HB with drain marks the session draining and tells the owner once.
        """
        session = self.hello(b"r1", "c1")
        drained = []
        self.owner.peerDraining = drained.append
        for _ in range(2):
            self.receive(b"r1", protocol.encode(protocol.HEARTBEAT, {"drain": True}))
        self.assertTrue(session.draining)
        self.assertEqual(drained, [session])


class RateLimitTests(FrontTestCase):
    """
    Limits per client: refusal with retry-after, then cooldown.
    """

    settings = {"rate": 1.0, "burst": 2, "strikes": 2, "cooldown": 10.0}

    def test_errorOverLimitNotAnswered(self):
        """
        An ERR over the rate is refused (it counts, as a strike too) but not answered: nobody
        answers an ERR with an ERR.
        """
        self.hello(b"r1", "c1")
        self.socket.clear()
        self.receive(b"r1", self.request(rid=1))
        self.receive(b"r1", protocol.encode(protocol.ERROR, {"id": 9, "code": "handler-error", "msg": "x"}))
        self.assertEqual(self.sentTo(b"r1", protocol.ERROR), [])
        self.assertEqual((self.front.counters["refused"], self.front.counters["errors-unanswered"]), (1, 1))

    def test_overLimitThenDisconnectedThenRecovered(self):
        """
        Over the rate: ERR over-limit with retry; the refusal that crosses the
        strike limit says so, with the cooldown as retry, and the client is
        disconnected (BYE over-limit, its presence ends, its connection is
        cut once it has held no session for the handshake timeout); HELLOs
        are refused with what is left of the cooldown; after it, the client
        is served again.  (The HELLO itself
        took one token of the burst.)
        """
        self.socket.onEvent("accepted", 7, ("127.0.0.1", 50007))
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        session = self.front.sessions[b"r1"]
        self.socket.clear()
        for rid in range(1, 6):
            self.receive(b"r1", self.request(rid=rid))
        self.assertEqual([m.header["id"] for _, m in self.owner.received], [1])
        errors = self.sentTo(b"r1", protocol.ERROR)
        self.assertEqual([(m.header["code"], m.header["id"]) for m in errors],
                         [(protocol.E_OVER_LIMIT, 2), (protocol.E_OVER_LIMIT, 3),
                          (protocol.E_OVER_LIMIT, 4), (protocol.E_HELLO_FIRST, 5)])
        self.assertEqual(errors[0].header["retry"], 1.0)
        self.assertEqual(errors[2].header["retry"], 10.0)
        self.assertEqual(errors[2].header["msg"], "ignored for 10 s after repeated refusals")
        self.assertEqual(self.front.counters["refused"], 3)
        [bye] = self.sentTo(b"r1", protocol.BYE)
        self.assertEqual(bye.header["reason"], "over-limit")
        self.assertFalse(session.alive)
        self.assertEqual(self.owner.left, [(session, "over-limit")])
        # Its last answers and BYE get time to leave: the connection, now
        # without a session, is cut after the handshake timeout (or at once
        # if it goes on flooding: AbusiveStrangerTests).
        self.clock.advance(0.5)
        self.assertEqual(self.socket.cuts, [])
        self.clock.advance(4.5)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])
        # In cooldown: a new hello is refused with what is left of it.
        self.receive(b"r2", helloFrames("c1", "inc-2"))
        [reject] = self.sentTo(b"r2", protocol.REJECT)
        self.assertEqual((reject.header["code"], reject.header["retry"]), (protocol.E_OVER_LIMIT, 5.0))
        # After the cooldown, service resumes.
        self.clock.advance(5.0)
        self.receive(b"r2", helloFrames("c1", "inc-2"))
        self.receive(b"r2", self.request(rid=100))
        self.assertEqual(self.owner.received[-1][1].header["id"], 100)

    def test_limitsFollowTheClientId(self):
        """
        A client struck out cannot start afresh by saying hello again, with a
        new incarnation on a new connection: the hello is refused while the
        cooldown lasts, and the limits of the id carry over after it.
        """
        guard = self.hello(b"r1", "c1").guard
        for rid in range(1, 6):
            self.receive(b"r1", self.request(rid=rid))
        self.assertNotIn("c1", self.front.byNode)
        self.socket.clear()
        self.receive(b"r2", helloFrames("c1", "inc-2"))
        [reject] = self.sentTo(b"r2", protocol.REJECT)
        self.assertEqual(reject.header["code"], protocol.E_OVER_LIMIT)
        self.assertEqual(reject.header["retry"], 10.0)
        self.assertNotIn("c1", self.front.byNode)
        self.clock.advance(11.0)
        self.receive(b"r2", helloFrames("c1", "inc-2"))
        self.assertEqual(len(self.sentTo(b"r2", protocol.WELCOME)), 1)
        self.assertEqual(self.front.byNode["c1"].incarnation, "inc-2")
        self.assertIs(self.front.byNode["c1"].guard, guard)

    def test_cooldownSurvivesRepeatedHellos(self):
        """
        A client whose session ended while it was ignored stays refused for
        the rest of the cooldown, however many hellos it sends.
        """
        self.hello(b"r1", "c1")
        for rid in range(1, 6):
            self.receive(b"r1", self.request(rid=rid))
        for _ in range(8):
            self.clock.advance(0.5)
        self.assertNotIn("c1", self.front.byNode)
        self.socket.clear()
        for i in range(3):
            self.receive(b"r%d" % (i + 2), helloFrames("c1", "inc-%d" % i))
        self.assertEqual([m.type for _, m in self.socket.messages(routed=True)], [protocol.REJECT] * 3)
        self.assertNotIn("c1", self.front.byNode)

    def test_serversNotLimited(self):
        """
        Relay peers (servers, proxies) have no per-peer rate limit.
        """
        session = self.hello(b"r1", "s1", role="server")
        self.assertIsNone(session.guard)
        for rid in range(20):
            self.receive(b"r1", self.request(rid=rid))
        self.assertEqual(len(self.owner.received), 20)


class OwnerFailureTests(FrontTestCase):
    """
    An owner that fails while forgetting a peer does not stop the Front.
    """

    def test_peerLeftFailureKeepsHeartbeatsGoing(self):
        """
        If peerLeft raises for one silent peer, the heartbeat loop goes on and
        still drops another silent peer later.
        """
        self.hello(b"r1", "c1")
        calls = []

        def failing(session, reason):
            calls.append(session.nodeId)
            raise ValueError("owner bug")

        self.owner.peerLeft = failing
        self.clock.advance(2.0)
        self.hello(b"r2", "c2")
        for _ in range(20):
            self.clock.advance(0.5)
        self.assertEqual(calls, ["c1", "c2"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)


class PendingConnectionTests(FrontTestCase):
    """
    Connections that hold no session are cut after the handshake timeout,
    and only so many may wait at once.
    """

    settings = {"handshakeTimeout": 5.0, "maxPending": 3}
    peer = ("127.0.0.1", 50000)

    def accept(self, fd, port=None):
        self.socket.onEvent("accepted", fd, ("127.0.0.1", port or 50000 + fd))

    def live(self, seconds, routingId=b"r1", fd=7):
        """
        Let C{seconds} pass while the session on C{routingId} beats.
        """
        for _ in range(int(seconds * 2)):
            self.clock.advance(0.5)
            self.socket.receive([routingId, *protocol.encode(protocol.HEARTBEAT, {})], fd=fd)

    def test_monitored(self):
        """
        A Front bound on TCP watches its socket's connections.
        """
        self.assertIsNotNone(self.socket.onEvent)

    def test_silentConnectionCut(self):
        """
        A connection that never says HELLO is cut once the handshake timeout
        has passed, and not before.
        """
        self.accept(7)
        self.clock.advance(4.5)
        self.assertEqual(self.socket.cuts, [])
        self.clock.advance(1.0)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])
        self.assertEqual(self.front.counters["cut-silent"], 1)

    def test_helloKeepsConnection(self):
        """
        A connection whose HELLO was welcomed is never cut for silence.
        """
        self.accept(7)
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        for _ in range(20):
            self.clock.advance(1.0)
            self.socket.receive([b"r1", *protocol.encode(protocol.HEARTBEAT, {})], fd=7)
        self.assertEqual(self.socket.cuts, [])

    def test_helloBeforeAcceptEvent(self):
        """
        A HELLO read before its connection's ACCEPTED event (the monitor is
        another socket) still keeps that connection.
        """
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        self.accept(7)
        self.live(6.0)
        self.assertEqual(self.socket.cuts, [])

    def test_reusedDescriptorWithSessionKept(self):
        """
        When a descriptor is reused and the new connection's HELLO is read
        before the monitor tells of the old one's end and the new one's
        start, the new connection is not cut.
        """
        self.accept(7)
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        self.socket.onEvent("closed", 7, None)
        self.accept(7, port=60000)
        self.live(6.0)
        self.assertEqual(self.socket.cuts, [])
        self.assertIn("c1", self.front.byNode)

    def test_tooManyWaitingOldestCut(self):
        """
        Beyond maxPending waiting connections, the oldest is cut at once.
        """
        for fd in (1, 2, 3):
            self.accept(fd)
        self.assertEqual(self.socket.cuts, [])
        self.accept(4)
        self.assertEqual(self.socket.cuts, [(1, ("127.0.0.1", 50001))])
        self.assertEqual(self.front.counters["cut-excess"], 1)

    def test_closedConnectionForgotten(self):
        """
        A connection that ended by itself is not cut later.
        """
        self.accept(7)
        self.socket.onEvent("closed", 7, None)
        self.clock.advance(6.0)
        self.assertEqual(self.socket.cuts, [])

    def test_deadSessionCut(self):
        """
        A session that timed out has its connection cut on the next tick (it
        may be half-open), after its BYE was sent.
        """
        self.accept(7)
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        self.clock.pump([0.5] * 7)
        self.assertEqual(self.owner.left[0][1], "heartbeat-timeout")
        self.assertEqual(self.sentTo(b"r1", protocol.BYE)[0].header["reason"], "heartbeat-timeout")
        self.assertEqual(self.socket.cuts, [])
        self.clock.advance(0.5)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])
        self.assertEqual(self.front.counters["cut-dead"], 1)

    def test_movedSessionLeavesOldConnectionWaiting(self):
        """
        When a session moves to another connection (same id and
        incarnation), the connection it left must say HELLO again within the
        handshake timeout or be cut: extra connections of one id cost
        nothing for long.
        """
        self.accept(7)
        self.accept(8)
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        self.clock.advance(1.0)
        self.socket.receive([b"r2"] + helloFrames("c1"), fd=8)
        self.assertEqual(self.front.byNode["c1"].routingId, b"r2")
        self.live(4.5, b"r2", 8)
        self.assertEqual(self.socket.cuts, [])
        self.live(1.0, b"r2", 8)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])

    def test_byeLeavesConnectionWaiting(self):
        """
        After BYE the connection waits for a new HELLO like any other.
        """
        self.accept(7)
        self.socket.receive([b"r1"] + helloFrames("c1"), fd=7)
        self.socket.receive([b"r1", *protocol.encode(protocol.BYE, {})], fd=7)
        self.clock.advance(5.5)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])


class StrangerTests(FrontTestCase):
    """
    What connections without a session may make the node read.
    """

    settings = {"strangerRate": 100.0}

    def test_perConnectionBudget(self):
        """
        One connection without a session gets a small budget; beyond it its
        messages are dropped unread and counted.
        """
        for rid in range(100):
            self.receive(b"x1", self.request(rid=rid))
        errors = self.sentTo(b"x1", protocol.ERROR)
        self.assertEqual(len(errors), 20)
        self.assertEqual(errors[0].header["code"], protocol.E_HELLO_FIRST)
        self.assertEqual(self.front.counters["ignored-strangers"], 80)

    def test_helloFromAnotherConnectionServed(self):
        """
        A flooding stranger does not stop another connection's HELLO.
        """
        for rid in range(100):
            self.receive(b"x1", self.request(rid=rid))
        self.hello(b"r1", "c1")
        self.assertEqual(len(self.sentTo(b"r1", protocol.WELCOME)), 1)

    def test_globalBudget(self):
        """
        Many stranger connections together get no more than strangerRate
        messages read a second.
        """
        for i in range(30):
            for rid in range(10):
                self.receive(b"x%d" % i, self.request(rid=rid))
        self.assertEqual(self.front.counters["ignored-strangers"], 300 - 100)
        self.clock.advance(1.0)
        self.hello(b"r1", "c1")
        self.assertEqual(len(self.sentTo(b"r1", protocol.WELCOME)), 1)

    def test_sessionsNotCounted(self):
        """
        Messages of peers with a session do not use the strangers' budget.
        """
        self.settings = {}
        self.hello(b"r1", "p1", role=protocol.PROXY)
        for rid in range(300):
            self.receive(b"r1", self.request(rid=rid))
        self.assertEqual(self.front.counters["ignored-strangers"], 0)
        self.assertEqual(len(self.owner.received), 300)


class DiscardTests(FrontTestCase):
    """
    Messages the socket discarded while reading them are answered.
    """

    def test_tooLargeAnsweredWithId(self):
        """
        A message too large in all gets ERR too-large naming its request.
        """
        self.hello(b"r1", "c1")
        frames = [b"r1"] + protocol.encode(protocol.REQUEST, {"id": 5, "to": "s1"}, b"")[:3]
        self.socket.discard(frames, "too-large", 10 ** 9)
        [error] = self.sentTo(b"r1", protocol.ERROR)
        self.assertEqual((error.header["code"], error.header["id"]), (protocol.E_TOO_LARGE, 5))
        self.assertEqual(self.front.counters["discarded"], 1)
        self.assertEqual(self.owner.received, [])

    def test_tooManyFramesMalformed(self):
        """
        A message of too many frames is answered as malformed.
        """
        self.socket.discard([b"x1"] + [b"f"] * 8, "too-many-frames", 9)
        [error] = self.sentTo(b"x1", protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_BAD_MESSAGE)
        self.assertEqual(self.front.counters["malformed"], 1)


class InputLimitTests(FrontTestCase):
    """
    What one connection may have queued unread at the Front.
    """

    settings = {"inputHwm": 321, "outputHwm": 123}

    def test_inputLimitedBeforeBind(self):
        """
        The ROUTER's receive and send high-water marks are the config's
        inputHwm and outputHwm.
        """
        self.assertEqual((self.socket.inputLimit, self.socket.outputLimit), (321, 123))


class AbusiveStrangerTests(FrontTestCase):
    """
    A connection that floods without a session is cut.
    """

    def test_floodingStrangerCut(self):
        """
        Past its own budget, a stranger's connection is cut once, CUT_GRACE
        later (so what it was answered can leave; what it queued is never
        read); another stranger is untouched.
        """
        self.socket.onEvent("accepted", 7, ("127.0.0.1", 50007))
        self.socket.onEvent("accepted", 8, ("127.0.0.1", 50008))
        for rid in range(40):
            self.socket.receive([b"x1"] + list(self.request(rid=rid)), fd=7)
        self.socket.receive([b"x2"] + list(self.request(rid=1)), fd=8)
        self.assertEqual(self.socket.cuts, [])
        self.clock.advance(CUT_GRACE * 0.9)
        self.assertEqual(self.socket.cuts, [])
        self.clock.advance(CUT_GRACE * 0.1)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])
        self.clock.advance(0.5)
        self.assertEqual(self.socket.cuts, [(7, ("127.0.0.1", 50007))])
        self.assertEqual(self.front.counters["cut-abusive"], 1)
        self.socket.onEvent("closed", 7, None)
        self.socket.onEvent("accepted", 7, ("127.0.0.1", 50107))
        for rid in range(40):
            self.socket.receive([b"x3"] + list(self.request(rid=rid)), fd=7)
        self.clock.advance(0.5)
        self.assertEqual(self.front.counters["cut-abusive"], 2)

    def test_unknownConnectionNotCut(self):
        """
        A stranger whose connection the monitor has not reported yet is only
        ignored (nothing to check the descriptor against).
        """
        for rid in range(40):
            self.socket.receive([b"x1"] + list(self.request(rid=rid)), fd=9)
        self.assertEqual(self.socket.cuts, [])
        self.assertEqual(self.front.counters["ignored-strangers"], 20)


class InFlightStrikeTests(FrontTestCase):
    """
    Refusals by other limits count as strikes of the rate limit.
    """

    settings = {"strikes": 2, "cooldown": 10.0}

    def test_strikesFromAnotherLimit(self):
        """
        A client refused (for requests in flight) more than strikes times is
        told it is ignored, then disconnected with BYE over-limit.
        """
        session = self.hello(b"r1", "c1")
        self.socket.clear()
        session.strike()
        session.strike()
        self.assertTrue(session.alive)
        self.assertEqual(self.sentTo(b"r1"), [])
        session.strike()
        self.assertFalse(session.alive)
        [error] = self.sentTo(b"r1", protocol.ERROR)
        self.assertEqual((error.header["code"], error.header["retry"]), (protocol.E_OVER_LIMIT, 10.0))
        [bye] = self.sentTo(b"r1", protocol.BYE)
        self.assertEqual(bye.header["reason"], "over-limit")
        self.assertEqual(self.owner.left, [(session, "over-limit")])

    def test_relayPeersNotStruck(self):
        """
        Peers without a rate limit (proxies, servers) are never struck out.
        """
        session = self.hello(b"r1", "p1", role=protocol.PROXY)
        for _ in range(10):
            session.strike()
        self.assertTrue(session.alive)
