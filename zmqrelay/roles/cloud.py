"""
The cloud: the one node every client and every site's proxy connects to.

It is made of:
  - a L{Front} where clients and proxies attach;
  - a L{Forwarder} for requests (client -> proxy) and directed messages
    (proxy -> client);
  - a L{RouteTable} fed by each proxy's replicated list of its servers;
  - the presence of its clients, owned here and replicated to every proxy;
  - a L{NotificationRelay} (proxies publish into it, clients subscribe);
  - its peers (issue 10): other clouds, equals, that together form one
    cloud.  Each dials every C{--peer} (an L{UpstreamLink} saying HELLO as a
    cloud) and accepts theirs; over every such connection, both ways, each
    replicates the presence of its own clients (the map it sends proxies),
    so every cloud knows every client, listed as C{cloud@<cloud id>}.
    Requests are never forwarded between clouds: every proxy dials every
    cloud.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import presence, protocol
from zmqrelay.core.presence import PresenceView
from zmqrelay.core.errors import Rejected
from zmqrelay.edge.link import UpstreamLink, backoffPolicy
from zmqrelay.interfaces import ICloud, IFrontOwner, ILinkOwner
from zmqrelay.roles.hop import requestId, sendError
from zmqrelay.roles.node import RelayNode
from zmqrelay.core.replica import MapReplica, MapSource, answerSync, applyFrom, sendSnapshot
from zmqrelay.core.ratelimit import TokenBucket
from zmqrelay.core.routing import Route, RouteTable

log = Logger()


def moveGrace(config):
    """
    @return: how long a client lost on one cloud may take to appear on
        another before it is reported disconnected: two liveness windows
        (the lost cloud is noticed after one, the client dials the next).
    """
    return 2.0 * config.heartbeat * config.liveness


@implementer(ICloud, IFrontOwner, ILinkOwner)
class Cloud(RelayNode):
    """
    The cloud role.

    @ivar presence: the L{PresenceView} of clients attached to the cloud
        (and, with peers, to every cloud).
    @ivar peerLinks: the L{UpstreamLink}s to the C{--peer} clouds.
    @ivar ready: C{False} until every peer cloud sent its presence (or one
        liveness window passed): a restarted cloud answers C{presence}
        queries only then.
    """

    role = protocol.CLOUD

    def __init__(self, config, listen, pub, sub, reactor=None, socketFactory=None, peers=()):
        RelayNode.__init__(self, config, listen, pub, sub, reactor, socketFactory)
        self.peerAddresses = list(peers)
        self.peerLinks = []
        # One replica per connection with a peer cloud (a link we dial or a
        # session it dialled): both carry its map.
        self._peerReplicas = {}
        self._heardFrom = set()
        self._readyTimer = None
        self._readyWaiters = []
        self.ready = not self.peerAddresses
        if self.peerAddresses:
            self.presence = PresenceView(self.reactor, moveGrace(config))
        self.presenceSource = MapSource("presence")
        self.routes = RouteTable()
        # A proxy's snapshot may move many servers at once: each is counted
        # (routes-moved), the lines are bounded.
        self._routeLog = TokenBucket(1.0, 10.0, self.reactor.seconds())
        self._routeReplicas = {}
        # Per proxy: the clients attached below it (its LAN clients and its
        # servers' direct clients), so the cloud knows every client.
        self._localReplicas = {}

    def servers(self):
        return {
            sid: (route.peer.nodeId, route.services)
            for sid, route in self.routes.servers().items()
        }

    def _countedParts(self):
        parts = RelayNode._countedParts(self)
        parts.extend((f"peer{i}", link) for i, link in enumerate(self.peerLinks))
        parts.append(("presence", self.presence))
        return parts

    def _startMore(self):
        window = self.config.heartbeat * self.config.liveness
        for address in self.peerAddresses:
            # A peer that restarts is dialled again within a liveness window,
            # so it learns our clients soon.
            policy = backoffPolicy(self.config.reconnectInitial, min(self.config.reconnectMax, window))
            link = UpstreamLink(
                self, self.config, self.reactor, self.socketFactory, address, f"peer {address}",
                retryPolicy=policy,
            )
            self.peerLinks.append(link)
            link.start()
        if not self.ready:
            self._readyTimer = self.reactor.callLater(window, self._becomeReady, "timeout")

    def _stopMore(self):
        for link in self.peerLinks:
            link.stop()
        self.peerLinks = []
        if self._readyTimer is not None and self._readyTimer.active():
            self._readyTimer.cancel()
        self._readyTimer = None
        self.presence.stop()
        self._becomeReady("stopping")

    def _becomeReady(self, why):
        if self.ready:
            return
        self.ready = True
        if self._readyTimer is not None and self._readyTimer.active():
            self._readyTimer.cancel()
        self._readyTimer = None
        if why != "stopping":
            log.info("cloud presence complete ({why}): {clients} clients known",
                     why=why, clients=len(self.presence.connectedClients()))
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.callback(None)

    def whenReady(self):
        """
        @return: a L{Deferred} firing once L{ready} (at most a liveness
            window after the start, or at the stop); cancelling it forgets it.
        """

        def forget(d):
            if d in self._readyWaiters:
                self._readyWaiters.remove(d)

        d = Deferred(forget)
        if self.ready:
            d.callback(None)
        else:
            self._readyWaiters.append(d)
        return d

    # Front callbacks

    def peerHello(self, session):
        if session.role not in (protocol.CLIENT, protocol.PROXY, protocol.CLOUD):
            raise Rejected(f"the cloud accepts clients, proxies and clouds, not {session.role}s")

    def peerJoined(self, session):
        if session.role == protocol.CLOUD:
            self._peerUp(session)
        elif session.role == protocol.CLIENT:
            self.presence.attach(session.nodeId, presence.CLOUD, session.incarnation, session.since)
            self._broadcast(
                self.presenceSource.set(
                    (session.nodeId, presence.CLOUD), [session.incarnation, session.since]
                )
            )
        else:
            self._routeReplicas[session] = MapReplica("routes", _checkRoute)
            self._localReplicas[session] = MapReplica(
                "local", presence.localEntryCheck((presence.DIRECT, presence.PROXY))
            )
            sendSnapshot(session, self.presenceSource)

    def peerResumed(self, session):
        # A proxy back on a new connection: its ROUTES snapshot (sent on its
        # welcome) is applied against the replica we kept, so stale routes go.
        if session.role in (protocol.PROXY, protocol.CLOUD):
            sendSnapshot(session, self.presenceSource)

    def peerLeft(self, session, reason):
        self.forwarder.peerGone(session, reason)
        if session.role == protocol.CLOUD:
            self._peerDown(session)
        elif session.role == protocol.CLIENT:
            self.presence.detach(session.nodeId, presence.CLOUD, session.incarnation, reason)
            delta = self.presenceSource.delete((session.nodeId, presence.CLOUD), reason)
            if delta is not None:
                self._broadcast(delta)
        else:
            self._routeReplicas.pop(session, None)
            replica = self._localReplicas.pop(session, None)
            if replica is not None:
                self._applyLocal(replica.clear(presence.UPSTREAM_LOST), session)
            for route in self.routes.removePeer(session, clean=reason == "bye"):
                log.info("server {server} gone with proxy {proxy}", server=route.serverId, proxy=session.nodeId)

    def peerMessage(self, session, message):
        msgtype = message.type
        header = message.header
        if session.role == protocol.CLIENT:
            if msgtype == protocol.REQUEST:
                self._request(session, message)
            elif msgtype in (protocol.REPLY, protocol.ERROR):
                self.forwarder.answer(session, message)
            else:
                raise protocol.ProtocolError(
                    protocol.E_UNKNOWN_TYPE, f"a client may not send {protocol.typeName(msgtype)} here"
                )
            return
        if session.role == protocol.CLOUD:
            self._fromPeer(session, message)
            return
        # A proxy.
        if msgtype in (protocol.REPLY, protocol.ERROR):
            self.forwarder.answer(session, message)
        elif msgtype == protocol.MESSAGE:
            to = protocol.field(header, "to", str, required=True)
            client = self.front.byNode.get(to)
            if client is None or client.role != protocol.CLIENT:
                sendError(session, requestId(header), protocol.E_NO_ROUTE, f"client {to!r} is not connected")
            else:
                self.forwarder.forward(session, message, client)
        elif msgtype == protocol.ROUTES:
            self._routesFrom(session, message)
        elif msgtype == protocol.PRESENCE:
            self._localFrom(session, message)
        elif msgtype == protocol.SYNC:
            answerSync(session, message, self.presenceSource, now=self.reactor.seconds())
        elif msgtype == protocol.REQUEST and self.isSysFor(header):
            self.answerSys(session, header, message.payload)
        else:
            raise protocol.ProtocolError(
                protocol.E_UNKNOWN_TYPE, f"a proxy may not send {protocol.typeName(msgtype)} here"
            )

    # Peer clouds: the same for a link we dial and a session it dialled.

    def helloExtras(self, link):
        return {}

    def linkUp(self, link):
        if link.role != protocol.CLOUD:
            log.error("--peer {endpoint} is a {role}, not a cloud: not peering with it",
                      endpoint=link.endpoint, role=link.role)
            return
        self._peerUp(link)

    def linkDown(self, link, reason):
        self.forwarder.peerGone(link, reason)
        self._peerDown(link)

    def linkMessage(self, link, message):
        if link in self._peerReplicas:
            self._fromPeer(link, message)
        else:
            # A --peer that is not a cloud (linkUp said so): nothing of it is
            # taken, but it is counted.
            self.counters["not-peer"] = self.counters.get("not-peer", 0) + 1

    def _peerUp(self, conn):
        self._peerReplicas[conn] = MapReplica("presence", presence.checkPresenceEntry)
        sendSnapshot(conn, self.presenceSource)

    def _peerDown(self, conn):
        replica = self._peerReplicas.pop(conn, None)
        if replica is not None:
            self._applyPeer(replica.clear(presence.UPSTREAM_LOST), conn)

    def _fromPeer(self, conn, message):
        msgtype = message.type
        header = message.header
        if msgtype == protocol.PRESENCE:
            replica = self._peerReplicas.get(conn)
            if replica is not None:
                self._applyPeer(applyFrom(replica, conn, message), conn)
                if replica.epoch is not None:
                    self._heard(conn.nodeId)
        elif msgtype == protocol.SYNC:
            answerSync(conn, message, self.presenceSource, now=self.reactor.seconds())
        elif msgtype == protocol.REQUEST and self.isSysFor(header):
            self.answerSys(conn, header, message.payload)
        elif msgtype == protocol.REPLY:
            pass
        elif msgtype == protocol.ERROR:
            # What we sent the peer (presence, a SYNC) was refused: a peer of
            # another release, or a bug.  Nobody answers an ERR; say it here.
            self.counters["peer-errors"] = self.counters.get("peer-errors", 0) + 1
            log.warn("peer cloud {peer} refused what we sent: {code}: {text}", peer=conn.nodeId,
                     code=header.get("code"), text=header.get("msg"))
        else:
            raise protocol.ProtocolError(
                protocol.E_UNKNOWN_TYPE, f"a cloud may not send {protocol.typeName(msgtype)} here"
            )

    def _heard(self, peerId):
        """
        A peer's presence is in: once every peer's is, the view is complete.
        """
        self._heardFrom.add(peerId)
        linked = {l.nodeId for l in self.peerLinks if l.alive}
        if not self.ready and len(self._heardFrom) >= len(self.peerAddresses) and linked <= self._heardFrom:
            self._becomeReady("every peer's presence")

    def _applyPeer(self, changes, conn):
        """
        A peer's own clients (path C{cloud} there) are on C{cloud@<its id>}
        here; each peer's map comes on two connections, so a removal counts
        only once neither holds the entry.
        """
        label = f"{presence.CLOUD}@{conn.nodeId}"
        for step, clientId, path, incarnation, extra in presence.replicaChanges(changes):
            if path != presence.CLOUD:
                continue
            if step == "detach":
                if any(
                    (r.entries.get((clientId, path)) or [None])[0] == incarnation
                    for c, r in self._peerReplicas.items() if c is not conn and c.nodeId == conn.nodeId
                ):
                    continue
                self.presence.detach(clientId, label, incarnation, extra)
            else:
                self.presence.attach(clientId, label, incarnation, extra)

    def answerSys(self, peer, header, payload):
        if header.get("sys") == "presence" and not self.ready:
            # Restarted, and the peers' presence is not all in: answer once
            # it is (at most a liveness window), never with a partial view.
            # A bad id is answered now (ERR bad-message), not after the wait.
            requestId(header)
            d = self.whenReady()
            d.addCallback(lambda _: RelayNode.answerSys(self, peer, header, payload))
            d.addErrback(lambda f: log.failure("answering a presence request", f))
            return
        RelayNode.answerSys(self, peer, header, payload)

    def _request(self, session, message):
        header = message.header
        if self.isSysFor(header):
            self.answerSys(session, header, message.payload)
            return
        if self.refuseWhileDraining(session, header):
            return
        proxy = self._sysProxy(header)
        if proxy is not None:
            # A sys request for a proxy: it answers it itself (PROTOCOL.md 10.7).
            self.forwarder.forward(session, message, proxy, {
                "client": session.nodeId, "cinc": session.incarnation,
                "creq": requestId(header), "path": presence.CLOUD,
            })
            return
        self.forwarder.clientRequest(session, message, self.routes, presence.CLOUD)

    def _sysProxy(self, header):
        """
        @return: the session of the proxy a C{sys} request names in C{to},
            or C{None}.
        """
        if "sys" not in header:
            return None
        to = header.get("to")
        session = self.front.byNode.get(to) if isinstance(to, str) and to else None
        if session is None or session.role != protocol.PROXY:
            return None
        return session

    def _localFrom(self, session, message):
        replica = self._localReplicas.get(session)
        if replica is None:
            return
        self._applyLocal(applyFrom(replica, session, message), session)

    def _applyLocal(self, changes, session):
        for step, clientId, path, incarnation, extra in presence.localChanges(changes):
            if step == "detach":
                # A server that moved to another proxy is reported by both
                # for a while: the old proxy's removal is not the client's.
                key = (clientId,) + tuple(path.split("@", 1))
                if any(
                    (r.entries.get(key) or [None])[0] == incarnation
                    for s, r in self._localReplicas.items() if s is not session
                ):
                    continue
                self.presence.detach(clientId, path, incarnation, extra)
            else:
                self.presence.attach(clientId, path, incarnation, extra)

    def _routesFrom(self, session, message):
        replica = self._routeReplicas.get(session)
        if replica is None:
            return
        for serverId, old, new, reason in applyFrom(replica, session, message):
            if new is None:
                route = self.routes.get(serverId)
                if route is not None and route.peer is session:
                    # Its proxy says it is gone (or draining: the proxy keeps
                    # the retries of what it took on it): retries may go
                    # elsewhere.  Only a lost proxy makes its servers AWAY.
                    self.routes.remove(serverId, clean=True)
            else:
                incarnation, services = _routeValue(new)
                existing = self.routes.get(serverId)
                if existing is not None and existing.peer is not session:
                    self.counters["routes-moved"] = self.counters.get("routes-moved", 0) + 1
                    if self._routeLog.take(self.reactor.seconds()) == 0.0:
                        log.warn(
                            "server {server} now reported by proxy {new} (was {old})",
                            server=serverId, new=session.nodeId, old=existing.peer.nodeId,
                        )
                self.routes.add(Route(serverId, session, incarnation, services))

    def _mark(self):
        self.routes.expire(self.reactor.seconds())
        self._broadcast(self.presenceSource.mark())

    def _broadcast(self, message):
        header, payload = message
        for session in self.front.peers(protocol.PROXY):
            session.send(protocol.PRESENCE, header, payload)
        for conn in self._peerReplicas:
            conn.send(protocol.PRESENCE, header, payload)


def _routeValue(value):
    """
    Check a ROUTES entry value: C{[incarnation, [service, ...]]}.
    """
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], list)
        or not all(isinstance(s, str) for s in value[1])
    ):
        raise protocol.ProtocolError(protocol.E_BAD_MESSAGE, "bad ROUTES entry")
    return value[0], value[1]


def _checkRoute(key, value):
    """
    Check a ROUTES entry before it is stored.
    """
    if not isinstance(key, str):
        raise ValueError(f"bad route key {key!r}")
    try:
        _routeValue(value)
    except protocol.ProtocolError as e:
        raise ValueError(e.message)
