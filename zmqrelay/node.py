"""
What every role is built from: the node service, request forwarding, and the
notification relay.

  - L{Node}: a C{MultiService} that owns the ZeroMQ context of one node, its
    counters, its readiness line and the C{sys} requests every node answers;
  - L{RelayNode}: the skeleton the cloud and a proxy share;
  - L{Forwarder}: forwards requests hop by hop with local ids, sends answers
    back, and fails the requests of a lost peer at once;
  - L{NotificationRelay}: an XSUB/XPUB pair that forwards notifications down
    and subscriptions up, frames untouched.
"""

from collections import OrderedDict

import msgpack
import zmq
from twisted.application.service import MultiService
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zmqrelay import protocol, security
from zmqrelay.front import Front
from zmqrelay.presence import PresenceView
from zmqrelay.routing import InFlight

log = Logger()


def advertised(bound, dialled):
    """
    The endpoint a peer should use for one of our bound endpoints.

    A TCP endpoint keeps its port but takes the host the peer dialled to
    reach us: behind NAT, or bound to C{0.0.0.0}, our own idea of our address
    is useless to it.

    @param bound: the endpoint as we advertise it (C{tcp://0.0.0.0:5556}).
    @param dialled: the endpoint the peer connected to (C{tcp://relay:5555}).
    @return: the endpoint the peer should connect to.
    """
    if not bound.startswith("tcp://") or not dialled.startswith("tcp://"):
        return bound
    host = dialled[len("tcp://"):].rsplit(":", 1)[0]
    port = bound.rsplit(":", 1)[1]
    return f"tcp://{host}:{port}"


def sendError(peer, rid, code, text, retryAfter=None):
    """
    Send ERR for request C{rid} to C{peer}.
    """
    header = {"id": rid, "code": code, "msg": text}
    if retryAfter is not None:
        header["retry"] = round(retryAfter, 3)
    return peer.send(protocol.ERROR, header)


def requestId(header):
    """
    @return: the C{id} field of a REQ/REP/ERR/MSG header.
    @raise ProtocolError: if it is missing or not an integer.
    """
    return protocol.field(header, "id", int, required=True)


#: The longest deadline a node accepts (ms): a client cannot pin relay state
#: or in-flight slots for longer than this with one request.
MAX_TTL_MS = 600000


class PresenceViewMixin:
    """
    L{zmqrelay.interfaces.IPresenceView} for a role that keeps its merged
    presence in C{self.presence} (a L{zmqrelay.presence.PresenceView}).
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

    @ivar config: the L{zmqrelay.config.NodeConfig}.
    @ivar reactor: the injected reactor.
    @ivar counters: L{dict} of counter name to L{int}.
    @ivar zap: the L{zmqrelay.security.ZapHandler} while CURVE secures what
        this node binds, else C{None}.
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

    @property
    def socketFactory(self):
        """
        The node's L{zmqrelay._zmq.SocketFactory}, made on first use.
        """
        if self._socketFactory is None:
            from zmqrelay._zmq import SocketFactory

            self._socketFactory = SocketFactory(self.reactor, self.config.socketOptions())
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
        self._start()
        if self._ownsFactory:
            # A process of its own (not a test's fakes): give memory freed
            # after a flood back to the system.
            from zmqrelay.memory import MemoryTrimmer

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
        return "sys" in header and header.get("to") in (None, "", self.nodeId)

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

    def _countedParts(self):
        return [("front", self.front), ("forward", self.forwarder), ("notify", self.relay)]

    def _start(self):
        config = self.config
        self.front = Front(self, config, self.reactor, self.socketFactory, self.listenAddress)
        self.relay = NotificationRelay(
            self.socketFactory, self.subAddress, self.pubAddress, config.maxMessageSize, config
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

    def _startMore(self):
        pass

    def _stopMore(self):
        pass

    def welcomeExtras(self, session):
        return {"pub": self._endpoints["pub"], "sub": self._endpoints["sub"]}


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

        @param routes: the L{zmqrelay.routing.RouteTable} to resolve in.
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


#: The most distinct topic prefixes one relay forwards upstream at once, for
#: a relay made without a config (C{--max-subscriptions}), and the longest
#: prefix it forwards.
MAX_SUBSCRIPTIONS = 100000
MAX_PREFIX = 1024

#: Notifications a relay queues for one subscriber before it drops for it,
#: for a relay made without a config (C{--sub-hwm}).
SUBSCRIBER_HWM = 1000

#: The kernel send buffer of each subscriber's connection (C{SO_SNDBUF};
#: Linux reserves twice this).  Without it the kernel grows the buffer of a
#: connection that never drains up to its own maximum (C{tcp_wmem}, MiBs).
SUBSCRIBER_SNDBUF = 256 * 1024


class NotificationRelay:
    """
    Forwards notifications from a bound XSUB to an XPUB, and subscriptions
    back, frames untouched.

    Anyone who can reach the XSUB can publish into it, so what publishers
    send is checked (never changed): only what a subscriber can read goes
    on.  Bad input is counted (C{malformed}, C{too-large}) and logged on the
    1st, 2nd, 4th, 8th... time, a bounded rate with no clock.

    Every prefix forwarded is stored by every relay up to the servers, so
    at most C{maxSubscriptions} distinct prefixes of at most L{MAX_PREFIX}
    bytes go upstream at once.  The XPUB reports a prefix only when its
    first subscriber comes and when its last one goes, so a prefix refused
    for want of room would starve all its subscribers for good: it waits
    instead (at most C{maxSubscriptions} of them, oldest first) and goes
    upstream as soon as a forwarded prefix ends.  One that ends while it
    waits is forgotten; one that finds the waiting list full is forgotten
    and counted (C{forgotten-subscriptions}): its subscribers get nothing
    until all of them have left and one subscribes again.

    Each subscriber gets at most C{subHwm} queued notifications (the XPUB's
    send high-water mark) and a kernel send buffer of L{SUBSCRIBER_SNDBUF},
    so one that does not read makes the relay hold at most about
    C{(subHwm + 1) x largest notification + 2 x SUBSCRIBER_SNDBUF} for it;
    beyond that it misses notifications (its sequence numbers show the gap)
    while everyone else gets them.  The XPUB runs with C{XPUB_NODROP}, so a
    send that would drop for someone fails instead; it is sent again
    without C{XPUB_NODROP} and counted (C{slow-dropped}).  ZeroMQ then
    skips that subscriber, silently, until it has read half its queue, so
    C{slow-dropped} counts how often a subscriber fell behind (each time
    losing that notification and, unseen, those after it until it catches
    up), not every notification it lost: as NATS counts slow consumers.
    The upstream relay a proxy publishes to is no subscriber: that
    connection keeps the node's own high-water mark and kernel buffer.

    @ivar counters: C{notifications}, C{subscriptions} (subscriptions and
        their ends sent upstream), C{dropped} (queue full even when
        dropping for slow subscribers), C{slow-dropped} (see above),
        C{malformed}, C{too-large}, C{refused-subscriptions} (subscriber
        messages not forwarded when they came: a prefix too long, or with
        the table full, or already forwarded or waiting; the end of a
        subscription never forwarded), C{late-subscriptions} (forwarded
        after waiting), C{forgotten-subscriptions} (refused and not kept:
        the waiting list was full).
    @ivar maxSubscriptions: prefixes forwarded at once, and prefixes kept
        waiting.
    @ivar subscriberHwm: notifications queued per subscriber.
    """

    def __init__(self, socketFactory, subAddress, pubAddress, maxMessageSize=None, config=None):
        self.socketFactory = socketFactory
        self.subAddress = subAddress
        self.pubAddress = pubAddress
        self.maxMessageSize = maxMessageSize
        self.config = config
        if config is None:
            self.maxSubscriptions = MAX_SUBSCRIPTIONS
            self.subscriberHwm = SUBSCRIBER_HWM
        else:
            self.maxSubscriptions = config.maxSubscriptions
            self.subscriberHwm = config.subHwm
        self.counters = {
            "notifications": 0, "subscriptions": 0, "dropped": 0, "slow-dropped": 0,
            "malformed": 0, "too-large": 0, "refused-subscriptions": 0,
            "late-subscriptions": 0, "forgotten-subscriptions": 0,
        }
        self._topics = set()
        # Refused prefixes in the order they came, to forward when room frees up.
        self._waiting = OrderedDict()
        self.xsub = None
        self.xpub = None
        self._upstream = None
        self._upstreamHwm = None

    def start(self):
        """
        Bind both sockets.

        @return: (sub endpoint, pub endpoint) as bound.
        """
        self.xpub = self.socketFactory.socket(
            "xpub", self._fromSubscribers, security.boundOptions(self.config, security.SUBSCRIBE)
        )
        # Options are copied into each connection when it is made: these
        # bound every subscriber that connects to what we bind.
        raw = self.xpub.socket
        self._upstreamHwm = raw.getsockopt(zmq.SNDHWM)
        raw.setsockopt(zmq.SNDHWM, self.subscriberHwm)
        raw.setsockopt(zmq.SNDBUF, SUBSCRIBER_SNDBUF)
        raw.setsockopt(zmq.XPUB_NODROP, 1)
        self.xsub = self.socketFactory.socket(
            "xsub", self._fromPublishers, security.boundOptions(self.config, security.PUBLISH)
        )
        return self.xsub.bind(self.subAddress), self.xpub.bind(self.pubAddress)

    def connectUpstream(self, endpoint, via=None):
        """
        Also publish to an upstream XSUB (a proxy's notifications go to the
        cloud), replacing any earlier upstream.

        @param via: the control endpoint of that upstream: the connection
            is secured as that hop is (see L{zmqrelay.security}).
        """
        if endpoint == self._upstream:
            return
        if self._upstream is not None:
            self.xpub.disconnect(self._upstream)
        self._upstream = endpoint
        if via is not None:
            security.secureDial(self.xpub, self.config, via)
        # One trusted hop that carries everything, not a subscriber: the
        # node's own high-water mark and the kernel's own buffer sizing.
        raw = self.xpub.socket
        raw.setsockopt(zmq.SNDHWM, self._upstreamHwm)
        raw.setsockopt(zmq.SNDBUF, -1)
        try:
            self.xpub.connect(endpoint)
        finally:
            raw.setsockopt(zmq.SNDHWM, self.subscriberHwm)
            raw.setsockopt(zmq.SNDBUF, SUBSCRIBER_SNDBUF)

    def stop(self):
        """
        Close both sockets.
        """
        for sock in (self.xsub, self.xpub):
            if sock is not None:
                sock.close()
        self.xsub = self.xpub = None

    def _fromPublishers(self, frames):
        if self.maxMessageSize is not None:
            size = 0
            for f in frames:
                size += len(f)
            if size > self.maxMessageSize:
                self._bad("too-large", f"notification of {size} bytes")
                return
        try:
            header = protocol.decodeNotification(frames)[1].header
            protocol.field(header, "server", str, required=True)
            protocol.field(header, "inc", str, required=True)
            protocol.field(header, "seq", int, required=True)
        except protocol.ProtocolError as e:
            self._bad("malformed", e.message)
            return
        self.counters["notifications"] += 1
        xpub = self.xpub
        if xpub.send(frames):
            return
        # XPUB_NODROP: some subscriber's queue is full.  Send it again
        # dropping for that one only, so the others still get it.  (Setting
        # an option processes no ZeroMQ commands, so it cannot swallow the
        # edge that announces input; the send re-checks anyway.)
        raw = xpub.socket
        raw.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            delivered = xpub.send(frames)
        finally:
            raw.setsockopt(zmq.XPUB_NODROP, 1)
        if delivered:
            self.counters["slow-dropped"] += 1
        else:
            self.counters["dropped"] += 1

    def _fromSubscribers(self, frames):
        # Only (un)subscriptions travel upstream; anything else a subscriber
        # sends is not ours to pass on.
        if len(frames) != 1 or frames[0][:1] not in (b"\x00", b"\x01"):
            self._bad("malformed", "a subscriber sent something other than a subscription")
            return
        prefix = frames[0][1:]
        if frames[0][:1] == b"\x01":
            self._subscribed(prefix)
        else:
            self._unsubscribed(prefix)

    def _subscribed(self, prefix):
        if prefix in self._topics or prefix in self._waiting:
            # A non-verbose XPUB reports a prefix once; forwarding it twice
            # would take two ends upstream to undo.
            self.counters["refused-subscriptions"] += 1
            return
        if len(prefix) > MAX_PREFIX:
            self._bad("refused-subscriptions", f"subscription of {len(prefix)} bytes refused")
            return
        if len(self._topics) >= self.maxSubscriptions:
            self._bad(
                "refused-subscriptions",
                f"subscription refused: {len(self._topics)} prefixes forwarded, it waits for room",
            )
            if len(self._waiting) < self.maxSubscriptions:
                self._waiting[prefix] = None
            else:
                self._bad(
                    "forgotten-subscriptions",
                    f"subscription forgotten: {len(self._waiting)} already wait for room",
                )
            return
        self._topics.add(prefix)
        self._forward(b"\x01" + prefix)

    def _unsubscribed(self, prefix):
        if prefix in self._topics:
            self._topics.discard(prefix)
            self._forward(b"\x00" + prefix)
            # Room for the longest-waiting refused prefixes.
            while self._waiting and len(self._topics) < self.maxSubscriptions:
                waiting = self._waiting.popitem(last=False)[0]
                self._topics.add(waiting)
                self.counters["late-subscriptions"] += 1
                self._forward(b"\x01" + waiting)
        else:
            # The end of a subscription we never forwarded (waiting, too
            # long, or forgotten): nothing to undo upstream.
            self._waiting.pop(prefix, None)
            self.counters["refused-subscriptions"] += 1

    def _forward(self, subscription):
        self.counters["subscriptions"] += 1
        self.xsub.send([subscription])

    def _bad(self, counter, text):
        n = self.counters[counter] = self.counters[counter] + 1
        if n & (n - 1) == 0:
            log.warn("notification relay: {counter} input #{n}: {text}", counter=counter, n=n, text=text)
