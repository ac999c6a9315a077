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
from collections import OrderedDict


#: What L{RouteTable.choose} returns for a request that is bound to a server
#: now out of reach (frozen, or cut off) but not known to be gone: the request
#: must wait for it, not run elsewhere.
AWAY = "away"


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


class StickyChoices:
    """
    Which server each request was sent to, so its retries go there too.

    Keyed by (client id, client incarnation, client request id); an entry
    lives until the request's deadline, and the table holds at most C{limit}
    entries (the oldest are forgotten first, and counted).

    @ivar evicted: entries forgotten before their deadline for room.
    """

    def __init__(self, limit=100000):
        self.limit = limit
        self.evicted = 0
        self._entries = OrderedDict()

    def __len__(self):
        return len(self._entries)

    def get(self, key, now):
        """
        @return: C{(serverId, incarnation)} chosen for C{key}, or C{None}.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[2] <= now:
            del self._entries[key]
            return None
        return entry[0], entry[1]

    def remember(self, key, serverId, incarnation, deadline):
        """
        Record that request C{key} went to C{serverId} (of C{incarnation})
        and is waited for until C{deadline}.
        """
        old = self._entries.pop(key, None)
        if old is not None and old[0] == serverId:
            deadline = max(deadline, old[2])
        self._entries[key] = (serverId, incarnation, deadline)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
            self.evicted += 1

    def forgetServer(self, serverId):
        """
        C{serverId} left cleanly (it answered what it took): its requests
        may go anywhere now.
        """
        for key in [k for k, e in self._entries.items() if e[0] == serverId]:
            del self._entries[key]

    def expire(self, now):
        """
        Forget the entries whose deadline passed.

        @return: how many.
        """
        dead = [k for k, e in self._entries.items() if e[2] <= now]
        for key in dead:
            del self._entries[key]
        return len(dead)


class RouteTable:
    """
    Server ids and service names to routes.

    A target names a server id first; failing that, a service, which is
    served round-robin by every live server that offers it and is not
    draining.  L{choose} keeps each request (and its retries) on the server
    it first went to while that server lives.

    @ivar sticky: the L{StickyChoices}.
    """

    #: How many names (servers and services once offered), and servers lost
    #: without a goodbye, a table remembers.
    memory = 10000

    def __init__(self, stickyLimit=100000):
        self._listeners = []
        self._servers = {}
        self._services = {}
        self._draining = set()
        self._known = OrderedDict()
        self._away = OrderedDict()
        self.sticky = StickyChoices(stickyLimit)

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

    def whenAdded(self, listener):
        """
        Call C{listener()} after every route added (or replaced): whoever
        holds requests for targets that had no route can try them again.
        """
        self._listeners.append(listener)

    def add(self, route):
        """
        Add or replace the route of C{route.serverId}.
        """
        self._add(route)
        for listener in list(self._listeners):
            listener()

    def _add(self, route):
        old = self.remove(route.serverId)
        if old is None or old.incarnation != route.incarnation:
            self._draining.discard(route.serverId)
        self._away.pop(route.serverId, None)
        self._servers[route.serverId] = route
        for name in (route.serverId,) + route.services:
            self._known.pop(name, None)
            self._known[name] = True
            if len(self._known) > self.memory:
                self._known.popitem(last=False)
        for name in route.services:
            self._services.setdefault(name, []).append(route.serverId)

    def remove(self, serverId, clean=None):
        """
        Forget a server.

        @param clean: C{None} when it is replaced; C{True} when it said
            goodbye (it answered everything it took: its requests may go
            elsewhere); C{False} when it was lost (it may still run what it
            took: requests bound to it wait for it, see L{choose}).
        @return: its L{Route}, or C{None}.
        """
        route = self._servers.pop(serverId, None)
        if clean is not None:
            self._draining.discard(serverId)
            if clean:
                self._away.pop(serverId, None)
                self.sticky.forgetServer(serverId)
            elif route is not None:
                self._away[serverId] = route.incarnation
                if len(self._away) > self.memory:
                    self._away.popitem(last=False)
        if route is not None:
            for name in route.services:
                ids = self._services.get(name)
                if ids is not None:
                    ids.remove(serverId)
                    if not ids:
                        del self._services[name]
        return route

    def removePeer(self, peer, clean=False):
        """
        Forget every server reached through C{peer}.

        @return: the removed routes.
        """
        gone = [r for r in self._servers.values() if r.peer is peer]
        for route in gone:
            self.remove(route.serverId, clean)
        return gone

    def setDraining(self, serverId, draining=True):
        """
        Mark a server as draining: no new request is sent to it, but the
        retries of requests it took still are.
        """
        if draining and serverId in self._servers:
            self._draining.add(serverId)
        else:
            self._draining.discard(serverId)

    def isDraining(self, serverId):
        """
        @return: C{True} if C{serverId} said it is draining.
        """
        return serverId in self._draining

    def isKnown(self, target):
        """
        @return: C{True} if C{target} (a server id or service) was ever
            offered here, so a request for it may wait for an instance.
        """
        return target in self._known

    def choose(self, target, key=None, now=0.0, deadline=None, prefer=None, preferInc=None):
        """
        Choose the server for one attempt of a request.

        @param key: the request's (client id, client incarnation, client
            request id), or C{None} (no stickiness).
        @param now: the local time.
        @param deadline: when the request stops being waited for.
        @param prefer: a server the request is known to have gone to (the
            C{server} a client or an upstream relay named), or C{None}.
        @param preferInc: that server's incarnation, if known.
        @return: a L{Route}; L{AWAY} when the request is bound to a server
            out of reach now (it must wait, not run elsewhere); or C{None}.
        """
        route = self._servers.get(target)
        if route is not None:
            return route
        if key is not None:
            entry = self.sticky.get(key, now)
            if entry is not None:
                route = self._servers.get(entry[0])
                if route is None:
                    return AWAY
                if route.incarnation == entry[1]:
                    return route
                # Back with a new incarnation: what the old one took is lost.
        if prefer:
            route = self._servers.get(prefer)
            if route is not None and target in route.services:
                if preferInc in (None, route.incarnation):
                    return self._remember(key, route, deadline)
            elif route is None and prefer in self._away and preferInc in (None, self._away[prefer]):
                return AWAY
        ids = self._services.get(target)
        if not ids:
            return None
        # Rotate: the next request for this service goes to the next server
        # that is not draining (a draining one only if all are).
        for _ in range(len(ids)):
            serverId = ids.pop(0)
            ids.append(serverId)
            if serverId not in self._draining:
                break
        return self._remember(key, self._servers[serverId], deadline)

    def _remember(self, key, route, deadline):
        if key is not None and deadline is not None:
            self.sticky.remember(key, route.serverId, route.incarnation, deadline)
        return route

    def expire(self, now):
        """
        Forget sticky choices whose deadline passed.
        """
        return self.sticky.expire(now)

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

    def dropPeer(self, peer, forgotten=None):
        """
        C{peer} is gone.

        @param forgotten: if given, a L{list} to which the requests that came
            I{from} it (forgotten, unanswered) are appended.
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
            elif forgotten is not None:
                forgotten.append(pending)
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
