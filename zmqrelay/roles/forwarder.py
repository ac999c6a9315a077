"""
Forwarding requests one hop: L{Forwarder} gives each forwarded message an
id local to this hop, sends answers back to where the request came from,
and fails the requests of a lost peer at once.

It also keeps a flood from one client out of everyone else's way: at most a
window of requests is outstanding toward each next hop, and what arrives
beyond it waits in a L{FairQueue}, taken round-robin over client ids as
answers free the window.  Downstream queues (the next hop's socket, its
handler) then never hold more than the window, so a well-behaved client's
request waits behind at most that, plus one request of each other busy
client, however much one client sends.
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zmqrelay.core import protocol
from zmqrelay.core.fairqueue import FairQueue
from zmqrelay.core.routing import AWAY, InFlight
from zmqrelay.roles.hop import MAX_TTL_MS, noRoute, requestId, requestTtl, sendError

log = Logger()

#: How long before its time to live ends a request held for a route is
#: answered (seconds, at most a tenth of the ttl).
HOLD_MARGIN = 0.1


class Forwarder:
    """
    Forwards requests (and directed messages) one hop, and their answers back.

    Each forwarded message gets a fresh id local to this hop; the answer is
    matched by that id and must come from the peer the request went to.

    @ivar counters: C{forwarded}, C{answered}, C{late} (answers for nothing
        we know: timed out or duplicated), C{lost} (failed because a peer
        went), C{expired}, C{queued} (requests that waited for room in a
        window), C{queue-expired} (their deadline passed while they waited).
    @ivar window: requests outstanding toward one next hop at most (0 for
        no window).
    """

    def __init__(self, reactor, config):
        self.reactor = reactor
        self.config = config
        self.window = getattr(config, "forwardWindow", 0)
        self.inflight = InFlight()
        self.counters = {
            "forwarded": 0, "answered": 0, "late": 0, "lost": 0, "expired": 0,
            "queued": 0, "queue-expired": 0, "parked": 0,
        }
        self._sweeper = None
        # Requests counted against a window: forward id -> next hop.
        self._windowed = {}
        # Next hop -> requests outstanding toward it / a FairQueue of waiting ones.
        self._outstanding = {}
        self._waiting = {}
        # Origin -> how many of its requests wait (they count as in flight).
        self._waitingFrom = {}
        # Requests held for a route: (origin, message, routes, path,
        # deadline, hold until); and the route tables we listen to.
        self._parked = []
        self._parkTimer = None
        self._watched = set()

    def start(self):
        """
        Start forgetting expired requests periodically.
        """
        self._sweeper = LoopingCall(self.expire)
        self._sweeper.clock = self.reactor
        self._sweeper.start(max(self.config.heartbeat, 0.1), now=False)

    def stop(self):
        """
        Stop, failing nothing: the node is going away with its peers.
        """
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        self.inflight.clear()
        self._windowed.clear()
        self._outstanding.clear()
        self._waiting.clear()
        self._waitingFrom.clear()
        self._parked = []
        self._armParkTimer()

    def forward(self, origin, message, target, stamps=None, rid=None, now=None):
        """
        Forward a REQ or MSG from C{origin} to C{target}.

        @param stamps: header fields to set (who asked, by which path), which
            overwrite whatever the origin claimed.
        @param rid: the message's C{id}, if the caller read it already.
        @param now: the reactor's time, if the caller read it already.
        """
        header = message.header
        if rid is None:
            rid = requestId(header)
        ttl = header.get("ttl")
        if ttl.__class__ is not int:
            ttl = protocol.field(header, "ttl", int, int(self.config.requestTimeout * 1000))
        if ttl > MAX_TTL_MS:
            ttl = MAX_TTL_MS
        if ttl <= 0:
            sendError(origin, rid, protocol.E_TIMEOUT, "deadline passed before forwarding")
            return
        if len(message.payload) > target.maxSize - protocol.HEADROOM:
            sendError(
                origin, rid, protocol.E_TOO_LARGE,
                f"{len(message.payload)} bytes is more than {target.nodeId} accepts "
                f"({target.maxSize - protocol.HEADROOM})",
            )
            return
        if origin.role == protocol.CLIENT and (
            self.inflight.countFrom(origin) + self._waitingFrom.get(origin, 0)
            >= self.config.maxInFlight
        ):
            sendError(
                origin, rid, protocol.E_OVER_LIMIT,
                f"more than {self.config.maxInFlight} requests in flight", 0.05,
            )
            # Sending into that refusal again and again is abuse, as over
            # the rate is.
            strike = getattr(origin, "strike", None)
            if strike is not None:
                strike()
            return
        if now is None:
            now = self.reactor.seconds()
        deadline = now + ttl / 1000.0
        windowed = self.window > 0 and message.type == protocol.REQUEST
        if windowed and (
            self._outstanding.get(target, 0) >= self.window or target in self._waiting
        ):
            # No room toward that hop: wait, in turn with the other clients.
            key = (stamps or {}).get("client") or header.get("client") or origin.nodeId
            queue = self._waiting.get(target)
            if queue is None:
                queue = self._waiting[target] = FairQueue()
            queue.push(key, (origin, message, stamps, rid, ttl, deadline))
            self._waitingFrom[origin] = self._waitingFrom.get(origin, 0) + 1
            self.counters["queued"] += 1
            return
        self._send(origin, message, target, stamps, rid, ttl, deadline, windowed)

    def _send(self, origin, message, target, stamps, rid, ttl, deadline, windowed):
        pending = self.inflight.add(origin, rid, target, deadline)
        if pending is None:
            sendError(origin, rid, protocol.E_OVER_LIMIT, "relay in-flight table full", 0.1)
            return
        forwardId = pending.forwardId
        forwarded = message.header.copy()
        if stamps:
            forwarded.update(stamps)
        forwarded["id"] = forwardId
        forwarded["ttl"] = ttl
        if windowed:
            self._windowed[forwardId] = target
            outstanding = self._outstanding
            outstanding[target] = outstanding.get(target, 0) + 1
        if not target.send(message.type, forwarded, message.payload):
            self.inflight.pop(forwardId)
            self._release(forwardId, pump=False)
            if getattr(target, "gone", False):
                # Its connection is gone; it is dropped on the next tick.
                sendError(origin, rid, protocol.E_NO_ROUTE, f"{target.role} {target.nodeId} is gone")
            else:
                sendError(
                    origin, rid, protocol.E_OVER_LIMIT,
                    f"queue to {target.nodeId} is full", 0.1,
                )
            return
        self.counters["forwarded"] += 1

    def undelivered(self, target, msgtype, header):
        """
        What we forwarded to C{target} was accepted for sending, then could
        not be queued (it went in a BATCH at the end of the reactor turn):
        answer its origin as a refused send is answered.
        """
        if msgtype != protocol.REQUEST and msgtype != protocol.MESSAGE:
            return
        forwardId = header.get("id")
        pending = self.inflight.pop(forwardId, target) if forwardId.__class__ is int else None
        if pending is None:
            return
        self._release(forwardId, pump=False)
        if getattr(target, "gone", False):
            sendError(pending.origin, pending.originId, protocol.E_NO_ROUTE,
                      f"{target.role} {target.nodeId} is gone")
        else:
            sendError(pending.origin, pending.originId, protocol.E_OVER_LIMIT,
                      f"queue to {target.nodeId} is full", 0.1)

    def clientRequest(self, session, message, routes, path):
        """
        Forward a client's REQ to the server (or service) it names, stamping
        who asked and by which path.

        @param routes: the L{zmqrelay.core.routing.RouteTable} to resolve in.
        @param path: C{'cloud'}, C{'proxy'} (or C{'direct'}).
        """
        header = message.header
        rid = requestId(header)
        target = header.get("to")
        if target.__class__ is not str:
            target = protocol.field(header, "to", str, required=True)
        now = self.reactor.seconds()
        if "server" in header or "sinc" in header:
            prefer = protocol.field(header, "server", str)
            preferInc = protocol.field(header, "sinc", str)
        else:
            prefer = preferInc = None
        route = routes.choose(
            target, (session.nodeId, session.incarnation, rid), now,
            now + requestTtl(header, self.config), prefer, preferInc,
        )
        if route is None or route is AWAY:
            known = route is AWAY or routes.isKnown(target)
            if known and header.get("hold", True) is not False and self._park(
                session, message, routes, path
            ):
                # Known, but no instance reachable now: held until a route
                # appears (an event, not the client asking again) or its
                # time to live ends.
                return
            noRoute(session, rid, target, path, known)
            return
        self.forward(
            session,
            message,
            route.peer,
            {
                "client": session.nodeId,
                "cinc": session.incarnation,
                "creq": rid,
                "path": path,
                "server": route.serverId,
            },
            rid,
            now,
        )

    #: Requests held for a route at once, at most.
    parkLimit = 10000

    def _park(self, session, message, routes, path):
        """
        Hold a client's request for a target that exists but has no
        reachable instance, until a route is added to C{routes}.

        @return: C{False} if it cannot be held (too many held already, or
            its origin has too many in flight): answer it now.
        """
        if len(self._parked) >= self.parkLimit:
            return False
        if (self.inflight.countFrom(session) + self._waitingFrom.get(session, 0)
                >= self.config.maxInFlight):
            return False
        ttl = requestTtl(message.header, self.config)
        # Answered a little before its time to live ends, so that the client
        # hears "no route, known" (Unavailable) rather than its own timeout.
        now = self.reactor.seconds()
        deadline = now + ttl
        holdUntil = deadline - min(HOLD_MARGIN, ttl / 10.0)
        if id(routes) not in self._watched:
            self._watched.add(id(routes))
            routes.whenAdded(lambda: self._unpark(routes))
        self._parked.append((session, message, routes, path, deadline, holdUntil))
        self._armParkTimer()
        self._waitingFrom[session] = self._waitingFrom.get(session, 0) + 1
        self.counters["parked"] += 1
        return True

    def _unpark(self, routes):
        """
        A route was added: try again every request held for C{routes}.
        """
        held = [item for item in self._parked if item[2] is routes]
        if not held:
            return
        self._parked = [item for item in self._parked if item[2] is not routes]
        self._armParkTimer()
        now = self.reactor.seconds()
        for session, message, routes, path, deadline, _ in held:
            self._unwait((session,))
            if not getattr(session, "alive", True):
                continue
            if deadline <= now:
                self.counters["queue-expired"] += 1
                continue
            header = dict(message.header)
            header["ttl"] = max(1, int((deadline - now) * 1000))
            self.clientRequest(
                session, protocol.Message(message.version, message.type, header, message.payload),
                routes, path,
            )

    def _expireParked(self, now):
        """
        Answer the held requests whose time to live ended: still no route.
        """
        kept = []
        for item in self._parked:
            session, message, routes, path, deadline, holdUntil = item
            if holdUntil > now:
                kept.append(item)
                continue
            self._unwait((session,))
            if getattr(session, "alive", True):
                target = message.header.get("to")
                noRoute(session, message.header.get("id"), target, path, True)
        self._parked = kept

    def _armParkTimer(self):
        """
        Wake up when the earliest held request is due (the periodic sweep is
        too coarse: its answer must reach the client within its deadline).
        """
        if self._parkTimer is not None and self._parkTimer.active():
            self._parkTimer.cancel()
        self._parkTimer = None
        if not self._parked:
            return
        due = min(item[5] for item in self._parked)
        delay = max(0.0, due - self.reactor.seconds())
        self._parkTimer = self.reactor.callLater(delay, self._parkTimerFired)

    def _parkTimerFired(self):
        self._parkTimer = None
        self._expireParked(self.reactor.seconds())
        self._armParkTimer()

    def parked(self):
        """
        @return: how many requests are held for a route.
        """
        return len(self._parked)

    def answer(self, peer, message):
        """
        Send a REP or ERR that C{peer} sent back to whoever asked.
        """
        header = message.header
        rid = header.get("id")
        if rid.__class__ is not int:
            rid = requestId(header)
        pending = self.inflight.pop(rid, peer)
        if pending is None:
            self.counters["late"] += 1
            return
        self.counters["answered"] += 1
        if self._windowed:
            self._release(pending.forwardId)
        origin = pending.origin
        payload = message.payload
        if len(payload) > origin.maxSize - protocol.HEADROOM:
            sendError(
                origin, pending.originId, protocol.E_TOO_LARGE,
                f"the answer of {len(payload)} bytes is more than you accept",
            )
            return
        header = header.copy()
        header["id"] = pending.originId
        origin.send(message.type, header, payload)

    def peerGone(self, peer, reason):
        """
        C{peer} is gone: fail at once what we sent it, forget what it sent us.
        """
        forgotten = []
        lost = self.inflight.dropPeer(peer, forgotten)
        queue = self._waiting.pop(peer, None)
        for pending in lost:
            self.counters["lost"] += 1
            self._release(pending.forwardId, pump=False)
            sendError(
                pending.origin, pending.originId, protocol.E_TARGET_LOST,
                f"{peer.role} {peer.nodeId} lost: {reason}",
            )
        self._outstanding.pop(peer, None)
        while queue:
            # Never sent: the origin may try another route.
            origin, _, _, rid, _, _ = item = queue.pop()
            self._unwait(item)
            if origin is not peer:
                sendError(origin, rid, protocol.E_NO_ROUTE, f"{peer.role} {peer.nodeId} is gone")
        if self._parked:
            kept = []
            for item in self._parked:
                if item[0] is peer:
                    self._unwait(item)
                else:
                    kept.append(item)
            self._parked = kept
        if peer in self._waitingFrom and getattr(peer, "role", None) == protocol.CLIENT:
            # A client's requests wait under its own id (see forward): look
            # there first, not through everyone's (a flood leaves thousands).
            self._forgetWaiting(peer, peer.nodeId)
        if peer in self._waitingFrom:
            # Not a client, or some waited under another key: look everywhere.
            self._forgetWaiting(peer)
        # Only now free the room its forwarded requests held: what is sent
        # next is the others' (its own waiting ones are gone above).
        for pending in forgotten:
            self._release(pending.forwardId)

    def _forgetWaiting(self, peer, key=None):
        """
        Take C{peer}'s requests out of the queues toward every next hop:
        those of C{key} only, or all.
        """
        mine = lambda item: item[0] is peer  # noqa: E731
        for target, waiting in list(self._waiting.items()):
            taken = waiting.remove(mine) if key is None else waiting.removeFrom(key, mine)
            for item in taken:
                self._unwait(item)
            if not waiting:
                del self._waiting[target]

    def expire(self):
        """
        Forget requests whose deadline passed; their origin has timed out.
        """
        now = self.reactor.seconds()
        expired = self.inflight.expire(now)
        self.counters["expired"] += len(expired)
        self._expireParked(now)
        for target, queue in list(self._waiting.items()):
            for item in queue.remove(lambda item: item[5] <= now):
                self._unwait(item)
                self.counters["queue-expired"] += 1
            if not queue:
                del self._waiting[target]
        for pending in expired:
            self._release(pending.forwardId)

    def waiting(self, target=None):
        """
        @return: how many requests wait for room toward C{target} (or
            toward any next hop).
        """
        if target is not None:
            queue = self._waiting.get(target)
            return len(queue) if queue is not None else 0
        return sum(len(q) for q in self._waiting.values())

    def _unwait(self, item):
        origin = item[0]
        count = self._waitingFrom.get(origin, 0) - 1
        if count > 0:
            self._waitingFrom[origin] = count
        else:
            self._waitingFrom.pop(origin, None)

    def _release(self, forwardId, pump=True):
        """
        A windowed request is no longer outstanding: make room, and send
        what waits for it.
        """
        target = self._windowed.pop(forwardId, None)
        if target is None:
            return
        count = self._outstanding.get(target, 0) - 1
        if count > 0:
            self._outstanding[target] = count
        else:
            self._outstanding.pop(target, None)
        if pump:
            self._pump(target)

    def _pump(self, target):
        queue = self._waiting.get(target)
        if queue is None:
            return
        now = self.reactor.seconds()
        while queue and self._outstanding.get(target, 0) < self.window:
            item = queue.pop()
            self._unwait(item)
            origin, message, stamps, rid, ttl, deadline = item
            if deadline <= now:
                self.counters["queue-expired"] += 1
                continue
            # What it waited comes off its time to live.
            self._send(
                origin, message, target, stamps, rid,
                max(1, int((deadline - now) * 1000)), deadline, True,
            )
        if not queue:
            self._waiting.pop(target, None)
