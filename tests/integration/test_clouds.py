"""
Several clouds that form one (issue 10), with real processes: 2 and 3
clouds, a proxy dialling each, a server, and in-process clients that hold
every cloud's endpoint.  One cloud is SIGKILLed (then restarted) or
SIGSTOPped past the liveness window (then SIGCONTed) under steady traffic:

  - no request fails as the application sees it, and no handler runs twice;
  - notifications keep arriving, each once, with no gap left unreplayed;
  - directed messages (server.send) keep arriving;
  - the server never reports those clients disconnected;
  - a restarted cloud answers C{presence} for every client.
"""

import os
import signal
from collections import Counter

import msgpack
from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from zmqrelay.core.config import NodeConfig
from zmqrelay.edge.security import CurveConfig
from zmqrelay.roles.client import Client
from tests.integration.faulthelpers import (
    FAST, RUNLOG_ENV, TICK_ENV, WINDOW, Driver, FaultTopology, loopback, notificationProblems,
    outcomeProblems, repeatedRuns, sleep, until,
)
from tests.integration.helpers import Cluster, _track, reachable
from tests.integration.test_curve import CurveTestCase

LOOPBACK = "tcp://127.0.0.1:*"

log = Logger()


class _Clouds:
    """
    C{n} clouds on fixed endpoints (so one restarts where it was), each
    peering with the others; proxy C{pA} dialling every cloud; server C{s1}
    behind it running the run-logging app.
    """

    def __init__(self, testCase, reactor, n):
        self.testCase = testCase
        self.reactor = reactor
        self.workdir = os.path.abspath(testCase.mktemp())
        os.makedirs(self.workdir)
        self.topology = FaultTopology(
            reactor, {RUNLOG_ENV: self.workdir, TICK_ENV: "0.05"}, echo=self._echo
        )
        self.names = [f"cloud{i}" for i in range(n)]
        self.endpoints = {name: (loopback(), loopback(), loopback()) for name in self.names}
        self.clients = []

    def _echo(self, node, line):
        # Node output goes to trial's log (_trial_temp/test.log).
        log.info("{node}| {line}", node=node.name, line=line)

    def control(self, name):
        return self.endpoints[name][0]

    def cloudArgs(self, name):
        control, pub, sub = self.endpoints[name]
        args = ["--id", name, "--listen", control, "--pub", pub, "--sub", sub] + FAST
        for other in self.names:
            if other != name:
                args += ["--peer", self.control(other)]
        return args

    def startCloud(self, name):
        d = self.topology.start(name, "zmqrelay-cloud", self.cloudArgs(name))
        _track(self.topology.nodes[name])
        return d

    async def start(self):
        await defer.gatherResults([self.startCloud(name) for name in self.names])
        args = ["--id", "pA", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK] + FAST
        for name in self.names:
            args += ["--cloud", self.control(name)]
        proxy = await self.topology.start("pA", "zmqrelay-proxy", args)
        _track(proxy)
        server = await self.topology.start("s1", "zmqrelay-server", [
            "--id", "s1", "--listen", LOOPBACK, "--pub", LOOPBACK,
            "--proxy", proxy.endpoints["control"], "--service", "echo",
            "--app", "tests.integration.faulthelpers.runLogApp",
        ] + FAST)
        _track(server)

    async def client(self, clientId, cloudLinks=2, timeout=4.0, clouds=None):
        client = Client(
            NodeConfig(clientId, heartbeat=0.2, liveness=3, reconnectMax=1.0,
                       requestTimeout=timeout, attempts=4),
            cloud=[self.control(name) for name in clouds or self.names],
            reactor=self.reactor, cloudLinks=cloudLinks,
        )
        client.messages = []
        client.messageHandler = lambda sender, payload: client.messages.append(
            (self.reactor.seconds(), payload))
        client.startService()
        self.clients.append(client)
        await client.whenConnected(10.0)
        return client

    async def shutdown(self):
        for client in self.clients:
            await client.stopService()
        for node in self.topology.nodes.values():
            if node.running:
                node.signal(signal.SIGCONT)
        await self.topology.stopAll()

    def serverDisconnects(self, clientIds):
        """
        @return: the server's log lines saying one of C{clientIds} disconnected.
        """
        node = self.topology.nodes["s1"]
        return [
            line for line in node.lines
            if "disconnected via" in line and any(f"client {c} " in line for c in clientIds)
        ]


class _Messages:
    """
    Asks s1 every C{every} seconds to send the client a directed message.
    """

    def __init__(self, reactor, client, every=0.2):
        from twisted.internet.task import LoopingCall

        self.client = client
        self.failures = []
        self.n = 0
        self.loop = LoopingCall(self._ask)
        self.loop.clock = reactor
        self.loop.start(every, now=True)

    def _ask(self):
        self.n += 1
        d = self.client.request("s1", b"send:m%d" % (self.n,), 4.0, 4)
        d.addErrback(lambda f: self.failures.append(f.value))

    def stop(self):
        if self.loop.running:
            self.loop.stop()


class CloudFailoverTests(TestCase):
    """
    Clients holding every cloud's endpoint see nothing of one cloud's death.
    """

    timeout = 90

    def reactor(self):
        from twisted.internet import reactor

        return reactor

    async def failover(self, n, fault):
        reactor = self.reactor()
        rig = _Clouds(self, reactor, n)
        self.addCleanup(lambda: defer.ensureDeferred(rig.shutdown()))
        await rig.start()
        both = await rig.client("two", cloudLinks=2)
        one = await rig.client("one", cloudLinks=1)
        clientIds = ["two", "one"]
        drivers = [Driver(reactor, c, "echo", b"tick.", every=0.05, timeout=6.0, attempts=6)
                   for c in (both, one)]
        for d in drivers:
            d.start()
            self.addCleanup(d.stop)
        messages = _Messages(reactor, both)
        self.addCleanup(messages.stop)
        # Steady state: everything flows through every client.
        await until(reactor, lambda: all(d.firstSuccessAfter(0) for d in drivers), 10, "first replies")
        await until(reactor, lambda: all(d.notifications for d in drivers), 10, "first notifications")
        await sleep(reactor, 1.0)
        # The cloud the cloudLinks=1 client is on is the one that goes.
        victim = next(l.nodeId for l in one.links if l.alive)
        node = rig.topology.nodes[victim]
        faultAt = reactor.seconds()
        if fault == "kill":
            await rig.topology.kill(victim)
            await sleep(reactor, 2 * WINDOW + 1.0)
        elif fault == "term":
            # A clean stop: it drains (HB drain), its clients move at once.
            await rig.topology.stop(victim)
            await sleep(reactor, 1.0)
        else:
            node.signal(signal.SIGSTOP)
            await sleep(reactor, 2 * WINDOW + 1.0)
            node.signal(signal.SIGCONT)
        # Traffic goes on, on the other clouds.
        await until(reactor, lambda: all(d.firstSuccessAfter(reactor.seconds() - 0.5) for d in drivers),
                    10, "replies after the fault")
        await until(reactor, lambda: all(d.lastNotificationAfter(faultAt + WINDOW) for d in drivers),
                    10, "notifications after the fault")
        await until(reactor, lambda: any(t > faultAt + WINDOW for t, _ in both.messages),
                    10, "directed messages after the fault")
        if fault in ("kill", "term"):
            # It comes back...
            await rig.startCloud(victim)
        # ... (or wakes up) and its first answer to a presence query already
        # lists every client: it waits for its peers' snapshots.
        asker = await rig.client("asker", cloudLinks=1, clouds=[victim])
        answer = await asker.request(victim, b"", sys="presence", timeout=10.0)
        seen = msgpack.unpackb(answer, raw=False)
        missing = [c for c in clientIds if c not in seen]
        self.assertEqual(missing, [], f"{victim} answered presence without {missing}: {seen}")
        await sleep(reactor, 1.0)
        for d in drivers:
            d.stop()
        messages.stop()
        await until(reactor, lambda: not any(d.pending() for d in drivers), 30, "outstanding requests")
        problems = []
        for d in drivers:
            problems += outcomeProblems(d, slack=1.0)
            problems += [f"{d.client.nodeId}: request {r.n} failed: {r.error!r}"
                         for r in d.records if r.error is not None][:10]
            problems += notificationProblems(d)
        problems += [f"handler ran {k} {v} times" for k, v in
                     repeatedRuns(os.path.join(rig.workdir, "runs-s1.log")).items()]
        problems += [f"server saw: {line}" for line in rig.serverDisconnects(clientIds)]
        problems += [f"directed message failed: {e!r}" for e in messages.failures]
        # Sent again through another node when one died with it, a message
        # still reaches the application once (its mid, PROTOCOL.md 11).
        problems += [f"directed message {p!r} handed on {c} times" for p, c in
                     Counter(payload for _, payload in both.messages).items() if c > 1]
        if problems:
            self.fail(f"{n} clouds, {fault}: {len(problems)} problems:\n  " + "\n  ".join(problems[:40]))
        self.assertGreater(len(both.messages), 5)

    async def test_twoCloudsKill(self):
        """
        2 clouds, one SIGKILLed then restarted: no failure, no double run, no gap, no disconnect.
        """
        await self.failover(2, "kill")

    async def test_twoCloudsStop(self):
        """
        2 clouds, one SIGSTOPped past liveness then SIGCONTed: the same.
        """
        await self.failover(2, "stop")

    async def test_twoCloudsDrain(self):
        """
        2 clouds, one stopped cleanly (it drains) then restarted: the same.
        """
        await self.failover(2, "term")

    async def test_threeCloudsStop(self):
        """
        3 clouds, one SIGSTOPped past liveness then SIGCONTed: the same.
        """
        await self.failover(3, "stop")

    async def test_threeCloudsKill(self):
        """
        3 clouds, one SIGKILLed then restarted: the same.
        """
        await self.failover(3, "kill")


class CurveCloudsTests(CurveTestCase):
    """
    Two cloud nodes that peer over CURVE, a proxy and a client holding both.
    """

    async def test_peeringOverCurve(self):
        """
        Peers dial each other with CURVE keys of role cloud; presence and requests cross as without CURVE.
        """
        from twisted.internet import reactor

        keys = self.makeKeys([
            ("cloud1", "cloud"), ("cloud2", "cloud"), ("proxyA", "proxy"), ("alice", "client"),
            ("watcher", "client"),
        ])
        self.keys = keys
        authorized = self.authorize("cloud1", "cloud2", "proxyA", "alice", "watcher")
        cluster = Cluster(self)
        one = await cluster.start("cloud1", "zmqrelay-cloud", [
            "--id", "cloud1", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--curve-secret", keys["cloud1"][1], "--curve-authorized", authorized,
        ] + FAST)
        first = one.endpoints["control"]
        two = await cluster.start("cloud2", "zmqrelay-cloud", [
            "--id", "cloud2", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--peer", first, "--curve-peer-key", f"{first}={keys['cloud1'][0]}",
            "--curve-secret", keys["cloud2"][1], "--curve-authorized", authorized,
        ] + FAST)
        second = two.endpoints["control"]
        proxy = await cluster.start("proxyA", "zmqrelay-proxy", [
            "--id", "proxyA", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", first, "--cloud", second,
            "--curve-secret", keys["proxyA"][1], "--curve-server-key", keys["cloud1"][0],
            "--curve-peer-key", f"{second}={keys['cloud2'][0]}",
        ] + FAST)
        await cluster.server("a1", proxy, ["echo"])
        curve = CurveConfig.fromFiles(keys["alice"][1], {first: keys["cloud1"][0], second: keys["cloud2"][0]})
        alice = Client(NodeConfig("alice", curve=curve, requestTimeout=3.0, attempts=3),
                       cloud=[second, first], reactor=reactor)
        alice.startService()
        self.addCleanup(alice.stopService)
        await alice.whenConnected(10.0)
        await reachable(alice, "a1")
        self.assertEqual(await alice.request("echo", b"over curve"), b"over curve")

        # alice is on cloud2 (first in her list); cloud1 knows her through
        # the CURVE peering: ask it over a client of its own.
        watcherCurve = CurveConfig.fromFiles(keys["watcher"][1], {first: keys["cloud1"][0]})
        watcher = Client(NodeConfig("watcher", curve=watcherCurve, requestTimeout=3.0, attempts=3),
                         cloud=[first], reactor=reactor)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        await watcher.whenConnected(10.0)

        async def aliceAtCloud1():
            answer = await watcher.request("cloud1", b"", sys="presence")
            return msgpack.unpackb(answer, raw=False).get("alice", {}).get("paths") == ["cloud@cloud2"]

        await until(reactor, lambda: defer.ensureDeferred(aliceAtCloud1()), 10, "alice known at cloud1")


class DemoTests(TestCase):
    """
    C{make demo}, the README's first command, shows what issue 10 promises.
    """

    timeout = 90

    async def test_demo(self):
        """
        The demo kills one of its two cloud nodes halfway: no request fails and the servers see no client leave.
        """
        import sys

        from twisted.internet import reactor

        from tests.integration.helpers import _Output, childEnvironment
        from zmqrelay.tools.launcher import ROOT

        proto = _Output()
        argv = [sys.executable, "-m", "zmqrelay.tools.demo", "--seconds", "8"]
        transport = reactor.spawnProcess(proto, sys.executable, argv, env=childEnvironment(), path=ROOT)

        def interrupt(signal):
            # SIGINT first: the demo then stops its nodes itself.
            if proto.result is None and transport.pid is not None:
                try:
                    transport.signalProcess(signal)
                except Exception:
                    pass

        interrupting = reactor.callLater(60, interrupt, "INT")
        killing = reactor.callLater(75, interrupt, "KILL")

        def cleanup():
            for call in (interrupting, killing):
                if call.active():
                    call.cancel()
            interrupt("INT")
            return proto.whenEnded()

        self.addCleanup(cleanup)
        code, out, err = await proto.ended
        text = out.decode() if isinstance(out, bytes) else out
        self.assertEqual(code, 0, text[-2000:])
        self.assertIn("== killing cloud1", text)
        self.assertIn("far: ", text)
        summary = [line for line in text.splitlines() if line.startswith("== after the kill")]
        self.assertEqual(len(summary), 3, text[-2000:])
        for line in summary[:2]:
            self.assertRegex(line, r": [1-9]\d* replies, 0 failed requests$")
        self.assertTrue(summary[2].endswith("presence unchanged: yes)"), summary[2])
        self.assertIn("== done", text)
