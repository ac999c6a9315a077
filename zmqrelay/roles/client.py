"""
A client: sends requests to servers, receives their notifications and
messages.

A client may be attached on several paths at once (a server directly, its
site's proxy, the cloud); each is an L{UpstreamLink}.  A request goes on the
best live path (direct, then proxy, then cloud) and, if that path fails or
says it has no route, on the next; a retry reuses the request id, so a server
runs its handler once.  One SUB socket listens on every path; the
L{SequenceTracker} drops the duplicates and finds the gaps, which are then
replayed from the server.
"""

import math
from collections import OrderedDict, deque

import msgpack
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import errors, presence, protocol
from zmqrelay.edge import security
from zmqrelay.core.calls import Calls
from zmqrelay.core.discovery import DiscoveredNodes
from zmqrelay.core.paths import PrimaryPaths, rankPaths
from zmqrelay.core.ratelimit import TokenBucket
from zmqrelay.interfaces import IClient, ILinkOwner
from zmqrelay.edge.link import UpstreamLink
from zmqrelay.roles.hop import advertised
from zmqrelay.roles.node import Node
from zmqrelay.core.sequence import DELIVER, Gap, Notification, SequenceTracker

log = Logger()

#: How long to wait for a missing notification to arrive on another path
#: before asking the server to replay it.
GAP_GRACE = 0.2

#: How many times a client asks for the replay of one gap before reporting
#: it lost.  The notification that showed the gap may come before the relays
#: know the way back to its server (the cloud just restarted, say): no route
#: or no path then means "not yet", so ask again, backing off from
#: GAP_GRACE (0.2 s, 0.4 s, ... about 6 s in all).
REPLAY_TRIES = 6

_RETRYABLE = (
    errors.RequestTimeout,
    errors.TargetLost,
    errors.OverLimit,
    errors.NotConnected,
    errors.NoRoute,
    errors.ShuttingDown,
)

#: Backoff between tries while the relays know the target but reach no
#: instance of it (ERR no-route with C{known}): they send no event when one
#: comes back, so ask again after 0.05 s, 0.1 s, ... at most this often.
MAX_AWAY_DELAY = 0.5

#: Directed messages (MSG) a client remembers by their C{from} and C{mid},
#: to hand each to the application once when a relay's death made it come
#: twice (PROTOCOL.md 11).
MESSAGE_MEMORY = 10000

#: The longest C{mid} remembered (longer ones are handed on as they come).
MAX_MID = 256


class _Attempts:
    """
    One request and its attempts.

    C{timeout} is the whole budget: every attempt ends by one deadline.
    While no path or route is up, it waits for one (a link coming up, or a
    short backoff when a relay says the target is known but out of reach).
    Once a server took it (a direct send, or a relay's answer saying which),
    retries go to that server while it lives.  With C{failFast}, it behaves
    as before: C{timeout} per attempt, no waiting.

    @ivar server: C{(server id, incarnation)} the request is bound to, or
        C{None}.
    """

    def __init__(self, client, rid, target, payload, timeout, attempts, sys=None, failFast=False):
        self.client = client
        self.rid = rid
        self.target = target
        self.payload = payload
        self.timeout = timeout
        self.left = attempts
        self.sys = sys
        self.failFast = failFast
        self.deadline = client.reactor.seconds() + timeout
        self.server = None
        self.noRoute = set()
        self.current = None
        self.timer = None
        self.expiry = None
        self.waiter = None
        #: The link this request waits for room on (its C{inflight}), or C{None}.
        self.roomOn = None
        self.waitedForRoom = False
        self.away = 0
        #: Attempts cut short (target-lost, shutdown): retried, backing off.
        self.cut = 0
        #: Whether a path took an attempt (answered anything but "no such
        #: target"): then the target is not unknown.
        self.taken = False
        self.sent = 0
        self.lastError = None
        self.result = Deferred(self._cancel)

    def start(self):
        if not self.failFast:
            self.expiry = self.client.reactor.callLater(self.timeout, self._expired)
        self._try()
        return self.result

    def _remaining(self):
        return self.deadline - self.client.reactor.seconds()

    def _choose(self):
        """
        @return: the link for the next attempt, or C{None} to wait.
        """
        client = self.client
        paths = [p for p in client.paths(self.target, self.server) if p not in self.noRoute]
        if self.server is not None:
            serverId, inc = self.server
            direct = [l for l in client.links if l.role == protocol.SERVER and l.nodeId == serverId]
            for link in direct:
                if link.alive and link.incarnation == inc:
                    return link
                if link.alive:
                    # Back with a new incarnation: what it took is lost.
                    self.server = None
                    return self._choose()
            relays = [p for p in paths if p.role != protocol.SERVER]
            if relays:
                return relays[0]
            if direct:
                # Our only way to it is down (silent past liveness, or its
                # connection gone): it is gone, another server may take it.
                self.server = None
        return paths[0] if paths else None

    def _try(self):
        self.timer = None
        self.roomOn = None
        if self.result.called:
            return
        client = self.client
        link = self._choose()
        if link is None:
            self._noPath()
            return
        if not protocol.fits(link, self.payload):
            self._finish(errors.TooLarge(
                f"{len(self.payload)} bytes is more than {link.nodeId} accepts "
                f"({link.maxSize - protocol.HEADROOM})"
            ))
            return
        room = link.inflight
        if room is not None and client.calls.outstanding(link) >= room:
            # PROTOCOL.md 10.6: no more than the node's inflight at once.  The
            # rest wait here, not at the node, which would refuse them (and
            # count each refusal as a strike against this client).
            self._waitForRoom(link)
            return
        if self.failFast:
            wait = ttl = self.timeout
        else:
            ttl = self._remaining()
            if ttl <= 0:
                self._expired()
                return
            # The budget left, shared among the attempts left; the server
            # may keep working for all of it (a retry joins it).
            wait = ttl / max(self.left, 1)
        self.left -= 1
        self.sent += 1
        client.primary.used(self.target, link)
        header = {"id": self.rid, "to": self.target, "ttl": max(1, int(ttl * 1000))}
        if self.sys is not None:
            header["sys"] = self.sys
        if self.failFast:
            # Relays answer no-route at once instead of holding the request
            # until a route appears (PROTOCOL.md 10.1).
            header["hold"] = False
        if link.role == protocol.SERVER and self.server is None and not self.failFast:
            self.server = (link.nodeId, link.incarnation)
        elif link.role != protocol.SERVER and self.server is not None:
            header["server"], header["sinc"] = self.server
        self.current = client.calls.expect(self.rid, link, wait)
        self.current.addCallbacks(self._answered, self._failed, errbackArgs=(link,))
        if not link.send(protocol.REQUEST, header, self.payload):
            # Fail this attempt only: the other calls on this link were sent.
            client.calls.fail(self.rid, errors.OverLimit("send queue full", 0.05))

    def _waitForRoom(self, link):
        """
        C{link} has as many of our requests in flight as it allows: wait
        until one of them ends (or a link changes), within the deadline.
        """
        client = self.client
        if self.failFast:
            self._finish(errors.OverLimit(
                f"{link.inflight} requests already in flight through {link.nodeId}", 0.05))
            return
        if not self.waitedForRoom:
            self.waitedForRoom = True
            client.counters["waited-for-room"] += 1
        self.roomOn = link
        self.waiter = client.whenRoom(link)
        self.waiter.addCallbacks(self._changed, _ignoreCancel)

    def _noPath(self):
        """
        No link can take this attempt now.
        """
        client = self.client
        error = self.lastError or errors.NotConnected("no live path to any relay or server")
        unknown = self._unknown()
        if unknown:
            error = errors.NoRoute(f"no connected server is or offers {self.target!r}")
        refused = client.refusals()
        if refused:
            # Every path refused us (no common version, bad credentials):
            # final, so waiting cannot help.
            self._finish(refused[0])
            return
        if self.failFast or unknown or not client.running:
            if (self.failFast and not unknown and self.left > 0 and client.running
                    and not isinstance(error, errors.NoRoute)):
                # Today's behaviour: wait a little for a path, one attempt.
                self.left -= 1
                self.timer = client.reactor.callLater(min(self.timeout, 0.5), self._try)
                self.lastError = errors.NotConnected("no live path")
                return
            if isinstance(error, errors.NotConnected):
                # No path because a relay refused us (no common version, ...):
                # say that, not just "not connected".
                refused = [l.lastError for l in client.links if l.lastError is not None]
                if refused:
                    error = refused[0]
            self._finish(error)
            return
        self.lastError = self.lastError or errors.NotConnected("no live path")
        self._waitForChange()

    def _unknown(self, liveOnly=False):
        """
        @param liveOnly: judge by the links that are up, some of the others
            being down (at the deadline); else every link must be up
            (waiting cannot help).
        @return: C{True} if no path took the request, and every link (that is
            up) is a server that is not the target or a relay that said the
            target is unknown.
        """
        client = self.client
        if client.knows(self.target) or self.server is not None or self.taken:
            return False
        links = [l for l in client.links if l.alive]
        if not links or (not liveOnly and len(links) != len(client.links)):
            return False
        return all(l.role == protocol.SERVER or l in self.noRoute for l in links)

    def _waitForChange(self, delay=None):
        """
        Try again when a link comes up, drains or goes (an event), or after
        C{delay} seconds; never after the deadline (L{_expired} ends it).
        """
        self.waiter = self.client.whenChanged()
        self.waiter.addCallbacks(self._changed, _ignoreCancel)
        if delay is not None:
            self.timer = self.client.reactor.callLater(delay, self._changed, None)

    def _changed(self, _):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.called:
            waiter.cancel()
        # A link change may make a path that said "unknown" worth asking again.
        self.noRoute = {l for l in self.noRoute if l.alive}
        self._try()

    def _expired(self):
        self.expiry = None
        if self.result.called:
            return
        if self.current is not None:
            error = errors.RequestTimeout(f"no answer within {self.timeout:.3g}s")
        elif self.roomOn is not None:
            # Never sent: it did not run.
            error = errors.OverLimit(
                f"{self.roomOn.inflight} requests already in flight through "
                f"{self.roomOn.nodeId} for the whole {self.timeout:.3g}s"
            )
        elif not any(l.alive for l in self.client.links):
            last = f" (last: {self.lastError})" if self.lastError is not None else ""
            error = errors.NotConnected(f"no live path within {self.timeout:.3g}s{last}")
        elif self._unknown(liveOnly=True):
            # Some path stayed down; every one that is up said it knows no
            # such target.
            error = errors.NoRoute(f"no connected server is or offers {self.target!r}")
        else:
            last = f" (last: {self.lastError})" if self.lastError is not None else ""
            error = errors.Unavailable(f"no instance of {self.target!r} reachable within {self.timeout:.3g}s{last}")
        self._finish(error)

    def _answered(self, payload):
        self.current = None
        self._finish(payload)

    def _failed(self, failure, link):
        self.current = None
        if failure.check(CancelledError):
            return
        error = failure.value
        self.lastError = error
        client = self.client
        if not isinstance(error, errors.NoRoute) or getattr(error, "known", False):
            self.taken = True
        server = getattr(error, "server", None)
        if server is not None and self.server is None and not isinstance(error, errors.ShuttingDown):
            self.server = server
        if not isinstance(error, _RETRYABLE) or not client.running:
            self._finish(failure)
            return
        if isinstance(error, errors.RequestTimeout) and server is not None:
            # A server's ERR timeout: its handler did not finish by the
            # deadline.  The server keeps that answer for this request id, so
            # a retry would only fetch it again (PROTOCOL.md 12).
            self._finish(failure)
            return
        delay = 0.0
        if isinstance(error, errors.NoRoute):
            # Nothing ran: this does not use up an attempt.
            self.left += 1
            if self.failFast or not getattr(error, "known", False) and not client.knows(self.target):
                # This path does not know the target; another may, at no cost.
                self.noRoute.add(link)
                self._try()
                return
            # Known, but no instance in reach now: ask again shortly.
            self.away += 1
            delay = min(0.05 * 2 ** (self.away - 1), MAX_AWAY_DELAY)
            if delay < self._remaining():
                self._waitForChange(delay)
            return
        if isinstance(error, errors.ShuttingDown):
            # The node that said so is stopping: another path or server (or
            # the same, back) takes it; what it did not run, it never will.
            # (With failFast there is no budget to bound that: it uses up an
            # attempt.)
            if not self.failFast:
                self.left += 1
            elif self.left <= 0:
                self._finish(failure)
                return
            if link.role == protocol.SERVER or self.server is None:
                self.server = None
            link.draining = True
            delay = self._cutShort()
        elif isinstance(error, errors.TargetLost) and not self.failFast:
            # A hop on the way was lost: the attempt was cut short, not
            # answered.  A retry is safe (sticky choice, reply cache), and
            # the budget, not the attempts cap, bounds how often it repeats.
            self.left += 1
            delay = self._cutShort()
        elif self.left <= 0:
            self._finish(failure)
            return
        if isinstance(error, errors.OverLimit):
            delay = error.retryAfter or 0.05
        if self.failFast or delay == 0.0:
            self.timer = client.reactor.callLater(delay, self._try)
        else:
            self._waitForChange(delay)

    def _cutShort(self):
        """
        An attempt was cut short and is tried again: after 0.05 s, then
        0.1 s, ... at most L{MAX_AWAY_DELAY} (a path that keeps losing its
        target is not asked in a tight loop).

        @return: the delay.
        """
        self.cut += 1
        return min(0.05 * 2 ** (self.cut - 1), MAX_AWAY_DELAY)

    def lateReply(self, payload):
        """
        A reply came for this request from a path it no longer waits on (an
        earlier attempt's): it is the answer all the same, as the request id
        is the same.  An error from there is not: only a reply settles.

        @return: C{True} if it settled this request.
        """
        if self.result.called:
            return False
        current, self.current = self.current, None
        self.client.calls.forget(self.rid)
        self._finish(payload)
        if current is not None:
            current.cancel()
        return True

    def _finish(self, result):
        if not self.result.called:
            self._stopTimers()
            if isinstance(result, Exception):
                self.result.errback(result)
            else:
                self.result.callback(result)

    def _stopTimers(self):
        for name in ("timer", "expiry"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.called:
            waiter.cancel()

    def _cancel(self, d):
        self._stopTimers()
        if self.current is not None:
            current, self.current = self.current, None
            current.cancel()

    def abandon(self, error):
        """
        The client is stopping.
        """
        self._stopTimers()
        self._finish(error)


@implementer(IClient, ILinkOwner)
class Client(Node):
    """
    The client role.

    @ivar links: the L{UpstreamLink}s, one per path.
    @ivar messageHandler: called with (serverId, payload) for each message a
        server sent this client, once: a message that comes again (the
        same C{from} and C{mid}, within the last L{MESSAGE_MEMORY}) is
        acknowledged again and counted C{duplicate-messages}, not handed on.
    """

    role = protocol.CLIENT

    #: Seconds a node found by DNS-SD may not answer before it is dropped
    #: (and then probed again as often).
    discoverAge = 30.0

    def __init__(self, config, cloud=None, proxy=None, servers=(), reactor=None, socketFactory=None,
                 discover=False, discoverInterfaces=(), browserFactory=None, cloudLinks=1):
        """
        @param config: the L{zmqrelay.core.config.NodeConfig}: its C{nodeId}
            is the client id servers see; its C{requestTimeout} and
            C{attempts} are the defaults of L{request}.
        @param proxy: a site proxy's control endpoint (the LAN path), or
            C{None}.
        @param servers: control endpoints of servers to reach directly.
        @param reactor: the reactor (default: the global one).
        @param socketFactory: an L{zmqrelay.interfaces.ISocketFactory}
            (default: one of its own).
        @param cloud: the cloud's control endpoint, or a L{list} of those of
            several clouds that form one: the client attaches to
            C{cloudLinks} of them at a time and moves to another when one
            is gone (a liveness window without an answer) or draining.
        @param cloudLinks: how many clouds to attach to at once (2: the
            second is already up when the first goes, so no gap at all).
        @param discover: find servers and site proxies on the LAN with
            DNS-SD and use them as direct paths (with CURVE, only those
            whose key C{config.curve} trusts).
        @param discoverInterfaces: the addresses of the interfaces to use
            mDNS on (default: all).
        @param browserFactory: testing: called with C{(reactor, table,
            interfaces)}, returns the browser service feeding C{table}
            (default: L{zmqrelay.edge.discovery.Browser}).
        """
        Node.__init__(self, config, reactor, socketFactory)
        if isinstance(cloud, str):
            cloud = [cloud]
        self.cloudAddresses = [a for a in (cloud or []) if a]
        if cloudLinks < 1:
            raise ValueError("cloudLinks must be at least 1")
        self.cloudLinks = cloudLinks
        # Cloud link -> when it was last down (or made), for moving on.
        self._cloudDown = {}
        # A link to the next cloud -> the draining cloud's link it replaces.
        self._replacing = {}
        self._cloudWatch = None
        self._moves = []
        self.addresses = self.cloudAddresses + [a for a in [proxy] if a] + list(servers)
        if not self.addresses and not discover:
            raise ValueError("a client needs a cloud, a proxy or a server to connect to, or discover=True")
        self._explicitProxy = bool(proxy)
        self.links = []
        #: Counted up per ranking: spreads requests over several direct
        #: servers of one service (L{rankPaths}).
        self._turn = 0
        self.primary = PrimaryPaths()
        # DNS-SD instance name -> the link we opened for it.
        self._discoveredLinks = {}
        self.discovered = None
        if discover:
            curve = getattr(config, "curve", None)
            trusted = None if curve is None else set(curve.serverKeys.values())
            self.discovered = DiscoveredNodes(
                self.reactor, self, config.versions, trusted, self.discoverAge, config.nodeId
            )
            if browserFactory is None:
                from zmqrelay.edge.discovery import Browser as browserFactory
            browserFactory(self.reactor, self.discovered, tuple(discoverInterfaces)).setServiceParent(self)
        self.calls = Calls(self.reactor)
        self.tracker = SequenceTracker()
        self.messageHandler = None
        self.sub = None
        self._receivers = {}
        self._subEndpoints = {}
        self._attempts = {}
        self._replayTimers = set()
        self._connectedWaiters = []
        self._changeWaiters = []
        # Link -> Deferreds of requests waiting for room on it, first first.
        self._roomWaiters = {}
        self.calls.onRoom = self._room
        self._known = OrderedDict()
        self._messages = OrderedDict()
        self.counters = {"notifications": 0, "replayed": 0, "lost": 0, "messages": 0, "malformed": 0,
                         "duplicate-messages": 0, "waited-for-room": 0}
        # Bad input (notifications, replay answers) and lost gaps are counted
        # always and logged at a bounded rate (PROTOCOL.md 12).
        self._logBucket = TokenBucket(1.0, 10.0, self.reactor.seconds())

    def _countedParts(self):
        parts = [(f"link{i}", link) for i, link in enumerate(self.links)] + [("seq", self.tracker)]
        parts.append(("paths", self.primary))
        if self.discovered is not None:
            parts.append(("discovery", self.discovered))
        return parts

    def _start(self):
        self.sub = self.socketFactory.socket("sub", self._notification)
        for prefix in self._receivers:
            self.sub.subscribe(prefix)
        spare = self.cloudAddresses[self.cloudLinks:]
        for address in self.addresses:
            if address in spare:
                continue
            link = UpstreamLink(self, self.config, self.reactor, self.socketFactory, address)
            if address in self.cloudAddresses:
                self._cloudDown[link] = self.reactor.seconds()
            self.links.append(link)
            link.start()
        if spare:
            from twisted.internet.task import LoopingCall

            self._cloudWatch = LoopingCall(self._checkClouds)
            self._cloudWatch.clock = self.reactor
            self._cloudWatch.start(self.config.heartbeat, now=False)

    # Several clouds (issue 10)

    def _spareCloud(self, after=None):
        """
        @return: the next cloud endpoint no link of ours dials (in list
            order, after C{after}), or C{None}.
        """
        dialled = {l.endpoint for l in self._cloudDown}
        order = self.cloudAddresses
        if after in order:
            i = order.index(after) + 1
            order = order[i:] + order[:i]
        for address in order:
            if address not in dialled:
                return address
        return None

    def _dialCloud(self, address):
        link = UpstreamLink(self, self.config, self.reactor, self.socketFactory, address)
        self._cloudDown[link] = self.reactor.seconds()
        self.links.append(link)
        link.start()
        return link

    def _moveFrom(self, link, why):
        """
        Leave the cloud of C{link} for the next one, if there is one we do
        not dial; what was in flight on it is retried there.
        """
        self._moves = [c for c in self._moves if c.active()]
        if not self.running or link not in self._cloudDown:
            return
        address = self._spareCloud(after=link.endpoint)
        if address is None:
            return
        log.info("leaving cloud {old} ({why}) for {new}", old=link.endpoint, why=why, new=address)
        self._cloudDown.pop(link, None)
        self._replacing.pop(link, None)
        self._closeLink(link)
        self._dialCloud(address)

    def _checkClouds(self):
        """
        A cloud link that has not been up for a liveness window (dead,
        stopped, or never reached) gives way to the next cloud.
        """
        now = self.reactor.seconds()
        window = self.config.heartbeat * self.config.liveness
        for link, since in list(self._cloudDown.items()):
            if not link.alive and since is not None and now - since > window:
                self._moveFrom(link, "no answer")

    def _stop(self):
        if self._cloudWatch is not None and self._cloudWatch.running:
            self._cloudWatch.stop()
        self._cloudWatch = None
        for call in self._moves:
            if call.active():
                call.cancel()
        self._moves = []
        self._cloudDown.clear()
        self._replacing.clear()
        stopping = errors.ShuttingDown("client stopping")
        for attempt in list(self._attempts.values()):
            attempt.abandon(stopping)
        for timer in self._replayTimers:
            if timer.active():
                timer.cancel()
        self._replayTimers.clear()
        for link in self.links:
            link.stop()
        self.links = []
        self._discoveredLinks.clear()
        self.calls.failAll(stopping)
        waiters, self._connectedWaiters = self._connectedWaiters, []
        for d in waiters:
            d.errback(stopping)
        # Every link went down with the client: a change, which ends the
        # wait of whoever waits for one.
        self._changed()
        if self.sub is not None:
            self.sub.close()
            self.sub = None

    # The application's API

    def paths(self, target, server=None):
        """
        @param server: C{(server id, incarnation)} the request is bound to,
            or C{None}.
        @return: the live links that may reach C{target}, best first; links
            whose node is draining come last (a draining server's link only
            for the requests bound to it, or if nothing else offers it).
        """
        sites = self.discovered.sites() if self.discovered is not None else None
        self._turn += 1
        return rankPaths(self.links, target, server, sites, self._turn)

    def knows(self, target):
        """
        @return: C{True} if C{target} exists as far as this client knows: a
            server we reach directly is or offers it, or it answered before.
            A request for it then waits for an instance (within its
            deadline) instead of failing with no route.
        """
        if target in self._known:
            return True
        for link in self.links:
            if link.role == protocol.SERVER and link.welcome:
                if link.nodeId == target or target in (link.welcome.get("services") or []):
                    return True
        return False

    def whenChanged(self):
        """
        @return: a L{Deferred} firing with C{None} the next time a link comes
            up, goes down or says it is draining, or the client stops;
            cancelling it forgets it.
        """

        def cancel(d):
            if d in self._changeWaiters:
                self._changeWaiters.remove(d)

        d = Deferred(cancel)
        self._changeWaiters.append(d)
        return d

    def _changed(self):
        waiters, self._changeWaiters = self._changeWaiters, []
        for d in waiters:
            d.callback(None)

    def whenRoom(self, link):
        """
        @return: a L{Deferred} firing with C{None} when fewer of our
            requests than C{link.inflight} are in flight through C{link}
            (first come, first served), or when C{link} goes down;
            cancelling it forgets it.
        """

        def cancel(d):
            waiters = self._roomWaiters.get(link)
            if waiters is not None and d in waiters:
                waiters.remove(d)
                if not waiters:
                    del self._roomWaiters[link]

        d = Deferred(cancel)
        waiters = self._roomWaiters.get(link)
        if waiters is None:
            waiters = self._roomWaiters[link] = deque()
        waiters.append(d)
        return d

    def _room(self, link, everyone=False):
        """
        A request through C{link} has ended: wake those waiting for room
        there while there is some (each one woken may take it, or go
        another way), or all of them with C{everyone}.
        """
        if everyone:
            # Each of these once: one woken may wait again (on a new list).
            for d in self._roomWaiters.pop(link, ()):
                if not d.called:
                    d.callback(None)
            return
        waiters = self._roomWaiters.get(link)
        while waiters and (link.inflight is None or self.calls.outstanding(link) < link.inflight):
            waiters.popleft().callback(None)
        if waiters is not None and not waiters and self._roomWaiters.get(link) is waiters:
            # (Not one that a request woken above made anew, waiting again.)
            del self._roomWaiters[link]

    def request(self, target, payload, timeout=None, attempts=None, failFast=False, *, sys=None):
        """
        See L{IClient.request}.

        @param sys: a C{sys} operation (PROTOCOL.md 10.7: C{ping},
            C{stats}, C{routes}, C{presence}) for the node C{target} names
            (C{""}: the node attached to) instead of an application request.
        """
        if not isinstance(target, str) or not isinstance(payload, bytes):
            return fail(TypeError("target must be str and payload bytes"))
        timeout = self.config.requestTimeout if timeout is None else timeout
        attempts = self.config.attempts if attempts is None else attempts
        if (timeout.__class__ not in (int, float) or not 0 < timeout < math.inf
                or attempts.__class__ is not int or attempts < 1):
            return fail(ValueError(f"timeout must be positive and attempts 1 or more, not {timeout!r} and {attempts!r}"))
        if not self.running:
            return fail(errors.NotConnected("client is not running"))
        rid = self.calls.newId()
        attempt = _Attempts(self, rid, target, payload, timeout, attempts, sys, failFast)
        self._attempts[rid] = attempt
        self.timings["roundtrip"].timeDeferred(attempt.result, self.reactor)
        # However it ends (answer, failure, cancel, stop), it is forgotten.
        attempt.result.addBoth(self._attemptDone, rid, target)
        return attempt.start()

    #: How many targets that answered a client remembers (L{knows}).
    knownTargets = 1000

    def _attemptDone(self, result, rid, target):
        self._attempts.pop(rid, None)
        if isinstance(result, bytes):
            self._known.pop(target, None)
            self._known[target] = True
            if len(self._known) > self.knownTargets:
                self._known.popitem(last=False)
        return result

    def subscribe(self, prefix, receiver):
        """
        See L{IClient.subscribe}.
        """
        receivers = self._receivers.setdefault(prefix, [])
        receivers.append(receiver)
        if len(receivers) == 1 and self.sub is not None:
            self.sub.subscribe(prefix)

    def unsubscribe(self, prefix, receiver):
        """
        See L{IClient.unsubscribe}.
        """
        receivers = self._receivers.get(prefix, [])
        if receiver in receivers:
            receivers.remove(receiver)
        if not receivers and prefix in self._receivers:
            del self._receivers[prefix]
            if self.sub is not None:
                self.sub.unsubscribe(prefix)
            remaining = tuple(self._receivers)
            self.tracker.forget(lambda topic: topic.startswith(remaining))

    def whenConnected(self, timeout=10.0):
        """
        See L{IClient.whenConnected}.
        """
        if any(link.alive for link in self.links):
            return succeed(None)

        def cancel(d):
            if d in self._connectedWaiters:
                self._connectedWaiters.remove(d)

        d = Deferred(cancel)
        self._connectedWaiters.append(d)

        def timedOut(failure):
            failure.trap(defer.TimeoutError)
            raise errors.RequestTimeout(f"no path up within {timeout}s")

        return d.addTimeout(timeout, self.reactor).addErrback(timedOut)

    # Link callbacks

    # DNS-SD (the table's observer)

    def nodeFound(self, announcement):
        """
        DNS-SD found a usable server or site proxy: open a link to it (a
        direct path), unless we already dial it.
        """
        if not self.running or self.sub is None:
            return
        if announcement.role == protocol.PROXY and self._explicitProxy:
            return
        endpoint = announcement.endpoint()
        if endpoint in self.addresses or self._dialled(announcement.nodeId):
            return
        curve = getattr(self.config, "curve", None)
        if curve is not None:
            # A key the table found among those we trust; the CURVE
            # handshake proves the node holds it.
            curve.serverKeys[endpoint] = announcement.key
        name = f"{announcement.role} {announcement.nodeId} (DNS-SD)"
        link = UpstreamLink(self, self.config, self.reactor, self.socketFactory, endpoint, name)
        link.discovered = announcement
        log.info("DNS-SD: found {role} {node} at {endpoint}", role=announcement.role,
                 node=announcement.nodeId, endpoint=endpoint)
        self._discoveredLinks[announcement.name] = link
        self.links.append(link)
        link.start()

    def nodeLost(self, announcement, reason):
        """
        A node DNS-SD found went away, changed or stopped answering: close
        its link; what was in flight on it is retried on another path.
        """
        link = self._discoveredLinks.pop(announcement.name, None)
        if link is None:
            return
        log.info("DNS-SD: {role} {node} lost ({reason})", role=announcement.role,
                 node=announcement.nodeId, reason=reason)
        self._closeLink(link)

    def _dialled(self, nodeId):
        """
        @return: C{True} if a link we were given (not found) reaches C{nodeId}.
        """
        return any(
            l.nodeId == nodeId and getattr(l, "discovered", None) is None for l in self.links
        )

    def _closeLink(self, link, reason="shutdown"):
        if link in self.links:
            self.links.remove(link)
        link.stop(reason)
        endpoint = self._subEndpoints.pop(link, None)
        if endpoint is not None and self.sub is not None:
            self.sub.disconnect(endpoint)
        self.calls.failPeer(link, errors.TargetLost(f"{link.name} closed"))
        self._changed()

    def _answering(self, link, up):
        announcement = getattr(link, "discovered", None)
        if announcement is None or self.discovered is None:
            return
        if up and self._dialled(link.nodeId):
            # We were given a path to it too: two sessions of ours would
            # take each other's place at its front.
            self.reactor.callLater(0, self._dropDuplicate, announcement)
            return
        self.discovered.answering(announcement.nodeId, up)

    def _dropDuplicate(self, announcement):
        link = self._discoveredLinks.pop(announcement.name, None)
        if link is not None:
            self._closeLink(link)

    def helloExtras(self, link):
        return {}

    def linkUp(self, link):
        pub = link.welcome.get("pub")
        if isinstance(pub, str) and self.sub is not None:
            endpoint = advertised(pub, link.endpoint)
            old = self._subEndpoints.get(link)
            if old != endpoint:
                if old is not None:
                    self.sub.disconnect(old)
                self._subEndpoints[link] = endpoint
                security.secureDial(self.sub, self.config, link.endpoint)
                self.sub.connect(endpoint)
        waiters, self._connectedWaiters = self._connectedWaiters, []
        for d in waiters:
            d.callback(None)
        if link in self._cloudDown:
            self._cloudDown[link] = None
        old = self._replacing.pop(link, None)
        if old is not None and old in self._cloudDown:
            # The next cloud is up: now leave the draining one, saying we
            # moved (it keeps us listed for the move grace, so no server
            # sees us go while the new node's presence is on its way).
            self._cloudDown.pop(old, None)
            self._closeLink(old, presence.MOVED)
        self._answering(link, True)
        self._changed()

    def linkDown(self, link, reason):
        if link in self._cloudDown:
            self._cloudDown[link] = self.reactor.seconds()
            if reason != "shutdown" and self.running and self._spareCloud(link.endpoint):
                # Gone (or said goodbye): move on at once, not from here (we
                # are inside the link's own callback).
                self._moves.append(self.reactor.callLater(0, self._moveFrom, link, reason))
        self.calls.failPeer(link, errors.TargetLost(f"{link.name} lost: {reason}"))
        self._answering(link, False)
        # Those waiting for room there go another way, or wait for a path.
        self._room(link, everyone=True)
        if reason == "bye":
            # It said goodbye: what it took, it answered; requests bound to
            # it may go elsewhere.
            for attempt in self._attempts.values():
                if attempt.server is not None and attempt.server[0] == link.nodeId:
                    attempt.server = None
        self._changed()

    def refusals(self):
        """
        @return: why each path's upstream refused us, if every one did and
            none is up; else an empty L{list}.
        """
        refused = [l.lastError for l in self.links if l.lastError is not None]
        if not self.links or len(refused) != len(self.links) or any(l.alive for l in self.links):
            return []
        return refused

    def linkRefused(self, link):
        """
        C{link}'s upstream refused our HELLO (C{link.lastError} says why).
        If every path refused us for good (no common version, a key bound to
        another id, ...), waiting for a path cannot help: whoever waits for
        one (L{whenConnected}) learns why now, not at its timeout.
        """
        refused = self.refusals()
        if not refused or not all(isinstance(e, (errors.Rejected, errors.VersionMismatch)) for e in refused):
            return
        waiters, self._connectedWaiters = self._connectedWaiters, []
        for d in waiters:
            d.errback(refused[0])

    def undelivered(self, link, msgtype, header):
        """
        A request sent in a BATCH could not be queued on C{link} (its queue
        was full): fail that attempt, as a refused send fails it.
        """
        if msgtype == protocol.REQUEST and header.get("id").__class__ is int:
            self.calls.fail(header["id"], errors.OverLimit("send queue full", 0.05))

    def linkDraining(self, link):
        """
        C{link}'s node said it is draining: new requests go elsewhere; a
        draining cloud is left for the next one as soon as that one is up.
        """
        if link in self._cloudDown and self.running and link not in self._replacing.values():
            address = self._spareCloud(after=link.endpoint)
            if address is not None:
                log.info("cloud {old} is draining: moving to {new}", old=link.endpoint, new=address)
                self._replacing[self._dialCloud(address)] = link
        self._changed()

    def linkMessage(self, link, message):
        msgtype = message.type
        if msgtype in (protocol.REPLY, protocol.ERROR):
            self._settle(link, message)
        elif msgtype == protocol.MESSAGE:
            self._message(link, message)
        else:
            raise protocol.ProtocolError(protocol.E_UNKNOWN_TYPE, f"unexpected {protocol.typeName(msgtype)}")

    def _settle(self, link, message):
        if self.calls.settle(link, message):
            return
        # A reply from an earlier attempt on another path is still the
        # answer (same request id); an error from there is not.
        rid = message.header.get("id")
        attempt = self._attempts.get(rid) if isinstance(rid, int) else None
        if attempt is not None and message.type == protocol.REPLY:
            attempt.lateReply(message.payload)

    def _message(self, link, message):
        header = message.header
        # A bad field raises: the link answers ERR bad-message, so the
        # server's send fails with it instead of timing out.
        rid = protocol.field(header, "id", int, required=True)
        sender = protocol.field(header, "from", str, "")
        mid = protocol.field(header, "mid", str, None)
        link.send(protocol.REPLY, {"id": rid})
        if mid is not None and len(mid) <= MAX_MID:
            # Sent again through another relay after one died with it
            # (PROTOCOL.md 21.4): acknowledged again, handed on once.
            seen = self._messages
            key = (sender, mid)
            if key in seen:
                self.counters["duplicate-messages"] += 1
                return
            seen[key] = None
            while len(seen) > MESSAGE_MEMORY:
                seen.popitem(last=False)
        self.counters["messages"] += 1
        if self.messageHandler is not None:
            try:
                self.messageHandler(sender, message.payload)
            except Exception:
                log.failure("message handler failed")

    # Notifications

    def _notification(self, frames):
        try:
            topic, message = protocol.decodeNotification(frames)
            header = message.header
            serverId = protocol.field(header, "server", str, required=True)
            inc = protocol.field(header, "inc", str, required=True)
            seq = protocol.field(header, "seq", int, required=True)
        except protocol.ProtocolError as e:
            self.counters["malformed"] += 1
            if self._logBucket.take(self.reactor.seconds()) == 0.0:
                log.warn("malformed notification: {error}", error=e)
            return
        verdict, missing = self.tracker.receive(serverId, inc, topic, seq)
        if verdict == DELIVER:
            self.counters["notifications"] += 1
            self._deliver(Notification(topic, message.payload, serverId, inc, seq))
        if missing is not None:
            first, last = missing
            head = last - self.tracker.maxMissing
            if head >= first:
                # Longer than any server keeps for replay (or a forged
                # sequence number): the head of the gap is lost for good, and
                # must never be expanded number by number.
                self.counters["lost"] += head - first + 1
                self._reportLost(serverId, inc, topic, [(first, head)])
                first = head + 1
            timer = self.reactor.callLater(GAP_GRACE, self._replay, serverId, inc, topic, first, last)
            self._replayTimers.add(timer)

    def _deliver(self, notification):
        for prefix, receivers in list(self._receivers.items()):
            if notification.topic.startswith(prefix):
                for receiver in list(receivers):
                    try:
                        receiver.notificationReceived(notification)
                    except Exception:
                        log.failure("notification receiver failed")

    def _subscribed(self, topic):
        return topic.startswith(tuple(self._receivers))

    def _replay(self, serverId, inc, topic, first, last, tries=REPLAY_TRIES):
        self._replayTimers = {t for t in self._replayTimers if t.active()}
        if not self._subscribed(topic):
            # Unsubscribed meanwhile: nobody wants these any more.
            return
        ask = msgpack.packb({"topic": topic, "inc": inc, "first": first, "last": last}, use_bin_type=True)
        d = self.request(serverId, ask, sys="replay")

        def replayed(payload):
            if not self._subscribed(topic):
                return
            items = _replayItems(payload, first, last)
            if items is None:
                # Not what PROTOCOL.md 14.4 says a replay answer is: nothing
                # of it is taken (what is missing is reported lost below).
                self.counters["malformed"] += 1
                if self._logBucket.take(self.reactor.seconds()) == 0.0:
                    log.warn("malformed replay answer from {server}", server=serverId)
                return
            for seq, data in items:
                verdict, _ = self.tracker.receive(serverId, inc, topic, seq)
                if verdict == DELIVER:
                    self.counters["replayed"] += 1
                    self._deliver(Notification(topic, data, serverId, inc, seq, replayed=True))

        retrying = object()

        def failed(f):
            if tries > 1 and self.running and f.check(*_RETRYABLE):
                delay = GAP_GRACE * 2 ** (REPLAY_TRIES - tries)
                timer = self.reactor.callLater(
                    delay, self._replay, serverId, inc, topic, first, last, tries - 1
                )
                self._replayTimers.add(timer)
                return retrying
            log.warn("replay from {server} failed: {error}", server=serverId, error=f.value)

        def lost(result):
            if result is retrying:
                return
            missing = self.tracker.stillMissing(serverId, inc, topic, first, last)
            if missing:
                self.counters["lost"] += len(missing)
                self._reportLost(serverId, inc, topic, _ranges(missing))

        d.addCallback(replayed)
        d.addErrback(failed)
        d.addBoth(lost)

    def _reportLost(self, serverId, inc, topic, ranges):
        for first, last in ranges:
            gap = Gap(serverId, inc, topic, first, last)
            if self._logBucket.take(self.reactor.seconds()) == 0.0:
                log.warn("notifications lost: {gap}", gap=gap)
            for prefix, receivers in list(self._receivers.items()):
                if topic.startswith(prefix):
                    for receiver in list(receivers):
                        try:
                            receiver.notificationsLost(gap)
                        except Exception:
                            log.failure("notification receiver failed")


def _replayItems(payload, first, last):
    """
    @return: the C{(seq, payload)} items of a replay answer (PROTOCOL.md
        14.4), or C{None} if it is not one: every seq an int within
        C{first..last}, in order, every payload bytes.
    """
    try:
        answer = msgpack.unpackb(payload, raw=False)
    except Exception:
        return None
    items = answer.get("items", []) if isinstance(answer, dict) else None
    if not isinstance(items, list):
        return None
    checked = []
    previous = first - 1
    for item in items:
        if not (isinstance(item, list) and len(item) == 2):
            return None
        seq, data = item
        if seq.__class__ is not int or not previous < seq <= last or data.__class__ is not bytes:
            return None
        checked.append((seq, data))
        previous = seq
    return checked


def _ignoreCancel(failure):
    failure.trap(CancelledError)


def _ranges(seqs):
    """
    @param seqs: sorted sequence numbers.
    @return: the (first, last) runs of consecutive numbers in C{seqs}.
    """
    start = prev = seqs[0]
    ranges = []
    for seq in seqs[1:]:
        if seq != prev + 1:
            ranges.append((start, prev))
            start = seq
        prev = seq
    ranges.append((start, prev))
    return ranges
