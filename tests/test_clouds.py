"""
Tests for a cloud of several nodes (issue 10), on fake sockets and a
L{Clock}: cloud peering (L{zmqrelay.roles.cloud}), a proxy of several clouds
(L{zmqrelay.roles.proxy}) and a client that moves between clouds
(L{zmqrelay.roles.client}).
"""

import msgpack

from zmqrelay.core import protocol
from zmqrelay.roles import metrics
from zmqrelay.roles.client import Client
from zmqrelay.roles.cloud import Cloud, moveGrace
from zmqrelay.roles.proxy import Proxy

from zmqrelay.tools.tap import client as clientTap
from zmqrelay.tools.tap import cloud as cloudTap
from zmqrelay.tools.tap import proxy as proxyTap

from tests.fakes import PresenceRecorder, helloFrames, welcomeFrames
from tests.test_plugins import OptionsTestCase
from tests.test_roles import LISTEN, RoleTestCase


def advance(clock, seconds, step=0.1):
    """
    Advance C{clock} in small steps, as a running reactor would (one big
    jump looks like a stalled process to the links' liveness checks).
    """
    for _ in range(int(seconds / step)):
        clock.advance(step)



def _snapshot(link, epoch, inc, since):
    """
    The node at the other end of C{link} sends a snapshot: client c9
    (incarnation C{inc}, since C{since}) is attached to it.
    """
    link.receive(protocol.encode(
        protocol.PRESENCE, *presenceMap("snapshot", epoch, 0, [(("c9", "cloud"), [inc, since])])
    ))

class _MoveRecorder(PresenceRecorder):
    def clientMoved(self, event):
        self.events.append(("moved", event.clientId, event.incarnation, event.path))


def presenceMap(kind, epoch, seq, entries=None, op=None):
    """
    @return: (header, payload) of a C{presence} map message.
    """
    header = {"map": "presence", "kind": kind, "epoch": epoch, "seq": seq}
    if kind == "snapshot":
        payload = msgpack.packb([[list(k), v] for k, v in entries])
    elif kind == "delta":
        payload = msgpack.packb(op)
    else:
        payload = b""
    return header, payload


class CloudPeeringTests(RoleTestCase):
    """
    Clouds that list each other as C{--peer} share their clients' presence.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.cloud = Cloud(self.config("cloud1"), LISTEN, LISTEN, LISTEN,
                           reactor=self.clock, socketFactory=self.factory, peers=["inproc://cloud2"])

    def peerLink(self):
        [dealer] = self.dealers()
        self.assertEqual(dealer.connected, ["inproc://cloud2"])
        return dealer

    def welcome(self, dealer):
        dealer.receive(welcomeFrames("cloud2", role=protocol.CLOUD))

    def test_dialsPeersAsACloud(self):
        """
        A cloud dials each peer saying HELLO as a cloud, and sends it its clients once welcomed.
        """
        self.start(self.cloud)
        dealer = self.peerLink()
        self.assertEqual(dealer.messages()[0].header["role"], protocol.CLOUD)
        self.router().receive([b"r1"] + helloFrames("c1", "c1i"))
        self.welcome(dealer)
        [snapshot] = dealer.ofType(protocol.PRESENCE)
        self.assertEqual(snapshot.header["kind"], "snapshot")
        self.assertEqual(msgpack.unpackb(snapshot.payload), [[["c1", "cloud"], ["c1i", snapshot and
                                                              msgpack.unpackb(snapshot.payload)[0][1][1]]]])
        # A later client is a delta to the peer.
        self.router().receive([b"r2"] + helloFrames("c2", "c2i"))
        delta = dealer.ofType(protocol.PRESENCE)[-1]
        self.assertEqual(delta.header["kind"], "delta")

    def test_peerClientsKnownAndReady(self):
        """
        A peer's clients are listed as cloud@<peer id>; the view is complete once its snapshot is in.
        """
        self.start(self.cloud)
        self.assertFalse(self.cloud.ready)
        dealer = self.peerLink()
        self.welcome(dealer)
        self.assertFalse(self.cloud.ready)
        _snapshot(dealer, "e2", "c9i", 5.0)
        self.assertTrue(self.cloud.ready)
        self.assertEqual(sorted(self.cloud.presence.get("c9").paths), ["cloud@cloud2"])

    def test_presenceAnsweredOnceComplete(self):
        """
        A restarted cloud answers a presence query only once its peer's presence is in.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"r1"] + helloFrames("asker", "ai"))
        router.receive([b"r1"] + protocol.encode(protocol.REQUEST, {"id": 1, "sys": "presence"}))
        self.assertEqual(self.sentTo(router, b"r1", protocol.REPLY), [])
        dealer = self.peerLink()
        self.welcome(dealer)
        _snapshot(dealer, "e2", "c9i", 5.0)
        [reply] = self.sentTo(router, b"r1", protocol.REPLY)
        self.assertEqual(sorted(msgpack.unpackb(reply.payload)), ["asker", "c9"])

    def test_presenceWithBadIdAnsweredAtOnce(self):
        """
        A presence query with an id that is not an int, sent while the cloud waits for its peers,
        is answered ERR bad-message at once (not lost in a callback after the wait).
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"r1"] + helloFrames("asker", "ai"))
        router.receive([b"r1"] + protocol.encode(protocol.REQUEST, {"id": True, "sys": "presence"}))
        [error] = self.sentTo(router, b"r1", protocol.ERROR)
        self.assertEqual(error.header["code"], protocol.E_BAD_MESSAGE)
        self.clock.advance(self.cloud.config.heartbeat * self.cloud.config.liveness + 0.01)
        self.assertEqual(self.sentTo(router, b"r1", protocol.REPLY), [])

    def test_whenReadyCancelled(self):
        """
        Cancelling a wait for readiness forgets it.
        """
        self.start(self.cloud)
        d = self.cloud.whenReady()
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.cloud._readyWaiters, [])

    def test_notReadyForProbesUntilComplete(self):
        """
        /readyz says not ready while a restarted node waits for its peers' presence.
        """
        self.start(self.cloud)
        self.assertEqual(metrics.readiness(self.cloud)[0], False)
        self.clock.advance(self.cloud.config.heartbeat * self.cloud.config.liveness + 0.01)
        self.assertEqual(metrics.readiness(self.cloud), (True, "ok"))

    def test_readyAfterAWindowWithoutPeers(self):
        """
        With no peer answering, the cloud answers presence after one liveness window.
        """
        self.start(self.cloud)
        self.clock.advance(self.cloud.config.heartbeat * self.cloud.config.liveness + 0.01)
        self.assertTrue(self.cloud.ready)

    def test_peerDialsIn(self):
        """
        A peer's session gets our snapshot, then our deltas; its map comes on it too.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"p2"] + helloFrames("cloud2", "c2inc", role=protocol.CLOUD))
        [snapshot] = self.sentTo(router, b"p2", protocol.PRESENCE)
        self.assertEqual(snapshot.header["kind"], "snapshot")
        router.receive([b"r1"] + helloFrames("c1", "c1i"))
        self.assertEqual(self.sentTo(router, b"p2", protocol.PRESENCE)[-1].header["kind"], "delta")
        router.receive([b"p2"] + protocol.encode(
            protocol.PRESENCE, *presenceMap("snapshot", "e2", 0, [(("c9", "cloud"), ["c9i", 5.0])])
        ))
        self.assertTrue(self.cloud.isConnected("c9"))

    def test_clientMovesHereFromADeadPeer(self):
        """
        A peer's client that appears here after the peer is lost is a move, never a disconnection.
        """
        self.start(self.cloud)
        recorder = _MoveRecorder()
        self.cloud.addObserver(recorder)
        dealer = self.peerLink()
        self.welcome(dealer)
        _snapshot(dealer, "e2", "c9i", 5.0)
        # The peer goes silent: lost after the liveness window.
        advance(self.clock, 3.6)
        self.assertIsNone(self.cloud.presence.get("c9").paths.get("cloud@cloud2"))
        self.assertTrue(self.cloud.isConnected("c9"))
        self.router().receive([b"r9"] + helloFrames("c9", "c9i"))
        advance(self.clock, moveGrace(self.cloud.config) + 1)
        self.assertEqual(recorder.events[0][:3], ("connected", "c9", "c9i"))
        self.assertEqual(recorder.events[1:], [("moved", "c9", "c9i", "cloud")])

    def test_clientThatMovedKeptForTheGrace(self):
        """
        A client that says BYE moved stays listed for the move grace here and
        in what peers are told (the removal carries the reason moved), and is
        a move, not a disconnection, if a peer reports it within the grace.
        """
        self.start(self.cloud)
        recorder = _MoveRecorder()
        self.cloud.addObserver(recorder)
        dealer = self.peerLink()
        self.welcome(dealer)
        dealer.receive(protocol.encode(protocol.PRESENCE, *presenceMap("snapshot", "e2", 0, [])))
        router = self.router()
        router.receive([b"r1"] + helloFrames("c1", "c1i"))
        router.receive([b"r1"] + protocol.encode(protocol.BYE, {"reason": "moved"}))
        self.assertTrue(self.cloud.isConnected("c1"))
        # No BYE back: it said goodbye.
        self.assertEqual(self.sentTo(router, b"r1", protocol.BYE), [])
        [removal] = [m for m in dealer.ofType(protocol.PRESENCE) if m.header["kind"] == "delta"][-1:]
        self.assertIn("moved", repr(msgpack.unpackb(removal.payload)))
        since = self.cloud.presence.get("c1").since
        dealer.receive(protocol.encode(protocol.PRESENCE, *presenceMap(
            "delta", "e2", 1, op=["set", ["c1", "cloud"], ["c1i", since]])))
        advance(self.clock, moveGrace(self.cloud.config) + 1)
        self.assertEqual([e[0] for e in recorder.events], ["connected", "moved"])
        self.assertTrue(self.cloud.isConnected("c1"))

    def test_clientThatMovedGoneAfterTheGrace(self):
        """
        A client that said BYE moved but shows up nowhere is disconnected after the grace, reason moved.
        """
        self.start(self.cloud)
        recorder = PresenceRecorder()
        self.cloud.addObserver(recorder)
        router = self.router()
        router.receive([b"r1"] + helloFrames("c1", "c1i"))
        router.receive([b"r1"] + protocol.encode(protocol.BYE, {"reason": "moved"}))
        advance(self.clock, moveGrace(self.cloud.config) - 0.2)
        self.assertTrue(self.cloud.isConnected("c1"))
        advance(self.clock, 0.4)
        self.assertFalse(self.cloud.isConnected("c1"))
        self.assertEqual(recorder.events[-1][:2], ("disconnected", "c1"))

    def test_byeIsGoneAtOnce(self):
        """
        A client's BYE with any other reason ends its presence at once, as before.
        """
        self.start(self.cloud)
        router = self.router()
        router.receive([b"r1"] + helloFrames("c1", "c1i"))
        router.receive([b"r1"] + protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.assertFalse(self.cloud.isConnected("c1"))

    def test_lostPeerClientGoesAfterGrace(self):
        """
        A peer's client seen nowhere within the grace is disconnected then.
        """
        self.start(self.cloud)
        recorder = _MoveRecorder()
        self.cloud.addObserver(recorder)
        dealer = self.peerLink()
        self.welcome(dealer)
        _snapshot(dealer, "e2", "c9i", 5.0)
        advance(self.clock, 3.6 + moveGrace(self.cloud.config) + 1)
        self.assertFalse(self.cloud.isConnected("c9"))
        self.assertEqual(recorder.events[-1][:2], ("disconnected", "c9"))


class ProxyOfCloudsTests(RoleTestCase):
    """
    A proxy dials every cloud and merges their clients into one cloud path.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.proxy = Proxy(self.config("proxy1"), LISTEN, LISTEN, LISTEN,
                           ["inproc://cloud1", "inproc://cloud2"],
                           reactor=self.clock, socketFactory=self.factory)

    def links(self):
        dealers = {d.connected[0]: d for d in self.dealers()}
        one, two = dealers["inproc://cloud1"], dealers["inproc://cloud2"]
        one.receive(welcomeFrames("cloud1", role=protocol.CLOUD, sub="inproc://c1-sub"))
        two.receive(welcomeFrames("cloud2", role=protocol.CLOUD, sub="inproc://c2-sub"))
        return one, two

    def started(self):
        """
        Start the proxy, attach server s1 and welcome both cloud links.

        @return: (the proxy's router, the link to cloud1, the one to cloud2).
        """
        self.start(self.proxy)
        router = self.router()
        router.receive([b"s"] + helloFrames("s1", "si", role="server"))
        one, two = self.links()
        return router, one, two

    def test_routesToEveryCloud(self):
        """
        A server's route goes to every cloud.
        """
        self.start(self.proxy)
        self.router().receive([b"s"] + helloFrames("s1", "si", role="server", services=["echo"]))
        for dealer in self.links():
            [routes] = dealer.ofType(protocol.ROUTES)
            self.assertEqual(msgpack.unpackb(routes.payload), [["s1", ["si", ["echo"]]]])

    def test_moveIsNoDisconnection(self):
        """
        A client lost with its cloud and seen on the other within the grace is never disconnected at the proxy or its servers.
        """
        router, one, two = self.started()
        _snapshot(one, "e1", "c9i", 5.0)
        self.assertTrue(self.proxy.isConnected("c9"))
        recorder = _MoveRecorder()
        self.proxy.addObserver(recorder)
        toServer = len(self.sentTo(router, b"s", protocol.PRESENCE))
        # cloud1 dies: its link is lost after the liveness window (cloud2
        # keeps talking)...
        for _ in range(36):
            two.receive(protocol.encode(protocol.HEARTBEAT, {}))
            self.clock.advance(0.1)
        self.assertFalse(self.proxy.cloudLinks[0].alive)
        self.assertTrue(self.proxy.isConnected("c9"))
        # ... and cloud2 reports the client soon after.
        _snapshot(two, "e2", "c9i", 5.0)
        for _ in range(int((moveGrace(self.proxy.config) + 1) / 0.1)):
            two.receive(protocol.encode(protocol.HEARTBEAT, {}))
            self.clock.advance(0.1)
        self.assertEqual(recorder.events, [])
        self.assertTrue(self.proxy.isConnected("c9"))
        # The server got no delta at all for it.
        sent = self.sentTo(router, b"s", protocol.PRESENCE)[toServer:]
        self.assertEqual([m for m in sent if m.header["kind"] == "delta"], [])

    def test_movedClientIsNoDisconnection(self):
        """
        A client one cloud reports gone with reason moved (it said BYE moved)
        and the other reports soon after is never disconnected at the proxy
        or its servers, whichever report comes first.
        """
        router, one, two = self.started()
        _snapshot(one, "e1", "c9i", 5.0)
        two.receive(protocol.encode(protocol.PRESENCE, *presenceMap("snapshot", "e2", 0, [])))
        recorder = _MoveRecorder()
        self.proxy.addObserver(recorder)
        toServer = len(self.sentTo(router, b"s", protocol.PRESENCE))
        one.receive(protocol.encode(protocol.PRESENCE, *presenceMap(
            "delta", "e1", 1, op=["del", ["c9", "cloud"], "moved"])))
        self.assertTrue(self.proxy.isConnected("c9"))
        self.clock.advance(0.3)
        two.receive(protocol.encode(protocol.PRESENCE, *presenceMap(
            "delta", "e2", 1, op=["set", ["c9", "cloud"], ["c9i", 5.0]])))
        advance(self.clock, moveGrace(self.proxy.config) + 1)
        self.assertEqual(recorder.events, [])
        self.assertTrue(self.proxy.isConnected("c9"))
        sent = self.sentTo(router, b"s", protocol.PRESENCE)[toServer:]
        self.assertEqual([m for m in sent if m.header["kind"] == "delta"], [])

    def test_messageGoesThroughTheHoldingCloud(self):
        """
        A server's message to a client goes through the cloud that holds it.
        """
        router, one, two = self.started()
        _snapshot(two, "e2", "c9i", 5.0)
        router.receive([b"s"] + protocol.encode(protocol.MESSAGE, {"id": 4, "to": "c9", "ttl": 1000}, b"m"))
        [forwarded] = two.ofType(protocol.MESSAGE)
        self.assertEqual(one.ofType(protocol.MESSAGE), [])
        two.receive(protocol.encode(protocol.REPLY, {"id": forwarded.header["id"]}))

    def test_messageSentAgainWhenItsCloudIsLost(self):
        """
        A message in flight through a cloud node that is lost goes again through another that holds the client.
        """
        router, one, two = self.started()
        for link, epoch, since in ((one, "e1", 5.0), (two, "e2", 6.0)):
            _snapshot(link, epoch, "c9i", since)
        router.receive([b"s"] + protocol.encode(
            protocol.MESSAGE, {"id": 4, "to": "c9", "ttl": 3000, "mid": "i1/4"}, b"m"))
        [first] = two.ofType(protocol.MESSAGE)
        two.receive(protocol.encode(protocol.BYE, {}))
        [again] = one.ofType(protocol.MESSAGE)
        self.assertEqual((again.header["to"], again.payload), ("c9", b"m"))
        # The same mid (and from) both times: the client hands it on once.
        self.assertEqual((again.header["mid"], again.header["from"]),
                         (first.header["mid"], first.header["from"]))
        self.assertEqual(self.sentTo(router, b"s", protocol.ERROR), [])
        one.receive(protocol.encode(protocol.REPLY, {"id": again.header["id"]}))
        [ack] = self.sentTo(router, b"s", protocol.REPLY)
        self.assertEqual(ack.header["id"], 4)

    def test_messageFailsWhenNoCloudIsLeft(self):
        """
        With no other node holding the client, the server gets the error.
        """
        router, one, two = self.started()
        _snapshot(two, "e2", "c9i", 6.0)
        router.receive([b"s"] + protocol.encode(protocol.MESSAGE, {"id": 4, "to": "c9", "ttl": 3000}, b"m"))
        two.receive(protocol.encode(protocol.BYE, {}))
        [error] = self.sentTo(router, b"s", protocol.ERROR)
        self.assertEqual((error.header["id"], error.header["code"]), (4, protocol.E_TARGET_LOST))

    def test_messagesOfAServerThatLeftForgotten(self):
        """
        When a server leaves, its messages in flight through one of several clouds are forgotten:
        a cloud lost afterwards does not make the proxy send them again for a server that is gone.
        """
        router, one, two = self.started()
        for link, epoch, since in ((one, "e1", 5.0), (two, "e2", 6.0)):
            _snapshot(link, epoch, "c9i", since)
        router.receive([b"s"] + protocol.encode(
            protocol.MESSAGE, {"id": 4, "to": "c9", "ttl": 3000, "mid": "i1/4"}, b"m"))
        self.assertEqual(len(two.ofType(protocol.MESSAGE)), 1)
        self.assertEqual(len(self.proxy.forwarder.inflight), 1)
        router.receive([b"s"] + protocol.encode(protocol.BYE, {}))
        self.assertEqual(len(self.proxy.forwarder.inflight), 0)
        two.receive(protocol.encode(protocol.BYE, {}))
        self.assertEqual(one.ofType(protocol.MESSAGE), [])
        self.assertNotIn("messages-resent", self.proxy.counters)

    def test_publishesToEveryCloud(self):
        """
        Notifications go upstream to every cloud.
        """
        self.start(self.proxy)
        self.links()
        plane = self.factory.planes[0]
        self.assertEqual(sorted(endpoint for endpoint, _ in plane.more.values()),
                         ["inproc://c1-sub", "inproc://c2-sub"])

    def test_newerIncarnationWins(self):
        """
        Two incarnations of one id on two cloud nodes: the newer (by since) wins, whichever node reports last.
        """
        router, one, two = self.started()
        _snapshot(two, "e2", "new", 6.0)
        _snapshot(one, "e1", "old", 5.0)
        self.assertEqual(self.proxy.presence.get("c9").incarnation, "new")
        # What the servers hold says the same.
        self.assertEqual(self.proxy.presenceSource.entries[("c9", "cloud")][0], "new")

    def test_healthyWhileAnyCloudIs(self):
        """
        A proxy of two cloud nodes is attached while either is; its stats name both links.
        """
        self.start(self.proxy)
        one, two = self.links()
        one.receive(protocol.encode(protocol.BYE, {}))
        self.assertEqual(metrics.health(self.proxy), (True, "ok"))
        stats = self.proxy.stats()
        self.assertEqual((stats["upstream.links"], stats["upstream.up"]), (2, 1))

    def test_stopsPublishingToALostCloud(self):
        """
        A lost cloud is no longer published to (its queue would hold back the others), until it is back.
        """
        self.start(self.proxy)
        one, two = self.links()
        plane = self.factory.planes[0]
        one.receive(protocol.encode(protocol.BYE, {}))
        self.assertEqual([endpoint for endpoint, _ in plane.more.values()], ["inproc://c2-sub"])


class ClientOfCloudsTests(RoleTestCase):
    """
    A client holding several clouds attaches to one and moves on.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(self.config("c1", requestTimeout=5.0, attempts=3),
                             cloud=["inproc://cloud1", "inproc://cloud2"],
                             reactor=self.clock, socketFactory=self.factory)

    def dealer(self, endpoint):
        return [d for d in self.dealers() if d.connected == [endpoint] and not d.closed][-1]

    def test_oneCloudAtATime(self):
        """
        With cloudLinks=1 only the first cloud is dialled.
        """
        self.start(self.client)
        self.assertEqual([d.connected for d in self.dealers()], [["inproc://cloud1"]])

    def test_movesWhenItsCloudGoes(self):
        """
        A request in flight when the cloud says goodbye is retried, same id, on the next cloud.
        """
        self.start(self.client)
        one = self.dealer("inproc://cloud1")
        one.receive(welcomeFrames("cloud1", role=protocol.CLOUD))
        d = self.client.request("echo", b"q")
        [req] = one.ofType(protocol.REQUEST)
        one.receive(protocol.encode(protocol.BYE, {}))
        self.clock.advance(0)
        two = self.dealer("inproc://cloud2")
        self.assertNoResult(d)
        two.receive(welcomeFrames("cloud2", role=protocol.CLOUD))
        [retry] = two.ofType(protocol.REQUEST)
        self.assertEqual(retry.header["id"], req.header["id"])
        two.receive(protocol.encode(protocol.REPLY, {"id": retry.header["id"]}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")

    def test_movesWhenItsCloudIsSilent(self):
        """
        A cloud that never answers gives way to the next after a liveness window.
        """
        self.start(self.client)
        self.clock.advance(self.client.config.heartbeat * (self.client.config.liveness + 1) + 0.1)
        self.assertTrue(self.dealer("inproc://cloud2"))

    def test_movesFromADrainingCloudOnceTheNextIsUp(self):
        """
        A draining cloud is left once the next one is up, not before.
        """
        self.start(self.client)
        one = self.dealer("inproc://cloud1")
        one.receive(welcomeFrames("cloud1", role=protocol.CLOUD))
        one.receive(protocol.encode(protocol.HEARTBEAT, {"drain": True}))
        two = self.dealer("inproc://cloud2")
        self.assertFalse(one.closed)
        two.receive(welcomeFrames("cloud2", role=protocol.CLOUD))
        self.assertTrue(one.closed)
        # It says it moved, so the node it leaves keeps it listed for the
        # move grace (PROTOCOL.md 21.4).
        self.assertEqual(one.ofType(protocol.BYE)[0].header, {"reason": "moved"})

    def test_stopSaysShutdown(self):
        """
        A client that stops says BYE shutdown, not moved.
        """
        self.start(self.client)
        one = self.dealer("inproc://cloud1")
        one.receive(welcomeFrames("cloud1", role=protocol.CLOUD))
        self.client.stopService()
        self.assertEqual(one.ofType(protocol.BYE)[0].header, {"reason": "shutdown"})

    def test_twoLinks(self):
        """
        With cloudLinks=2 both clouds are dialled at once.
        """
        client = Client(self.config("c2"), cloud=["inproc://cloud1", "inproc://cloud2"],
                        reactor=self.clock, socketFactory=self.factory, cloudLinks=2)
        self.start(client)
        self.assertEqual(sorted(d.connected[0] for d in self.dealers()),
                         ["inproc://cloud1", "inproc://cloud2"])

    def test_badCloudLinks(self):
        """
        cloudLinks below 1 is refused.
        """
        self.assertRaises(ValueError, Client, self.config("c3"), cloud="inproc://x",
                          reactor=self.clock, socketFactory=self.factory, cloudLinks=0)


class OptionsTests(OptionsTestCase):
    """
    The options of a cloud of several nodes.
    """

    def test_cloudPeers(self):
        """
        --peer is repeatable, checked, and reaches the Cloud.
        """
        options = self.parse(cloudTap, ["--id", "c1", "--peer", "tcp://c2:5555", "--peer", "tcp://c3:5555"])
        self.assertEqual(options["peers"], ["tcp://c2:5555", "tcp://c3:5555"])
        self.assertEqual(cloudTap.makeService(options).peerAddresses, ["tcp://c2:5555", "tcp://c3:5555"])
        self.assertEqual(self.parse(cloudTap, [])["peers"], [])
        self.assertUsageError(cloudTap, ["--peer", "c2:5555"])

    def test_proxyClouds(self):
        """
        A proxy's --cloud is repeatable; one --cloud works as before.
        """
        options = self.parse(proxyTap, ["--id", "p", "--cloud", "tcp://c1:5555", "-c", "tcp://c2:5555"])
        self.assertEqual(options["cloud"], "tcp://c1:5555")
        service = proxyTap.makeService(options)
        self.assertEqual(service.cloudAddresses, ["tcp://c1:5555", "tcp://c2:5555"])
        self.assertIsNotNone(service.cloudView)
        single = proxyTap.makeService(self.parse(proxyTap, ["--id", "p", "--cloud", "tcp://c1:5555"]))
        self.assertEqual(single.cloudAddress, "tcp://c1:5555")
        self.assertIsNone(single.cloudView)

    def test_clientClouds(self):
        """
        A client's --cloud is repeatable, with --cloud-links.
        """
        options = self.parse(clientTap, ["--cloud", "tcp://c1:5555", "--cloud", "tcp://c2:5555",
                                         "--cloud-links", "2"])
        service = clientTap.makeService(options)
        self.assertEqual(service.cloudAddresses, ["tcp://c1:5555", "tcp://c2:5555"])
        self.assertEqual(service.cloudLinks, 2)
        self.assertUsageError(clientTap, ["--cloud", "tcp://c1:5555", "--cloud-links", "0"])
