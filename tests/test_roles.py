"""
Tests for the four roles (L{zmqrelay.roles.cloud}, L{zmqrelay.roles.proxy},
L{zmqrelay.roles.server}, L{zmqrelay.roles.client}) built on fake sockets and a L{Clock}:
their interfaces, a clean start and stop, and a few behaviours.
"""

import msgpack
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from zmqrelay.core import errors, protocol
from zmqrelay.roles.client import GAP_GRACE, Client
from zmqrelay.roles.cloud import Cloud
from zmqrelay.core.config import NodeConfig
from zmqrelay.interfaces import ICloud, IClient, IProxy, IRequest, IServer
from zmqrelay.roles.proxy import Proxy
from zmqrelay.roles.server import Server

from tests.fakes import (
    FakeSocketFactory,
    NotificationRecorder,
    PresenceRecorder,
    RecordingHandler,
    helloFrames,
    welcomeFrames,
)

LISTEN = "tcp://127.0.0.1:*"


class RoleTestCase(SynchronousTestCase):
    """
    Shared set-up: a Clock, a fake socket factory, and a cleanup that stops
    the role and checks nothing is left scheduled.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()

    def config(self, nodeId, **kw):
        return NodeConfig(nodeId, incarnation=nodeId + "-inc", **kw)

    def start(self, role):
        role.startService()
        self.addCleanup(self.stop, role)
        return role

    def stop(self, role):
        if role.running:
            self.successResultOf(role.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(all(s.closed for s in self.factory.sockets))

    def router(self):
        [sock] = self.factory.ofKind("router")
        return sock

    def dealers(self):
        return self.factory.ofKind("dealer")

    def sentTo(self, sock, routingId, msgtype):
        return [m for r, m in sock.messages(routed=True) if r == routingId and m.type == msgtype]


class CloudTests(RoleTestCase):
    """
    The cloud role.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.cloud = Cloud(self.config("cloud"), LISTEN, LISTEN, LISTEN,
                           reactor=self.clock, socketFactory=self.factory)

    def test_interface(self):
        """
        Cloud provides ICloud, before and after it starts.
        """
        verifyObject(ICloud, self.cloud)
        self.start(self.cloud)
        verifyObject(ICloud, self.cloud)
        self.assertEqual(self.cloud.role, "cloud")

    def test_startStop(self):
        """
        Starting binds control, pub and sub; stopping closes them and cancels every timer.
        """
        self.start(self.cloud)
        self.assertEqual(sorted(self.cloud.endpoints()), ["control", "pub", "sub"])
        # The notification relay: its subscription XPUB and its data plane.
        self.assertEqual(sorted(s.kind for s in self.factory.sockets), ["router", "xpub"])
        self.assertTrue(self.factory.planes[0].started)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.cloud.stopService())
        self.assertTrue(self.factory.planes[0].stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(all(s.closed for s in self.factory.sockets))

    def test_clientPresence(self):
        """
        A client's hello and bye show in the cloud's presence and its observers.
        """
        self.start(self.cloud)
        recorder = PresenceRecorder()
        self.cloud.addObserver(recorder)
        self.router().receive([b"r1"] + helloFrames("c1", "ci"))
        self.assertTrue(self.cloud.isConnected("c1"))
        self.assertEqual(list(self.cloud.connectedClients()), ["c1"])
        self.router().receive([b"r1"] + protocol.encode(protocol.BYE, {}))
        self.assertFalse(self.cloud.isConnected("c1"))
        self.assertEqual([e[0] for e in recorder.events], ["connected", "disconnected"])
        self.cloud.removeObserver(recorder)

    def test_sysAnswerTooLarge(self):
        """
        A sys answer larger than the asker takes (its HELLO max) is answered
        ERR too-large instead: sent, it would cut the asker's connection.
        """
        self.start(self.cloud)
        router = self.router()
        for i in range(60):
            router.receive([b"c%02d" % i] + helloFrames(f"client-{i:02d}", f"ci-{i:02d}"))
        router.receive([b"small"] + helloFrames("small", "si", max=protocol.HEADROOM + 1000))
        router.sent.clear()
        router.receive([b"small"] + protocol.encode(protocol.REQUEST, {"id": 7, "sys": "presence"}))
        router.receive([b"c00"] + protocol.encode(protocol.REQUEST, {"id": 8, "sys": "presence"}))
        [err] = self.sentTo(router, b"small", protocol.ERROR)
        self.assertEqual((err.header["id"], err.header["code"]), (7, protocol.E_TOO_LARGE))
        self.assertIn("presence answer", err.header["msg"])
        self.assertEqual(self.sentTo(router, b"small", protocol.REPLY), [])
        [reply] = self.sentTo(router, b"c00", protocol.REPLY)
        self.assertEqual(len(msgpack.unpackb(reply.payload)), 61)

    def localMap(self, router, routingId, epoch, entries):
        router.receive([routingId] + protocol.encode(
            protocol.PRESENCE,
            {"map": "local", "kind": "snapshot", "epoch": epoch, "seq": 0},
            msgpack.packb([[list(k), v] for k, v in entries]),
        ))

    def test_clientsBelowProxies(self):
        """
        Clients reported up by proxies (a server's direct client, a LAN
        client) are in the cloud's presence; a server that moved to another
        proxy keeps its client connected when the old proxy forgets it; a
        malformed report is refused whole.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"p1"] + helloFrames("proxy1", "p1i", role="proxy"))
        router.receive([b"p2"] + helloFrames("proxy2", "p2i", role="proxy"))
        self.localMap(router, b"p1", "e1", [
            (("dora", "direct", "s1"), ["di", 1.0]), (("pat", "proxy", "proxy1"), ["pi", 1.0]),
        ])
        self.assertEqual(
            {c: sorted(p.paths) for c, p in self.cloud.connectedClients().items()},
            {"dora": ["direct@s1"], "pat": ["proxy@proxy1"]},
        )
        # s1 now reports through proxy2, and proxy1 drops it later.
        self.localMap(router, b"p2", "e2", [(("dora", "direct", "s1"), ["di", 1.0])])
        self.localMap(router, b"p1", "e1b", [(("pat", "proxy", "proxy1"), ["pi", 1.0])])
        self.assertTrue(self.cloud.isConnected("dora"))
        # A bad entry: the whole message is refused, nothing changes.
        self.localMap(router, b"p2", "e3", [(("eve", "direct", "s1"), "junk")])
        self.assertTrue(self.cloud.isConnected("dora"))
        self.assertFalse(self.cloud.isConnected("eve"))
        [error] = self.sentTo(router, b"p2", protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_BAD_MESSAGE)
        # proxy2 goes: dora goes with it.
        router.receive([b"p2"] + protocol.encode(protocol.BYE, {}))
        self.assertFalse(self.cloud.isConnected("dora"))
        self.assertTrue(self.cloud.isConnected("pat"))

    def test_noRoute(self):
        """
        A request for an unknown target is answered at once with ERR no-route.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"r1"] + helloFrames("c1"))
        router.receive([b"r1"] + protocol.encode(protocol.REQUEST, {"id": 5, "to": "nobody"}))
        [error] = self.sentTo(router, b"r1", protocol.ERROR)
        self.assertEqual((error.header["code"], error.header["id"]), (protocol.E_NO_ROUTE, 5))

    def test_syncThrottledCounted(self):
        """
        A proxy that asks the cloud for its presence snapshot again and again gets one per interval;
        the rest are counted in stats (sync.throttled).
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"p"] + helloFrames("proxy1", "pi", role="proxy"))
        before = len(self.sentTo(router, b"p", protocol.PRESENCE))
        for _ in range(20):
            router.receive([b"p"] + protocol.encode(protocol.SYNC, {"map": "presence"}))
        self.assertEqual(len(self.sentTo(router, b"p", protocol.PRESENCE)) - before, 1)
        self.assertEqual(self.cloud.stats()["sync.throttled"], 19)

    def test_movedRoutesCountedLogBounded(self):
        """
        A proxy whose snapshot takes over many servers from another: each move is counted
        (routes-moved), and the log lines about it are bounded.
        """
        from twisted.logger import capturedLogs

        self.start(self.cloud)
        router = self.router()
        servers = [[f"s{i}", [f"s{i}-inc", ["echo"]]] for i in range(50)]
        with capturedLogs() as events:
            for proxy in (b"p", b"q"):
                router.receive([proxy] + helloFrames(f"proxy-{proxy.decode()}", "pi", role="proxy"))
                router.receive([proxy] + protocol.encode(
                    protocol.ROUTES, {"map": "routes", "kind": "snapshot", "epoch": "e1", "seq": 0},
                    msgpack.packb(servers)))
        self.assertEqual(self.cloud.stats()["routes-moved"], 50)
        moved = [e for e in events if "now reported by proxy" in e.get("log_format", "")]
        self.assertLessEqual(len(moved), 10)
        self.assertTrue(moved)

    def test_forwardAndTargetLost(self):
        """
        A request goes to the proxy of its server, stamped; the reply comes back; a lost proxy fails the rest.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"p"] + helloFrames("proxy1", "pi", role="proxy"))
        [snapshot] = self.sentTo(router, b"p", protocol.PRESENCE)
        self.assertEqual(snapshot.header["kind"], "snapshot")
        router.receive([b"p"] + protocol.encode(
            protocol.ROUTES,
            {"map": "routes", "kind": "snapshot", "epoch": "e1", "seq": 0},
            msgpack.packb([["s1", ["s1-inc", ["echo"]]]]),
        ))
        self.assertEqual(self.cloud.servers(), {"s1": ("proxy1", ("echo",))})
        router.receive([b"c"] + helloFrames("c1", "ci"))
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 7, "to": "echo", "client": "liar"}, b"q"))
        [forwarded] = self.sentTo(router, b"p", protocol.REQUEST)
        h = forwarded.header
        self.assertEqual((h["client"], h["cinc"], h["creq"], h["path"], h["server"]),
                         ("c1", "ci", 7, "cloud", "s1"))
        self.assertEqual(forwarded.payload, b"q")
        router.receive([b"p"] + protocol.encode(protocol.REPLY, {"id": h["id"]}, b"a"))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual((reply.header["id"], reply.payload), (7, b"a"))
        # A second request in flight when the proxy goes.
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 8, "to": "s1"}))
        router.receive([b"p"] + protocol.encode(protocol.BYE, {}))
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual((error.header["code"], error.header["id"]), (protocol.E_TARGET_LOST, 8))
        self.assertEqual(self.cloud.servers(), {})

    def test_serverRefused(self):
        """
        A server may not attach to the cloud directly.
        """
        self.start(self.cloud)
        self.router().receive([b"s"] + helloFrames("s1", role="server"))
        [reject] = self.sentTo(self.router(), b"s", protocol.REJECT)
        self.assertEqual(reject.header["code"], protocol.E_REJECTED)

    def test_sysForAProxy(self):
        """
        A client's sys request naming a proxy id goes to that proxy, stamped, and its answer comes back; an application request naming a proxy gets no-route.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"p"] + helloFrames("proxy1", "pi", role="proxy"))
        router.receive([b"c"] + helloFrames("c1", "ci"))
        router.receive([b"c"] + protocol.encode(
            protocol.REQUEST, {"id": 7, "to": "proxy1", "sys": "stats"}))
        [forwarded] = self.sentTo(router, b"p", protocol.REQUEST)
        h = forwarded.header
        self.assertEqual((h["to"], h["sys"], h["client"], h["cinc"], h["creq"], h["path"]),
                         ("proxy1", "stats", "c1", "ci", 7, "cloud"))
        router.receive([b"p"] + protocol.encode(protocol.REPLY, {"id": h["id"]}, b"counters"))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual((reply.header["id"], reply.payload), (7, b"counters"))
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 8, "to": "proxy1"}))
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual((error.header["code"], error.header["id"]), (protocol.E_NO_ROUTE, 8))
        self.assertEqual(len(self.sentTo(router, b"p", protocol.REQUEST)), 1)

    def test_errorTextsNamesTypesPlainly(self):
        """
        ERR texts name a message type as text, never as a Python bytes repr; a sys that is not a str is bad-message.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"c"] + helloFrames("c1", "ci"))
        router.receive([b"c"] + protocol.encode(b"FROB", {"id": 1}))
        router.receive([b"c"] + protocol.encode(b"\xc1X", {"id": 2}))
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3, "sys": b"ping"}))
        errors = [e.header for e in self.sentTo(router, b"c", protocol.ERROR)]
        self.assertEqual(
            [(e["id"], e["code"], e["msg"]) for e in errors],
            [(1, protocol.E_UNKNOWN_TYPE, "a client may not send FROB here"),
             (2, protocol.E_UNKNOWN_TYPE, "a client may not send \\xc1X here"),
             (3, protocol.E_BAD_MESSAGE, "sys must be a str, not bytes")],
        )


class ProxyTests(RoleTestCase):
    """
    The proxy role.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.proxy = Proxy(self.config("proxy1"), LISTEN, LISTEN, LISTEN, "inproc://cloud",
                           reactor=self.clock, socketFactory=self.factory)

    def test_interface(self):
        """
        Proxy provides IProxy, before and after it starts.
        """
        verifyObject(IProxy, self.proxy)
        self.start(self.proxy)
        verifyObject(IProxy, self.proxy)

    def test_startStop(self):
        """
        Starting binds three sockets and dials the cloud; stopping leaves nothing scheduled.
        """
        self.start(self.proxy)
        [dealer] = self.dealers()
        self.assertEqual(dealer.connected, ["inproc://cloud"])
        self.assertEqual(dealer.messages()[0].header["role"], "proxy")
        self.successResultOf(self.proxy.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_routesUpstream(self):
        """
        A server attaching is routed, and its route is sent to the cloud once the link is up.
        """
        self.start(self.proxy)
        router = self.router()
        router.receive([b"s"] + helloFrames("s1", "si", role="server", services=["echo"]))
        self.assertEqual(self.proxy.servers(), {"s1": ("echo",)})
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("cloud", role="cloud", sub="inproc://cloud-sub"))
        [routes] = dealer.ofType(protocol.ROUTES)
        self.assertEqual(routes.header["kind"], "snapshot")
        self.assertEqual(msgpack.unpackb(routes.payload), [["s1", ["si", ["echo"]]]])
        # Its notifications now go on to the cloud.
        self.assertEqual(self.factory.planes[0].upstream[0], "inproc://cloud-sub")

    def test_servicesNil(self):
        """
        A server's HELLO with C{services} nil offers no service, as an absent field (PROTOCOL.md 4): it is
        welcomed and routed by its id; C{services} of the wrong type is refused.
        """
        self.start(self.proxy)
        router = self.router()
        router.receive([b"s"] + helloFrames("s1", "si", role="server", services=None))
        self.assertEqual(self.proxy.servers(), {"s1": ()})
        self.assertEqual([(r, m.type) for r, m in router.messages(routed=True)][:1], [(b"s", protocol.WELCOME)])
        router.receive([b"t"] + helloFrames("s2", "si", role="server", services="echo"))
        [reject] = [m for r, m in router.messages(routed=True) if m.type == protocol.REJECT]
        self.assertEqual(reject.header["code"], protocol.E_REJECTED)

    def test_presenceListsServersDirectClients(self):
        """
        The direct clients a server reports are in the proxy's presence as direct@<server id>, LAN clients as proxy, until the server goes.
        """
        self.start(self.proxy)
        router = self.router()
        router.receive([b"s"] + helloFrames("s1", "si", role="server"))
        router.receive([b"c"] + helloFrames("lan1", "li"))
        router.receive([b"s"] + protocol.encode(
            protocol.PRESENCE, {"map": "local", "kind": "snapshot", "epoch": "e1", "seq": 0},
            msgpack.packb([[["dora", "direct", "s1"], ["di", 1.0]]]),
        ))
        self.assertEqual(
            {c: p.asDict()["paths"] for c, p in self.proxy.connectedClients().items()},
            {"dora": ["direct@s1"], "lan1": ["proxy"]},
        )
        router.receive([b"s"] + protocol.encode(protocol.BYE, {}))
        self.assertEqual(list(self.proxy.connectedClients()), ["lan1"])

    def test_sysFromTheCloud(self):
        """
        A sys request the cloud forwards with the proxy's id in 'to' is answered by the proxy itself.
        """
        self.start(self.proxy)
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("cloud", role="cloud"))
        dealer.receive(protocol.encode(protocol.REQUEST, {
            "id": 12, "to": "proxy1", "sys": "ping", "client": "c1", "cinc": "ci", "creq": 7,
            "path": "cloud",
        }))
        [reply] = dealer.ofType(protocol.REPLY)
        self.assertEqual((reply.header, reply.payload), ({"id": 12}, b"pong"))


class RelayDrainTests(RoleTestCase):
    """
    A relay (here a proxy; the cloud runs the same code) that stops with
    requests in flight drains first (PROTOCOL.md 7.1).
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.proxy = Proxy(self.config("proxy1", drainTimeout=5.0), LISTEN, LISTEN, LISTEN,
                           "inproc://cloud", reactor=self.clock, socketFactory=self.factory)
        self.start(self.proxy)
        self.router = RoleTestCase.router(self)
        self.router.receive([b"s"] + helloFrames("s1", "si", role="server", services=["echo"]))
        self.router.receive([b"c"] + helloFrames("c1", "ci"))

    def forwarded(self):
        """
        The client asks s1 once; @return: the request as s1 got it.
        """
        self.router.receive([b"c"] + protocol.encode(
            protocol.REQUEST, {"id": 1, "to": "s1", "ttl": 600000}, b"q"))
        [request] = self.sentTo(self.router, b"s", protocol.REQUEST)
        return request

    def test_drainsWhatIsInFlight(self):
        """
        Stopping with a request in flight: HB drain to every peer, a new
        request refused with ERR shutdown, the answer in flight delivered,
        and only then BYE and the stop.
        """
        request = self.forwarded()
        stopped = self.proxy.stopService()
        self.assertNoResult(stopped)
        for peer in (b"s", b"c"):
            self.assertIn({"drain": True},
                          [m.header for m in self.sentTo(self.router, peer, protocol.HEARTBEAT)])
        self.router.receive([b"c"] + protocol.encode(
            protocol.REQUEST, {"id": 2, "to": "s1", "ttl": 600000}, b"q"))
        [refused] = self.sentTo(self.router, b"c", protocol.ERROR)
        self.assertEqual((refused.header["id"], refused.header["code"]), (2, protocol.E_SHUTDOWN))
        self.assertEqual(len(self.sentTo(self.router, b"s", protocol.REQUEST)), 1)
        self.clock.advance(1.0)
        self.assertNoResult(stopped)
        self.assertEqual(self.sentTo(self.router, b"c", protocol.BYE), [])
        self.router.receive([b"s"] + protocol.encode(
            protocol.REPLY, {"id": request.header["id"], "server": "s1", "sinc": "si"}, b"a"))
        self.clock.advance(0.5)
        [reply] = self.sentTo(self.router, b"c", protocol.REPLY)
        self.assertEqual((reply.header["id"], reply.payload), (1, b"a"))
        self.successResultOf(stopped)
        self.assertEqual(self.sentTo(self.router, b"c", protocol.BYE)[0].header, {"reason": "shutdown"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainEndsAtItsTimeout(self):
        """
        An answer that never comes holds the stop for --drain-timeout, no
        longer; then BYE shutdown tells the client (which retries elsewhere,
        PROTOCOL.md 10.3) and nothing is left scheduled.
        """
        self.forwarded()
        stopped = self.proxy.stopService()
        self.clock.advance(4.9)
        self.assertNoResult(stopped)
        self.assertEqual(self.sentTo(self.router, b"c", protocol.BYE), [])
        self.clock.advance(0.2)
        self.successResultOf(stopped)
        self.assertEqual(self.sentTo(self.router, b"c", protocol.BYE)[0].header, {"reason": "shutdown"})
        self.assertEqual(self.sentTo(self.router, b"c", protocol.REPLY), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledStopStopsNow(self):
        """
        Cancelling the stop of a draining relay stops it at once: BYE shutdown, its sockets
        closed, nothing left scheduled (it does not go on refusing new requests until the drain
        timeout, half stopped).
        """
        self.forwarded()
        stopped = self.proxy.stopService()
        self.assertNoResult(stopped)
        stopped.cancel()
        self.successResultOf(stopped)
        self.assertFalse(self.proxy.running)
        self.assertEqual(self.sentTo(self.router, b"c", protocol.BYE)[0].header, {"reason": "shutdown"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleStopsAtOnce(self):
        """
        With nothing in flight a relay stops at once, without HB drain.
        """
        self.successResultOf(self.proxy.stopService())
        self.assertEqual(
            [m for m in self.sentTo(self.router, b"c", protocol.HEARTBEAT) if m.header], [])


class ServerTests(RoleTestCase):
    """
    The server role, with direct clients and through a proxy.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.handler = RecordingHandler()
        self.server = Server(
            self.config("s1"), self.handler, ("echo",), listen=LISTEN, pub=LISTEN,
            proxy="inproc://proxy", reactor=self.clock, socketFactory=self.factory,
        )

    def test_interface(self):
        """
        Server provides IServer, before and after it starts.
        """
        verifyObject(IServer, self.server)
        self.start(self.server)
        verifyObject(IServer, self.server)

    def test_startStop(self):
        """
        Starting binds control and pub and dials the proxy; stopping leaves nothing scheduled.
        """
        self.start(self.server)
        self.assertEqual(sorted(self.server.endpoints()), ["control", "pub"])
        self.assertEqual(self.dealers()[0].connected, ["inproc://proxy"])
        self.assertEqual(self.dealers()[0].messages()[0].header["services"], ["echo"])
        self.successResultOf(self.server.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def directClient(self):
        router = self.router()
        router.receive([b"c"] + helloFrames("c1", "ci"))
        return router

    def test_directRequest(self):
        """
        A request from a direct client runs the handler and the reply goes back.
        """
        self.start(self.server)
        router = self.directClient()
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3, "to": "s1"}, b"hi"))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual((reply.header["id"], reply.payload), (3, b"re:hi"))
        [request] = self.handler.requests
        verifyObject(IRequest, request)
        self.assertEqual((request.clientId, request.clientIncarnation, request.requestId, request.path),
                         ("c1", "ci", 3, "direct"))
        self.assertTrue(self.server.isConnected("c1"))

    def test_directRetryFromCache(self):
        """
        A retried direct request (same id) is answered from the cache, the handler run once.
        """
        self.start(self.server)
        router = self.directClient()
        for _ in range(2):
            router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3}, b"hi"))
        replies = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual([(r.header["id"], r.payload) for r in replies], [(3, b"re:hi")] * 2)
        self.assertEqual(len(self.handler.requests), 1)
        self.assertEqual(self.server.stats()["cache.hits"], 1)

    def test_directInFlightLimit(self):
        """
        A direct client over its in-flight limit gets ERR over-limit with a
        retry-after, and gets its room back as its requests are answered.
        """
        pending = Deferred()
        self.handler.answers = lambda request: pending
        self.server.config.maxInFlight = 2
        self.start(self.server)
        router = self.directClient()
        for rid in (1, 2, 3):
            router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": rid}, b"x"))
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (3, protocol.E_OVER_LIMIT))
        self.assertGreater(error.header["retry"], 0)
        self.assertEqual(len(self.handler.requests), 2)
        pending.callback(b"ok")
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 4}, b"y"))
        self.assertEqual(len(self.handler.requests), 3)

    def test_malformedRequestsHoldNoRoom(self):
        """
        A direct client's malformed requests (a C{ttl} or C{to} of the wrong type) are answered ERR
        bad-message and hold none of its in-flight room: a buggy client does not lock itself out.
        """
        self.server.config.maxInFlight = 2
        self.start(self.server)
        router = self.directClient()
        for rid, extra in ((1, {"ttl": 1.5}), (2, {"to": 7}), (3, {"ttl": "soon"})):
            router.receive([b"c"] + protocol.encode(protocol.REQUEST, dict({"id": rid}, **extra), b"x"))
        errors = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual([(e.header["id"], e.header["code"]) for e in errors],
                         [(rid, protocol.E_BAD_MESSAGE) for rid in (1, 2, 3)])
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 4}, b"y"))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual(reply.header["id"], 4)

    def test_errorsNameTheServer(self):
        """
        Every ERR a server sends for an application request it took or refused names it (C{server},
        C{sinc}; PROTOCOL.md 10.2): over its in-flight limit, too large; one that came past its
        deadline (nothing ran, nothing kept) does not, so the client may retry it.
        """
        pending = Deferred()
        self.handler.answers = lambda request: pending
        self.server.config.maxInFlight = 1
        self.start(self.server)
        router = self.directClient()
        for header in ({"id": 1}, {"id": 2}, {"id": 3, "ttl": 0}):
            router.receive([b"c"] + protocol.encode(protocol.REQUEST, header, b"x"))
        pending.callback(b"ok")
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 5, "ttl": 0}, b"x"))
        errors = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual([(e.header["id"], e.header["code"]) for e in errors],
                         [(2, protocol.E_OVER_LIMIT), (3, protocol.E_OVER_LIMIT), (5, protocol.E_TIMEOUT)])
        for error in errors[:2]:
            self.assertEqual((error.header["server"], error.header["sinc"]),
                             (self.server.nodeId, self.server.incarnation))
        self.assertNotIn("server", errors[2].header)

    def test_replyLargerThanClientAccepts(self):
        """
        A reply larger than the direct client announced in its HELLO goes
        back as ERR too-large, never as a message its socket would refuse.
        """
        self.handler.answers = lambda request: b"y" * 5000
        self.start(self.server)
        router = self.router()
        router.receive([b"c"] + helloFrames("c1", "ci", max=4096))
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3}, b"x"))
        self.assertEqual(self.sentTo(router, b"c", protocol.REPLY), [])
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (3, protocol.E_TOO_LARGE))
        self.assertEqual(error.header["server"], self.server.nodeId)

    def test_cachedReplyLargerThanPeerAccepts(self):
        """
        A retry answered from the reply cache is held to the max of the peer
        it goes to, like a first answer.
        """
        self.handler.answers = lambda request: b"y" * 5000
        self.start(self.server)
        router = self.router()
        router.receive([b"c"] + helloFrames("c1", "ci"))
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3}, b"x"))
        self.assertEqual(len(self.sentTo(router, b"c", protocol.REPLY)), 1)
        router.receive([b"c"] + helloFrames("c1", "ci", max=4096))
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3}, b"x"))
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_TOO_LARGE)
        self.assertEqual(len(self.handler.requests), 1)

    def test_replayFitsWhatTheAskerAccepts(self):
        """
        A replay answer carries only as many notifications as fit the
        asker's max, oldest first.
        """
        self.start(self.server)
        for _ in range(3):
            self.server.publish(b"t", b"p" * 3000)
        router = self.router()
        router.receive([b"c"] + helloFrames("c1", "ci", max=8192))
        ask = msgpack.packb({"topic": b"t", "inc": "s1-inc", "first": 1, "last": 3}, use_bin_type=True)
        router.receive([b"c"] + protocol.encode(
            protocol.REQUEST, {"id": 4, "to": "s1", "sys": "replay"}, ask))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        items = msgpack.unpackb(reply.payload)["items"]
        self.assertEqual([seq for seq, _ in items], [1, 2])
        self.assertLessEqual(len(reply.payload), 8192 - protocol.HEADROOM)

    def test_sendLargerThanClientAccepts(self):
        """
        send() of more than the client accepts fails with TooLarge, unsent.
        """
        self.start(self.server)
        router = self.router()
        router.receive([b"c"] + helloFrames("c1", "ci", max=4096))
        self.failureResultOf(self.server.send("c1", b"z" * 5000), errors.TooLarge)
        self.assertEqual(self.sentTo(router, b"c", protocol.MESSAGE), [])

    def test_publishTooLarge(self):
        """
        publish() of more than the node's message size limit raises TooLarge
        and uses no sequence number.
        """
        self.server.config.maxMessageSize = 4096
        self.start(self.server)
        self.assertRaises(errors.TooLarge, self.server.publish, b"t", b"p" * 5000)
        self.assertEqual(self.server.publish(b"t", b"small"), 1)

    def test_sysByServiceName(self):
        """
        A sys request addressed by service name is answered by the server,
        never handed to the application.
        """
        self.start(self.server)
        router = self.directClient()
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 5, "to": "echo", "sys": "ping"}))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual(reply.payload, b"pong")
        self.assertEqual(self.handler.requests, [])

    def test_sysForAnotherNode(self):
        """
        A sys request whose C{to} names neither this server nor one of its services is never handed
        to the application: ERR no-route (PROTOCOL.md 10.7). A nil C{sys} is an absent one (an
        ordinary request, for the application).
        """
        self.start(self.server)
        router = self.directClient()
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 5, "to": "other", "sys": "ping"}))
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (5, protocol.E_NO_ROUTE))
        self.assertEqual(self.handler.requests, [])
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 6, "to": "echo", "sys": None}, b"hi"))
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual((reply.header["id"], reply.payload), (6, b"re:hi"))

    def linkUp(self):
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("proxy1", role="proxy"))
        return dealer

    def proxied(self, forwardId, creq=7, client="c9", cinc="c9-inc", **extra):
        header = {"id": forwardId, "to": "echo", "client": client, "cinc": cinc,
                  "creq": creq, "path": "cloud", "ttl": 5000}
        header.update(extra)
        return protocol.encode(protocol.REQUEST, header, b"job")

    def test_proxiedRetryRunsOnce(self):
        """
        Retries with the same (client, inc, creq) under new forward ids run the handler once.
        """
        self.start(self.server)
        dealer = self.linkUp()
        dealer.receive(self.proxied(100))
        dealer.receive(self.proxied(101))
        dealer.receive(self.proxied(102, cinc="restarted"))
        replies = dealer.ofType(protocol.REPLY)
        self.assertEqual([r.header["id"] for r in replies], [100, 101, 102])
        self.assertEqual(len(self.handler.requests), 2)
        self.assertEqual(self.handler.requests[0].clientId, "c9")
        self.assertEqual(self.handler.requests[0].path, "cloud")

    def test_malformedProxiedRequestAnswered(self):
        """
        A REQ from the proxy the server cannot read (no C{creq}, a float C{ttl}) is answered ERR
        bad-message with its id at once, so the proxy and the client do not wait for its deadline;
        an ERR from the proxy that cannot be read is not answered.
        """
        self.start(self.server)
        dealer = self.linkUp()
        dealer.receive(self.proxied(100, creq=None))
        dealer.receive(self.proxied(101, ttl=1.5))
        dealer.receive(protocol.encode(protocol.ERROR, {"code": protocol.E_OVER_LIMIT, "msg": "x", "id": "?"}))
        errors = dealer.ofType(protocol.ERROR)
        self.assertEqual([(e.header["id"], e.header["code"]) for e in errors],
                         [(100, protocol.E_BAD_MESSAGE), (101, protocol.E_BAD_MESSAGE)])
        self.assertEqual(self.handler.requests, [])

    def test_runningRequestJoined(self):
        """
        A retry arriving while the handler still runs gets the same answer, without a second run.
        """
        pending = Deferred()
        self.handler.answers = lambda request: pending
        self.start(self.server)
        dealer = self.linkUp()
        dealer.receive(self.proxied(100))
        dealer.receive(self.proxied(101))
        self.assertEqual(dealer.ofType(protocol.REPLY), [])
        pending.callback(b"done")
        self.assertEqual([(r.header["id"], r.payload) for r in dealer.ofType(protocol.REPLY)],
                         [(100, b"done"), (101, b"done")])
        self.assertEqual(len(self.handler.requests), 1)

    def test_answerNotSentToARestartedProxy(self):
        """
        A handler that finishes after its proxy restarted does not answer the
        new proxy process, which may use the same forward id for another
        request: the answer is dropped (counted stale).
        """
        answers = {}
        self.handler.answers = lambda request: answers.setdefault(request.clientId, Deferred())
        self.start(self.server)
        old = self.linkUp()
        old.receive(self.proxied(1, client="alice"))
        old.receive(protocol.encode(protocol.ERROR, {"code": protocol.E_HELLO_FIRST}))
        self.clock.advance(0)
        new = self.dealers()[-1]
        self.assertIsNot(new, old)
        new.receive(welcomeFrames("proxy1", role="proxy", incarnation="restarted"))
        new.receive(self.proxied(1, client="bob"))
        answers["alice"].callback(b"alice's answer")
        self.assertEqual(new.ofType(protocol.REPLY), [])
        self.assertEqual(self.server.stats()["stale"], 1)
        answers["bob"].callback(b"bob's answer")
        self.assertEqual([r.payload for r in new.ofType(protocol.REPLY)], [b"bob's answer"])

    def test_stopCancelsRunningHandlers(self):
        """
        Stopping the server cancels handlers still running: their clients get
        ERR shutdown and no timer is left; a later start connects the
        publisher to the proxy again.
        """
        self.handler.answers = lambda request: Deferred()
        self.start(self.server)
        router = self.directClient()
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3, "ttl": 600000}, b"x"))
        stopped = self.server.stopService()
        self.assertNoResult(stopped)
        self.clock.advance(self.server.config.drainTimeout)
        self.successResultOf(stopped)
        [error] = self.sentTo(router, b"c", protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (3, protocol.E_SHUTDOWN))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopDrainsRunningHandlers(self):
        """
        Stopping with a handler running: HB drain goes to the proxy and the
        direct clients, the handler's reply (naming the server) is delivered,
        and only then BYE; nothing is cancelled.
        """
        running = Deferred()
        self.handler.answers = lambda request: running
        self.start(self.server)
        self.dealers()[0].receive(welcomeFrames("proxy1", role="proxy"))
        router = self.directClient()
        router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": 3, "ttl": 600000}, b"x"))
        stopped = self.server.stopService()
        self.assertNoResult(stopped)
        [drain] = [m for m in self.sentTo(router, b"c", protocol.HEARTBEAT) if m.header]
        self.assertEqual(drain.header, {"drain": True})
        self.assertIn({"drain": True}, [m.header for m in self.dealers()[0].ofType(protocol.HEARTBEAT)])
        self.assertEqual(self.sentTo(router, b"c", protocol.BYE), [])
        self.clock.advance(1.0)
        self.assertNoResult(stopped)
        running.callback(b"done")
        [reply] = self.sentTo(router, b"c", protocol.REPLY)
        self.assertEqual((reply.header["server"], reply.header["sinc"]), ("s1", "s1-inc"))
        self.clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(len(self.sentTo(router, b"c", protocol.BYE)), 1)
        self.assertEqual(self.sentTo(router, b"c", protocol.ERROR), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_publisherReconnectsAfterRestart(self):
        """
        Stopped and started again, the server's new publisher socket connects
        to the proxy's sub endpoint again.
        """
        for _ in range(2):
            self.start(self.server)
            self.dealers()[-1].receive(
                welcomeFrames("proxy1", role="proxy", sub="tcp://127.0.0.1:7001")
            )
            xpub = self.factory.ofKind("xpub")[-1]
            self.assertEqual(xpub.connected, ["tcp://127.0.0.1:7001"])
            self.successResultOf(self.server.stopService())

    def test_handlerNeverAnswers(self):
        """
        A handler that never answers yields ERR timeout at the deadline, and no timer is left.
        """
        self.handler.answers = lambda request: Deferred()
        self.start(self.server)
        dealer = self.linkUp()
        dealer.receive(self.proxied(100, ttl=500))
        self.clock.advance(0.5)
        [error] = dealer.ofType(protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (100, protocol.E_TIMEOUT))

    def test_handlerFails(self):
        """
        A handler exception goes back as ERR handler-error.
        """
        def boom(request):
            raise ValueError("nope")

        self.handler.answers = boom
        self.start(self.server)
        dealer = self.linkUp()
        dealer.receive(self.proxied(100))
        [error] = dealer.ofType(protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_HANDLER)
        self.assertIn("nope", error.header["msg"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_handlerOwnTimeoutIsAHandlerError(self):
        """
        A handler that fails with a timeout of its own (the built-in TimeoutError, or Twisted's)
        before the deadline failed: ERR handler-error, not timeout, which means the deadline passed.
        """
        from twisted.internet import defer

        def ownTimeout(request):
            if request.requestId == 100:
                raise TimeoutError("the database did not answer")
            return defer.fail(defer.TimeoutError("an inner call timed out"))

        self.handler.answers = ownTimeout
        self.start(self.server)
        dealer = self.linkUp()
        dealer.receive(self.proxied(100, creq=1))
        dealer.receive(self.proxied(101, creq=2))
        self.assertEqual([(m.header["id"], m.header["code"]) for m in dealer.ofType(protocol.ERROR)],
                         [(100, protocol.E_HANDLER), (101, protocol.E_HANDLER)])
        self.flushLoggedErrors(TimeoutError, defer.TimeoutError)

    def test_handlerResultKinds(self):
        """
        Bytes, a coroutine, a Deferred and a returned Failure are all answers
        (a REP, or ERR handler-error); anything else is ERR handler-error;
        each is timed in the handler histogram.
        """
        async def coroutine(request):
            return b"from a coroutine"

        results = {
            101: lambda request: b"at once",
            102: coroutine,
            103: lambda request: succeed(b"from a Deferred"),
            104: lambda request: Failure(ValueError("returned failure")),
            105: lambda request: "text, not bytes",
        }
        self.handler.answers = lambda request: results[request.requestId](request)
        self.start(self.server)
        dealer = self.linkUp()
        for rid in sorted(results):
            dealer.receive(self.proxied(rid, creq=rid))
        replies = {m.header["id"]: m.payload for m in dealer.ofType(protocol.REPLY)}
        self.assertEqual(replies, {101: b"at once", 102: b"from a coroutine", 103: b"from a Deferred"})
        errors_ = {m.header["id"]: m.header["code"] for m in dealer.ofType(protocol.ERROR)}
        self.assertEqual(errors_, {104: protocol.E_HANDLER, 105: protocol.E_HANDLER})
        self.assertEqual(self.server.timings["handler"].count, 5)
        self.assertEqual(self.server._running, {})
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_publish(self):
        """
        publish() numbers notifications per topic and sends them on the XPUB.
        """
        self.start(self.server)
        xpub = self.factory.ofKind("xpub")[0]
        xpub.receive([b"\x01t"])
        self.assertEqual(self.server.publish(b"t", b"one"), 1)
        self.assertEqual(self.server.publish(b"t", b"two"), 2)
        xpub = self.factory.ofKind("xpub")[0]
        topic, message = protocol.decodeNotification(xpub.sent[-1])
        self.assertEqual((topic, message.header, message.payload),
                         (b"t", {"server": "s1", "inc": "s1-inc", "seq": 2}, b"two"))

    def test_sendToUnknownClient(self):
        """
        send() to a client that is not connected fails with NoRoute at once.
        """
        self.start(self.server)
        self.failureResultOf(self.server.send("ghost", b"x"), errors.NoRoute)

    def test_sendToDirectClient(self):
        """
        send() to a direct client fires with None when the client acks it.
        """
        self.start(self.server)
        router = self.directClient()
        d = self.server.send("c1", b"note")
        [msg] = self.sentTo(router, b"c", protocol.MESSAGE)
        self.assertEqual((msg.header["to"], msg.header["from"], msg.payload), ("c1", "s1", b"note"))
        # An id of its own that no relay rewrites, unique across restarts.
        self.assertEqual(msg.header["mid"], f"{self.server.incarnation}/{msg.header['id']}")
        self.assertNoResult(d)
        router.receive([b"c"] + protocol.encode(protocol.REPLY, {"id": msg.header["id"]}))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.server.calls), 0)

    def test_sendQueueFull(self):
        """
        send() whose message cannot be queued fails with OverLimit at once,
        leaving no call or timer behind.
        """
        self.start(self.server)
        router = self.directClient()
        router.sendResult = False
        self.failureResultOf(self.server.send("c1", b"note"), errors.OverLimit)
        self.assertEqual(len(self.server.calls), 0)


class ClientTests(RoleTestCase):
    """
    The client role, on one path through the cloud.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(self.config("c1", requestTimeout=0.5, attempts=3),
                             cloud="inproc://cloud", reactor=self.clock, socketFactory=self.factory)

    def test_interface(self):
        """
        Client provides IClient, before and after it starts.
        """
        verifyObject(IClient, self.client)
        self.start(self.client)
        verifyObject(IClient, self.client)

    def test_needsAnAddress(self):
        """
        A client with nowhere to connect is refused at construction.
        """
        self.assertRaises(ValueError, Client, self.config("c2"), reactor=self.clock,
                          socketFactory=self.factory)

    def connect(self):
        self.start(self.client)
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("cloud", role="cloud", pub="inproc://cloud-pub"))
        return dealer

    def test_whenConnected(self):
        """
        whenConnected() fires on WELCOME, and the SUB socket follows the advertised pub endpoint.
        """
        self.start(self.client)
        d = self.client.whenConnected(5.0)
        self.assertNoResult(d)
        self.dealers()[0].receive(welcomeFrames("cloud", role="cloud", pub="inproc://cloud-pub"))
        self.successResultOf(d)
        self.assertEqual(self.factory.ofKind("sub")[0].connected, ["inproc://cloud-pub"])

    def test_reply(self):
        """
        request() fires with the reply payload.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q")
        [req] = dealer.ofType(protocol.REQUEST)
        self.assertEqual((req.header["to"], req.header["ttl"], req.payload), ("echo", 500, b"q"))
        dealer.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")

    def test_timeoutAfterAttempts(self):
        """
        With no answer, request() fails with RequestTimeout after its attempts, all with one id.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q", timeout=1.5)
        for _ in range(3):
            self.assertNoResult(d)
            self.clock.advance(0.5)
        self.failureResultOf(d, errors.RequestTimeout)
        ids = {m.header["id"] for m in dealer.ofType(protocol.REQUEST)}
        self.assertEqual(len(dealer.ofType(protocol.REQUEST)), 3)
        self.assertEqual(len(ids), 1)
        self.assertEqual(len(self.client.calls), 0)

    def test_noRoute(self):
        """
        ERR no-route on the only path fails request() with NoRoute, without waiting.
        """
        dealer = self.connect()
        d = self.client.request("nobody", b"q")
        [req] = dealer.ofType(protocol.REQUEST)
        dealer.receive(protocol.encode(protocol.ERROR, {
            "id": req.header["id"], "code": protocol.E_NO_ROUTE, "msg": "no such"}))
        self.clock.advance(0)
        self.failureResultOf(d, errors.NoRoute)
        self.assertEqual(len(dealer.ofType(protocol.REQUEST)), 1)

    def test_tooLargeRefusedLocally(self):
        """
        A request larger than the path announced it accepts fails at once
        with TooLarge, and nothing is sent.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"x" * (4 * 1024 * 1024))
        self.failureResultOf(d, errors.TooLarge)
        self.assertEqual(dealer.ofType(protocol.REQUEST), [])

    def test_noRouteDirectOnly(self):
        """
        A client attached only to servers fails at once with NoRoute for a
        target none of them is or offers.
        """
        client = Client(self.config("c3", requestTimeout=0.5, attempts=3),
                        servers=["inproc://s1"], reactor=self.clock, socketFactory=self.factory)
        self.start(client)
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("s1", role="server", services=["echo"]))
        d = client.request("nobody", b"q")
        self.failureResultOf(d, errors.NoRoute)
        self.assertEqual(dealer.ofType(protocol.REQUEST), [])

    def test_directServersTakenInTurn(self):
        """
        A client attached directly to two servers of one service sends its
        requests to each in turn; a request asking one server by id goes to it.
        """
        client = Client(self.config("c4", requestTimeout=5.0),
                        servers=["inproc://s1", "inproc://s2"], reactor=self.clock,
                        socketFactory=self.factory)
        self.start(client)
        one, two = self.dealers()
        one.receive(welcomeFrames("s1", role="server", incarnation="s1i", services=["echo"]))
        two.receive(welcomeFrames("s2", role="server", incarnation="s2i", services=["echo"]))
        calls = [client.request("echo", b"q%d" % i) for i in range(4)]
        self.clock.advance(0)
        self.assertEqual((len(one.ofType(protocol.REQUEST)), len(two.ofType(protocol.REQUEST))), (2, 2))
        calls.append(client.request("s1", b"only"))
        self.clock.advance(0)
        self.assertEqual(one.ofType(protocol.REQUEST)[-1].payload, b"only")
        self.assertEqual(client.primary.counters["switches"], 0)
        for d in calls:
            d.cancel()
            self.failureResultOf(d, CancelledError)

    def test_handlerErrorNotRetried(self):
        """
        A handler error is final: no retry.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q")
        [req] = dealer.ofType(protocol.REQUEST)
        dealer.receive(protocol.encode(protocol.ERROR, {"id": req.header["id"], "code": protocol.E_HANDLER}))
        self.clock.advance(1)
        self.failureResultOf(d, errors.HandlerError)
        self.assertEqual(len(dealer.ofType(protocol.REQUEST)), 1)

    def test_cancel(self):
        """
        Cancelling a request abandons it: no retries, no timers, a late reply ignored.
        """
        dealer = self.connect()
        before = set(self.clock.getDelayedCalls())
        d = self.client.request("echo", b"q")
        self.assertNotEqual(set(self.clock.getDelayedCalls()), before)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(set(self.clock.getDelayedCalls()), before)
        self.assertEqual(len(self.client.calls), 0)
        self.assertEqual(self.client._attempts, {})
        self.clock.advance(2.0)
        self.assertEqual(len(dealer.ofType(protocol.REQUEST)), 1)
        [req] = dealer.ofType(protocol.REQUEST)
        dealer.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"late"))
        self.assertEqual(self.client.calls.late, 1)

    def test_notConnected(self):
        """
        With failFast and no path up, request() fails with NotConnected once its attempts are spent.
        """
        self.start(self.client)
        d = self.client.request("echo", b"q", failFast=True)
        for _ in range(2):
            self.clock.advance(0.5)
            self.assertNoResult(d)
        self.clock.advance(0.5)
        self.failureResultOf(d, errors.NotConnected)

    def test_noPathWaitsUntilDeadline(self):
        """
        With no path up, request() waits for one until its deadline, then fails with NotConnected.
        """
        self.start(self.client)
        d = self.client.request("echo", b"q", timeout=2.0)
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.failureResultOf(d, errors.NotConnected)
        self.assertEqual(self.client._changeWaiters, [])

    def test_everyPathRefusedFailsAtOnce(self):
        """
        When every path answered hello with a REJECT (no common version), request() fails at once with it.
        """
        self.start(self.client)
        [dealer] = self.dealers()
        dealer.receive(protocol.encode(protocol.REJECT, {
            "code": protocol.E_VERSION, "msg": "no common version", "versions": [9]}))
        d = self.client.request("echo", b"q", timeout=2.0)
        self.failureResultOf(d, errors.VersionMismatch)
        self.assertEqual(self.client._changeWaiters, [])

    def test_noPathSentWhenLinkComesUp(self):
        """
        A request waiting for a path is sent the moment a link comes up (an event, no polling).
        """
        self.start(self.client)
        d = self.client.request("echo", b"q", timeout=2.0)
        self.clock.advance(1.5)
        self.assertEqual(len(self.client._changeWaiters), 1)
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("cloud", role="cloud", pub="inproc://cloud-pub"))
        [req] = dealer.ofType(protocol.REQUEST)
        self.assertEqual(req.header["ttl"], 500)
        dealer.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"ok"))
        self.assertEqual(self.successResultOf(d), b"ok")

    def test_knownNoRouteWaits(self):
        """
        ERR no-route with known: the request is asked again after a backoff, within its budget, and succeeds.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q", timeout=2.0)
        [req] = dealer.ofType(protocol.REQUEST)
        dealer.receive(protocol.encode(protocol.ERROR, {
            "id": req.header["id"], "code": protocol.E_NO_ROUTE, "msg": "away", "known": True}))
        self.assertNoResult(d)
        self.clock.advance(0.05)
        again = dealer.ofType(protocol.REQUEST)[-1]
        self.assertEqual(again.header["id"], req.header["id"])
        dealer.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"ok"))
        self.assertEqual(self.successResultOf(d), b"ok")

    def test_knownNoRouteUnavailableAtDeadline(self):
        """
        A target known but never reachable within the budget ends in Unavailable at the deadline.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q", timeout=1.0)

        def refuse():
            req = dealer.ofType(protocol.REQUEST)[-1]
            dealer.receive(protocol.encode(protocol.ERROR, {
                "id": req.header["id"], "code": protocol.E_NO_ROUTE, "msg": "away", "known": True}))

        refuse()
        for _ in range(19):
            self.clock.advance(0.05)
            if self.client.calls._calls:
                refuse()
        self.assertNoResult(d)
        self.clock.advance(0.05)
        self.failureResultOf(d, errors.Unavailable)

    def test_retryNamesServer(self):
        """
        Once an answer said which server has the request, retries through a relay name it (server, sinc).
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q", timeout=3.0)
        [req] = dealer.ofType(protocol.REQUEST)
        self.assertNotIn("server", req.header)
        dealer.receive(protocol.encode(protocol.ERROR, {
            "id": req.header["id"], "code": protocol.E_OVER_LIMIT, "msg": "busy", "retry": 0.1,
            "server": "s1", "sinc": "s1-inc"}))
        self.clock.advance(0.1)
        again = dealer.ofType(protocol.REQUEST)[-1]
        self.assertEqual((again.header["server"], again.header["sinc"]), ("s1", "s1-inc"))
        self.assertLess(again.header["ttl"], 3000)
        dealer.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"ok"))
        self.assertEqual(self.successResultOf(d), b"ok")

    def test_shutdownRetried(self):
        """
        ERR shutdown from a relay is not the application's: the request is sent again.
        """
        dealer = self.connect()
        d = self.client.request("echo", b"q", timeout=2.0)
        [req] = dealer.ofType(protocol.REQUEST)
        dealer.receive(protocol.encode(protocol.ERROR, {
            "id": req.header["id"], "code": protocol.E_SHUTDOWN, "msg": "draining"}))
        self.clock.advance(0.05)
        self.assertEqual(len(dealer.ofType(protocol.REQUEST)), 2)
        dealer.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"ok"))
        self.assertEqual(self.successResultOf(d), b"ok")

    def test_notRunning(self):
        """
        request() on a stopped client fails at once with NotConnected.
        """
        self.failureResultOf(self.client.request("echo", b"q"), errors.NotConnected)

    def test_stopFailsPending(self):
        """
        Stopping fails pending requests with ShuttingDown and leaves no timer.
        """
        self.connect()
        d = self.client.request("echo", b"q")
        self.successResultOf(self.client.stopService())
        self.failureResultOf(d, errors.ShuttingDown)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def notification(self, seq, topic=b"t", payload=b"n"):
        return protocol.encodeNotification(topic, {"server": "s1", "inc": "si", "seq": seq}, payload)

    def test_notificationsDeduplicated(self):
        """
        A notification seen twice (two paths) is delivered once; malformed ones are counted.
        """
        self.connect()
        receiver = NotificationRecorder()
        self.client.subscribe(b"t", receiver)
        sub = self.factory.ofKind("sub")[0]
        self.assertEqual(sub.subscriptions, [b"t"])
        sub.receive(self.notification(1))
        sub.receive(self.notification(1))
        sub.receive([b"t", b"junk"])
        self.assertEqual([n.seq for n in receiver.notifications], [1])
        self.assertEqual(self.client.stats()["malformed"], 1)
        self.client.unsubscribe(b"t", receiver)
        self.assertEqual(sub.subscriptions, [])

    def test_gapReplayed(self):
        """
        A gap is asked of the server after a grace period and the replayed items delivered.
        """
        dealer = self.connect()
        receiver = NotificationRecorder()
        self.client.subscribe(b"", receiver)
        sub = self.factory.ofKind("sub")[0]
        sub.receive(self.notification(1))
        sub.receive(self.notification(4))
        self.assertEqual(dealer.ofType(protocol.REQUEST), [])
        self.clock.advance(GAP_GRACE)
        [ask] = dealer.ofType(protocol.REQUEST)
        self.assertEqual((ask.header["to"], ask.header["sys"]), ("s1", "replay"))
        self.assertEqual(msgpack.unpackb(ask.payload),
                         {"topic": b"t", "inc": "si", "first": 2, "last": 3})
        dealer.receive(protocol.encode(
            protocol.REPLY, {"id": ask.header["id"]},
            msgpack.packb({"inc": "si", "items": [[2, b"two"]]}, use_bin_type=True)))
        self.assertEqual([(n.seq, n.replayed) for n in receiver.notifications],
                         [(1, False), (4, False), (2, True)])
        [gap] = receiver.gaps
        self.assertEqual((gap.first, gap.last), (3, 3))

    def test_badReplayAnswerTakesNothing(self):
        """
        A replay answer with an item outside the gap, a seq that is not an int, or a payload that is
        not bytes is not taken (counted malformed): it cannot move the stream forward past what the
        server really published, and the gap is reported lost.
        """
        dealer = self.connect()
        receiver = NotificationRecorder()
        self.client.subscribe(b"", receiver)
        sub = self.factory.ofKind("sub")[0]
        sub.receive(self.notification(1))
        seq = 1
        for bad in ([[10 ** 6, b"far"]], [[2.0, b"float"]], [[2, "text"]], [[3, b"three"], [2, b"two"]]):
            # Each time a gap of one (seq - 1), and an answer that is not a replay of it.
            seq += 2
            sub.receive(self.notification(seq))
            self.clock.advance(GAP_GRACE)
            ask = dealer.ofType(protocol.REQUEST)[-1]
            dealer.receive(protocol.encode(
                protocol.REPLY, {"id": ask.header["id"]},
                msgpack.packb({"inc": "si", "items": bad}, use_bin_type=True)))
        self.assertEqual([n.replayed for n in receiver.notifications], [False] * 5)
        self.assertEqual(self.client.stats()["malformed"], 4)
        self.assertEqual(len(receiver.gaps), 4)

    def test_resubscribeIsNoGap(self):
        """
        What was published while a topic was unsubscribed is not a gap when
        it is subscribed again: no replay, no loss reported.
        """
        dealer = self.connect()
        receiver = NotificationRecorder()
        self.client.subscribe(b"t", receiver)
        sub = self.factory.ofKind("sub")[0]
        sub.receive(self.notification(1))
        self.client.unsubscribe(b"t", receiver)
        self.client.subscribe(b"t", receiver)
        sub.receive(self.notification(5000))
        self.clock.advance(GAP_GRACE)
        self.assertEqual(dealer.ofType(protocol.REQUEST), [])
        self.assertEqual([n.seq for n in receiver.notifications], [1, 5000])
        self.assertEqual(receiver.gaps, [])

    def test_noReplayAfterUnsubscribe(self):
        """
        A gap in a topic unsubscribed before its grace period ended is not
        asked of the server.
        """
        dealer = self.connect()
        receiver = NotificationRecorder()
        self.client.subscribe(b"t", receiver)
        sub = self.factory.ofKind("sub")[0]
        sub.receive(self.notification(1))
        sub.receive(self.notification(4))
        self.client.unsubscribe(b"t", receiver)
        self.clock.advance(GAP_GRACE)
        self.assertEqual(dealer.ofType(protocol.REQUEST), [])

    def test_batchedRequestsAndRefusedBatch(self):
        """
        Toward a cloud that takes batches, requests of one reactor turn go as
        one BATCH; a BATCH the queue refuses fails only its attempts, which
        are retried.
        """
        self.start(self.client)
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("cloud", role="cloud", pub="inproc://cloud-pub", batch=8))
        dealer.clear()
        one = self.client.request("echo", b"one")
        two = self.client.request("echo", b"two", attempts=1)
        self.clock.advance(0)
        [frames] = dealer.sent
        batch = protocol.decode(frames)
        self.assertEqual(batch.type, protocol.BATCH)
        ids = [m.header["id"] for m in protocol.decodeBatch(batch, 8)]
        dealer.receive(protocol.encode(protocol.REPLY, {"id": ids[0]}, b"ok"))
        self.assertEqual(self.successResultOf(one), b"ok")
        dealer.receive(protocol.encode(protocol.REPLY, {"id": ids[1]}, b"ok2"))
        self.assertEqual(self.successResultOf(two), b"ok2")
        dealer.clear()
        three = self.client.request("echo", b"three", attempts=1)
        four = self.client.request("echo", b"four")
        dealer.sendResult = False
        self.clock.advance(0)
        self.failureResultOf(three, errors.OverLimit)
        self.assertNoResult(four)
        dealer.sendResult = True
        self.clock.advance(0.1)
        [retry] = dealer.ofType(protocol.REQUEST)
        self.assertEqual(retry.payload, b"four")
        dealer.receive(protocol.encode(protocol.REPLY, {"id": retry.header["id"]}, b"ok4"))
        self.assertEqual(self.successResultOf(four), b"ok4")

    def test_fullQueueFailsOnlyThatRequest(self):
        """
        A send refused by a full queue retries that request only, not others in flight.
        """
        dealer = self.connect()
        first = self.client.request("echo", b"first")
        dealer.sendResult = False
        second = self.client.request("echo", b"second", attempts=2)
        for _ in range(4):
            self.clock.advance(0.05)
        self.failureResultOf(second, errors.OverLimit)
        requests = [m for m in dealer.ofType(protocol.REQUEST) if m.payload == b"first"]
        self.assertEqual(len(requests), 1)
        self.assertNoResult(first)
        dealer.sendResult = True
        dealer.receive(protocol.encode(protocol.REPLY, {"id": requests[0].header["id"]}, b"ok"))
        self.assertEqual(self.successResultOf(first), b"ok")
