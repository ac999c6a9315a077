"""
The local path (issue 11), in network namespaces the test makes itself
(L{tests.integration.netns}): a client on a site's LAN finds server a1 with
DNS-SD and talks to it directly; when its direct path breaks (its LAN
interface goes down, a1 and its proxy untouched) its requests go by the
cloud, and back when the path returns, with no failure the application
sees, no presence flap at a1, and every notification once.  A client
outside never finds a1.
"""

import json
import re
import sys

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from zmqrelay.tools.launcher import ROOT, TWISTD_MAIN, NodeProcess

from tests.integration.helpers import Cluster, _track, childEnvironment
from tests.integration.netns import LAN, OUTSIDE_C, OUTSIDE_P, CannotCreate, SiteNetwork

HB = ["--heartbeat", "0.3", "--reconnect-max", "1"]


class LocalPathTests(TestCase):
    """
    Discovery and seamless direct/cloud switching, scenarios 1 to 4 of issue 11.
    """

    timeout = 120

    def setUp(self):
        self.net = SiteNetwork()
        try:
            self.net.create()
        except CannotCreate as e:
            raise SkipTest(f"cannot create network namespaces here: {e}")
        # Added first, so it runs last: after every process is stopped.
        self.addCleanup(self.net.remove)
        self.cluster = Cluster(self)
        from twisted.internet import reactor

        self.reactor = reactor

    def spawn(self, name, ns, argv):
        node = NodeProcess(self.reactor, name, self.cluster._echo)
        self.cluster.topology.nodes[name] = node
        _track(node)
        full = self.net.command(ns, argv)
        self.reactor.spawnProcess(node, "/usr/sbin/ip", full, env=childEnvironment(), path=ROOT)
        return node

    def twistd(self, name, ns, plugin, args):
        node = self.spawn(name, ns, [sys.executable, "-c", TWISTD_MAIN, "-n", "--pidfile=",
                                     "--logfile=-", plugin] + args)
        return node.waitFor(r"ready: role=", 20.0).addCallback(lambda _: node)

    def lanClient(self, name, ns, args):
        return self.spawn(name, ns, [sys.executable, "-m", "tests.integration.lanclient",
                                     "--id", name] + HB + args)

    @defer.inlineCallbacks
    def result(self, node):
        """
        Ask a lanclient to end, and read its report.
        """
        waiting = node.waitFor(r"^RESULT (.*)$", 20.0, fromNow=True)
        node.signal(15)
        match = yield waiting
        return json.loads(match.group(1))

    def checkOutcomes(self, result):
        """
        Every request sent got exactly one outcome, and it was its reply.
        """
        outcomes = result["outcomes"]
        self.assertGreater(result["sent"], 20)
        bad = {n: o for n, o in outcomes.items() if o != ["ok"]}
        self.assertEqual(bad, {})
        self.assertEqual(sorted(map(int, outcomes)), list(range(1, result["sent"] + 1)))

    @defer.inlineCallbacks
    def test_discoverSwitchAndBack(self):
        """
        A LAN client finds a1 and goes direct (1); with its direct path
        broken it goes by the cloud (2) and back when it returns (3), every
        request answered once, a1 seeing it connected once, notifications
        once each and none lost; a client outside never finds a1 (4).
        """
        cloud = yield self.twistd("cloud", "o", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", "tcp://0.0.0.0:5555", "--pub", "tcp://0.0.0.0:5556",
            "--sub", "tcp://0.0.0.0:5557"] + HB)
        proxy, a1 = yield defer.gatherResults([
            self.twistd("proxyA", "p", "zmqrelay-proxy", [
                "--id", "proxyA", "--cloud", f"tcp://{OUTSIDE_P[1]}:5555",
                "--listen", "tcp://0.0.0.0:5565", "--pub", "tcp://0.0.0.0:5566",
                "--sub", "tcp://0.0.0.0:5567", "--discover", "--discover-interface", LAN["p"]] + HB),
            self.twistd("a1", "s", "zmqrelay-server", [
                "--id", "a1", "--proxy", f"tcp://{LAN['p']}:5565", "--listen", "tcp://0.0.0.0:5575",
                "--pub", "tcp://0.0.0.0:5576", "--tick", "0.1",
                "--discover", "--discover-interface", LAN["s"]] + HB),
        ])
        local = self.lanClient("c1", "c", [
            "--cloud", f"tcp://{OUTSIDE_C[1]}:5555", "--discover", "--discover-interface", LAN["c"],
            "--target", "a1", "--subscribe", "tick", "--timeout", "5", "--attempts", "5"])
        remote = self.lanClient("r1", "o", [
            "--cloud", "tcp://127.0.0.1:5555", "--discover", "--discover-interface", OUTSIDE_P[1],
            "--target", "a1", "--timeout", "5", "--attempts", "5"])

        # 1. Found by DNS-SD, used directly.
        yield local.waitFor(r"^FOUND server a1$", 20.0)
        yield local.waitFor(r"^PATH server a1$", 20.0)
        yield deferLater(self.reactor, 1.0, lambda: None)

        # 2. The direct path breaks; a1 and its proxy stay up.
        self.net.setLan("c", False)
        yield local.waitFor(r"^PATH cloud cloud$", 15.0, fromNow=True)
        yield deferLater(self.reactor, 2.0, lambda: None)

        # 3. Back: direct again.
        self.net.setLan("c", True)
        yield local.waitFor(r"^PATH server a1$", 20.0, fromNow=True)
        yield deferLater(self.reactor, 1.0, lambda: None)

        # What a1 logged while c1 ran (its goodbye at the end is no flap).
        a1Lines = list(a1.lines)
        localResult, remoteResult = yield defer.gatherResults([self.result(local), self.result(remote)])
        self.checkOutcomes(localResult)
        self.assertGreaterEqual(localResult["stats"].get("paths.switches", 0), 2)

        # Notifications: once each, none lost, no gap left.
        notes = localResult["notifications"]
        self.assertGreater(len(notes), 30)
        seen = {}
        for server, inc, topic, seq in notes:
            seen.setdefault((server, inc, topic), []).append(seq)
        for key, seqs in seen.items():
            self.assertEqual(len(seqs), len(set(seqs)), f"duplicates on {key}")
            self.assertEqual(sorted(seqs), list(range(min(seqs), max(seqs) + 1)), f"gap on {key}")
        self.assertEqual(localResult["lost"], [])

        # a1's presence view: c1 connected once, never disconnected.
        presence = [l for l in a1Lines if re.search(r"client c1 \(", l)]
        self.assertEqual(len([l for l in presence if " connected via " in l]), 1, presence)
        self.assertEqual([l for l in presence if "disconnected via" in l], [])

        # 4. Outside the LAN: nothing found, the cloud all along.
        self.checkOutcomes(remoteResult)
        self.assertNotIn("FOUND", "\n".join(remote.lines))
        self.assertEqual({l for l in remote.lines if l.startswith("PATH")}, {"PATH cloud cloud"})
        self.assertEqual(remoteResult["stats"].get("discovery.found", 0), 0)
        self.assertTrue(proxy.running and cloud.running and a1.running)
