"""
Prometheus metrics and health checks of live nodes: C{--metrics} on every
node of a real topology, scraped over HTTP while traffic flows.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, readBody

from tests.integration.helpers import LOOPBACK, Cluster, poll, reachable

METRICS = "tcp:0:interface=127.0.0.1"


@defer.inlineCallbacks
def fetch(url):
    """
    @return: a L{defer.Deferred} firing with (status, body text).
    """
    response = yield Agent(reactor).request(b"GET", url.encode())
    body = yield readBody(response)
    return response.code, body.decode("utf-8")


@defer.inlineCallbacks
def scrape(base):
    """
    @return: C{{(name, labels): value}} of a node's /metrics.
    """
    code, text = yield fetch(base + "/metrics")
    assert code == 200, (code, text)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class MetricsTests(unittest.TestCase):
    """
    Figures move at every hop, refusals are counted by reason, and
    /healthz follows a proxy's cloud.
    """

    timeout = 120

    @defer.inlineCallbacks
    def node(self, name, plugin, args):
        node = yield self.cluster.start(name, plugin, ["--id", name, "--metrics", METRICS] + args)
        found = yield node.waitFor(r"metrics: (http://127\.0\.0\.1:\d+)/metrics")
        node.metricsBase = found.group(1)
        return node

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = Cluster(self)
        relay = ["--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK, "--heartbeat", "0.2"]
        self.cloud = yield self.node("cloud", "zmqrelay-cloud", relay)
        self.proxy = yield self.node("proxy", "zmqrelay-proxy", relay + [
            "--cloud", self.cloud.endpoints["control"], "--rate", "50", "--burst", "10",
        ])
        self.server = yield self.node("s1", "zmqrelay-server", [
            "--listen", LOOPBACK, "--pub", LOOPBACK, "--proxy", self.proxy.endpoints["control"],
            "--service", "echo", "--heartbeat", "0.2",
        ])

    @defer.inlineCallbacks
    def test_requestsCountedAtEveryHop(self):
        """
        Requests through cloud, proxy and server show as received, forwarded
        and answered at each hop, with the server's handler histogram.
        """
        before = yield scrape(self.server.metricsBase)
        self.assertEqual(before[("zmqrelay_requests_answered_total", ())], 0)
        client = yield self.cluster.client("user", cloud=self.cloud)
        yield reachable(client, "s1")
        for i in range(20):
            reply = yield client.request("echo", b"x%d" % i)
            self.assertEqual(reply, b"x%d" % i)
        cloud = yield scrape(self.cloud.metricsBase)
        proxy = yield scrape(self.proxy.metricsBase)
        server = yield scrape(self.server.metricsBase)
        for name, samples in (("cloud", cloud), ("proxy", proxy)):
            self.assertGreaterEqual(samples[("zmqrelay_requests_received_total", ())], 20,
                                    (name, {k: v for k, v in samples.items() if "request" in k[0] or "events" in k[0]}))
            self.assertGreaterEqual(samples[("zmqrelay_requests_forwarded_total", ())], 20)
            self.assertGreaterEqual(samples[("zmqrelay_requests_answered_total", ())], 20)
        self.assertGreaterEqual(server[("zmqrelay_requests_received_total", ())], 20)
        self.assertGreaterEqual(server[("zmqrelay_requests_answered_total", ())], 20)
        self.assertGreaterEqual(server[("zmqrelay_handler_seconds_count", (("outcome", "all"),))], 20)
        self.assertEqual(cloud[("zmqrelay_sessions", (("role", "client"),))], 1)
        self.assertEqual(cloud[("zmqrelay_sessions", (("role", "proxy"),))], 1)
        self.assertEqual(cloud[("zmqrelay_routes_servers", ())], 1)
        self.assertEqual(proxy[("zmqrelay_upstream_up", ())], 1)
        # The stats sys request gives the same figures.
        from tests.integration.helpers import stats
        figures = yield stats(client, "cloud")
        self.assertGreaterEqual(figures["requests.received"], 20)
        self.assertIn("refusals.rate", figures)

    @defer.inlineCallbacks
    def test_floodCountedByReason(self):
        """
        A LAN client flooding the proxy beyond --rate is refused, and the
        proxy counts it under reason="rate".
        """
        client = yield self.cluster.client("flooder", proxy=self.proxy, attempts=1)
        yield reachable(client, "s1")
        yield defer.DeferredList(
            [client.request("echo", b"f", timeout=2.0) for _ in range(200)], consumeErrors=True
        )
        proxy = yield scrape(self.proxy.metricsBase)
        rate = proxy[("zmqrelay_refusals_total", (("reason", "rate"),))]
        self.assertGreater(rate, 0)
        # Refused messages are answered over-limit (a refused hello gets a
        # REJECT instead; those ignored in a cooldown, nothing).
        self.assertGreater(proxy[("zmqrelay_errors_sent_total", (("code", "over-limit"),))], 0)
        self.assertEqual(proxy[("zmqrelay_refusals_total", (("reason", "size"),))], 0)

    @defer.inlineCallbacks
    def test_healthFollowsTheCloud(self):
        """
        A proxy's /healthz is 200 while its cloud lives, 503 with a reason
        once it is killed, and 200 again when it returns on its endpoints.
        """
        code, text = yield fetch(self.proxy.metricsBase + "/healthz")
        self.assertEqual((code, text), (200, "ok\n"))
        code, _ = yield fetch(self.cloud.metricsBase + "/healthz")
        self.assertEqual(code, 200)
        endpoints = dict(self.cloud.endpoints)
        yield self.cluster.topology.kill("cloud")

        @defer.inlineCallbacks
        def status(expected):
            code, text = yield fetch(self.proxy.metricsBase + "/healthz")
            self.last = (code, text)
            return code == expected

        yield poll(lambda: status(503), 15.0, 0.1, "healthz 503")
        self.assertIn("not attached upstream", self.last[1])
        self.assertEqual(len(self.last[1].splitlines()), 1)
        code, _ = yield fetch(self.proxy.metricsBase + "/readyz")
        self.assertEqual(code, 503)
        yield self.cluster.start("cloud2", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", endpoints["control"], "--pub", endpoints["pub"],
            "--sub", endpoints["sub"], "--heartbeat", "0.2",
        ])
        yield poll(lambda: status(200), 20.0, 0.1, "healthz 200 again")
        self.assertEqual(self.last, (200, "ok\n"))
