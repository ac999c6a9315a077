"""
Routing state of a relay: where servers are, and what is in flight.

L{RouteTable} maps server ids and service names to the peer a request must
go to.  L{InFlight} remembers every request a node forwarded, so that the
reply finds its way back, a lost peer fails its requests at once, and work
whose deadline passed is forgotten.

Pure: no sockets, no reactor (time is passed in).
"""

import itertools
import random


class Route:
    """
    How to reach one server.

    @ivar serverId: the server's id.
    @ivar peer: the next hop (an object with C{send}), opaque here.
    @ivar incarnation: the server's incarnation.
    @ivar services: the service names it offers.
    """

    __slots__ = ("serverId", "peer", "incarnation", "services")

    def __init__(self, serverId, peer, incarnation, services):
        self.serverId = serverId
        self.peer = peer
        self.incarnation = incarnation
        self.services = tuple(services)


class RouteTable:
    """
    Server ids and service names to routes.

    A target names a server id first; failing that, a service, which is
    served round-robin by every live server that offers it.
    """

    def __init__(self):
        self._servers = {}
        self._services = {}

    def __len__(self):
        return len(self._servers)

    def servers(self):
        """
        @return: a L{dict} of server id to L{Route}.
        """
        return dict(self._servers)

    def get(self, serverId):
        """
        @return: the L{Route} of a server id (not a service), or C{None}.
        """
        return self._servers.get(serverId)

    def add(self, route):
        """
        Add or replace the route of C{route.serverId}.
        """
        self.remove(route.serverId)
        self._servers[route.serverId] = route
        for name in route.services:
            self._services.setdefault(name, []).append(route.serverId)

    def remove(self, serverId):
        """
        Forget a server.

        @return: its L{Route}, or C{None}.
        """
        route = self._servers.pop(serverId, None)
        if route is not None:
            for name in route.services:
                ids = self._services.get(name)
                if ids is not None:
                    ids.remove(serverId)
                    if not ids:
                        del self._services[name]
        return route

    def removePeer(self, peer):
        """
        Forget every server reached through C{peer}.

        @return: the removed routes.
        """
        gone = [r for r in self._servers.values() if r.peer is peer]
        for route in gone:
            self.remove(route.serverId)
        return gone

    def resolve(self, target):
        """
        @return: the L{Route} for a server id or service name, or C{None}.
        """
        route = self._servers.get(target)
        if route is not None:
            return route
        ids = self._services.get(target)
        if not ids:
            return None
        # Rotate: the next request for this service goes to the next server.
        serverId = ids.pop(0)
        ids.append(serverId)
        return self._servers[serverId]


class Pending:
    """
    One forwarded request.

    @ivar origin: the peer it came from (to send the answer to).
    @ivar originId: the id the origin gave it.
    @ivar target: the peer it went to.
    @ivar deadline: local time after which nobody waits for it.
    @ivar context: anything the owner wants back with the answer.
    """

    __slots__ = ("forwardId", "origin", "originId", "target", "deadline", "context")

    def __init__(self, forwardId, origin, originId, target, deadline, context):
        self.forwardId = forwardId
        self.origin = origin
        self.originId = originId
        self.target = target
        self.deadline = deadline
        self.context = context


class InFlight:
    """
    The requests a node has forwarded and not yet seen answered.

    Forward ids are local to this node and hop: every hop signals for itself.
    """

    def __init__(self, limit=100000):
        self.limit = limit
        # Ids start at a random point: a restarted relay's ids do not repeat
        # the ones its peers may still hold answers for.
        self._ids = itertools.count(random.getrandbits(40) + 1)
        self._pending = {}
        self._byPeer = {}
        # Requests per origin: a client's in-flight budget counts what it
        # asked, not the messages to it that wait for its acknowledgement.
        self._fromPeer = {}

    def __len__(self):
        return len(self._pending)

    def add(self, origin, originId, target, deadline, context=None):
        """
        Remember a request about to be forwarded.

        @return: the L{Pending}, whose C{forwardId} goes in the forwarded
            message; or C{None} if the table is full.
        """
        if len(self._pending) >= self.limit:
            return None
        fid = next(self._ids)
        pending = Pending(fid, origin, originId, target, deadline, context)
        self._pending[fid] = pending
        byPeer = self._byPeer
        for peer in (origin, target):
            ids = byPeer.get(peer)
            if ids is None:
                byPeer[peer] = {fid}
            else:
                ids.add(fid)
        self._fromPeer[origin] = self._fromPeer.get(origin, 0) + 1
        return pending

    def pop(self, forwardId, peer=None):
        """
        Take the request with this forward id, because it was answered.

        @param peer: if given, the answer must come from the request's target
            (a peer cannot answer for another).
        @return: the L{Pending}, or C{None}.
        """
        pending = self._pending.get(forwardId)
        if pending is None or (peer is not None and pending.target is not peer):
            return None
        del self._pending[forwardId]
        self._unindex(pending)
        return pending

    def _unindex(self, pending):
        byPeer = self._byPeer
        for peer in (pending.origin, pending.target):
            ids = byPeer.get(peer)
            if ids is not None:
                ids.discard(pending.forwardId)
                if not ids:
                    del byPeer[peer]
        count = self._fromPeer.get(pending.origin, 0) - 1
        if count > 0:
            self._fromPeer[pending.origin] = count
        else:
            self._fromPeer.pop(pending.origin, None)

    def countFrom(self, origin):
        """
        @return: how many requests C{origin} sent that are still in flight
            (not those sent I{to} it).
        """
        return self._fromPeer.get(origin, 0)

    def dropPeer(self, peer):
        """
        C{peer} is gone.

        @return: the L{Pending} requests that went I{to} it (whose origins
            must be told), after forgetting every request to or from it.
        """
        ids = self._byPeer.pop(peer, None)
        if not ids:
            return []
        lost = []
        for fid in ids:
            pending = self._pending.pop(fid, None)
            if pending is None:
                continue
            self._unindex(pending)
            if pending.target is peer and pending.origin is not peer:
                lost.append(pending)
        return lost

    def expire(self, now):
        """
        Forget requests whose deadline passed.

        @return: the expired L{Pending} requests.
        """
        expired = [p for p in self._pending.values() if p.deadline <= now]
        for pending in expired:
            del self._pending[pending.forwardId]
            self._unindex(pending)
        return expired

    def clear(self):
        """
        Forget everything.

        @return: every L{Pending}.
        """
        everything = list(self._pending.values())
        self._pending.clear()
        self._byPeer.clear()
        self._fromPeer.clear()
        return everything
