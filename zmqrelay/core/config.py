"""
The settings every node has, with their defaults.

One L{NodeConfig} is built by a tap module from command-line options (or by
hand in a C{.tac} file) and handed to a role.
"""

import os
import socket

from zmqrelay.core import protocol


def newIncarnation():
    """
    @return: a random id for this process (L{str}).
    """
    return os.urandom(8).hex()


def defaultNodeId(role):
    """
    @return: a node id that is unique enough on one machine.
    """
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


#: I/O threads of a node whose bound sockets CURVE secures, unless
#: C{--io-threads} says otherwise (see L{NodeConfig.zmqIoThreads}).
CURVE_IO_THREADS = 4


class NodeConfig:
    """
    Settings of one node.

    @ivar nodeId: this node's id.
    @ivar incarnation: this process's incarnation.
    @ivar heartbeat: seconds between heartbeats on an idle hop.
    @ivar liveness: heartbeats missed before a peer is gone.
    @ivar helloTimeout: seconds to wait for WELCOME.
    @ivar reconnectInitial: first reconnect delay (seconds).
    @ivar reconnectMax: longest reconnect delay (seconds).
    @ivar rejectDelay: seconds to wait after a REJECT before trying again.
    @ivar maxMessageSize: largest message accepted (bytes, all frames).
    @ivar hwm: high-water mark of every socket (messages).
    @ivar maxInFlight: requests one client may have in flight at this node.
    @ivar rate: messages a second one peer may send (0: no limit).
    @ivar burst: messages one peer may send at once above C{rate}.
    @ivar byteRate: bytes a second one peer may send (0: no limit).
    @ivar strikes: refusals within C{cooldown} after which a peer is ignored.
    @ivar cooldown: seconds an abusive peer is ignored.
    @ivar readBudget: messages read from one socket per reactor turn.
    @ivar handshakeTimeout: seconds a connection may go without a session
        (no HELLO yet, or its session ended) before the node cuts it; also
        ZeroMQ's ZMTP handshake timeout.
    @ivar maxPending: connections that may wait without a session at once;
        beyond it the oldest are cut.
    @ivar strangerRate: messages a second the node reads, in all, from
        connections without a session (HELLOs included); beyond it they are
        dropped unread and counted.
    @ivar versions: protocol versions this node speaks.
    @ivar requestTimeout: default seconds a request may take in all, its
        attempts included (clients; per attempt with C{failFast}).
    @ivar attempts: default attempts per request (clients).
    @ivar drainTimeout: seconds a stopping server, proxy or cloud lets the
        work in flight finish before it goes (0: stop at once).
    @ivar historySize: notifications a server keeps per topic for replay.
    @ivar historyBytes: bytes a server's replay history may take, all
        topics together (the oldest notifications are forgotten first).
    @ivar replyCacheSize: replies a server keeps for retried requests.
    @ivar replyCacheBytes: bytes a server's kept replies may take (the
        oldest are forgotten first).
    @ivar curve: C{None}, or the CURVE settings: a
        L{zmqrelay.edge.security.CurveConfig}.
    @ivar maxSubscriptions: distinct subscription prefixes a relay forwards
        upstream at once (and, as many again, refused ones it keeps to
        forward when room frees up).
    @ivar forwardWindow: requests a relay has outstanding toward one next
        hop at most; more wait, round-robin over client ids (0: no window).
    @ivar subHwm: notifications a relay queues for one subscriber before
        dropping for it (the XPUB's send high-water mark).
    @ivar subBytes: bytes a relay holds for one subscriber (queued and in
        the kernel) before it cuts that subscriber's connection, as a slow
        consumer (see L{zmqrelay.core.slowsub}); 0: never.
    @ivar batch: the most messages this node takes in one BATCH from a
        relay or server (PROTOCOL.md 3.3), announced in HELLO and WELCOME;
        below 2, none (and it sends none to peers that announced none).
    @ivar outputHwm: messages the node's listening (ROUTER) socket queues
        toward one connection that does not read: its send high-water mark.
    @ivar ioThreads: I/O threads of the node's ZeroMQ context; 0: chosen
        by L{zmqIoThreads}.
    @ivar inputHwm: messages one connection may have queued unread at the
        node's listening (ROUTER) socket: its receive high-water mark.  Past
        it ZeroMQ stops reading that connection (TCP pushes back), so a
        flooding peer holds at most this much memory and backlog here.
    """

    def __init__(self, nodeId, **kw):
        self.nodeId = nodeId
        self.incarnation = kw.pop("incarnation", None) or newIncarnation()
        self.heartbeat = kw.pop("heartbeat", 1.0)
        self.liveness = kw.pop("liveness", 3)
        self.helloTimeout = kw.pop("helloTimeout", None)
        self.reconnectInitial = kw.pop("reconnectInitial", 0.25)
        self.reconnectMax = kw.pop("reconnectMax", 32.0)
        self.rejectDelay = kw.pop("rejectDelay", 5.0)
        self.maxMessageSize = kw.pop("maxMessageSize", 4 * 1024 * 1024)
        self.hwm = kw.pop("hwm", 10000)
        self.maxInFlight = kw.pop("maxInFlight", 256)
        self.rate = kw.pop("rate", 20000.0)
        self.burst = kw.pop("burst", 2000.0)
        self.byteRate = kw.pop("byteRate", 256.0 * 1024 * 1024)
        self.strikes = kw.pop("strikes", 50)
        self.cooldown = kw.pop("cooldown", 10.0)
        self.readBudget = kw.pop("readBudget", 200)
        self.handshakeTimeout = kw.pop("handshakeTimeout", 5.0)
        self.maxPending = kw.pop("maxPending", 10000)
        self.strangerRate = kw.pop("strangerRate", 2000.0)
        self.versions = tuple(kw.pop("versions", protocol.SUPPORTED_VERSIONS))
        self.requestTimeout = kw.pop("requestTimeout", 5.0)
        self.attempts = kw.pop("attempts", 3)
        self.drainTimeout = kw.pop("drainTimeout", 10.0)
        self.historySize = kw.pop("historySize", 1000)
        self.historyBytes = kw.pop("historyBytes", 16 * 1024 * 1024)
        self.replyCacheSize = kw.pop("replyCacheSize", 10000)
        self.replyCacheBytes = kw.pop("replyCacheBytes", 16 * 1024 * 1024)
        self.curve = kw.pop("curve", None)
        self.maxSubscriptions = kw.pop("maxSubscriptions", 100000)
        self.subHwm = kw.pop("subHwm", 10000)
        self.subBytes = kw.pop("subBytes", 32 * 1024 * 1024)
        self.inputHwm = kw.pop("inputHwm", 1000)
        self.outputHwm = kw.pop("outputHwm", 1000)
        self.batch = kw.pop("batch", 64)
        self.forwardWindow = kw.pop("forwardWindow", 32)
        self.ioThreads = kw.pop("ioThreads", 0)
        if kw:
            raise TypeError(f"unknown settings: {', '.join(sorted(kw))}")
        if self.helloTimeout is None:
            self.helloTimeout = self.heartbeat * self.liveness
        if self.heartbeat <= 0 or self.liveness < 1:
            raise ValueError("heartbeat must be > 0 and liveness >= 1")

    def zmqIoThreads(self):
        """
        @return: how many I/O threads this node's ZeroMQ context gets:
            C{ioThreads} if set, otherwise L{CURVE_IO_THREADS} when CURVE
            secures the sockets it binds, else 1.  A CURVE handshake keeps
            an I/O thread busy for 0.2-0.7 ms, during which that thread's
            other connections wait: spread over more threads, a stream of
            handshakes from unknown keys stalls each connection less often
            (docs/FLOOD.md, the curve section).
        """
        if self.ioThreads:
            return self.ioThreads
        curve = self.curve
        if curve is not None and getattr(curve, "registry", None) is not None:
            return CURVE_IO_THREADS
        return 1

    def socketOptions(self, curve=None):
        """
        @return: the L{SocketOptions} for this node's sockets.
        """
        return SocketOptions(
            hwm=self.hwm,
            maxMessageSize=self.maxMessageSize + 4096,
            heartbeat=self.heartbeat,
            readBudget=self.readBudget,
            curve=curve,
            handshake=self.handshakeTimeout,
        )


#: Frames a message may have (a zmqrelay message on a ROUTER has 5,
#: the routing frame included).
MAX_FRAMES = 8


class SocketOptions:
    """
    The socket options every zmqrelay socket gets.

    @ivar hwm: send and receive high-water marks (messages).
    @ivar maxMessageSize: ZeroMQ's C{MAXMSGSIZE} (bytes; -1 for none).
    @ivar heartbeat: the node's heartbeat in seconds: TCP keepalive probes a
        silent connection after a few of them (0 for the system's default).
        It never turns on ZMTP heartbeats (see the docstring of
        L{zmqrelay.edge._zmq}).
    @ivar readBudget: messages read per reactor turn before yielding.
    @ivar handshake: seconds a connection may take to finish the ZMTP
        handshake (ZeroMQ's C{HANDSHAKE_IVL}; 0 for none).
    @ivar maxFrames: frames a message may have; a longer one is discarded
        as it is read.
    @ivar curve: C{None}, or a dict with C{'server'} (bool), C{'public'},
        C{'secret'} and (clients) C{'serverkey'}, all Z85 bytes.
    """

    def __init__(
        self,
        hwm=10000,
        maxMessageSize=-1,
        heartbeat=0,
        readBudget=200,
        curve=None,
        handshake=5.0,
        maxFrames=MAX_FRAMES,
    ):
        self.hwm = hwm
        self.maxMessageSize = maxMessageSize
        self.heartbeat = heartbeat
        self.readBudget = readBudget
        self.curve = curve
        self.handshake = handshake
        self.maxFrames = maxFrames
