"""
What a node tells the people who run it: its figures, as Prometheus metrics
and health checks on an HTTP endpoint of its own.

  - L{Timing}: a histogram of durations a node keeps (handler time on a
    server, request round trips on a client);
  - L{figures}: the gauges and canonical counters of a node, read from its
    live parts, every one present (0) from the start.  L{Node.stats} (the
    C{stats} sys request) returns them, and so does the collector: one
    source of truth;
  - L{NodeCollector}: a C{prometheus_client} collector reading a node at
    scrape time;
  - L{health} and L{readiness}: what C{/healthz} and C{/readyz} answer;
  - L{MetricsService}: C{/metrics}, C{/healthz} and C{/readyz} over
    C{twisted.web} on a Twisted endpoint string (C{--metrics}).
"""

import bisect

from twisted.application.service import Service
from twisted.logger import Logger

from zmqrelay.core import protocol

log = Logger()

#: Every error code on the wire: each has its counter from the start.
ERROR_CODES = (
    protocol.E_BAD_MESSAGE, protocol.E_UNKNOWN_TYPE, protocol.E_HELLO_FIRST,
    protocol.E_VERSION, protocol.E_NO_ROUTE, protocol.E_TARGET_LOST, protocol.E_TIMEOUT,
    protocol.E_HANDLER, protocol.E_OVER_LIMIT, protocol.E_TOO_LARGE, protocol.E_REJECTED,
    protocol.E_AUTH, protocol.E_SHUTDOWN,
)

#: Why a node refuses a peer's message or hello.
REFUSAL_REASONS = ("rate", "size", "in-flight", "cooldown", "auth", "version")

#: Peer roles a session may have.
ROLES = (protocol.CLIENT, protocol.SERVER, protocol.PROXY)

#: Histogram buckets (seconds): from a loopback hop to a slow handler.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Timing:
    """
    A histogram of durations: counts per bucket, their sum, and outcomes.

    @ivar counts: observations per bucket of L{BUCKETS} (the last one: above
        them all).
    @ivar total: the sum of the observations, in seconds.
    @ivar outcomes: outcome (C{"ok"} or an error code) to count.
    """

    def __init__(self, buckets=BUCKETS):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.outcomes = {"ok": 0}

    @property
    def count(self):
        return sum(self.counts)

    def observe(self, seconds, outcome="ok"):
        """
        Count one duration and its outcome.
        """
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def timeDeferred(self, d, clock):
        """
        Observe how long C{d} takes to fire from now, and how: C{"ok"}, or
        the failure's wire error code (C{"error"} if it has none).

        @return: C{d}, its result untouched.
        """
        start = clock.seconds()

        def done(result):
            outcome = "ok"
            if hasattr(result, "value") and hasattr(result, "check"):
                outcome = getattr(result.value, "code", None) or "error"
            self.observe(max(0.0, clock.seconds() - start), outcome)
            return result

        return d.addBoth(done)

    def buckets_(self):
        """
        @return: cumulative C{(upper bound, count)} pairs, the last C{+Inf}.
        """
        result, running = [], 0
        for bound, n in zip(self.buckets + (float("inf"),), self.counts):
            running += n
            result.append((bound, running))
        return result


def _sessions(node):
    front = getattr(node, "front", None)
    counts = dict.fromkeys(ROLES, 0)
    if front is not None:
        for session in list(front.sessions.values()):
            counts[session.role] = counts.get(session.role, 0) + 1
    return counts


def _links(node):
    """
    @return: C{(name, link)} for every upstream link of C{node}.
    """
    links = list(getattr(node, "links", None) or [])
    if links:
        return [(f"path{i}", link) for i, link in enumerate(links)]
    clouds = list(getattr(node, "cloudLinks", None) or [])
    if len(clouds) > 1:
        # A proxy of several cloud nodes: attached while any is.
        return [("cloud" if i == 0 else f"cloud{i}", link) for i, link in enumerate(clouds)]
    link = getattr(node, "link", None)
    if link is None:
        return []
    return [("proxy" if node.role == protocol.SERVER else "cloud", link)]


def figures(node):
    """
    The gauges and canonical counters of C{node}, read from its live parts.

    Every key is present from the start; counters of the parts themselves
    are in L{Node.stats} too, under their part's name.

    @return: a flat L{dict} of name to number.
    """
    result = {}
    front = getattr(node, "front", None)
    forwarder = getattr(node, "forwarder", None)
    fc = front.counters if front is not None else {}
    errors = getattr(front, "errors", {}) if front is not None else {}
    rejects = getattr(front, "rejects", {}) if front is not None else {}
    counters = getattr(node, "counters", {})

    # Requests at this hop.
    if node.role == protocol.SERVER:
        received = counters.get("requests", 0)
        answered = counters.get("handled", 0)
    elif node.role == protocol.CLIENT:
        received = 0
        answered = node.timings["roundtrip"].outcomes["ok"]
    else:
        # From below (the front) and, at a proxy, from the cloud.
        received = fc.get("requests", 0) + sum(
            link.counters.get("requests", 0) for _, link in _links(node)
        )
        answered = forwarder.counters["answered"] if forwarder is not None else 0
    result["requests.received"] = received
    result["requests.forwarded"] = forwarder.counters["forwarded"] if forwarder is not None else 0
    result["requests.answered"] = answered
    for code in ERROR_CODES:
        result[f"errors.{code}"] = errors.get(code, 0)
    for code, n in errors.items():
        result[f"errors.{code}"] = n

    # Refusals, by reason.
    overLimit = errors.get(protocol.E_OVER_LIMIT, 0)
    result["refusals.rate"] = fc.get("refused", 0)
    result["refusals.size"] = fc.get("too-large", 0)
    # Over-limit answers the front did not send itself come from an
    # in-flight table (forwarder or server).
    result["refusals.in-flight"] = max(0, overLimit - fc.get("refused-messages", 0))
    result["refusals.cooldown"] = fc.get("ignored", 0)
    result["refusals.auth"] = fc.get("auth", 0)
    result["refusals.version"] = rejects.get(protocol.E_VERSION, 0)

    # Notifications.
    relay = getattr(node, "relay", None)
    if relay is not None:
        result["notifications.relayed"] = relay.counters.get("notifications", 0)
        result["notifications.dropped"] = (
            relay.counters.get("dropped", 0) + relay.counters.get("slow-dropped", 0)
        )
    elif node.role == protocol.SERVER:
        result["notifications.relayed"] = counters.get("published", 0)
        result["notifications.dropped"] = (
            counters.get("publish-dropped", 0) + counters.get("slow-dropped", 0)
        )
    else:
        result["notifications.relayed"] = counters.get("notifications", 0)
        result["notifications.dropped"] = counters.get("lost", 0)

    # Who is attached.
    for role, n in _sessions(node).items():
        result[f"sessions.{role}"] = n
    view = getattr(node, "presence", None)
    result["clients"] = 0
    if view is not None:
        clients = view.connectedClients()
        result["clients"] = len(clients)
        for record in clients.values():
            for path in record.paths:
                key = f"clients.path.{path}"
                result[key] = result.get(key, 0) + 1

    # Work in progress.
    if forwarder is not None:
        inflight = len(forwarder.inflight)
    elif node.role == protocol.SERVER:
        inflight = len(getattr(node, "_running", ()))
    else:
        inflight = len(getattr(node, "_attempts", ()))
    result["inflight"] = inflight

    # Routes.
    routes = getattr(node, "routes", None)
    servers = routes.servers() if routes is not None else {}
    result["routes.servers"] = len(servers)
    result["routes.services"] = len({s for route in servers.values() for s in route.services})

    # Upstream links: up or not, attempts since the last success, time to
    # the next attempt.
    now = node.reactor.seconds()
    result["upstream.links"] = 0
    result["upstream.up"] = 0
    for name, link in _links(node):
        result["upstream.links"] += 1
        result["upstream.up"] += 1 if link.alive else 0
        result[f"upstream.{name}.up"] = 1 if link.alive else 0
        result[f"upstream.{name}.attempt"] = link.attempt
        timer = getattr(link, "_timer", None)
        waiting = getattr(link, "state", None) == "waiting" and timer is not None and timer.active()
        result[f"upstream.{name}.retry-in"] = max(0.0, timer.getTime() - now) if waiting else 0.0
        result[f"upstream.{name}.reconnects"] = link.counters.get("connects", 0)

    # Replicated maps this node owns: how far each has got.
    for attr in ("presenceSource", "routesSource", "localSource"):
        source = getattr(node, attr, None)
        if source is not None:
            result[f"replica.{source.name}.seq"] = source.seq

    # Handler time and round trips.
    for name, timing in node.timings.items():
        result[f"{name}.count"] = timing.count
        result[f"{name}.seconds"] = round(timing.total, 6)
    return result


def routesOf(node):
    """
    What the C{routes} sys request answers: the servers a node routes to
    (their services, and the peer they are reached through) and the peers
    attached to it.

    @return: C{{"servers": {id: {"services": [...], "via": id}}, "peers":
        [[id, role], ...]}}.
    """
    routes = getattr(node, "routes", None)
    servers = {}
    if routes is not None:
        for serverId, route in routes.servers().items():
            servers[serverId] = {
                "services": sorted(route.services),
                "via": getattr(route.peer, "nodeId", None) or serverId,
            }
    front = getattr(node, "front", None)
    peers = []
    if front is not None:
        peers = sorted([s.nodeId, s.role] for s in list(front.sessions.values()))
    return {"servers": servers, "peers": peers}


def health(node):
    """
    @return: C{(True, "ok")} if C{node} is bound and, unless it is the cloud,
        attached upstream; else C{(False, reason)}.
    """
    if not node.running:
        return False, "not running"
    if node.role != protocol.CLIENT and not node.endpoints():
        return False, "not bound"
    links = _links(node)
    if node.role != "cloud" and links and not any(link.alive for _, link in links):
        names = ", ".join(link.endpoint for _, link in links)
        return False, f"not attached upstream ({names})"
    return True, "ok"


def readiness(node):
    """
    @return: like L{health}, and not ready while draining.
    """
    ok, reason = health(node)
    if ok and getattr(node, "ready", True) is False:
        # A cloud node that (re)started and has not all its peers' presence.
        return False, "waiting for the peer cloud nodes' presence"
    if ok and getattr(node, "draining", False):
        return False, "draining"
    return ok, reason


class NodeCollector:
    """
    A C{prometheus_client} collector reading one node at scrape time.
    """

    def __init__(self, node):
        self.node = node

    def describe(self):
        # No describe-time scrape: registering must not read the node.
        return []

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        node = self.node
        stats = node.stats()

        def counter(name, doc, key):
            return CounterMetricFamily(f"zmqrelay_{name}", doc, value=stats.get(key, 0))

        def gauge(name, doc, key):
            return GaugeMetricFamily(f"zmqrelay_{name}", doc, value=stats.get(key, 0))

        info = GaugeMetricFamily(
            "zmqrelay_node_info", "This node: id, role and incarnation.",
            labels=["id", "role", "incarnation"],
        )
        info.add_metric([node.nodeId, node.role, node.incarnation], 1)
        yield info
        yield counter("requests_received", "Requests received from peers below (a server: to run).",
                      "requests.received")
        yield counter("requests_forwarded", "Requests forwarded toward their server.",
                      "requests.forwarded")
        yield counter("requests_answered", "Requests answered with a reply.", "requests.answered")
        errors = CounterMetricFamily(
            "zmqrelay_errors_sent", "ERR answers sent to peers below, by error code.", labels=["code"]
        )
        for key, value in sorted(stats.items()):
            if key.startswith("errors."):
                errors.add_metric([key[len("errors."):]], value)
        yield errors
        refusals = CounterMetricFamily(
            "zmqrelay_refusals", "Messages and hellos refused, by reason.", labels=["reason"]
        )
        for reason in REFUSAL_REASONS:
            refusals.add_metric([reason], stats.get(f"refusals.{reason}", 0))
        yield refusals
        yield counter("notifications_relayed", "Notifications relayed (a server: published).",
                      "notifications.relayed")
        yield counter("notifications_dropped", "Notifications dropped (full or slow subscribers).",
                      "notifications.dropped")
        sessions = GaugeMetricFamily("zmqrelay_sessions", "Peers attached below, by role.", labels=["role"])
        for role in ROLES:
            sessions.add_metric([role], stats.get(f"sessions.{role}", 0))
        yield sessions
        yield gauge("clients", "Clients connected, by any path.", "clients")
        paths = GaugeMetricFamily("zmqrelay_clients_by_path", "Clients connected, by path.", labels=["path"])
        for key, value in sorted(stats.items()):
            if key.startswith("clients.path."):
                paths.add_metric([key[len("clients.path."):]], value)
        yield paths
        yield gauge("inflight", "Requests in flight at this node.", "inflight")
        yield gauge("routes_servers", "Servers this node can route to.", "routes.servers")
        yield gauge("routes_services", "Service names this node can route to.", "routes.services")
        yield gauge("upstream_up", "Upstream links attached.", "upstream.up")
        yield gauge("upstream_links", "Upstream links configured.", "upstream.links")
        names = sorted({k.split(".")[1] for k in stats if k.startswith("upstream.") and k.count(".") == 2})
        attempt = GaugeMetricFamily(
            "zmqrelay_upstream_attempt", "Connection attempts since the link was last up.", labels=["link"]
        )
        retry = GaugeMetricFamily(
            "zmqrelay_upstream_retry_seconds", "Seconds until the next reconnect attempt (backoff).",
            labels=["link"],
        )
        reconnects = CounterMetricFamily(
            "zmqrelay_upstream_connects", "Connection attempts made.", labels=["link"]
        )
        for name in names:
            attempt.add_metric([name], stats.get(f"upstream.{name}.attempt", 0))
            retry.add_metric([name], stats.get(f"upstream.{name}.retry-in", 0))
            reconnects.add_metric([name], stats.get(f"upstream.{name}.reconnects", 0))
        yield attempt
        yield retry
        yield reconnects
        replica = GaugeMetricFamily(
            "zmqrelay_replica_seq", "Position of each map this node owns and replicates.", labels=["map"]
        )
        epochs = GaugeMetricFamily(
            "zmqrelay_replica_epoch_info", "Epoch of each map this node owns.", labels=["map", "epoch"]
        )
        for attr in ("presenceSource", "routesSource", "localSource"):
            source = getattr(node, attr, None)
            if source is not None:
                replica.add_metric([source.name], stats.get(f"replica.{source.name}.seq", source.seq))
                epochs.add_metric([source.name, str(source.epoch)], 1)
        yield replica
        yield epochs
        events = CounterMetricFamily(
            "zmqrelay_events", "Every counter of the node's parts (as the stats sys request gives them).",
            labels=["part", "event"],
        )
        for key, value in sorted(stats.items()):
            if key.startswith(_FIGURE_PREFIXES) or not isinstance(value, (int, float)):
                continue
            part, _, event = key.rpartition(".")
            events.add_metric([part or "node", event], value)
        yield events
        for name, timing in node.timings.items():
            family = HistogramMetricFamily(
                f"zmqrelay_{name}_seconds", _TIMING_DOCS.get(name, name), labels=["outcome"]
            )
            # Outcomes are counted apart; the histogram is over all of them.
            family.add_metric(
                ["all"], [(_bound(b), n) for b, n in timing.buckets_()], sum_value=timing.total
            )
            yield family
            outcomes = CounterMetricFamily(
                f"zmqrelay_{name}_outcomes", f"{_TIMING_DOCS.get(name, name)}: by outcome.",
                labels=["outcome"],
            )
            for outcome, n in sorted(timing.outcomes.items()):
                outcomes.add_metric([outcome], n)
            yield outcomes


_TIMING_DOCS = {
    "handler": "Time the application's handler took per request",
    "roundtrip": "Request round trips seen by this client, retries included",
}


def _bound(bound):
    return "+Inf" if bound == float("inf") else repr(bound)


#: Keys L{figures} adds: exported under their own names, not again as events.
_FIGURE_PREFIXES = (
    "requests.", "errors.", "refusals.", "notifications.", "sessions.", "clients",
    "inflight", "routes.", "upstream.", "replica.", "handler.", "roundtrip.",
)


class CannotListen(Exception):
    """
    The metrics endpoint could not be listened on.
    """


class _Text:
    """
    A C{twisted.web} resource answering a status and one line of text.
    """

    isLeaf = True

    def __init__(self, check, node):
        self.check = check
        self.node = node

    def render(self, request):
        ok, reason = self.check(self.node)
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (reason + "\n").encode("utf-8")


class MetricsService(Service):
    """
    Serves C{/metrics} (Prometheus), C{/healthz} and C{/readyz} for one
    node, on a Twisted server endpoint string such as
    C{tcp:9100:interface=127.0.0.1}.

    @ivar registry: this node's own C{CollectorRegistry}.
    @ivar port: the listening port while running, else C{None}.
    """

    def __init__(self, node, endpoint, reactor=None):
        from prometheus_client import CollectorRegistry

        self.node = node
        self.endpoint = endpoint
        self.reactor = reactor if reactor is not None else node.reactor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self.port = None
        self._listening = None

    def resource(self):
        """
        @return: the C{twisted.web} root resource.
        """
        from prometheus_client.twisted import MetricsResource
        from twisted.web.resource import Resource

        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry))
        root.putChild(b"healthz", _Text(health, self.node))
        root.putChild(b"readyz", _Text(readiness, self.node))
        return root

    def startService(self):
        from twisted.internet.endpoints import serverFromString
        from twisted.web.server import Site

        Service.startService(self)
        site = Site(self.resource())
        site.noisy = False
        endpoint = serverFromString(self.reactor, self.endpoint)
        self._listening = endpoint.listen(site)

        def listening(port):
            self.port = port
            address = port.getHost()
            log.info(
                "metrics: http://{host}:{port}/metrics (and /healthz, /readyz)",
                host=getattr(address, "host", "?"), port=getattr(address, "port", "?"),
            )
            return port

        def failed(f):
            log.error("metrics: cannot listen on {endpoint}: {error}",
                      endpoint=self.endpoint, error=f.getErrorMessage())
            return f

        self._listening.addCallbacks(listening, failed)
        # Listening on TCP or UNIX happens at once: a busy port is known now.
        failure = []
        self._listening.addErrback(failure.append)
        if failure:
            Service.stopService(self)
            raise CannotListen(f"--metrics {self.endpoint}: {failure[0].getErrorMessage()}")

    def stopService(self):
        Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
