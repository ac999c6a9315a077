"""
Protocol versions between releases: real C{twistd} nodes told to speak other
version sets with C{--protocol-versions}, against the current release.

This release speaks L{protocol.SUPPORTED_VERSIONS} (C{(1,)}).  A I{newer}
release is emulated as a superset (C{1,2}); one that dropped version 1, or
an I{older} one the current release no longer speaks, as a set with nothing
in common (C{2} or C{2,3}); version bytes run from 1 to 255, so "older than
1" can only be spelled that way.
"""

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from zmqrelay.core import errors, protocol
from zmqrelay.roles.client import Client
from zmqrelay.core.config import NodeConfig
from tests.integration.helpers import LOOPBACK, Cluster, RawPeer, poll, stats


def _sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class VersionTests(unittest.TestCase):
    """
    Nodes of different releases agree on the highest common version, or
    refuse each other clearly and without a tight reconnect loop.
    """

    timeout = 60

    def setUp(self):
        self.cluster = Cluster(self)

    def start(self, name, plugin, args, versions=None):
        args = ["--id", name, "--heartbeat", "0.5"] + list(args)
        if versions:
            args += ["--protocol-versions", versions, "--emulate-versions"]
        return self.cluster.start(name, plugin, args)

    def relay(self, name, plugin, upstream=None, versions=None, extra=()):
        args = ["--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK] + list(extra)
        if upstream is not None:
            args += ["--cloud", upstream.endpoints["control"]]
        return self.start(name, plugin, args, versions)

    def server(self, name, proxy, versions=None):
        args = ["--listen", LOOPBACK, "--pub", LOOPBACK, "--proxy", proxy.endpoints["control"]]
        return self.start(name, "zmqrelay-server", args, versions)

    @defer.inlineCallbacks
    def client(self, clientId, cloud, versions=None, wait=True, **kw):
        """
        An in-process client speaking C{versions}, attached to C{cloud}.
        """
        config = NodeConfig(
            clientId, versions=versions or protocol.SUPPORTED_VERSIONS,
            requestTimeout=2.0, attempts=1, **kw
        )
        client = Client(config, cloud=cloud.endpoints["control"], reactor=reactor)
        client.startService()
        self.addCleanup(client.stopService)
        if wait:
            yield client.whenConnected(10.0)
        return client

    @defer.inlineCallbacks
    def test_newerNodesAgreeOnCurrentVersion(self):
        """
        A newer proxy and client (speaking 1 and 2) with a current cloud and
        server: every WELCOME says version 1, each side logs it, and
        requests go through the whole chain.
        """
        self.assertEqual(protocol.SUPPORTED_VERSIONS, (1,))
        cloud = yield self.relay("cloud", "zmqrelay-cloud")
        proxy = yield self.relay("proxy", "zmqrelay-proxy", cloud, versions="1,2")
        yield self.server("s1", proxy)
        yield proxy.waitFor(r"cloud: connected to cloud cloud \(protocol v1\)")
        yield self.cluster["s1"].waitFor(r"proxy: connected to proxy proxy \(protocol v1\)")
        client = yield self.client("newer-client", cloud, versions=(1, 2))
        [link] = client.links
        self.assertEqual(link.version, 1)
        self.assertEqual(link.welcome["version"], 1)
        self.assertEqual(link.welcome["versions"], [1])
        reply = yield poll(
            lambda: client.request("s1", b"hello-v1").addErrback(lambda f: None),
            15.0, 0.1, "a request through a newer proxy",
        )
        self.assertEqual(reply, b"hello-v1")

    @defer.inlineCallbacks
    def test_highestCommonVersionPicked(self):
        """
        A newer cloud (1, 2) picks 2 with a newer client and proxy and 1 with
        a current client and server; traffic crosses the mixed chain.
        """
        cloud = yield self.relay("cloud", "zmqrelay-cloud", versions="1,2")
        proxy = yield self.relay("proxy", "zmqrelay-proxy", cloud, versions="1,2")
        yield self.server("s1", proxy)
        yield proxy.waitFor(r"connected to cloud cloud \(protocol v2\)")
        yield self.cluster["s1"].waitFor(r"connected to proxy proxy \(protocol v1\)")
        newer = yield self.client("newer", cloud, versions=(1, 2))
        current = yield self.client("current", cloud)
        self.assertEqual(newer.links[0].welcome["version"], 2)
        self.assertEqual(newer.links[0].welcome["versions"], [1, 2])
        self.assertEqual(current.links[0].welcome["version"], 1)
        for client in (newer, current):
            reply = yield poll(
                lambda: client.request("s1", client.nodeId.encode()).addErrback(lambda f: None),
                15.0, 0.1, f"{client.nodeId} reaching s1",
            )
            self.assertEqual(reply, client.nodeId.encode())

    @defer.inlineCallbacks
    def test_noCommonVersionRejectedWithoutTightLoop(self):
        """
        A proxy speaking only 2 is refused by a current cloud: REJECT names
        both sides' versions, both logs say so, and the proxy tries again
        once per --reject-delay, not in a loop.
        """
        cloud = yield self.relay("cloud", "zmqrelay-cloud")
        proxy = yield self.relay(
            "proxy", "zmqrelay-proxy", cloud, versions="2",
            extra=["--reject-delay", "1", "--reconnect-max", "1"],
        )
        cloudLine = yield cloud.waitFor(r"refused hello from \S+: version: (.*)$")
        self.assertIn("you speak [2], we speak [1]", cloudLine.group(1))
        proxyLine = yield proxy.waitFor(r"cloud: refused by upstream: version: .*$")
        self.assertIn("(it speaks [1], we speak [2])", proxyLine.group(0))
        self.assertIn("next try in 1.0s", proxyLine.group(0))

        observer = yield self.client("observer", cloud)
        before = (yield stats(observer))["front.rejected"]
        refusals = len([l for l in proxy.lines if "refused by upstream" in l])
        yield _sleep(4.0)
        after = (yield stats(observer))["front.rejected"]
        refusalsAfter = len([l for l in proxy.lines if "refused by upstream" in l])
        # One hello a second: about four in four seconds, never a flood.
        self.assertGreaterEqual(after - before, 2)
        self.assertLessEqual(after - before, 6)
        # Each refusal the cloud counted, the proxy logged (give or take the
        # one in flight while we read the counter).
        self.assertLessEqual(abs((refusalsAfter - refusals) - (after - before)), 1)
        self.assertTrue(proxy.running)
        self.assertFalse([l for l in proxy.lines if "connected to cloud" in l])

    @defer.inlineCallbacks
    def test_currentNodeRefusedByRelease(self):
        """
        A current client against a cloud that dropped version 1 (speaks 2
        and 3) fails with VersionMismatch naming the cloud's versions, and
        says hello at most once per reject delay.
        """
        cloud = yield self.relay("cloud", "zmqrelay-cloud", versions="2,3")
        client = yield self.client("current", cloud, wait=False, rejectDelay=1.0, reconnectMax=1.0)
        [link] = client.links
        yield poll(lambda: link.lastError is not None, 10.0, 0.05, "a REJECT")
        self.assertIsInstance(link.lastError, errors.VersionMismatch)
        self.assertIn("we speak [2, 3]", link.lastError.message)
        line = yield cloud.waitFor(r"refused hello from \S+: version: .*$")
        self.assertIn("you speak [1], we speak [2, 3]", line.group(0))
        connects = link.counters["connects"]
        yield _sleep(3.0)
        self.assertLessEqual(link.counters["connects"] - connects, 4)
        self.assertGreaterEqual(link.counters["rejects"], 2)
        # A request has no path, and says why.
        error = yield self.assertFailure(client.request("anything", b"x"), errors.VersionMismatch)
        self.assertIn("we speak [2, 3]", error.message)

    @defer.inlineCallbacks
    def test_rawPeerVersionsOutOfRange(self):
        """
        A raw peer whose hello lists versions outside 1..255, or none, gets a
        REJECT listing what the cloud speaks; the cloud keeps serving.
        """
        cloud = yield self.relay("cloud", "zmqrelay-cloud")
        for versions in ([0], [], [256, 1000], "1"):
            peer = RawPeer(cloud.endpoints["control"], self)
            peer.send(protocol.HELLO, {
                "id": "old", "role": "client", "inc": "i", "versions": versions,
                "hb": 1000, "liveness": 3,
            })
            reject = yield peer.receive(lambda m: m.type == protocol.REJECT)
            self.assertEqual(reject.header["versions"], [1])
            self.assertEqual(reject.header["code"], protocol.E_BAD_MESSAGE)
        client = yield self.client("after", cloud)
        pong = yield client.request("", b"", sys="ping")
        self.assertEqual(pong, b"pong")
