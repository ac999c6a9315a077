"""
DNS-SD on the LAN, with python-zeroconf: servers and proxies announce
themselves (L{Announcer}), clients browse (L{Browser}).

python-zeroconf runs its own threads.  Nothing here blocks the reactor:
starting, registering, updating and closing run in the reactor's thread
pool, and everything a browser learns is handed to the reactor with
C{callFromThread}, where the pure L{zmqrelay.core.discovery.DiscoveredNodes}
judges it.

C{interfaces} (C{--discover-interface ADDR}, repeatable) confines mDNS to
the interfaces holding those addresses: nothing is sent or received on any
other.  Without them python-zeroconf uses every interface.

DNS-SD is unauthenticated: anyone on the LAN can announce anything.  With
CURVE a client uses a discovered node only if its key is one it already
trusts (and the CURVE handshake proves the node holds it); without CURVE a
client may be pointed at an impostor on its LAN (docs/PROTOCOL.md, 20).
"""

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from zmqrelay.core.discovery import SERVICE_TYPE

log = Logger()

#: How often a browser sweeps its table and an announcer checks whether its
#: record changed, in seconds.
TICK = 1.0


def _zeroconf(interfaces):
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    if interfaces:
        return Zeroconf(interfaces=list(interfaces), ip_version=IPVersion.V4Only)
    return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)


def portOf(endpoint):
    """
    @return: the TCP port of a bound C{tcp://HOST:PORT} endpoint, or C{None}.
    """
    if not endpoint or not endpoint.startswith("tcp://"):
        return None
    port = endpoint.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def hostOf(endpoint):
    """
    @return: the host of a bound C{tcp://HOST:PORT} endpoint, or C{None} if
        it is a wildcard (or not TCP).
    """
    if not endpoint or not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host in ("*", "0.0.0.0", "::", ""):
        return None
    return host


def instanceName(nodeId, incarnation):
    """
    @return: a DNS-SD instance name for a node: its id (dots would be
        labels, so they become dashes) and its incarnation, at most 63
        bytes.
    """
    base = nodeId.replace(".", "-").encode("utf-8")[:48].decode("utf-8", "ignore")
    return f"{base}-{incarnation[:8]}.{SERVICE_TYPE}"


class Announcer(Service):
    """
    Announces one node on DNS-SD while it runs, and updates the record
    when what it says changes (a server's site, once its proxy welcomed it).

    @ivar describe: called with no argument, returns the TXT record as a
        L{dict} of strings (L{zmqrelay.core.discovery.txtRecord}), or C{None}
        while the node has nothing to announce yet (not bound).
    @ivar counters: C{registered}, C{updates}, C{errors}.
    """

    def __init__(self, reactor, nodeId, incarnation, describe, port, interfaces=(), zeroconf=_zeroconf,
                 host=None):
        """
        @param host: called with no argument, returns the address the node's
            control endpoint is bound to, or C{None} if it is bound to every
            interface (then every address of the chosen interfaces is
            announced).
        """
        self.reactor = reactor
        self.host = host
        self.nodeId = nodeId
        self.incarnation = incarnation
        self.describe = describe
        self.port = port
        self.interfaces = tuple(interfaces)
        self._makeZeroconf = zeroconf
        self._zc = None
        self._info = None
        self._record = None
        self._busy = None
        self._ticker = None
        self.counters = {"registered": 0, "updates": 0, "errors": 0}

    def _inThread(self, f, *args, **kw):
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args, **kw)

    def startService(self):
        Service.startService(self)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        # The first tick runs after the node bound its sockets.
        self._ticker.start(TICK, now=False)
        self.reactor.callLater(0, self._tick)

    def _addresses(self):
        import zeroconf

        host = self.host() if self.host is not None else None
        if host is not None and ":" not in host:
            # Bound to one address: that is the only one a client can dial.
            return [host]
        if self.interfaces:
            return [a for a in self.interfaces if ":" not in a]
        return [a for a in zeroconf.get_all_addresses() if not a.startswith("127.")]

    def _tick(self):
        if not self.running or self._busy is not None:
            return
        record = self.describe()
        if record is None or record == self._record:
            return
        port = self.port()
        if port is None:
            return
        from zeroconf import ServiceInfo

        name = instanceName(self.nodeId, self.incarnation)
        info = ServiceInfo(
            SERVICE_TYPE, name, port=port, properties=record,
            server=f"zmqrelay-{self.incarnation[:12]}.local.",
            parsed_addresses=self._addresses(),
        )
        first = self._info is None
        self._busy = self._inThread(self._publish, info, first)

        def done(_):
            self._busy = None
            self._info = info
            self._record = record
            key = "registered" if first else "updates"
            self.counters[key] += 1
            log.info("DNS-SD: announced {name} {record}", name=name, record=record)

        def failed(f):
            self._busy = None
            self.counters["errors"] += 1
            log.warn("DNS-SD: cannot announce {name}: {error}", name=name, error=f.value)

        self._busy.addCallbacks(done, failed)

    def _publish(self, info, first):
        if self._zc is None:
            self._zc = self._makeZeroconf(self.interfaces)
        if first:
            self._zc.register_service(info, allow_name_change=True)
        else:
            self._zc.update_service(info)

    def stopService(self):
        Service.stopService(self)
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        busy, self._busy = self._busy, None
        if busy is not None:
            # A publish still runs in its thread, and may be making the
            # Zeroconf instance right now: close what it made once it ends.
            busy.addErrback(lambda _: None)
            return busy.addCallback(lambda _: self._close())
        return self._close()

    def _close(self):
        zc, self._zc = self._zc, None
        if zc is None:
            return None

        def close():
            # A goodbye, so browsers forget us now, not at the TTL's end.
            try:
                zc.unregister_all_services()
            finally:
                zc.close()

        return self._inThread(close).addErrback(self._closeFailed)

    def _closeFailed(self, f):
        log.warn("DNS-SD: closing failed: {error}", error=f.value)


class _Listener:
    """
    python-zeroconf's listener: runs in its browser thread, resolves, and
    hands the result to the reactor.
    """

    def __init__(self, browser):
        self.browser = browser

    def add_service(self, zc, type_, name):
        self._resolve(zc, type_, name)

    def update_service(self, zc, type_, name):
        self._resolve(zc, type_, name)

    def remove_service(self, zc, type_, name):
        self.browser.reactor.callFromThread(self.browser.gone, name)

    def _resolve(self, zc, type_, name):
        try:
            info = zc.get_service_info(type_, name, timeout=2000)
        except Exception as e:
            self.browser.reactor.callFromThread(self.browser.failed, name, repr(e))
            return
        if info is None:
            self.browser.reactor.callFromThread(self.browser.failed, name, "did not resolve")
            return
        properties = dict(info.properties or {})
        addresses = list(info.parsed_addresses())
        self.browser.reactor.callFromThread(self.browser.seen, name, properties, addresses)


class Browser(Service):
    """
    Browses for zmqrelay nodes and feeds a
    L{zmqrelay.core.discovery.DiscoveredNodes} in the reactor thread, and
    sweeps it every L{TICK} seconds.

    @ivar table: the L{DiscoveredNodes}.
    """

    def __init__(self, reactor, table, interfaces=(), zeroconf=_zeroconf):
        self.reactor = reactor
        self.table = table
        self.interfaces = tuple(interfaces)
        self._makeZeroconf = zeroconf
        self._zc = None
        self._browser = None
        self._starting = None
        self._ticker = None
        self.counters = {"unresolved": 0}

    def startService(self):
        Service.startService(self)
        self._ticker = LoopingCall(self.table.sweep)
        self._ticker.clock = self.reactor
        self._ticker.start(TICK, now=False)
        self._starting = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._open)

        def failed(f):
            log.warn("DNS-SD: cannot browse: {error}", error=f.value)

        self._starting.addErrback(failed)

    def _open(self):
        from zeroconf import ServiceBrowser

        zc = self._makeZeroconf(self.interfaces)
        browser = ServiceBrowser(zc, SERVICE_TYPE, listener=_Listener(self))
        self._zc, self._browser = zc, browser

    def seen(self, name, properties, addresses):
        if self.running:
            self.table.seen(name, properties, addresses)

    def gone(self, name):
        if self.running:
            self.table.gone(name)

    def failed(self, name, reason):
        self.counters["unresolved"] += 1
        log.debug("DNS-SD: {name}: {reason}", name=name, reason=reason)

    def stopService(self):
        Service.stopService(self)
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        starting, self._starting = self._starting, None

        def close(_=None):
            browser, self._browser = self._browser, None
            zc, self._zc = self._zc, None
            if browser is not None:
                browser.cancel()
            if zc is not None:
                zc.close()

        d = starting if starting is not None else None
        if d is None:
            return None
        return d.addCallback(
            lambda _: deferToThreadPool(self.reactor, self.reactor.getThreadPool(), close)
        ).addErrback(lambda f: log.warn("DNS-SD: closing failed: {error}", error=f.value))


def announcerFor(node, interfaces=()):
    """
    An L{Announcer} for a server or a proxy: its id, role, site (a proxy's
    own id; a server's proxy, once it welcomed it), versions, bound ports
    and CURVE public key.

    @param node: a L{zmqrelay.roles.server.Server} or
        L{zmqrelay.roles.proxy.Proxy} (read, not imported: roles sit above
        this layer).
    """
    from zmqrelay.core.discovery import txtRecord

    def describe():
        endpoints = node.endpoints()
        control = portOf(endpoints.get("control"))
        if control is None:
            return None
        if node.role == "proxy":
            site = node.nodeId
        else:
            link = getattr(node, "link", None)
            site = link.nodeId if link is not None and link.nodeId else ""
        curve = getattr(node.config, "curve", None)
        # The key only if the node binds with CURVE: a node that only dials
        # with it (its upstream hop secured) takes plain connections, and a
        # client that saw a key would dial it with CURVE and fail.
        key = curve.public if curve is not None and curve.registry is not None else None
        return txtRecord(
            node.nodeId, node.role, site, node.config.versions, control,
            portOf(endpoints.get("pub")), key,
        )

    def port():
        return portOf(node.endpoints().get("control"))

    return Announcer(node.reactor, node.nodeId, node.incarnation, describe, port, interfaces,
                     host=lambda: hostOf(node.endpoints().get("control")))

