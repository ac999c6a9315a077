"""
Integration tests of the foundation: real C{twistd -n} cloud, proxies and
servers on loopback, talked to by in-process clients and raw ZeroMQ peers.

Topology of L{DistributedTests} (see L{helpers.startDistributed})::

    cloud -- proxyA -- a1 (echo), a2 (echo)
          \\- proxyB -- b1 (ticks on tick.b1)

L{LocalTests} runs a proxy with no cloud at all.
"""

import msgpack
from twisted.internet import defer
from twisted.trial import unittest

from zmqrelay.core import errors, protocol
from tests.integration.helpers import (
    Cluster,
    Collector,
    RawPeer,
    cloudClient,
    poll,
    publishUntilSeen,
    reachable,
    startDistributed,
    stats,
)


def whoami(client, serverId, expectedPath):
    """
    @return: the whoami line C{serverId} should answer C{client} with.
    """
    return f"{client.nodeId} {client.incarnation} {expectedPath} {serverId}".encode()


class DistributedTests(unittest.TestCase):
    """
    A client attached only to the cloud reaches servers on every site.
    """

    timeout = 60

    def setUp(self):
        self.cluster = Cluster(self)
        return startDistributed(self.cluster)

    @defer.inlineCallbacks
    def test_cloudClientReachesEveryServerById(self):
        """A cloud-only client reaches a1, a2 and b1 by id; each sees path 'cloud' and the client's own id."""
        client = yield cloudClient(self.cluster, "alice")
        for serverId in ("a1", "a2", "b1"):
            reply = yield client.request(serverId, b"whoami")
            self.assertEqual(reply, whoami(client, serverId, "cloud"))

    @defer.inlineCallbacks
    def test_serviceIsBalancedAcrossItsServers(self):
        """Requests for service 'echo' are spread round-robin over a1 and a2, never b1."""
        client = yield cloudClient(self.cluster, "alice")
        served = []
        for _ in range(20):
            reply = yield client.request("echo", b"whoami")
            served.append(reply.decode().split()[-1])
        self.assertEqual(set(served), {"a1", "a2"})
        self.assertLessEqual(abs(served.count("a1") - served.count("a2")), 1, served)
        # Plain payloads are echoed by whichever server gets them.
        reply = yield client.request("echo", b"ping me")
        self.assertEqual(reply, b"ping me")

    @defer.inlineCallbacks
    def test_unknownTargetFailsFastWithNoRoute(self):
        """An unknown target fails with NoRoute at once on the cloud and proxy paths, not after the timeout."""
        viaCloud = yield cloudClient(self.cluster, "alice", timeout=10.0)
        viaProxy = yield self.cluster.client("bob", proxy=self.cluster["proxyA"], timeout=10.0)
        yield reachable(viaProxy, "a1")
        for client, target in [(viaCloud, "nobody"), (viaProxy, "nobody"), (viaProxy, "b1")]:
            started = self.cluster.reactor.seconds()
            failure = yield self.assertFailure(client.request(target, b"whoami"), errors.NoRoute)
            elapsed = self.cluster.reactor.seconds() - started
            # Generous for a loaded machine, yet far below the 10 s timeout.
            self.assertLess(elapsed, 3.0, f"{client.nodeId} -> {target}: {failure}")

    @defer.inlineCallbacks
    def test_handlerFailureIsHandlerError(self):
        """A handler that raises gives the client a HandlerError naming the exception."""
        client = yield cloudClient(self.cluster, "alice")
        failure = yield self.assertFailure(client.request("a1", b"fail"), errors.HandlerError)
        self.assertIn("asked to fail", failure.message)

    @defer.inlineCallbacks
    def test_slowHandlerIsRequestTimeout(self):
        """A handler slower than the timeout (one attempt) gives RequestTimeout, near the timeout."""
        client = yield cloudClient(self.cluster, "alice")
        started = self.cluster.reactor.seconds()
        yield self.assertFailure(
            client.request("b1", b"sleep:5", timeout=1.0, attempts=1), errors.RequestTimeout
        )
        elapsed = self.cluster.reactor.seconds() - started
        self.assertTrue(0.9 <= elapsed < 3.0, elapsed)
        # The hops and the server are still fine afterwards.
        reply = yield client.request("b1", b"sleep:0.1", timeout=2.0)
        self.assertEqual(reply, b"sleep:0.1")

    @defer.inlineCallbacks
    def test_failuresInFlightTogetherAllFire(self):
        """Concurrent requests that fail differently each fire with their own typed failure."""
        client = yield cloudClient(self.cluster, "alice")
        results = yield defer.DeferredList(
            [
                client.request("nobody", b"whoami"),
                client.request("a1", b"fail"),
                client.request("a2", b"sleep:3", timeout=1.0, attempts=1),
                client.request("b1", b"fine"),
            ],
            consumeErrors=True,
        )
        self.assertFalse(results[0][0])
        self.assertTrue(results[0][1].check(errors.NoRoute))
        self.assertTrue(results[1][1].check(errors.HandlerError))
        self.assertTrue(results[2][1].check(errors.RequestTimeout))
        self.assertEqual(results[3], (True, b"fine"))

    @defer.inlineCallbacks
    def _spoof(self, endpoint, path):
        """
        Say hello as 'spoofer', then send a REQ claiming to be someone else.

        @return: the whoami reply.
        """
        raw = RawPeer(endpoint, self)
        yield raw.hello("spoofer", "raw-inc")
        raw.send(
            protocol.REQUEST,
            {
                "id": 7, "to": "a1", "ttl": 3000, "client": "someone-else",
                "cinc": "forged", "creq": 99, "path": "forged-path", "server": "b1",
            },
            b"whoami",
        )
        answer = yield raw.receive(
            lambda m: m.type in (protocol.REPLY, protocol.ERROR) and m.header.get("id") == 7
        )
        self.assertEqual(answer.type, protocol.REPLY, answer.header)
        self.assertEqual(answer.payload, f"spoofer raw-inc {path} a1".encode())

    @defer.inlineCallbacks
    def test_cloudStampsTheRealClientId(self):
        """A client claiming another id in its REQ header still shows its real id via the cloud."""
        yield cloudClient(self.cluster, "alice", servers=["a1"])
        yield self._spoof(self.cluster["cloud"].endpoints["control"], "cloud")

    @defer.inlineCallbacks
    def test_proxyStampsTheRealClientId(self):
        """A client claiming another id in its REQ header still shows its real id via the proxy."""
        yield self._spoof(self.cluster["proxyA"].endpoints["control"], "proxy")

    @defer.inlineCallbacks
    def test_serverIgnoresClaimedIdOnDirectPath(self):
        """A directly attached client claiming another id still shows its session's id."""
        yield self._spoof(self.cluster["a1"].endpoints["control"], "direct")

    @defer.inlineCallbacks
    def _sendTo(self, client, serverId):
        received = []
        client.messageHandler = lambda sender, payload: received.append((sender, payload))
        text = f"hello {client.nodeId} from {serverId}".encode()
        reply = yield client.request(serverId, b"send:" + text)
        # The server replies 'sent' only after the client acknowledged the
        # message, and the client acknowledges after its handler ran.
        self.assertEqual(reply, b"sent")
        self.assertEqual(received, [(serverId, text)])

    @defer.inlineCallbacks
    def test_serverSendReachesDirectClient(self):
        """server.send reaches a client attached straight to the server."""
        client = yield self.cluster.client("dora", server=self.cluster["a1"])
        yield self._sendTo(client, "a1")

    @defer.inlineCallbacks
    def test_serverSendReachesProxyClient(self):
        """server.send reaches a client attached only to the site's proxy."""
        client = yield self.cluster.client("pat", proxy=self.cluster["proxyA"])
        yield reachable(client, "a2")
        yield self._sendTo(client, "a2")

    @defer.inlineCallbacks
    def test_serverSendReachesCloudClient(self):
        """server.send reaches a client attached only to the cloud, from either site."""
        client = yield cloudClient(self.cluster, "carl")
        yield self._sendTo(client, "a1")
        yield self._sendTo(client, "b1")

    @defer.inlineCallbacks
    def test_notificationsReachSubscribersOnEveryPath(self):
        """A publication reaches subscribers direct, via proxy and via cloud, once each, and no other prefix."""
        c = self.cluster
        publisher = yield cloudClient(c, "publisher", servers=["a1"])
        subscribers = {
            "direct": (yield c.client("sub-direct", server=c["a1"])),
            "proxy": (yield c.client("sub-proxy", proxy=c["proxyA"])),
            "cloud": (yield c.client("sub-cloud", cloud=c["cloud"])),
        }
        other = yield c.client("sub-other", cloud=c["cloud"])
        collectors = {}
        for path, client in subscribers.items():
            collectors[path] = Collector()
            client.subscribe(b"news.", collectors[path])
        otherCollector = Collector()
        other.subscribe(b"other.", otherCollector)
        # Subscriptions are in place (upstream, up to a1) once each got a probe.
        for path, collector in collectors.items():
            yield publishUntilSeen(publisher, "a1", b"news.a1", collector)
        yield publishUntilSeen(publisher, "a1", b"other.a1", otherCollector)

        yield publisher.request("a1", b"publish:news.a1:final")
        yield publisher.request("a1", b"publish:other.a1:marker")
        for path, collector in collectors.items():
            final = yield collector.waitFor(b"news.a1", b"final")
            self.assertEqual(final.serverId, "a1")
            self.assertEqual(collector.payloads(b"news.a1").count(b"final"), 1, path)
            self.assertEqual(collector.payloads(b"other.a1"), [], path)
        # One server and one path: 'marker' left a1 after 'final', so by now
        # 'final' would have reached the other-prefix subscriber too.
        yield otherCollector.waitFor(b"other.a1", b"marker")
        self.assertEqual(otherCollector.payloads(b"news.a1"), [])

    @defer.inlineCallbacks
    def test_subscriptionsAreFilteredAtTheSource(self):
        """What nobody subscribed to is published by a1 but never reaches proxyA or the cloud."""
        c = self.cluster
        client = yield cloudClient(c, "watcher", servers=["a1"])
        lan = yield c.client("lan", proxy=c["proxyA"])
        collector = Collector()
        client.subscribe(b"news.", collector)
        yield publishUntilSeen(client, "a1", b"news.a1", collector)

        before = {
            "a1": (yield stats(client, "a1")),
            "proxyA": (yield stats(lan)),
            "cloud": (yield stats(client)),
        }
        for n in range(5):
            yield client.request("a1", b"publish:quiet.a1:unwanted-%d" % (n,))
        yield client.request("a1", b"publish:news.a1:wanted")
        yield collector.waitFor(b"news.a1", b"wanted")
        after = {
            "a1": (yield stats(client, "a1")),
            "proxyA": (yield stats(lan)),
            "cloud": (yield stats(client)),
        }
        self.assertEqual(after["a1"]["published"] - before["a1"]["published"], 6)
        for relay in ("proxyA", "cloud"):
            self.assertEqual(
                after[relay]["notify.notifications"] - before[relay]["notify.notifications"],
                1, relay,
            )

    @defer.inlineCallbacks
    def test_unsubscribedTicksStayAtTheServer(self):
        """b1 ticks with no subscriber: it publishes, yet proxyB and the cloud relay nothing."""
        c = self.cluster
        client = yield cloudClient(c, "watcher", servers=["b1"])
        lan = yield c.client("lan", proxy=c["proxyB"])

        @defer.inlineCallbacks
        def ticked():
            counters = yield stats(client, "b1")
            return counters["published"] >= 3

        yield poll(ticked, 10.0, 0.05, "three ticks from b1")
        proxyB = yield stats(lan)
        cloud = yield stats(client)
        self.assertEqual(proxyB["notify.notifications"], 0)
        self.assertEqual(cloud["notify.notifications"], 0)

    @defer.inlineCallbacks
    def test_lateSubscriptionTravelsUpThroughCloudAndProxy(self):
        """A subscription made after start-up reaches b1 through cloud and proxyB: ticks start arriving in order."""
        client = yield cloudClient(self.cluster, "late", servers=["b1"])
        collector = Collector()
        client.subscribe(b"tick.", collector)

        def threeTicks():
            return len(collector.payloads(b"tick.b1")) >= 3

        yield poll(threeTicks, 10.0, 0.02, "three ticks via the cloud")
        ticks = [n for n in collector.received if n.topic == b"tick.b1"]
        self.assertEqual({n.serverId for n in ticks}, {"b1"})
        seqs = [n.seq for n in ticks]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
        self.assertEqual(collector.lost, [])


class LocalTests(unittest.TestCase):
    """
    A site works on its own: no cloud is running at all.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = Cluster(self)
        proxy = yield self.cluster.proxy("proxyA")
        yield self.cluster.server("a1", proxy, ["echo"])

    @defer.inlineCallbacks
    def test_directClientReachesServer(self):
        """A client attached straight to a1 is served with path 'direct'."""
        client = yield self.cluster.client("dora", server=self.cluster["a1"])
        reply = yield client.request("a1", b"whoami")
        self.assertEqual(reply, whoami(client, "a1", "direct"))
        reply = yield client.request("echo", b"whoami")
        self.assertEqual(reply, whoami(client, "a1", "direct"))

    @defer.inlineCallbacks
    def test_lanClientReachesServerThroughCloudlessProxy(self):
        """A client attached only to a proxy started without --cloud reaches a1 with path 'proxy'."""
        client = yield self.cluster.client("pat", proxy=self.cluster["proxyA"])
        yield reachable(client, "a1")
        reply = yield client.request("a1", b"whoami")
        self.assertEqual(reply, whoami(client, "a1", "proxy"))
        counters = yield stats(client)
        self.assertFalse([k for k in counters if k.startswith("cloud.")], counters)
        yield self.assertFailure(client.request("nobody", b"x"), errors.NoRoute)


class CloudPresenceTests(unittest.TestCase):
    """
    The cloud knows every client, wherever it is attached.
    """

    timeout = 60

    def setUp(self):
        self.cluster = Cluster(self)
        return startDistributed(self.cluster)

    @defer.inlineCallbacks
    def cloudView(self, asker):
        payload = yield asker.request("cloud", b"", sys="presence")
        return {cid: (p["inc"], tuple(p["paths"])) for cid, p in msgpack.unpackb(payload, raw=False).items()}

    @defer.inlineCallbacks
    def test_cloudSeesDirectAndLanClients(self):
        """
        A client attached only to server a1, and one attached only to proxy
        A, are in the cloud's presence (paths direct@a1 and proxy@proxyA),
        and leave it when they say goodbye.
        """
        asker = yield cloudClient(self.cluster, "asker")
        dora = yield self.cluster.client("dora", server=self.cluster["a1"])
        pat = yield self.cluster.client("pat", proxy=self.cluster["proxyA"])

        def seen(expected):
            d = self.cloudView(asker)
            return d.addCallback(lambda view: all(view.get(c) == e for c, e in expected.items()))

        yield poll(lambda: seen({
            "dora": (dora.incarnation, ("direct@a1",)),
            "pat": (pat.incarnation, ("proxy@proxyA",)),
            "asker": (asker.incarnation, ("cloud",)),
        }), 10.0, 0.1, "the cloud to see dora and pat")
        yield dora.stopService()
        yield pat.stopService()

        def gone():
            return self.cloudView(asker).addCallback(lambda v: "dora" not in v and "pat" not in v)

        yield poll(gone, 10.0, 0.1, "dora and pat to leave the cloud's presence")
