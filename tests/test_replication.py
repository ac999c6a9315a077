"""
Tests for the replicated maps between the roles (L{zmqrelay.roles.cloud},
L{zmqrelay.roles.proxy}, L{zmqrelay.roles.server}): every owner sends marks once per
liveness window to every holder of its maps, and every holder that finds
itself elsewhere asks for a snapshot.

Without marks a lost last delta would leave a copy stale for ever; these
tests catch an owner that stops sending them and a holder that stops
checking them, on fake sockets and a L{Clock}.
"""

import msgpack

from zmqrelay.core import protocol
from zmqrelay.roles.cloud import Cloud
from zmqrelay.roles.proxy import Proxy
from zmqrelay.core.replica import MARK, MapReplica, MapSource
from zmqrelay.roles.server import Server

from tests.fakes import RecordingHandler, helloFrames, welcomeFrames
from tests.test_roles import LISTEN, RoleTestCase

_HEARTBEAT = protocol.encode(protocol.HEARTBEAT, {})


def _mapMessage(msgtype, name, kind, epoch, seq, entries=None):
    """
    @return: the frames of a replicated-map message as its owner sends it.
    """
    payload = b"" if entries is None else msgpack.packb(entries)
    return protocol.encode(msgtype, {"map": name, "kind": kind, "epoch": epoch, "seq": seq}, payload)


class _ReplicationTestCase(RoleTestCase):
    """
    Helpers to let marks come due while the fake peers stay alive.
    """

    def window(self, role):
        """
        @return: the mark interval of C{role}: heartbeat x liveness.
        """
        return role.config.heartbeat * role.config.liveness

    def advance(self, seconds, router=(), dealers=()):
        """
        Advance the clock by C{seconds} in heartbeat steps, each peer sending
        a heartbeat every step so no session or link times out.

        @param router: routing ids of the peers attached to the role's front.
        @param dealers: fake DEALER sockets whose upstream is alive.
        """
        step = 0.5
        done = 0.0
        while done < seconds:
            for routingId in router:
                self.router().receive([routingId] + _HEARTBEAT)
            for dealer in dealers:
                dealer.receive(_HEARTBEAT)
            self.clock.advance(step)
            done += step

    def checkMarks(self, deliver, syncs, msgtype, name, ahead):
        """
        Give the role a snapshot of map C{name} (epoch C{e1}, seq 0), then a
        mark where that snapshot is, then a mark at C{ahead}: only the last
        may make it ask for a snapshot, and it must.

        @param deliver: called with the frames of each message.
        @param syncs: returns the SYNC messages the role has sent back.
        @param ahead: C{(epoch, seq)} of the last mark.
        """
        deliver(_mapMessage(msgtype, name, "snapshot", "e1", 0, []))
        deliver(_mapMessage(msgtype, name, MARK, "e1", 0))
        self.assertEqual(syncs(), [])
        deliver(_mapMessage(msgtype, name, MARK, *ahead))
        self.assertEqual([m.header for m in syncs()], [{"map": name}])

    def fromPeer(self, routingId):
        """
        @return: a C{deliver} for L{checkMarks}: messages from the peer
            attached to the role's front as C{routingId}.
        """
        return lambda frames: self.router().receive([routingId] + frames)

    def syncsTo(self, routingId):
        """
        @return: a C{syncs} for L{checkMarks}: what the role sent that peer.
        """
        return lambda: self.sentTo(self.router(), routingId, protocol.SYNC)

    def marksTo(self, sent):
        """
        @param sent: decoded messages.
        @return: C{(type, map, epoch, seq)} of each mark among them.
        """
        return [
            (m.type, m.header["map"], m.header["epoch"], m.header["seq"])
            for m in sent
            if m.type in (protocol.PRESENCE, protocol.ROUTES) and m.header.get("kind") == MARK
        ]


class CloudReplicationTests(_ReplicationTestCase):
    """
    The cloud owns the presence map its proxies hold, and holds each proxy's
    routes and local maps.
    """

    def setUp(self):
        _ReplicationTestCase.setUp(self)
        self.cloud = self.start(Cloud(self.config("cloud"), LISTEN, LISTEN, LISTEN,
                                      reactor=self.clock, socketFactory=self.factory))
        self.router().receive([b"p"] + helloFrames("proxy1", "pi", role="proxy"))

    def test_marksPresenceToEveryProxy(self):
        """
        Once per liveness window, every proxy gets a mark of the cloud's presence map where it is now.
        """
        self.router().receive([b"c"] + helloFrames("c1", "ci"))
        self.router().sent.clear()
        source = self.cloud.presenceSource
        self.advance(self.window(self.cloud) - 0.5, router=[b"p", b"c"])
        self.assertEqual(self.marksTo(self.sentTo(self.router(), b"p", protocol.PRESENCE)), [])
        self.advance(0.5, router=[b"p", b"c"])
        self.assertEqual(
            self.marksTo(self.sentTo(self.router(), b"p", protocol.PRESENCE)),
            [(protocol.PRESENCE, "presence", source.epoch, 1)],
        )
        self.assertEqual(self.sentTo(self.router(), b"c", protocol.PRESENCE), [])
        self.advance(self.window(self.cloud), router=[b"p", b"c"])
        self.assertEqual(len(self.marksTo(self.sentTo(self.router(), b"p", protocol.PRESENCE))), 2)

    def test_routesMarkAheadAsksForASnapshot(self):
        """
        A proxy's routes mark ahead of the cloud's copy makes the cloud ask for a routes snapshot; one where the copy is asks nothing.
        """
        self.checkMarks(
            self.fromPeer(b"p"), self.syncsTo(b"p"), protocol.ROUTES, "routes", ("e1", 1)
        )

    def test_localMarkAheadAsksForASnapshot(self):
        """
        A proxy's local mark from another epoch makes the cloud ask for a local snapshot.
        """
        self.checkMarks(
            self.fromPeer(b"p"), self.syncsTo(b"p"), protocol.PRESENCE, "local", ("e2", 0)
        )


class ProxyReplicationTests(_ReplicationTestCase):
    """
    A proxy owns the presence map its servers hold and the routes and local
    maps the cloud holds, and holds the cloud's presence and each server's
    local map.
    """

    def setUp(self):
        _ReplicationTestCase.setUp(self)
        self.proxy = self.start(Proxy(self.config("proxy1"), LISTEN, LISTEN, LISTEN, "inproc://cloud",
                                      reactor=self.clock, socketFactory=self.factory))
        self.router().receive([b"s"] + helloFrames("s1", "si", role="server", services=["echo"]))
        [self.dealer] = self.dealers()
        self.dealer.receive(welcomeFrames("cloud", role="cloud"))

    def test_marksEveryMapItOwns(self):
        """
        Once per liveness window, servers get a presence mark and the cloud a routes and a local mark.
        """
        self.router().sent.clear()
        self.dealer.sent.clear()
        self.advance(self.window(self.proxy), router=[b"s"], dealers=[self.dealer])
        proxy = self.proxy
        self.assertEqual(
            self.marksTo(self.sentTo(self.router(), b"s", protocol.PRESENCE)),
            [(protocol.PRESENCE, "presence", proxy.presenceSource.epoch, 0)],
        )
        self.assertEqual(
            sorted(self.marksTo(self.dealer.messages())),
            sorted([
                (protocol.ROUTES, "routes", proxy.routesSource.epoch, 1),
                (protocol.PRESENCE, "local", proxy.localSource.epoch, 0),
            ]),
        )

    def test_cloudMarkAheadAsksForASnapshot(self):
        """
        A cloud presence mark ahead of the proxy's copy (its last delta was lost) makes the proxy ask the cloud for a snapshot.
        """
        self.checkMarks(
            self.dealer.receive, lambda: self.dealer.ofType(protocol.SYNC),
            protocol.PRESENCE, "presence", ("e1", 1),
        )

    def test_serverMarkAheadAsksForASnapshot(self):
        """
        A server's local mark ahead of the proxy's copy makes the proxy ask that server for a snapshot.
        """
        self.checkMarks(
            self.fromPeer(b"s"), self.syncsTo(b"s"), protocol.PRESENCE, "local", ("e1", 3)
        )


class ServerReplicationTests(_ReplicationTestCase):
    """
    A server owns the local map its proxy holds, and holds the proxy's
    presence map.
    """

    def setUp(self):
        _ReplicationTestCase.setUp(self)
        self.server = self.start(Server(
            self.config("s1"), RecordingHandler(), ("echo",), listen=LISTEN, pub=LISTEN,
            proxy="inproc://proxy", reactor=self.clock, socketFactory=self.factory,
        ))
        [self.dealer] = self.dealers()
        self.dealer.receive(welcomeFrames("proxy1", role="proxy"))

    def test_marksItsLocalMap(self):
        """
        Once per liveness window the proxy gets a mark of the server's local map, where it is now.
        """
        self.router().receive([b"c"] + helloFrames("c1", "ci"))
        self.dealer.sent.clear()
        self.advance(self.window(self.server), router=[b"c"], dealers=[self.dealer])
        self.assertEqual(
            self.marksTo(self.dealer.messages()),
            [(protocol.PRESENCE, "local", self.server.localSource.epoch, 1)],
        )

    def test_proxyMarkAheadAsksForASnapshot(self):
        """
        A proxy presence mark from another epoch (the proxy restarted) makes the server ask for a snapshot.
        """
        self.checkMarks(
            self.dealer.receive, lambda: self.dealer.ofType(protocol.SYNC),
            protocol.PRESENCE, "presence", ("e2", 0),
        )


class SnapshotPartsTests(_ReplicationTestCase):
    """
    Relays and servers say in HELLO and WELCOME that they take snapshots in
    parts, send a map too large for one of a peer's messages in parts to a
    peer that said so and not at all to one that did not, and apply the parts
    they get as one snapshot.
    """

    #: A peer's max: room for some 40 presence entries a message.
    SMALL = protocol.HEADROOM + 2048

    def cloudWith(self, clients):
        cloud = self.start(Cloud(self.config("cloud"), LISTEN, LISTEN, LISTEN,
                                 reactor=self.clock, socketFactory=self.factory))
        for i in range(clients):
            self.router().receive([b"c%03d" % i] + helloFrames(f"client-{i:03d}", f"ci-{i:03d}"))
        return cloud

    def test_welcomeSaysParts(self):
        """
        A bound node's WELCOME says parts to relays and servers, not to clients.
        """
        self.cloudWith(1)
        self.router().receive([b"p"] + helloFrames("proxy1", "pi", role="proxy"))
        [toProxy] = self.sentTo(self.router(), b"p", protocol.WELCOME)
        [toClient] = self.sentTo(self.router(), b"c000", protocol.WELCOME)
        self.assertIs(toProxy.header.get("parts"), True)
        self.assertNotIn("parts", toClient.header)

    def test_helloSaysParts(self):
        """
        A server's HELLO to its proxy says parts.
        """
        self.start(Server(
            self.config("s1"), RecordingHandler(), ("echo",), listen=LISTEN, pub=LISTEN,
            proxy="inproc://proxy", reactor=self.clock, socketFactory=self.factory,
        ))
        [dealer] = self.dealers()
        [hello] = [m for m in dealer.messages() if m.type == protocol.HELLO]
        self.assertIs(hello.header.get("parts"), True)

    def test_presenceInPartsToAProxy(self):
        """
        The cloud sends a proxy that takes parts, with a small max, its presence
        in parts that each fit; a proxy that takes none gets no presence, and the
        cloud counts and logs it.
        """
        cloud = self.cloudWith(150)
        self.router().receive([b"p"] + helloFrames("proxy1", "pi", role="proxy", max=self.SMALL, parts=True))
        parts = self.sentTo(self.router(), b"p", protocol.PRESENCE)
        self.assertGreater(len(parts), 2)
        self.assertEqual([m.header["part"] for m in parts], list(range(len(parts))))
        for m in parts:
            self.assertLessEqual(len(m.payload), self.SMALL - protocol.HEADROOM)
        replica = MapReplica("presence")
        for m in parts:
            replica.apply(m.header, m.payload)
        self.assertEqual(replica.entries, cloud.presenceSource.entries)
        self.assertEqual(len(replica.entries), 150)
        self.assertEqual(cloud.stats()["snapshots.split"], 1)

        self.router().receive([b"q"] + helloFrames("proxy2", "qi", role="proxy", max=self.SMALL))
        self.assertEqual(self.sentTo(self.router(), b"q", protocol.PRESENCE), [])
        self.assertEqual(cloud.stats()["snapshots.unsent"], 1)
        # Its session is still there: nothing was sent that would cut it.
        self.assertIn("proxy2", cloud.front.byNode)

    def test_proxyAppliesParts(self):
        """
        A proxy applies the cloud's presence in parts once the last has come,
        and passes the whole map on to its servers.
        """
        proxy = self.start(Proxy(self.config("proxy1"), LISTEN, LISTEN, LISTEN, "inproc://cloud",
                                 reactor=self.clock, socketFactory=self.factory))
        [dealer] = self.dealers()
        dealer.receive(welcomeFrames("cloud", role="cloud", parts=True))
        source = MapSource("presence")
        for i in range(150):
            source.set((f"client-{i:03d}", "cloud"), [f"ci-{i:03d}", 1700000000.0])
        parts = source.snapshotParts(2048)
        self.assertGreater(len(parts), 2)
        for header, payload in parts[:-1]:
            dealer.receive(protocol.encode(protocol.PRESENCE, header, payload))
        self.assertEqual(proxy.cloudPresence.entries, {})
        header, payload = parts[-1]
        dealer.receive(protocol.encode(protocol.PRESENCE, header, payload))
        self.assertEqual(proxy.cloudPresence.entries, source.entries)
        # A server attached now gets all of it (in one message: it fits its max).
        self.router().receive([b"s"] + helloFrames("s1", "si", role="server", services=["echo"]))
        [snapshot] = self.sentTo(self.router(), b"s", protocol.PRESENCE)
        self.assertEqual(len(msgpack.unpackb(snapshot.payload)), 150)
