"""
Options every role shares, and turning them into a L{NodeConfig}.

Every option is checked when parsed: an error names the option and the value
in one line.  Run by C{twistd}, a usage error (found while parsing or while
building the service) and a failure to bind at start end the process with
that one line instead of a usage dump or a traceback.
"""

import gc
import getopt
import ipaddress
import sys

from twisted.python import usage

from zmqrelay.core import protocol
from zmqrelay.core.config import NodeConfig, defaultNodeId

#: The option naming the endpoint C{--curve-server-key} is for, by role.
_UPSTREAM = {"client": "cloud", "proxy": "cloud", "server": "proxy"}


def _number(kind, value):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError("not an integer" if kind is int else "not a number") from None


def _positive(kind):
    def coerce(value):
        number = _number(kind, value)
        if not number > 0:
            raise ValueError("must be positive")
        return number

    coerce.coerceDoc = "Must be positive."
    return coerce


def _nonNegative(kind):
    def coerce(value):
        number = _number(kind, value)
        if not number >= 0:
            raise ValueError("must be zero or more")
        return number

    coerce.coerceDoc = "Must be zero or more."
    return coerce


def _versions(value):
    try:
        versions = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        versions = ()
    if not versions or not all(0 < v < 256 for v in versions):
        raise ValueError("versions are integers 1..255, comma-separated")
    return versions


_versions.coerceDoc = "Comma-separated, e.g. 1,2."


def parseEndpoint(value, bind=False):
    """
    Check a ZeroMQ endpoint fully: C{tcp://HOST:PORT} (a numeric port, or
    C{*} and a host of C{*} when binding), C{ipc://PATH} or
    C{inproc://NAME}.

    @param bind: C{True} for an endpoint to bind, C{False} for one to dial.
    @return: C{value}.
    @raise ValueError: saying what is wrong with it.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError("not a tcp://, ipc:// or inproc:// endpoint")
    if not rest:
        raise ValueError(f"no {'path' if scheme == 'ipc' else 'address'}")
    if scheme != "tcp":
        return value
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ValueError("no port (tcp://HOST:PORT)")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"bad host {host!r}")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"bad host {host!r}")
    if host == "*" and not bind:
        raise ValueError("host * is for binding, not dialling")
    if port == "*":
        if not bind:
            raise ValueError("port * is for binding, not dialling")
        return value
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port {port!r} is not a number from 1 to 65535" + (" or *" if bind else ""))
    return value


def checkEndpoint(value, option, bind=False):
    """
    @raise usage.UsageError: unless C{value} is C{None} or a ZeroMQ endpoint
        (L{parseEndpoint}), naming C{--option} and the value.
    """
    if value is None:
        return
    try:
        parseEndpoint(value, bind)
    except ValueError as e:
        raise usage.UsageError(f"--{option} {value!r}: {e}")


def checkServerEndpoint(value, option):
    """
    @raise usage.UsageError: unless C{value} is a Twisted server endpoint
        string, naming C{--option} and the value.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        # Parsing needs no reactor: the endpoint is only described here.
        serverFromString(None, value)
    except (ValueError, TypeError, KeyError) as e:
        raise usage.UsageError(f"--{option} {value!r}: not a Twisted endpoint ({e})")


class _NamedParameter(usage.CoerceParameter):
    """
    A coerced parameter whose error names the option and the value.
    """

    def dispatch(self, parameterName, value):
        if value is None:
            raise usage.UsageError(f"--{parameterName} needs a value")
        try:
            self.options.opts[parameterName] = self.coerce(value)
        except ValueError as e:
            raise usage.UsageError(f"--{parameterName} {value!r}: {e}")


def _inTwistd(options):
    """
    @return: the name twistd runs C{options} as, or C{None} if they were
        not parsed as a twistd subcommand.
    """
    from twisted.application.app import ServerOptions

    if getattr(options, "runAs", None):
        return options.runAs
    parent = getattr(options, "parent", None)
    if not isinstance(parent, ServerOptions) or not parent.subCommand:
        return None
    return f"twistd {parent.subCommand}"


def _exit(prog, text, status):
    sys.stderr.write(f"{prog}: error: {text}\n")
    sys.stderr.flush()
    raise SystemExit(status)


class CheckedOptions(usage.Options):
    """
    Options whose errors name the option and the value, and which, parsed
    as a C{twistd} subcommand, end the process with that one line and
    status 2 rather than a usage dump.
    """

    def __init__(self):
        usage.Options.__init__(self)
        for name, handler in list(self._dispatch.items()):
            if type(handler) is usage.CoerceParameter:
                self._dispatch[name] = _NamedParameter(self, handler.coerce)

    def parseOptions(self, options=None):
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            prog = _inTwistd(self)
            if prog is None:
                raise
            _exit(prog, e, 2)


class InterspersedOptions(CheckedOptions):
    """
    Options of a command (not a C{twistd} subcommand) that may come before
    and after its arguments, as in C{zmqrelay subscribe --cloud EP tick.
    --count 3} (getopt alone stops at the first argument and would take
    C{--count} and C{3} for two more arguments).  C{--} ends the options.
    """

    def parseOptions(self, options=None):
        options = sys.argv[1:] if options is None else list(options)
        try:
            opts, args = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e))
        ordered = []
        for opt, value in opts:
            if opt.startswith("--"):
                ordered.append(f"{opt}={value}" if opt[2:] + "=" in self.longOpt else opt)
            else:
                ordered += [opt, value] if opt[1] + ":" in self.shortOpt else [opt]
        CheckedOptions.parseOptions(self, ordered + ["--"] + args)


def freezeHeap():
    """
    Leave what exists once the node has started (Twisted, the modules, the
    node itself: some 40,000 objects) out of the garbage collector's full
    passes, which otherwise stop the reactor for about 20 ms each time
    allocations (a flood) trigger one.  Only for a process we own (twistd,
    a .tac file), never inside someone else's program.
    """
    gc.collect()
    gc.freeze()


def twistdService(build, options):
    """
    Build the service of a twistd subcommand.

    Parsed by twistd, a L{usage.UsageError} raised while building, and a
    ZeroMQ error (a busy port, an address that does not resolve) raised
    when the service starts, end the process with one line: status 2 and
    1.  Otherwise (a test, a program building services itself) errors are
    raised as they are.

    @param build: called with C{options}, returns the service.
    """
    prog = _inTwistd(options)
    if prog is None:
        return build(options)
    try:
        service = build(options)
    except usage.UsageError as e:
        _exit(prog, e, 2)
    start = service.startService

    def startService():
        import zmq

        from zmqrelay.roles.metrics import CannotListen

        try:
            start()
        except zmq.ZMQError as e:
            _exit(prog, f"cannot start: {e}", 1)
        except CannotListen as e:
            _exit(prog, f"cannot start: {e}", 1)
        freezeHeap()

    service.startService = startService
    return service


class NodeOptions(CheckedOptions):
    """
    Options of every role.
    """

    role = None
    #: What a default node id starts with (default: the role).
    idPrefix = None

    optParameters = [
        ["id", None, None, "This node's id (default: <role>-<host>-<pid>)."],
        ["heartbeat", None, 1.0, "Seconds between heartbeats on an idle hop.", _positive(float)],
        ["liveness", None, 3, "Heartbeats missed before a peer counts as gone.", _positive(int)],
        ["max-message-size", None, 4 * 1024 * 1024, "Largest message accepted, in bytes.", _positive(int)],
        ["hwm", None, 10000, "High-water mark of every socket, in messages.", _positive(int)],
        ["batch", None, 64, "Most messages taken in one BATCH from a relay or server, and "
         "announced in HELLO/WELCOME (below 2: no batches either way).", _nonNegative(int)],
        ["output-hwm", None, 1000, "Messages a listening socket queues toward one connection "
         "that does not read (its send high-water mark); past it sends to that peer fail and "
         "are counted.", _positive(int)],
        ["input-hwm", None, 1000, "Messages one connection may have queued unread at a "
         "listening socket (its receive high-water mark); past it ZeroMQ stops reading that "
         "connection.", _positive(int)],
        ["max-in-flight", None, 256, "Requests one client may have in flight here.", _positive(int)],
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
        ["max-pending", None, 10000,
         "Connections that may wait for their HELLO at once; beyond it the oldest are cut.", _positive(int)],
        ["io-threads", None, 0,
         "I/O threads of the node's ZeroMQ context (0: 4 if CURVE secures the sockets it "
         "binds, else 1).", _nonNegative(int)],
        ["stranger-rate", None, 2000.0,
         "Messages a second read, in all, from connections without a session (0: no limit).",
         _nonNegative(float)],
        ["metrics", None, None,
         "Serve Prometheus /metrics, /healthz and /readyz on this Twisted endpoint "
         "(e.g. tcp:9100:interface=127.0.0.1; default: none)."],
        ["protocol-versions", None, None, "Protocol versions to speak (default: all this release speaks).", _versions],
        ["curve-secret", None, None,
         "CURVE: this node's secret certificate (NAME.key_secret from 'zmqrelay keygen'); "
         "its id metadata is the default --id."],
        ["curve-server-key", None, None,
         "CURVE: public certificate (.key) of the node this one dials (the cloud for clients "
         "and proxies, the proxy for servers); secures that hop."],
        ["curve-authorized", None, None,
         "CURVE: directory of public certificates (*.key), or one such file, allowed to "
         "connect, each bound to its id and role; secures every socket this node binds (cloud, proxy, server: a "
         "client binds nothing and refuses it)."],
    ]

    optFlags = [
        ["emulate-versions", None,
         "Testing only: allow --protocol-versions this release does not speak "
         "(to emulate another release)."],
        ["discover", None,
         "DNS-SD on the LAN: a server or proxy announces itself, a client finds them "
         "and uses the direct path (off by default; not for the cloud, which refuses it)."],
    ]

    def __init__(self):
        CheckedOptions.__init__(self)
        self["curve-peer-keys"] = {}
        self["discover-interfaces"] = []

    def opt_discover_interface(self, value):
        """
        With --discover: use mDNS only on the interface holding this IPv4
        address (repeatable; default: every interface).
        """
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise usage.UsageError(f"--discover-interface {value!r}: not an IPv4 address") from None
        if address.is_unspecified or address.is_multicast:
            raise usage.UsageError(f"--discover-interface {value!r}: not an interface's address")
        self["discover-interfaces"].append(str(address))

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
            raise usage.UsageError(f"--id {self['id']!r}: must be 1 to 256 characters")
        if self["metrics"] is not None:
            checkServerEndpoint(self["metrics"], "metrics")
        versions = self["protocol-versions"]
        if versions and not self["emulate-versions"]:
            unknown = [v for v in versions if v not in protocol.SUPPORTED_VERSIONS]
            if unknown:
                raise usage.UsageError(
                    f"--protocol-versions {','.join(map(str, versions))!r}: this release "
                    f"speaks only {','.join(map(str, protocol.SUPPORTED_VERSIONS))}"
                )
        self["curve"] = self._curveConfig()
        if self["discover"] and self.role == "cloud":
            raise usage.UsageError("--discover: the cloud is not on a LAN; servers, proxies and clients are")
        if self["discover-interfaces"] and not self["discover"]:
            raise usage.UsageError("--discover-interface needs --discover")

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
        # A cloud with --peer dials its peer cloud nodes: their keys are
        # --curve-peer-key (issue 10).
        if upstream is None and (serverKey or (peerKeys and not self.get("peers"))):
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

    def attachMetrics(self, node):
        """
        Serve C{node}'s metrics and health on C{--metrics}, if given: a
        L{zmqrelay.roles.metrics.MetricsService} started and stopped with it.

        @return: C{node}.
        """
        if self["metrics"]:
            from zmqrelay.roles.metrics import MetricsService

            MetricsService(node, self["metrics"]).setServiceParent(node)
        return node

    def attachDiscovery(self, node):
        """
        Announce C{node} (a server or a proxy) on DNS-SD, if C{--discover}:
        a L{zmqrelay.edge.discovery.Announcer} started and stopped with it.

        @return: C{node}.
        """
        if self["discover"]:
            from zmqrelay.edge.discovery import announcerFor

            announcerFor(node, self["discover-interfaces"]).setServiceParent(node)
        return node

    def nodeConfig(self, **extra):
        """
        @return: the L{NodeConfig} these options describe.
        """
        kw = dict(
            heartbeat=self["heartbeat"],
            liveness=self["liveness"],
            maxMessageSize=self["max-message-size"],
            hwm=self["hwm"],
            inputHwm=self["input-hwm"],
            outputHwm=self["output-hwm"],
            batch=self["batch"],
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
            ioThreads=self["io-threads"],
        )
        if self["protocol-versions"]:
            kw["versions"] = self["protocol-versions"]
        if "drain-timeout" in self:
            kw["drainTimeout"] = self["drain-timeout"]
        curve = self.get("curve")
        kw["curve"] = curve
        kw.update(extra)
        nodeId = self["id"] or (curve.nodeId if curve is not None else None)
        return NodeConfig(nodeId or defaultNodeId(self.idPrefix or self.role), **kw)


class RelayOptions(NodeOptions):
    """
    Options of every relay role (the cloud and a proxy): what their
    notification relay holds for subscribers.
    """

    optParameters = [
        ["max-subscriptions", None, 100000,
         "Distinct subscription prefixes forwarded upstream at once (as many more wait for room).",
         _positive(int)],
        ["sub-hwm", None, 10000,
         "Notifications queued per subscriber before dropping for it (memory: this x the "
         "largest notification + 512 KiB of kernel buffer; one that does not read, about "
         "--sub-bytes).",
         _positive(int)],
        ["sub-bytes", None, 32 * 1024 * 1024,
         "Bytes held for one subscriber (queued and in the kernel) before its connection is "
         "cut as a slow consumer; it reconnects and asks for a replay (0: never).",
         _nonNegative(int)],
        ["window", None, 32,
         "Requests outstanding toward one next hop at most; more wait, taken round-robin "
         "over client ids, so one client's flood does not delay the others (0: no window).",
         _nonNegative(int)],
    ]

    def nodeConfig(self, **extra):
        kw = dict(
            maxSubscriptions=self["max-subscriptions"], subHwm=self["sub-hwm"],
            subBytes=self["sub-bytes"],
            forwardWindow=self["window"],
        )
        kw.update(extra)
        return NodeOptions.nodeConfig(self, **kw)
