"""
Which path a client's request takes: the primary path per target.

A client may hold links on several paths at once: a server directly, a site
proxy, the cloud.  It keeps all of them up (each with its own heartbeats),
so a server sees the client connected once for as long as any path lives,
and a request moves from a dying path to the next without a new handshake.
L{rankPaths} orders the live links for one request:

  1. a server the client reaches directly that is (or offers) the target;
  2. the site proxy of the target's site, when the client is on that LAN;
  3. the cloud;
  4. a proxy of another site (it would only answer no-route), last.

When the target's site is not known, a proxy ranks before the cloud, as an
explicit C{--proxy} always did.  Links whose node is draining come after
all the others (except for the requests bound to that node).  Several
servers reached directly that all offer the target service are taken in
turn (C{turn}), as a relay takes the servers of a service round-robin.

L{PrimaryPaths} remembers the path last chosen per target, so a switch (and
a switch back) is counted and logged once, not per request.

Pure: links are read through C{role}, C{nodeId}, C{alive}, C{draining} and
C{welcome}.
"""

from twisted.logger import Logger

from zmqrelay.core.protocol import CLOUD, PROXY, SERVER

log = Logger()

_RANK = {SERVER: 0, PROXY: 1, CLOUD: 2}
_OTHER_SITE = 3


def services(link):
    """
    @return: the service names a server link's WELCOME listed.
    """
    welcome = link.welcome or {}
    names = welcome.get("services") or []
    return names if isinstance(names, list) else []


def reaches(link, target):
    """
    @return: C{True} unless C{link} is a direct link to a server that is
        neither C{target} nor offers it.
    """
    if link.role != SERVER or not target:
        return True
    return link.nodeId == target or target in services(link)


def rankPaths(links, target, server=None, sites=None, turn=0):
    """
    @param links: the client's links.
    @param target: the server id or service name asked for.
    @param server: C{(server id, incarnation)} the request is bound to, or
        C{None}.
    @param sites: server id to the id of its site proxy, for the servers
        whose site the client knows (from DNS-SD), or C{None}.
    @param turn: a number the caller counts up per request: when the best
        links are several servers reached directly, equally good, the list
        starts at the C{turn}-th of them (modulo their number).
    @return: the live links that may reach C{target}, best first.
    """
    sites = sites or {}
    site = None
    if server is not None:
        site = sites.get(server[0])
    if site is None:
        site = sites.get(target)

    def rank(link):
        bound = server is not None and link.nodeId == server[0]
        order = _RANK.get(link.role, _OTHER_SITE + 1)
        if link.role == PROXY and site is not None and link.nodeId != site:
            order = _OTHER_SITE
        return (bool(link.draining) and not bound, order)

    live = [link for link in links if link.alive and reaches(link, target)]
    live.sort(key=rank)
    if turn and server is None and len(live) > 1 and live[0].role == SERVER:
        best = rank(live[0])
        n = 1
        while n < len(live) and live[n].role == SERVER and rank(live[n]) == best:
            n += 1
        k = turn % n
        if k:
            live[:n] = live[k:n] + live[:k]
    return live


class PrimaryPaths:
    """
    The path each target's requests took last.

    @ivar counters: C{switches}, how many times a target's primary path
        changed.
    """

    def __init__(self, limit=1000):
        self.limit = limit
        self._primary = {}
        self.counters = {"switches": 0}

    def primary(self, target):
        """
        @return: C{(role, node id)} of the path C{target}'s last request
            took, or C{None}.
        """
        return self._primary.get(target)

    def used(self, target, link):
        """
        A request for C{target} goes on C{link}.

        @return: C{(old, new)} if that changed its primary path (C{old} is
            C{None} the first time), else C{None}.
        """
        new = (link.role, link.nodeId)
        old = self._primary.pop(target, None)
        self._primary[target] = new
        if len(self._primary) > self.limit:
            self._primary.pop(next(iter(self._primary)))
        if old == new:
            return None
        if old is not None and old[0] == new[0] == SERVER and target not in (old[1], new[1]):
            # Another server reached directly for the same service: taken
            # in turn (rankPaths), the path is the same.
            return None
        if old is not None:
            self.counters["switches"] += 1
            log.info(
                "requests for {target} now go {role} {node} (were {oldRole} {oldNode})",
                target=target, role=new[0], node=new[1], oldRole=old[0], oldNode=old[1],
            )
        return (old, new)
