"""
Tests for L{zmqrelay.roles.metrics}: timings, figures present from the start,
the Prometheus collector, and the health checks.
"""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from zmqrelay.core import errors, protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.roles import metrics
from zmqrelay.roles.client import Client
from zmqrelay.roles.cloud import Cloud
from zmqrelay.roles.proxy import Proxy
from zmqrelay.roles.server import Server

from tests.fakes import FakeSocketFactory, RecordingHandler, helloFrames, welcomeFrames

LISTEN = "tcp://127.0.0.1:*"


def scrape(node):
    """
    @return: C{{(name, labels): value}} of every sample the node exports.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.NodeCollector(node))
    text = generate_latest(registry).decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class TimingTests(SynchronousTestCase):
    """
    L{metrics.Timing} counts durations in buckets and outcomes by code.
    """

    def test_buckets(self):
        """
        Observations land in the first bucket at or above them; buckets are cumulative.
        """
        timing = metrics.Timing((0.1, 1.0))
        for seconds in (0.05, 0.1, 0.5, 3.0):
            timing.observe(seconds)
        self.assertEqual(timing.buckets_(), [(0.1, 2), (1.0, 3), (float("inf"), 4)])
        self.assertEqual(timing.count, 4)
        self.assertAlmostEqual(timing.total, 3.65)

    def test_timeDeferred(self):
        """
        timeDeferred observes the time to fire by the clock, and the error code of a failure.
        """
        clock = Clock()
        timing = metrics.Timing()
        ok, bad = Deferred(), Deferred()
        timing.timeDeferred(ok, clock)
        timing.timeDeferred(bad, clock)
        clock.advance(0.3)
        ok.callback(b"x")
        clock.advance(0.2)
        bad.errback(errors.NoRoute("gone"))
        self.assertEqual(self.successResultOf(ok), b"x")
        self.failureResultOf(bad, errors.NoRoute)
        self.assertEqual(timing.outcomes, {"ok": 1, protocol.E_NO_ROUTE: 1})
        self.assertAlmostEqual(timing.total, 0.8)


class FiguresTests(SynchronousTestCase):
    """
    Every figure is there from the start, and moves with what the node does.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()

    def node(self, cls, *args, **kw):
        node = cls(NodeConfig(cls.role + "-x", incarnation="inc"), *args,
                   reactor=self.clock, socketFactory=self.factory, **kw)
        return node

    def stop(self, node):
        if node.running:
            self.successResultOf(node.stopService())

    def test_presentFromTheStart(self):
        """
        Before any traffic, every role's stats and scrape carry every figure at 0.
        """
        for node in (
            self.node(Cloud, LISTEN, LISTEN, LISTEN),
            self.node(Proxy, LISTEN, LISTEN, LISTEN, "tcp://cloud:1"),
            self.node(Server, RecordingHandler(), ["echo"], LISTEN, LISTEN, "tcp://proxy:1"),
            self.node(Client, "tcp://cloud:1"),
        ):
            node.startService()
            self.addCleanup(self.stop, node)
            stats = node.stats()
            for key in ("requests.received", "requests.forwarded", "requests.answered",
                        "notifications.relayed", "notifications.dropped", "inflight",
                        "routes.servers", "routes.services", "clients", "upstream.up"):
                self.assertEqual(stats[key], 0, (node.role, key))
            for code in metrics.ERROR_CODES:
                self.assertEqual(stats[f"errors.{code}"], 0)
            for reason in metrics.REFUSAL_REASONS:
                self.assertEqual(stats[f"refusals.{reason}"], 0)
            samples = scrape(node)
            self.assertEqual(samples[("zmqrelay_requests_received_total", ())], 0)
            self.assertEqual(samples[("zmqrelay_refusals_total", (("reason", "cooldown"),))], 0)
            self.assertEqual(samples[("zmqrelay_errors_sent_total", (("code", "timeout"),))], 0)
            self.assertEqual(samples[("zmqrelay_sessions", (("role", "client"),))], 0)
            self.assertEqual(
                samples[("zmqrelay_node_info", (("id", node.nodeId), ("incarnation", "inc"),
                                                ("role", node.role)))], 1)
        self.assertIn(("zmqrelay_handler_seconds_count", (("outcome", "all"),)), scrape(
            self.node(Server, RecordingHandler(), [], LISTEN, None, None)))

    def test_cloudCountsSessionsAndErrors(self):
        """
        A client's hello shows as a session and a connected client; a
        request for nobody counts as received and as a no-route error.
        """
        cloud = self.node(Cloud, LISTEN, LISTEN, LISTEN)
        cloud.startService()
        self.addCleanup(self.stop, cloud)
        [router] = self.factory.ofKind("router")
        router.receive([b"r1"] + helloFrames("c1", "ci"))
        router.receive([b"r1"] + protocol.encode(protocol.REQUEST, {"id": 1, "to": "nobody"}, b"x"))
        stats = cloud.stats()
        self.assertEqual(stats["sessions.client"], 1)
        self.assertEqual(stats["clients"], 1)
        self.assertEqual(stats["clients.path.cloud"], 1)
        self.assertEqual(stats["requests.received"], 1)
        self.assertEqual(stats[f"errors.{protocol.E_NO_ROUTE}"], 1)
        samples = scrape(cloud)
        self.assertEqual(samples[("zmqrelay_errors_sent_total", (("code", "no-route"),))], 1)
        self.assertEqual(samples[("zmqrelay_clients_by_path", (("path", "cloud"),))], 1)
        self.assertEqual(samples[("zmqrelay_events_total", (("event", "received"), ("part", "front")))], 2)

    def test_versionRefusalCounted(self):
        """
        A hello in no common version counts as a version refusal.
        """
        cloud = self.node(Cloud, LISTEN, LISTEN, LISTEN)
        cloud.startService()
        self.addCleanup(self.stop, cloud)
        [router] = self.factory.ofKind("router")
        router.receive([b"r1"] + helloFrames("c1", "ci", versions=(9,)))
        self.assertEqual(cloud.stats()["refusals.version"], 1)
        self.assertEqual(scrape(cloud)[("zmqrelay_refusals_total", (("reason", "version"),))], 1)


class HealthTests(SynchronousTestCase):
    """
    /healthz and /readyz: bound, and attached upstream unless the cloud.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()

    def render(self, node, check):
        request = DummyRequest([b""])
        body = metrics._Text(check, node).render(request)
        return request.responseCode or 200, body.decode()

    def test_cloud(self):
        """
        The cloud is healthy once bound, not before.
        """
        cloud = Cloud(NodeConfig("cloud"), LISTEN, LISTEN, LISTEN,
                      reactor=self.clock, socketFactory=self.factory)
        self.assertEqual(self.render(cloud, metrics.health), (503, "not running\n"))
        cloud.startService()
        self.assertEqual(self.render(cloud, metrics.health), (200, "ok\n"))
        self.successResultOf(cloud.stopService())

    def test_proxyNeedsItsCloud(self):
        """
        A proxy is unhealthy until its cloud welcomes it, and again when the link goes.
        """
        proxy = Proxy(NodeConfig("proxy"), LISTEN, LISTEN, LISTEN, "tcp://cloud:1",
                      reactor=self.clock, socketFactory=self.factory)
        proxy.startService()
        code, text = self.render(proxy, metrics.health)
        self.assertEqual(code, 503)
        self.assertIn("not attached upstream (tcp://cloud:1)", text)
        [dealer] = [s for s in self.factory.ofKind("dealer")]
        dealer.receive(welcomeFrames("cloud", role=protocol.CLOUD))
        self.assertEqual(self.render(proxy, metrics.health), (200, "ok\n"))
        self.assertEqual(self.render(proxy, metrics.readiness), (200, "ok\n"))
        proxy.draining = True
        self.assertEqual(self.render(proxy, metrics.readiness), (503, "draining\n"))
        self.assertEqual(self.render(proxy, metrics.health), (200, "ok\n"))
        self.successResultOf(proxy.stopService())


class RoutesTests(SynchronousTestCase):
    """
    The routes sys request: servers, their services and where they are.
    """

    def test_cloudRoutes(self):
        """
        A cloud lists its attached peers, and no servers before any proxy reports one.
        """
        clock, factory = Clock(), FakeSocketFactory()
        cloud = Cloud(NodeConfig("cloud"), LISTEN, LISTEN, LISTEN, reactor=clock, socketFactory=factory)
        cloud.startService()
        self.addCleanup(cloud.stopService)
        [router] = factory.ofKind("router")
        router.receive([b"r1"] + helloFrames("c1", "ci"))
        router.receive([b"r2"] + helloFrames("siteA", "pi", role=protocol.PROXY))
        self.assertEqual(metrics.routesOf(cloud),
                         {"servers": {}, "peers": [["c1", "client"], ["siteA", "proxy"]]})

    def test_proxyRoutes(self):
        """
        A proxy lists each server attached to it with its services, reached through itself.
        """
        clock, factory = Clock(), FakeSocketFactory()
        proxy = Proxy(NodeConfig("siteA"), LISTEN, LISTEN, LISTEN, None, reactor=clock,
                      socketFactory=factory)
        proxy.startService()
        self.addCleanup(proxy.stopService)
        [router] = factory.ofKind("router")
        router.receive([b"r1"] + helloFrames("a1", "ai", role=protocol.SERVER, services=["echo"]))
        routes = metrics.routesOf(proxy)
        self.assertEqual(routes["servers"], {"a1": {"services": ["echo"], "via": "a1"}})
        self.assertEqual(routes["peers"], [["a1", "server"]])
