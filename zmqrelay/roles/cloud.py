"""
The cloud: the one node every client and every site's proxy connects to.

It is made of:
  - a L{Front} where clients and proxies attach;
  - a L{Forwarder} for requests (client -> proxy) and directed messages
    (proxy -> client);
  - a L{RouteTable} fed by each proxy's replicated list of its servers;
  - the presence of its clients, owned here and replicated to every proxy;
  - a L{NotificationRelay} (proxies publish into it, clients subscribe).
"""

from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import presence, protocol
from zmqrelay.core.errors import Rejected
from zmqrelay.interfaces import ICloud, IFrontOwner
from zmqrelay.roles.hop import requestId, sendError
from zmqrelay.roles.node import RelayNode
from zmqrelay.core.replica import MapReplica, MapSource, answerSync, applyFrom
from zmqrelay.core.routing import Route, RouteTable

log = Logger()


@implementer(ICloud, IFrontOwner)
class Cloud(RelayNode):
    """
    The cloud role.

    @ivar presence: the L{PresenceView} of clients attached to the cloud.
    """

    role = protocol.CLOUD

    def __init__(self, config, listen, pub, sub, reactor=None, socketFactory=None):
        RelayNode.__init__(self, config, listen, pub, sub, reactor, socketFactory)
        self.presenceSource = MapSource("presence")
        self.routes = RouteTable()
        self._routeReplicas = {}
        # Per proxy: the clients attached below it (its LAN clients and its
        # servers' direct clients), so the cloud knows every client.
        self._localReplicas = {}

    def servers(self):
        return {
            sid: (route.peer.nodeId, route.services)
            for sid, route in self.routes.servers().items()
        }

    # Front callbacks

    def peerHello(self, session):
        if session.role not in (protocol.CLIENT, protocol.PROXY):
            raise Rejected(f"the cloud accepts clients and proxies, not {session.role}s")

    def peerJoined(self, session):
        if session.role == protocol.CLIENT:
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
            session.send(protocol.PRESENCE, *self.presenceSource.snapshot())

    def peerResumed(self, session):
        # A proxy back on a new connection: its ROUTES snapshot (sent on its
        # welcome) is applied against the replica we kept, so stale routes go.
        if session.role == protocol.PROXY:
            session.send(protocol.PRESENCE, *self.presenceSource.snapshot())

    def peerLeft(self, session, reason):
        self.forwarder.peerGone(session, reason)
        if session.role == protocol.CLIENT:
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
            answerSync(session, message, self.presenceSource)
        elif msgtype == protocol.REQUEST and self.isSysFor(header):
            self.answerSys(session, header, message.payload)
        else:
            raise protocol.ProtocolError(
                protocol.E_UNKNOWN_TYPE, f"a proxy may not send {protocol.typeName(msgtype)} here"
            )

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
