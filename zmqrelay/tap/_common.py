"""
Options every role shares, and turning them into a L{NodeConfig}.
"""

from twisted.python import usage

from zmqrelay.config import NodeConfig, defaultNodeId


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
        ["protocol-versions", None, None, "Protocol versions to speak (default: all this release speaks).", _versions],
    ]

    def postOptions(self):
        if self["id"] is not None and not (0 < len(self["id"]) <= 256):
            raise usage.UsageError("--id must be 1 to 256 characters")

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
        )
        if self["protocol-versions"]:
            kw["versions"] = self["protocol-versions"]
        kw.update(extra)
        return NodeConfig(self["id"] or defaultNodeId(self.role), **kw)


def checkEndpoint(value, option):
    """
    @raise usage.UsageError: unless C{value} looks like a ZeroMQ endpoint.
    """
    if value is None:
        return
    if not any(value.startswith(s) for s in ("tcp://", "ipc://", "inproc://")):
        raise usage.UsageError(f"--{option} {value!r} is not a tcp://, ipc:// or inproc:// endpoint")
