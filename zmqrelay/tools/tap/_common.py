"""
Options every role shares, and turning them into a L{NodeConfig}.
"""

from twisted.python import usage

from zmqrelay.core.config import NodeConfig, defaultNodeId

#: The option naming the endpoint C{--curve-server-key} is for, by role.
_UPSTREAM = {"client": "cloud", "proxy": "cloud", "server": "proxy"}


def _positive(kind):
    def coerce(value):
        number = kind(value)
        if number <= 0:
            raise ValueError(f"{value!r} is not positive")
        return number

    coerce.coerceDoc = "Must be positive."
    return coerce


def _nonNegative(kind):
    def coerce(value):
        number = kind(value)
        if number < 0:
            raise ValueError(f"{value!r} is negative")
        return number

    coerce.coerceDoc = "Must be zero or more."
    return coerce


def _versions(value):
    versions = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    if not versions or not all(0 < v < 256 for v in versions):
        raise ValueError("versions are integers 1..255, comma-separated")
    return versions


_versions.coerceDoc = "Comma-separated, e.g. 1,2."


class NodeOptions(usage.Options):
    """
    Options of every role.
    """

    role = None

    optParameters = [
        ["id", None, None, "This node's id (default: <role>-<host>-<pid>)."],
        ["heartbeat", None, 1.0, "Seconds between heartbeats on an idle hop.", _positive(float)],
        ["liveness", None, 3, "Heartbeats missed before a peer counts as gone.", _positive(int)],
        ["max-message-size", None, 4 * 1024 * 1024, "Largest message accepted, in bytes.", _positive(int)],
        ["hwm", None, 10000, "High-water mark of every socket, in messages.", _positive(int)],
        ["max-in-flight", None, 1000, "Requests one client may have in flight here.", _positive(int)],
        ["rate", None, 20000.0, "Messages a second one client may send (0: no limit).", _nonNegative(float)],
        ["burst", None, 2000.0, "Messages one client may send at once above --rate.", _positive(float)],
        ["byte-rate", None, 256.0 * 1024 * 1024, "Bytes a second one client may send (0: no limit).", _nonNegative(float)],
        ["strikes", None, 50, "Refusals within --cooldown after which a client is ignored.", _positive(int)],
        ["cooldown", None, 10.0, "Seconds an abusive client is ignored.", _positive(float)],
        ["reconnect-max", None, 32.0, "Longest delay between reconnect attempts (seconds).", _positive(float)],
        ["reject-delay", None, 5.0, "Seconds to wait after a peer refused our hello.", _positive(float)],
        ["read-budget", None, 200, "Messages read from one socket per reactor turn.", _positive(int)],
        ["handshake-timeout", None, 5.0,
         "Seconds a connection may hold no session (no HELLO yet) before it is cut.", _positive(float)],
        ["max-pending", None, 1000,
         "Connections that may wait for their HELLO at once; beyond it the oldest are cut.", _positive(int)],
        ["stranger-rate", None, 2000.0,
         "Messages a second read, in all, from connections without a session (0: no limit).",
         _nonNegative(float)],
        ["protocol-versions", None, None, "Protocol versions to speak (default: all this release speaks).", _versions],
        ["curve-secret", None, None,
         "CURVE: this node's secret certificate (NAME.key_secret from 'zmqrelay keygen'); "
         "its id metadata is the default --id."],
        ["curve-server-key", None, None,
         "CURVE: public certificate (.key) of the node this one dials (the cloud for clients "
         "and proxies, the proxy for servers); secures that hop."],
        ["curve-authorized", None, None,
         "CURVE: directory of public certificates (*.key) allowed to connect, each bound to "
         "its id and role; secures every socket this node binds."],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["curve-peer-keys"] = {}

    def opt_curve_peer_key(self, value):
        """
        CURVE: ENDPOINT=PATH, the public certificate of the node at a dialled
        endpoint other than the upstream (a client's --proxy or --server
        path); repeatable.
        """
        endpoint, sep, path = value.partition("=")
        if not sep or not endpoint or not path:
            raise usage.UsageError(f"--curve-peer-key {value!r} is not ENDPOINT=PATH")
        self["curve-peer-keys"][endpoint] = path

    def postOptions(self):
        if self["id"] is not None and not (0 < len(self["id"]) <= 256):
            raise usage.UsageError("--id must be 1 to 256 characters")
        self["curve"] = self._curveConfig()

    def _curveConfig(self):
        """
        Check the CURVE options and load their files.

        @return: a L{zmqrelay.edge.security.CurveConfig}, or C{None}.
        """
        from zmqrelay.edge.security import CurveConfig

        secret = self["curve-secret"]
        serverKey = self["curve-server-key"]
        authorized = self["curve-authorized"]
        peerKeys = dict(self["curve-peer-keys"])
        if secret is None:
            if serverKey or authorized or peerKeys:
                raise usage.UsageError("CURVE options need --curve-secret")
            return None
        upstream = _UPSTREAM.get(self.role)
        if upstream is None and (serverKey or peerKeys):
            raise usage.UsageError(f"a {self.role} dials nothing: no --curve-server-key or --curve-peer-key")
        if authorized and self.role == "client":
            raise usage.UsageError("a client binds nothing: no --curve-authorized")
        if serverKey:
            if not self.get(upstream):
                raise usage.UsageError(f"--curve-server-key is the key of --{upstream}: give --{upstream}")
            peerKeys[self[upstream]] = serverKey
        if not (authorized or peerKeys):
            raise usage.UsageError(
                "--curve-secret alone secures nothing: add --curve-server-key, "
                "--curve-authorized or --curve-peer-key"
            )
        if authorized and upstream and self.get(upstream) and self[upstream] not in peerKeys:
            # Its notification socket binds with CURVE and dials upstream: libzmq
            # would send even a plain dial to the ZAP handler, which refuses it.
            raise usage.UsageError(
                f"with --curve-authorized, --{upstream} needs --curve-server-key too"
            )
        try:
            return CurveConfig.fromFiles(secret, peerKeys, authorized)
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"CURVE: {e}")

    def nodeConfig(self, **extra):
        """
        @return: the L{NodeConfig} these options describe.
        """
        kw = dict(
            heartbeat=self["heartbeat"],
            liveness=self["liveness"],
            maxMessageSize=self["max-message-size"],
            hwm=self["hwm"],
            maxInFlight=self["max-in-flight"],
            rate=self["rate"],
            burst=self["burst"],
            byteRate=self["byte-rate"],
            strikes=self["strikes"],
            cooldown=self["cooldown"],
            reconnectMax=self["reconnect-max"],
            rejectDelay=self["reject-delay"],
            readBudget=self["read-budget"],
            handshakeTimeout=self["handshake-timeout"],
            maxPending=self["max-pending"],
            strangerRate=self["stranger-rate"],
        )
        if self["protocol-versions"]:
            kw["versions"] = self["protocol-versions"]
        curve = self.get("curve")
        kw["curve"] = curve
        kw.update(extra)
        nodeId = self["id"] or (curve.nodeId if curve is not None else None)
        return NodeConfig(nodeId or defaultNodeId(self.role), **kw)


class RelayOptions(NodeOptions):
    """
    Options of every relay role (the cloud and a proxy): what their
    notification relay holds for subscribers.
    """

    optParameters = [
        ["max-subscriptions", None, 100000,
         "Distinct subscription prefixes forwarded upstream at once (as many more wait for room).",
         _positive(int)],
        ["sub-hwm", None, 1000,
         "Notifications queued per subscriber before dropping for it (memory: this x the "
         "largest notification + 512 KiB of kernel buffer).", _positive(int)],
        ["window", None, 32,
         "Requests outstanding toward one next hop at most; more wait, taken round-robin "
         "over client ids, so one client's flood does not delay the others (0: no window).",
         _nonNegative(int)],
    ]

    def nodeConfig(self, **extra):
        kw = dict(
            maxSubscriptions=self["max-subscriptions"], subHwm=self["sub-hwm"],
            forwardWindow=self["window"],
        )
        kw.update(extra)
        return NodeOptions.nodeConfig(self, **kw)


def checkEndpoint(value, option):
    """
    @raise usage.UsageError: unless C{value} looks like a ZeroMQ endpoint.
    """
    if value is None:
        return
    if not any(value.startswith(s) for s in ("tcp://", "ipc://", "inproc://")):
        raise usage.UsageError(f"--{option} {value!r} is not a tcp://, ipc:// or inproc:// endpoint")
