"""
What DNS-SD tells a client about the nodes on its network, and how long it
believes it.

Servers and proxies announce a C{_zmqrelay._tcp.local.} service (the record
is described in C{docs/PROTOCOL.md}, section 20); a client's browser hands
every record it sees (or sees go) to a L{DiscoveredNodes}, which checks it
(malformed and foreign records are ignored and counted; with CURVE, a node
whose key the client does not trust is too), and tells its observer when a
usable node is found and when it is lost.

A record says nothing about whether the node still answers: DNS-SD caches
keep a record of a dead node for its whole time-to-live, which is long.  So
the client also says, per node, whether its link to it is up
(L{DiscoveredNodes.answering}); a node that has not answered for C{maxAge}
seconds is lost (C{'silent'}), then offered again every C{maxAge} seconds
(or as soon as DNS-SD announces it anew), so a node that comes back is used
again without a restart.

Pure: the time comes from an injected clock (C{seconds()}), addresses are
strings.
"""

import ipaddress

from twisted.logger import Logger

log = Logger()

#: The DNS-SD service type of zmqrelay nodes.
SERVICE_TYPE = "_zmqrelay._tcp.local."

#: The version of the TXT record layout (the C{txtvers} key).
TXT_VERSION = "1"

#: Roles that announce themselves.
ANNOUNCED_ROLES = ("server", "proxy")

#: Why a node is lost: its record went away (DNS-SD goodbye or expiry),
#: it stopped answering, or its record changed (it is found again at once).
REMOVED = "removed"
SILENT = "silent"
CHANGED = "changed"

_Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


class BadRecord(ValueError):
    """
    A DNS-SD record that is not a usable zmqrelay announcement.

    @ivar kind: the counter it is counted under: C{'foreign'} (not ours, or a
        later layout), C{'malformed'} (ours, but a value is wrong),
        C{'no-common-version'}, C{'untrusted'} or C{'needs-curve'}.
    """

    def __init__(self, kind, reason):
        ValueError.__init__(self, reason)
        self.kind = kind


class Announcement:
    """
    One node, as its DNS-SD record describes it.

    @ivar name: the DNS-SD instance name (unique on the network).
    @ivar nodeId: the node's id.
    @ivar role: C{'server'} or C{'proxy'}.
    @ivar site: the id of the site proxy (a proxy's own id; C{''} for a
        server with no proxy, or not connected to it yet).
    @ivar versions: the protocol versions it speaks, a sorted L{tuple}.
    @ivar control: the TCP port of its control endpoint (a ROUTER).
    @ivar pub: the TCP port of its notification endpoint, or C{None}.
    @ivar key: its CURVE public key (Z85), or C{None}.
    @ivar addresses: the addresses it is reachable at, a L{tuple} of strings.
    """

    __slots__ = ("name", "nodeId", "role", "site", "versions", "control", "pub", "key", "addresses")

    def __init__(self, name, nodeId, role, site, versions, control, pub, key, addresses):
        self.name = name
        self.nodeId = nodeId
        self.role = role
        self.site = site
        self.versions = versions
        self.control = control
        self.pub = pub
        self.key = key
        self.addresses = addresses

    def _fields(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        if not isinstance(other, Announcement):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return f"<Announcement {self.role} {self.nodeId} site={self.site!r} at {self.endpoint()}>"

    def endpoint(self):
        """
        @return: the ZeroMQ endpoint of its control socket (at its first
            address).
        """
        return _tcp(self.addresses[0], self.control)


def _tcp(address, port):
    if ":" in address:
        return f"tcp://[{address}]:{port}"
    return f"tcp://{address}:{port}"


def txtRecord(nodeId, role, site, versions, control, pub=None, key=None):
    """
    The TXT record a node announces.

    @return: a L{dict} of L{str} to L{str}.
    """
    record = {
        "txtvers": TXT_VERSION,
        "id": nodeId,
        "role": role,
        "site": site or "",
        "v": ",".join(str(v) for v in sorted(versions)),
        "ctl": str(control),
    }
    if pub is not None:
        record["pub"] = str(pub)
    if key is not None:
        record["key"] = key
    return record


def _text(properties, key, required=True):
    value = properties.get(key.encode("ascii"))
    if value is None:
        if required:
            raise BadRecord("malformed", f"no {key!r}")
        return None
    if not isinstance(value, bytes):
        raise BadRecord("malformed", f"{key!r} is not bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("malformed", f"{key!r} is not UTF-8") from None


def _port(properties, key, required=True):
    value = _text(properties, key, required)
    if value is None:
        return None
    if not (value.isdigit() and 0 < int(value) < 65536):
        raise BadRecord("malformed", f"{key!r} {value!r} is not a port")
    return int(value)


def parseRecord(name, properties, addresses):
    """
    Read one DNS-SD record.

    @param name: the service instance name.
    @param properties: the TXT record, L{bytes} keys to L{bytes} values (or
        C{None} for a key with no value), as python-zeroconf gives it.
    @param addresses: the addresses of the record's host, strings.
    @return: an L{Announcement}.
    @raise BadRecord: if it is not a usable zmqrelay announcement.
    """
    if not isinstance(properties, dict):
        raise BadRecord("malformed", "no TXT record")
    txtvers = properties.get(b"txtvers")
    if txtvers != TXT_VERSION.encode("ascii"):
        # Another application under our type, or a layout we do not read.
        raise BadRecord("foreign", f"txtvers {txtvers!r}")
    nodeId = _text(properties, "id")
    if not 0 < len(nodeId) <= 256:
        raise BadRecord("malformed", "id must be 1 to 256 characters")
    role = _text(properties, "role")
    if role not in ANNOUNCED_ROLES:
        raise BadRecord("foreign", f"role {role!r}")
    site = _text(properties, "site", required=False) or ""
    if len(site) > 256:
        raise BadRecord("malformed", "site longer than 256 characters")
    if role == "proxy" and site != nodeId:
        raise BadRecord("malformed", "a proxy's site is its own id")
    rawVersions = _text(properties, "v")
    try:
        versions = tuple(sorted({int(v) for v in rawVersions.split(",")}))
    except ValueError:
        raise BadRecord("malformed", f"versions {rawVersions!r}") from None
    if not versions or not all(0 < v < 256 for v in versions):
        raise BadRecord("malformed", f"versions {rawVersions!r}")
    control = _port(properties, "ctl")
    pub = _port(properties, "pub", required=False)
    key = _text(properties, "key", required=False)
    if key is not None and (len(key) != 40 or not set(key) <= _Z85):
        raise BadRecord("malformed", "key is not a Z85 CURVE public key")
    usable = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if ip.is_multicast or ip.is_unspecified:
            continue
        usable.append(str(ip))
    if not usable:
        raise BadRecord("malformed", "no usable address")
    # IPv4 first: link-local IPv6 needs a scope a tcp:// endpoint lacks.
    usable.sort(key=lambda a: ":" in a)
    return Announcement(name, nodeId, role, site, versions, control, pub, key, tuple(usable))


def _samePath(old, new):
    """
    @return: C{True} if a link opened for C{old} serves C{new} as well.
    """
    return (old.nodeId, old.role, old.endpoint(), old.key, old.pub) == (
        new.nodeId, new.role, new.endpoint(), new.key, new.pub)


class _Entry:
    __slots__ = ("announcement", "silentSince", "lostAt", "active")

    def __init__(self, announcement, now):
        self.announcement = announcement
        # When its link was last seen down (or, before it first came up,
        # when we found it); None while it answers.
        self.silentSince = now
        # When it was lost for silence (None: not lost).
        self.lostAt = None
        self.active = True


class DiscoveredNodes:
    """
    The usable nodes a client's DNS-SD browser has seen, by instance name.

    The observer has C{nodeFound(announcement)} and C{nodeLost(announcement,
    reason)}; a node is found at most once before it is lost, and a changed
    record is a loss (C{'changed'}) followed by a find.

    @ivar versions: the protocol versions this client speaks.
    @ivar trustedKeys: with CURVE, the public keys (Z85) of the nodes the
        client trusts; C{None} without CURVE.
    @ivar maxAge: seconds a node may not answer before it is lost.
    @ivar counters: records seen, ignored by kind, nodes found and lost.
    """

    def __init__(self, clock, observer, versions, trustedKeys=None, maxAge=30.0, ownId=None):
        self.clock = clock
        self.observer = observer
        self.versions = tuple(versions)
        self.trustedKeys = None if trustedKeys is None else frozenset(trustedKeys)
        self.maxAge = maxAge
        self.ownId = ownId
        self._entries = {}
        self.counters = {
            "records": 0, "found": 0, "lost": 0, "foreign": 0, "malformed": 0,
            "no-common-version": 0, "untrusted": 0, "needs-curve": 0,
        }

    def __len__(self):
        return sum(1 for e in self._entries.values() if e.active)

    def nodes(self):
        """
        @return: the L{Announcement}s of the nodes in use now.
        """
        return [e.announcement for e in self._entries.values() if e.active]

    def byId(self, nodeId):
        """
        @return: the L{Announcement} in use for C{nodeId}, or C{None}.
        """
        for entry in self._entries.values():
            if entry.active and entry.announcement.nodeId == nodeId:
                return entry.announcement
        return None

    def sites(self):
        """
        @return: a L{dict} of server id to the site (proxy id) it announced,
            for the servers in use that said one.
        """
        return {
            e.announcement.nodeId: e.announcement.site
            for e in self._entries.values()
            if e.active and e.announcement.role == "server" and e.announcement.site
        }

    def _check(self, announcement):
        if not set(announcement.versions) & set(self.versions):
            raise BadRecord("no-common-version", f"speaks {announcement.versions}, we {self.versions}")
        if self.trustedKeys is None:
            if announcement.key is not None:
                raise BadRecord("needs-curve", "it uses CURVE and we do not")
        elif announcement.key not in self.trustedKeys:
            raise BadRecord("untrusted", "its key is not one we trust")

    def seen(self, name, properties, addresses):
        """
        DNS-SD announced (or updated) C{name}.

        @return: the L{Announcement} now in use for C{name}, or C{None} if
            the record was ignored.
        """
        self.counters["records"] += 1
        try:
            announcement = parseRecord(name, properties, addresses)
            self._check(announcement)
        except BadRecord as e:
            self.counters[e.kind] += 1
            log.debug("ignoring DNS-SD record {name}: {kind}: {reason}", name=name, kind=e.kind, reason=e)
            # What it announced before is no longer what it announces.
            self._drop(name, CHANGED)
            return None
        if announcement.nodeId == self.ownId:
            return None
        now = self.clock.seconds()
        entry = self._entries.get(name)
        if entry is not None:
            if entry.active and _samePath(entry.announcement, announcement):
                # Only what it says changed (a server's site, once its proxy
                # welcomed it): the link we hold stays as it is.
                entry.announcement = announcement
                return announcement
            if entry.active:
                self._lose(entry, CHANGED)
        for other in list(self._entries.values()):
            # One entry per node id: a node that restarted under another
            # instance name replaces its old record.
            if other is not entry and other.announcement.nodeId == announcement.nodeId:
                self._drop(other.announcement.name, CHANGED)
        entry = self._entries[name] = _Entry(announcement, now)
        self._find(entry)
        return announcement

    def gone(self, name):
        """
        DNS-SD says C{name} is gone (a goodbye, or its record expired).
        """
        self._drop(name, REMOVED)

    def answering(self, nodeId, up):
        """
        The client's link to C{nodeId} came up (C{up} true) or went down.
        """
        now = self.clock.seconds()
        for entry in self._entries.values():
            if entry.announcement.nodeId == nodeId and entry.active:
                if up:
                    entry.silentSince = None
                elif entry.silentSince is None:
                    entry.silentSince = now

    def sweep(self):
        """
        Lose the nodes silent for C{maxAge}, and offer again those lost so
        for C{maxAge} (a probe: DNS-SD may never tell us it is back).
        """
        now = self.clock.seconds()
        for entry in list(self._entries.values()):
            if entry.active:
                if entry.silentSince is not None and now - entry.silentSince >= self.maxAge:
                    self._lose(entry, SILENT)
                    entry.lostAt = now
            elif entry.lostAt is not None and now - entry.lostAt >= self.maxAge:
                entry.silentSince = now
                entry.lostAt = None
                self._find(entry)

    def _find(self, entry):
        entry.active = True
        self.counters["found"] += 1
        self.observer.nodeFound(entry.announcement)

    def _lose(self, entry, reason):
        entry.active = False
        self.counters["lost"] += 1
        self.observer.nodeLost(entry.announcement, reason)

    def _drop(self, name, reason):
        entry = self._entries.pop(name, None)
        if entry is not None and entry.active:
            self._lose(entry, reason)
