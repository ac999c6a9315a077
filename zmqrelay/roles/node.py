"""
The service every role is, and the skeleton the cloud and a proxy share.

  - L{Node}: a C{MultiService} that owns the ZeroMQ context of one node, its
    counters, its readiness line and the C{sys} requests every node answers;
  - L{RelayNode}: the cloud's and a proxy's L{Node}: a L{Front} below, a
    L{Forwarder}, a L{NotificationRelay}, a merged presence view, and
    periodic replication marks.
"""

import msgpack
from twisted.application.service import MultiService
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zmqrelay.core import protocol
from zmqrelay.edge import security
from zmqrelay.roles import metrics
from zmqrelay.roles.drain import Drain
from zmqrelay.roles.forwarder import Forwarder
from zmqrelay.roles.hop import requestId, sendError
from zmqrelay.edge.front import Front
from zmqrelay.roles.notifyrelay import NotificationRelay
from zmqrelay.core.presence import PresenceView

log = Logger()


class PresenceViewMixin:
    """
    L{zmqrelay.interfaces.IPresenceView} for a role that keeps its merged
    presence in C{self.presence} (a L{zmqrelay.core.presence.PresenceView}).
    """

    def connectedClients(self):
        return self.presence.connectedClients()

    def isConnected(self, clientId):
        return self.presence.isConnected(clientId)

    def addObserver(self, observer):
        self.presence.addObserver(observer)

    def removeObserver(self, observer):
        self.presence.removeObserver(observer)


class Node(MultiService):
    """
    The parts every role shares.

    Subclasses set C{role} and implement C{_start} and C{_stop}.

    @ivar config: the L{zmqrelay.core.config.NodeConfig}.
    @ivar reactor: the injected reactor.
    @ivar counters: L{dict} of counter name to L{int}.
    @ivar zap: the L{zmqrelay.edge.security.ZapHandler} while CURVE secures what
        this node binds, else C{None}.
    @ivar timings: name to L{zmqrelay.roles.metrics.Timing}: the handler
        time of a server, the request round trips of a client.
    """

    role = None

    def __init__(self, config, reactor=None, socketFactory=None):
        MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.nodeId = config.nodeId
        self.incarnation = config.incarnation
        self._socketFactory = socketFactory
        self._ownsFactory = socketFactory is None
        self._endpoints = {}
        self._marker = None
        self.counters = {}
        self.zap = None
        self._trimmer = None
        self.timings = {}
        if self.role == protocol.SERVER:
            self.timings["handler"] = metrics.Timing()
        elif self.role == protocol.CLIENT:
            self.timings["roundtrip"] = metrics.Timing()

    @property
    def socketFactory(self):
        """
        The node's L{zmqrelay.edge._zmq.SocketFactory}, made on first use.
        """
        if self._socketFactory is None:
            from zmqrelay.edge._zmq import SocketFactory

            self._socketFactory = SocketFactory(
                self.reactor, self.config.socketOptions(), self.config.zmqIoThreads()
            )
        return self._socketFactory

    def endpoints(self):
        return dict(self._endpoints)

    def stats(self):
        result = dict(self.counters)
        for name, part in self._countedParts():
            for key, value in part.counters.items():
                result[f"{name}.{key}"] = value
        if self.zap is not None:
            for key, value in self.zap.counters.items():
                result[f"zap.{key}"] = value
        sources = [getattr(self, name, None) for name in ("presenceSource", "routesSource", "localSource")]
        # SYNCs left unanswered, as a snapshot of that map went to that peer
        # a moment before (zmqrelay.core.replica.answerSync).
        result["sync.throttled"] = sum(s.throttled for s in sources if s is not None)
        # Snapshots larger than their holder takes in one message: sent in
        # parts, or not sent (replica.sendSnapshot says when).
        result["snapshots.split"] = sum(s.split for s in sources if s is not None)
        result["snapshots.unsent"] = sum(s.unsent for s in sources if s is not None)
        calls = getattr(self, "calls", None)
        if calls is not None:
            # Answers that matched no call waiting (late, or an ERR that
            # concerns the session): seen, not lost.
            result["calls.late"] = calls.late
        result.update(metrics.figures(self))
        return result

    def _countedParts(self):
        return []

    def startService(self):
        MultiService.startService(self)
        registry = security.authority(self.config)
        if registry is not None:
            # Before any CURVE socket binds: one with no handler refuses all.
            self.zap = security.ZapHandler(self.reactor, self.socketFactory, registry)
            self.zap.start()
        if self._ownsFactory:
            from zmqrelay.edge.resources import raiseFileLimit

            # A descriptor per connection: a cloud of 10,000 clients needs
            # more than the usual soft limit.
            raiseFileLimit()
        self._start()
        if self._ownsFactory:
            # A process of its own (not a test's fakes): give memory freed
            # after a flood back to the system.
            from zmqrelay.edge.memory import MemoryTrimmer

            self._trimmer = MemoryTrimmer(self.reactor)
            self._trimmer.start()
        log.info(
            "ready: role={role} id={node} inc={inc} {endpoints}",
            role=self.role,
            node=self.nodeId,
            inc=self.incarnation,
            endpoints=" ".join(f"{k}={v}" for k, v in sorted(self._endpoints.items())),
        )

    def stopService(self):
        """
        Drain (see L{_drain}), then stop.

        @return: a L{Deferred} firing when stopped; cancelling it while the
            node drains stops it at once, without waiting for the work in
            flight (what still runs is answered as at the drain timeout).
        """
        drained = self._drain()
        if drained is None:
            return self._stopNow()
        return drained.addCallback(lambda _: self._stopNow())

    def _drain(self):
        """
        Let the work in flight finish before stopping (--drain-timeout).

        @return: a L{Deferred} firing when it did or the time is up, or
            C{None} to stop at once.
        """
        return None

    def _stopNow(self):
        d = maybeDeferred(MultiService.stopService, self)
        if self._trimmer is not None:
            self._trimmer.stop()
            self._trimmer = None
        try:
            self._stop()
        finally:
            if self.zap is not None:
                self.zap.stop()
                self.zap = None
            if self._ownsFactory and self._socketFactory is not None:
                self._socketFactory.shutdown()
                self._socketFactory = None
        return d

    def _start(self):
        raise NotImplementedError()

    def _startMarks(self):
        """
        Once per liveness window, tell every holder of a map this node owns
        where it is (L{_mark}): a lost delta or snapshot cannot leave a copy
        stale for good.
        """
        self._marker = LoopingCall(self._mark)
        self._marker.clock = self.reactor
        self._marker.start(self.config.heartbeat * self.config.liveness, now=False)

    def _stopMarks(self):
        if self._marker is not None and self._marker.running:
            self._marker.stop()
        self._marker = None

    def _mark(self):
        raise NotImplementedError()

    def _stop(self):
        raise NotImplementedError()

    # sys requests: answered by the node they are addressed to.

    def isSysFor(self, header):
        """
        @return: C{True} if this REQ is a C{sys} request for this node.
        """
        # A nil sys is an absent one (PROTOCOL.md 4): an ordinary request.
        return header.get("sys") is not None and header.get("to") in (None, "", self.nodeId)

    def answerSys(self, peer, header, payload):
        """
        Answer a C{sys} request (C{ping}, C{stats}, C{presence}).
        """
        rid = requestId(header)
        op = header.get("sys")
        if not isinstance(op, str):
            sendError(peer, rid, protocol.E_BAD_MESSAGE, f"sys must be a str, not {type(op).__name__}")
            return
        answer = self.sysOperation(op, payload)
        if answer is None:
            sendError(peer, rid, protocol.E_BAD_MESSAGE, f"unknown sys operation {op!r}")
        elif not protocol.fits(peer, answer):
            # Sent, it would make the asker's socket drop its connection
            # (PROTOCOL.md 12: too-large for an answer over the asker's max).
            sendError(peer, rid, protocol.E_TOO_LARGE,
                      f"the {op} answer is {len(answer)} bytes, more than you take "
                      f"({peer.maxSize - protocol.HEADROOM}): raise your max")
        else:
            peer.send(protocol.REPLY, {"id": rid}, answer)

    def sysOperation(self, op, payload):
        """
        @return: the reply payload of a C{sys} operation, or C{None} if this
            node does not know it.
        """
        if op == "ping":
            return b"pong"
        if op == "stats":
            return msgpack.packb(self.stats(), use_bin_type=True)
        if op == "routes":
            return msgpack.packb(metrics.routesOf(self), use_bin_type=True)
        if op == "presence" and hasattr(self, "presence"):
            return msgpack.packb(
                {cid: p.asDict() for cid, p in self.presence.connectedClients().items()},
                use_bin_type=True,
            )
        return None


class RelayNode(PresenceViewMixin, Node):
    """
    What the cloud and a proxy share: a L{Front} for the nodes attached
    below, a L{Forwarder}, a L{NotificationRelay}, a merged presence view,
    and periodic replication marks.

    Subclasses set C{role}, and implement C{_mark} (send the marks of the
    maps they own), C{_startMore} and C{_stopMore} (their upstream link, if
    any) and the L{Front} callbacks.
    """

    def __init__(self, config, listen, pub, sub, reactor=None, socketFactory=None):
        Node.__init__(self, config, reactor, socketFactory)
        self.listenAddress = listen
        self.pubAddress = pub
        self.subAddress = sub
        self.presence = PresenceView()
        self.forwarder = Forwarder(self.reactor, config)
        self.front = None
        self.relay = None
        self.draining = False

    def _countedParts(self):
        return [("front", self.front), ("forward", self.forwarder), ("notify", self.relay)]

    def _start(self):
        config = self.config
        self.front = Front(self, config, self.reactor, self.socketFactory, self.listenAddress)
        self.relay = NotificationRelay(
            self.socketFactory, self.subAddress, self.pubAddress, config.maxMessageSize, config,
            reactor=self.reactor,
        )
        sub, pub = self.relay.start()
        self._endpoints.update(control=self.front.start(), pub=pub, sub=sub)
        self.forwarder.start()
        self._startMore()
        self._startMarks()

    def _stop(self):
        self._stopMarks()
        self._stopMore()
        self.forwarder.stop()
        if self.front is not None:
            self.front.stop()
        if self.relay is not None:
            self.relay.stop()

    def _drain(self):
        """
        Stopping: tell the nodes below that we are draining (HB with drain,
        PROTOCOL.md 7.1), refuse new client requests with ERR shutdown (they
        take another path), and let what is in flight be answered, within
        C{drainTimeout}; then L{_stop} says BYE.
        """
        forwarder = self.forwarder
        if self.config.drainTimeout <= 0 or self.front is None:
            return None
        if not len(forwarder.inflight) and not forwarder.waiting():
            return None
        self.draining = True
        for peer in self.front.peers():
            peer.send(protocol.HEARTBEAT, {"drain": True})
        return Drain(
            self.reactor, self.config.drainTimeout,
            lambda: bool(len(forwarder.inflight) or forwarder.waiting()),
        ).start()

    def undelivered(self, peer, msgtype, header):
        """
        A message we sent C{peer} in a BATCH could not be queued (its queue
        was full or its connection gone): fail what we forwarded in it.
        """
        self.forwarder.undelivered(peer, msgtype, header)

    def refuseWhileDraining(self, session, header):
        """
        @return: C{True} if this node is draining and answered a client's new
            request with ERR shutdown (PROTOCOL.md 12).
        """
        if not self.draining:
            return False
        sendError(session, requestId(header), protocol.E_SHUTDOWN, "draining: use another path")
        return True

    def _startMore(self):
        pass

    def _stopMore(self):
        pass

    def welcomeExtras(self, session):
        return {"pub": self._endpoints["pub"], "sub": self._endpoints["sub"]}
