"""
Forwarding requests one hop: L{Forwarder} gives each forwarded message an
id local to this hop, sends answers back to where the request came from,
and fails the requests of a lost peer at once.
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zmqrelay.core import protocol
from zmqrelay.roles.hop import MAX_TTL_MS, requestId, sendError
from zmqrelay.core.routing import InFlight

log = Logger()


class Forwarder:
    """
    Forwards requests (and directed messages) one hop, and their answers back.

    Each forwarded message gets a fresh id local to this hop; the answer is
    matched by that id and must come from the peer the request went to.

    @ivar counters: C{forwarded}, C{answered}, C{late} (answers for nothing
        we know: timed out or duplicated), C{lost} (failed because a peer
        went), C{expired}.
    """

    def __init__(self, reactor, config):
        self.reactor = reactor
        self.config = config
        self.inflight = InFlight()
        self.counters = {"forwarded": 0, "answered": 0, "late": 0, "lost": 0, "expired": 0}
        self._sweeper = None

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

    def forward(self, origin, message, target, stamps=None):
        """
        Forward a REQ or MSG from C{origin} to C{target}.

        @param stamps: header fields to set (who asked, by which path), which
            overwrite whatever the origin claimed.
        """
        header = message.header
        rid = requestId(header)
        ttl = min(
            protocol.field(header, "ttl", int, int(self.config.requestTimeout * 1000)), MAX_TTL_MS
        )
        if ttl <= 0:
            sendError(origin, rid, protocol.E_TIMEOUT, "deadline passed before forwarding")
            return
        if not protocol.fits(target, message.payload):
            sendError(
                origin, rid, protocol.E_TOO_LARGE,
                f"{len(message.payload)} bytes is more than {target.nodeId} accepts "
                f"({target.maxSize - protocol.HEADROOM})",
            )
            return
        if origin.role == protocol.CLIENT and self.inflight.countFrom(origin) >= self.config.maxInFlight:
            sendError(
                origin, rid, protocol.E_OVER_LIMIT,
                f"more than {self.config.maxInFlight} requests in flight", 0.05,
            )
            return
        now = self.reactor.seconds()
        pending = self.inflight.add(origin, rid, target, now + ttl / 1000.0)
        if pending is None:
            sendError(origin, rid, protocol.E_OVER_LIMIT, "relay in-flight table full", 0.1)
            return
        forwarded = dict(header)
        if stamps:
            forwarded.update(stamps)
        forwarded["id"] = pending.forwardId
        forwarded["ttl"] = ttl
        if not target.send(message.type, forwarded, message.payload):
            self.inflight.pop(pending.forwardId)
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

    def clientRequest(self, session, message, routes, path):
        """
        Forward a client's REQ to the server (or service) it names, stamping
        who asked and by which path.

        @param routes: the L{zmqrelay.core.routing.RouteTable} to resolve in.
        @param path: C{'cloud'}, C{'proxy'} (or C{'direct'}).
        """
        header = message.header
        rid = requestId(header)
        target = protocol.field(header, "to", str, required=True)
        route = routes.resolve(target)
        if route is None:
            sendError(session, rid, protocol.E_NO_ROUTE, f"no server or service {target!r} via {path}")
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
        )

    def answer(self, peer, message):
        """
        Send a REP or ERR that C{peer} sent back to whoever asked.
        """
        pending = self.inflight.pop(requestId(message.header), peer)
        if pending is None:
            self.counters["late"] += 1
            return
        self.counters["answered"] += 1
        origin = pending.origin
        if not protocol.fits(origin, message.payload):
            sendError(
                origin, pending.originId, protocol.E_TOO_LARGE,
                f"the answer of {len(message.payload)} bytes is more than you accept",
            )
            return
        header = dict(message.header)
        header["id"] = pending.originId
        origin.send(message.type, header, message.payload)

    def peerGone(self, peer, reason):
        """
        C{peer} is gone: fail at once what we sent it, forget what it sent us.
        """
        for pending in self.inflight.dropPeer(peer):
            self.counters["lost"] += 1
            sendError(
                pending.origin, pending.originId, protocol.E_TARGET_LOST,
                f"{peer.role} {peer.nodeId} lost: {reason}",
            )

    def expire(self):
        """
        Forget requests whose deadline passed; their origin has timed out.
        """
        expired = self.inflight.expire(self.reactor.seconds())
        self.counters["expired"] += len(expired)
