"""
A site proxy: forwards for every server on its network.

It is made of:
  - a L{Front} where the site's servers and LAN clients attach;
  - an L{UpstreamLink} to the cloud, or one to each of several clouds that
    form one (issue 10), or none (a proxy alone serves its LAN);
  - a L{Forwarder} for requests (cloud or LAN client -> server) and directed
    messages (server -> LAN client or cloud);
  - a L{RouteTable} of its servers, replicated up to the cloud;
  - presence: its LAN clients plus the cloud's replicated view, replicated
    down to its servers; with several clouds, their views are merged into
    one C{cloud} path (a client that moves between clouds within
    L{zmqrelay.roles.cloud.moveGrace} is never reported gone);
  - a L{NotificationRelay}: servers publish into it, LAN clients subscribe,
    and it publishes on to the cloud.
"""

from weakref import WeakSet

from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import presence, protocol
from zmqrelay.core.presence import PresenceView
from zmqrelay.core.errors import Rejected
from zmqrelay.interfaces import IFrontOwner, ILinkOwner, IProxy
from zmqrelay.edge.link import UpstreamLink
from zmqrelay.roles.hop import advertised, noRoute, requestId, requestTtl, sendError
from zmqrelay.roles.cloud import moveGrace
from zmqrelay.roles.node import RelayNode
from zmqrelay.core.replica import MapReplica, MapSource, answerSync, applyFrom, sendSnapshot
from zmqrelay.core.routing import AWAY, Route, RouteTable

log = Logger()


def _services(hello):
    """
    @return: the C{services} of a server's HELLO; absent or nil, none
        (PROTOCOL.md 4 and 6.1).
    """
    services = hello.get("services")
    return [] if services is None else services


@implementer(IProxy, IFrontOwner, ILinkOwner)
class Proxy(RelayNode):
    """
    The proxy role.

    @ivar presence: the L{PresenceView} of LAN and cloud clients.
    """

    role = protocol.PROXY

    def __init__(self, config, listen, pub, sub, cloud=None, reactor=None, socketFactory=None):
        """
        @param cloud: the cloud's control endpoint, or a L{list} of those of
            the clouds that form one, or C{None}.
        """
        RelayNode.__init__(self, config, listen, pub, sub, reactor, socketFactory)
        if isinstance(cloud, str):
            cloud = [cloud]
        self.cloudAddresses = list(cloud or [])
        self.cloudAddress = self.cloudAddresses[0] if self.cloudAddresses else None
        self.cloudPresence = MapReplica("presence", presence.checkPresenceEntry)
        # One replica of each cloud's presence, by link.
        self._cloudReplicas = {}
        self.cloudLinks = []
        #: A server's session -> the wrappers its directed messages through
        #: one of several clouds are in flight under (L{_MessageOrigin}).
        self._messageOrigins = {}
        # Several clouds: their clients merged, with a grace for moves, into
        # the one C{cloud} path our servers see.
        self.cloudView = None
        if len(self.cloudAddresses) > 1:
            self.cloudView = PresenceView(self.reactor, moveGrace(config))
            self.cloudView.addObserver(_CloudPath(self))
        self.presenceSource = MapSource("presence")
        self.routes = RouteTable()
        self.routesSource = MapSource("routes", protocol.ROUTES)
        # The clients attached below us (our LAN clients, our servers' direct
        # clients), reported up to the cloud; one replica per server.
        self.localSource = MapSource("local")
        self._serverLocals = {}
        self.link = None

    def _countedParts(self):
        parts = RelayNode._countedParts(self)
        for i, link in enumerate(self.cloudLinks):
            parts.append(("cloud" if i == 0 else f"cloud{i}", link))
        if self.cloudView is not None:
            parts.append(("clouds", self.cloudView))
        return parts

    def _startMore(self):
        for i, address in enumerate(self.cloudAddresses):
            name = "cloud" if len(self.cloudAddresses) == 1 else f"cloud {address}"
            link = UpstreamLink(self, self.config, self.reactor, self.socketFactory, address, name)
            if i == 0:
                self.link = link
                self._cloudReplicas[link] = self.cloudPresence
            else:
                self._cloudReplicas[link] = MapReplica("presence", presence.checkPresenceEntry)
            self.cloudLinks.append(link)
            link.start()

    def _drain(self):
        """
        Stopping: besides what every relay does (L{RelayNode._drain}), tell
        the cloud that no server is reachable here any more (routes deleted,
        reason C{draining}), so that it sends no new work while what is in
        flight finishes; requests for them wait at the cloud for another
        path, or for this proxy back.
        """
        for serverId in list(self.routesSource.entries):
            delta = self.routesSource.delete(serverId, "draining")
            if delta is not None:
                self._toCloud(protocol.ROUTES, delta)
        return RelayNode._drain(self)

    def _stopMore(self):
        for link in self.cloudLinks:
            link.stop()
        if self.cloudView is not None:
            self.cloudView.stop()

    def servers(self):
        return {sid: route.services for sid, route in self.routes.servers().items()}

    # Front callbacks: servers and LAN clients

    def peerHello(self, session):
        if session.role not in (protocol.SERVER, protocol.CLIENT):
            raise Rejected(f"a proxy accepts servers and clients, not {session.role}s")
        if session.role == protocol.SERVER:
            services = _services(session.hello)
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise Rejected("services must be a list of names")

    def peerJoined(self, session):
        if session.role == protocol.SERVER:
            services = _services(session.hello)
            self.routes.add(Route(session.nodeId, session, session.incarnation, services))
            self._toCloud(
                protocol.ROUTES,
                self.routesSource.set(session.nodeId, [session.incarnation, list(services)]),
            )
            sendSnapshot(session, self.presenceSource)
            self._serverLocals[session] = MapReplica(
                "local", presence.localEntryCheck((presence.DIRECT,), session.nodeId)
            )
        else:
            self._clientAt(session.nodeId, presence.PROXY, session.incarnation, session.since)
            self._toCloud(protocol.PRESENCE, self.localSource.set(
                (session.nodeId, presence.PROXY, self.nodeId), [session.incarnation, session.since]
            ))

    def peerResumed(self, session):
        if session.role == protocol.SERVER:
            sendSnapshot(session, self.presenceSource)

    def peerLeft(self, session, reason):
        self.forwarder.peerGone(session, reason)
        # Its directed messages in flight through one of several clouds are
        # filed under their wrappers: forget those too.
        for origin in list(self._messageOrigins.pop(session, ())):
            self.forwarder.peerGone(origin, reason)
        if session.role == protocol.SERVER:
            route = self.routes.get(session.nodeId)
            if route is not None and route.peer is session:
                # Gone (a goodbye, or lost: silent past liveness, connection
                # gone): its requests may run elsewhere now.  A lost one may
                # have run what it took (docs/RECOVERY.md, "run twice").
                self.routes.remove(session.nodeId, clean=True)
                delta = self.routesSource.delete(session.nodeId, reason)
                if delta is not None:
                    self._toCloud(protocol.ROUTES, delta)
            replica = self._serverLocals.pop(session, None)
            if replica is not None:
                self._relayLocal(replica.clear(presence.UPSTREAM_LOST))
        else:
            self._clientGone(session.nodeId, presence.PROXY, session.incarnation, reason)
            delta = self.localSource.delete((session.nodeId, presence.PROXY, self.nodeId), reason)
            if delta is not None:
                self._toCloud(protocol.PRESENCE, delta)

    def peerMessage(self, session, message):
        msgtype = message.type
        header = message.header
        if msgtype in (protocol.REPLY, protocol.ERROR):
            self.forwarder.answer(session, message)
        elif msgtype == protocol.REQUEST and session.role == protocol.CLIENT:
            if self.isSysFor(header):
                self.answerSys(session, header, message.payload)
                return
            if self.refuseWhileDraining(session, header):
                return
            self.forwarder.clientRequest(session, message, self.routes, presence.PROXY)
        elif msgtype == protocol.MESSAGE and session.role == protocol.SERVER:
            to = protocol.field(header, "to", str, required=True)
            stamps = {"from": session.nodeId}
            client = self.front.byNode.get(to)
            if client is not None and client.role == protocol.CLIENT:
                self.forwarder.forward(session, message, client, stamps)
            elif self._cloudOf(to) is not None:
                link = self._cloudOf(to)
                origin = session
                if len(self.cloudLinks) > 1:
                    origin = _MessageOrigin(self, session, message, stamps, link)
                    self._messageOrigins.setdefault(session, WeakSet()).add(origin)
                self.forwarder.forward(origin, message, link, stamps)
            else:
                sendError(session, requestId(header), protocol.E_NO_ROUTE, f"client {to!r} is not connected")
        elif msgtype == protocol.SYNC and session.role == protocol.SERVER:
            answerSync(session, message, self.presenceSource, now=self.reactor.seconds())
        elif msgtype == protocol.PRESENCE and session.role == protocol.SERVER:
            replica = self._serverLocals.get(session)
            if replica is None:
                return
            self._relayLocal(applyFrom(replica, session, message))
        elif msgtype == protocol.REQUEST and self.isSysFor(header):
            self.answerSys(session, header, message.payload)
        else:
            raise protocol.ProtocolError(
                protocol.E_UNKNOWN_TYPE, f"a {session.role} may not send {protocol.typeName(msgtype)} here"
            )

    # Link callbacks: the cloud

    def helloExtras(self, link):
        return {}

    def linkUp(self, link):
        sendSnapshot(link, self.routesSource)
        sendSnapshot(link, self.localSource)
        sub = link.welcome.get("sub")
        if isinstance(sub, str):
            endpoint = advertised(sub, link.endpoint)
            if len(self.cloudLinks) > 1 and hasattr(self.relay, "addUpstream"):
                # Every cloud publishes every notification: publish to each.
                self.relay.addUpstream(link.endpoint, endpoint, link.endpoint)
            else:
                self.relay.connectUpstream(endpoint, link.endpoint)

    def linkDown(self, link, reason):
        self.forwarder.peerGone(link, reason)
        if len(self.cloudLinks) > 1 and self.relay is not None:
            self.relay.removeUpstream(link.endpoint)
        replica = self._cloudReplicas.get(link)
        if replica is not None:
            self._applyCloudPresence(replica.clear(presence.UPSTREAM_LOST), link)

    def linkMessage(self, link, message):
        msgtype = message.type
        header = message.header
        if msgtype == protocol.REQUEST:
            if self.isSysFor(header):
                self.answerSys(link, header, message.payload)
                return
            target = protocol.field(header, "to", str, required=True)
            stamped = protocol.field(header, "server", str)
            client = protocol.field(header, "client", str)
            key = None
            if client is not None:
                key = (client, protocol.field(header, "cinc", str, ""), protocol.field(header, "creq", int))
            now = self.reactor.seconds()
            # The cloud chose a server (stamped); but if we sent this request
            # to another one before, and it lives, its retries go there too.
            route = self.routes.choose(target, key, now, now + requestTtl(header, self.config), stamped)
            if route is None and stamped and header.get("sys") is not None:
                route = self.routes.get(stamped)
            if route is None or route is AWAY:
                noRoute(link, requestId(header), target, "this site",
                        route is AWAY or self.routes.isKnown(target))
            else:
                self.forwarder.forward(link, message, route.peer, {"server": route.serverId})
        elif msgtype in (protocol.REPLY, protocol.ERROR):
            self.forwarder.answer(link, message)
        elif msgtype == protocol.PRESENCE:
            replica = self._cloudReplicas.get(link)
            if replica is not None:
                self._applyCloudPresence(applyFrom(replica, link, message), link)
        elif msgtype == protocol.SYNC:
            answerSync(link, message, self.routesSource, self.localSource, now=self.reactor.seconds())
        else:
            raise protocol.ProtocolError(protocol.E_UNKNOWN_TYPE, f"unexpected {protocol.typeName(msgtype)} from the cloud")

    # Presence

    def _cloudOf(self, clientId, exclude=()):
        """
        @param exclude: links not to choose (tried already).
        @return: the live link of a cloud that holds C{clientId} now (the
            one it attached to last), or C{None}.
        """
        now = self.reactor.seconds()
        best = None
        for link, replica in self._cloudReplicas.items():
            entry = replica.entries.get((clientId, presence.CLOUD))
            if not link.alive or entry is None or link in exclude:
                continue
            # A node heard from within a heartbeat and not draining first: a
            # node that just died (not yet known) would lose the message.
            rank = (not link.draining, now - link.lastSeen <= link.heartbeat, entry[1])
            if best is None or rank > best[1]:
                best = (link, rank)
        return best[0] if best is not None else None

    def _applyCloudPresence(self, changes, link=None):
        if self.cloudView is not None:
            label = f"{presence.CLOUD}@{link.endpoint}"
            for step, clientId, path, incarnation, extra in presence.replicaChanges(changes):
                if path != presence.CLOUD:
                    continue
                if step == "detach":
                    self.cloudView.detach(clientId, label, incarnation, extra)
                else:
                    self.cloudView.attach(clientId, label, incarnation, extra)
            return
        for step, clientId, path, incarnation, extra in presence.replicaChanges(changes):
            if path != presence.CLOUD:
                continue
            if step == "detach":
                self._clientGone(clientId, path, incarnation, extra)
            else:
                self._clientAt(clientId, path, incarnation, extra)

    def _clientAt(self, clientId, path, incarnation, since):
        self.presence.attach(clientId, path, incarnation, since)
        self._toServers(self.presenceSource.set((clientId, path), [incarnation, since]))

    def _clientGone(self, clientId, path, incarnation, reason):
        self.presence.detach(clientId, path, incarnation, reason)
        delta = self.presenceSource.delete((clientId, path), reason)
        if delta is not None:
            self._toServers(delta)

    def peerDraining(self, session):
        """
        A server is draining: no new request goes to it (here, nor through
        the cloud, which no longer sees it), but the retries of those it took
        still do.
        """
        if session.role != protocol.SERVER:
            return
        route = self.routes.get(session.nodeId)
        if route is not None and route.peer is session:
            self.routes.setDraining(session.nodeId)
            delta = self.routesSource.delete(session.nodeId, "draining")
            if delta is not None:
                self._toCloud(protocol.ROUTES, delta)

    def _mark(self):
        self.routes.expire(self.reactor.seconds())
        self._toServers(self.presenceSource.mark())
        self._toCloud(protocol.ROUTES, self.routesSource.mark())
        self._toCloud(protocol.PRESENCE, self.localSource.mark())

    def _relayLocal(self, changes):
        """
        Pass a server's direct clients on to the cloud, entry for entry (its
        replica let in only entries naming that server), and list them in our
        own presence as C{direct@<server id>}, as the cloud does.
        """
        changes = list(changes)
        for step, clientId, path, incarnation, extra in presence.localChanges(changes):
            if step == "detach":
                self.presence.detach(clientId, path, incarnation, extra)
            else:
                self.presence.attach(clientId, path, incarnation, extra)
        for key, old, new, reason in changes:
            if new is None:
                delta = self.localSource.delete(key, reason)
            else:
                delta = self.localSource.set(key, new)
            if delta is not None:
                self._toCloud(protocol.PRESENCE, delta)

    def _toServers(self, message):
        header, payload = message
        for session in self.front.peers(protocol.SERVER):
            session.send(protocol.PRESENCE, header, payload)

    def _toCloud(self, msgtype, message):
        for link in self.cloudLinks:
            if link.alive:
                link.send(msgtype, *message)


class _MessageOrigin:
    """
    The server a directed message came from, as the L{Forwarder} sees it
    when it goes through one of several cloud nodes: if that node is lost
    with the message (ERR C{target-lost}) or no longer holds the client
    (ERR C{no-route}), the message goes again through another node that
    holds the client, within its deadline; only when none is left does the
    server get the error.  (A node lost after it delivered the message, but
    before the acknowledgement came back, makes the client get it twice.)

    Everything else is the server's session.
    """

    def __init__(self, proxy, session, message, stamps, link):
        self._proxy = proxy
        self._session = session
        self._message = message
        self._stamps = stamps
        self._tried = {link}
        ttl = protocol.field(message.header, "ttl", int, int(proxy.config.requestTimeout * 1000))
        self._deadline = proxy.reactor.seconds() + ttl / 1000.0

    def __getattr__(self, name):
        return getattr(self._session, name)

    def send(self, msgtype, header, payload=b""):
        proxy = self._proxy
        if (
            msgtype == protocol.ERROR
            and header.get("code") in (protocol.E_TARGET_LOST, protocol.E_NO_ROUTE)
            and proxy.running
            and self._session.alive
        ):
            left = int((self._deadline - proxy.reactor.seconds()) * 1000)
            to = self._message.header.get("to")
            link = proxy._cloudOf(to, self._tried) if left > 0 else None
            if link is not None:
                self._tried.add(link)
                proxy.counters["messages-resent"] = proxy.counters.get("messages-resent", 0) + 1
                log.info("message to {client} sent again through {cloud}: {why}",
                         client=to, cloud=link.nodeId, why=header.get("msg"))
                again = protocol.Message(
                    self._message.version, self._message.type,
                    dict(self._message.header, ttl=left), self._message.payload,
                )
                proxy.forwarder.forward(self, again, link, self._stamps)
                return True
        return self._session.send(msgtype, header, payload)


class _CloudPath:
    """
    Several clouds: what their merged view says is what our C{cloud} path
    says (to our own view and to our servers).
    """

    def __init__(self, proxy):
        self.proxy = proxy

    def clientConnected(self, event):
        self.proxy._clientAt(event.clientId, presence.CLOUD, event.incarnation, event.since)

    def clientDisconnected(self, event):
        self.proxy._clientGone(event.clientId, presence.CLOUD, event.incarnation, event.reason)

    def clientMoved(self, event):
        log.info("client {client} ({inc}) moved to {path}", client=event.clientId,
                 inc=event.incarnation, path=event.path)
