"""
Fault injection with real processes (see L{tests.integration.faulthelpers}).

Under steady request and notification traffic, each of cloud, proxy, server
and client is killed (SIGKILL) and restarted, frozen (SIGSTOP) for twice the
liveness window and continued, and stopped cleanly and restarted; and a hop
that drops and duplicates messages is put in front of the cloud.  After
every fault the tests check that:

  - every request issued got exactly one outcome: the right reply, or a
    typed error within its deadline;
  - no handler ran twice for one request id (across server restarts too);
  - every notification of a server incarnation arrived exactly once, live or
    recovered by replay, and no loss was reported;
  - the presence views of cloud, proxy and server converge to the truth, and
    each node's presence events alternate connected / disconnected;
  - requests and notifications flow again without anyone touching anything.

One topology per role: its three faults run one after the other, so each
fault also proves that the previous recovery left nothing behind.
"""

from twisted.trial.unittest import TestCase

from zmqrelay.core import errors

from tests.integration.faulthelpers import (
    DETECT_BOUND,
    FAULTS,
    FREEZE,
    HEARTBEAT,
    KILL,
    MEASURE_SLACK,
    STOP,
    FaultRig,
    MatrixRig,
    injectFault,
    runMatrixRole,
    restartAtOnce,
    sleep,
    together,
)


class _FaultTestCase(TestCase):
    """
    Starts a L{FaultRig} and checks its guarantees.
    """

    timeout = 60

    def reactor(self):
        from twisted.internet import reactor

        return reactor

    async def startRig(self, **kw):
        """
        @return: a running L{FaultRig}, shut down by the test's cleanup.
        """
        rig = FaultRig(self.reactor(), self.mktemp(), **kw)
        self.addCleanup(rig.shutdown)
        await rig.startAll()
        return rig

    def assertGuarantees(self, rig, after, final=False):
        """
        Fail with every broken guarantee, naming the fault.
        """
        problems = rig.problems(pendingOK=not final)
        if problems:
            self.fail(f"after {after}: {len(problems)} problems:\n  " + "\n  ".join(problems[:40]))

    def assertDetected(self, rig, result):
        """
        A node that said goodbye is known gone as soon as its process has
        exited (well inside one heartbeat); a killed or frozen one within
        interval x liveness + one interval (plus our polling).
        """
        if result.kind == STOP:
            self.assertLessEqual(result.detected - result.ended, HEARTBEAT, result)
        else:
            self.assertLessEqual(result.detected, DETECT_BOUND + MEASURE_SLACK, result)

    async def survive(self, role, check=None, down=0.0):
        """
        Run the three faults on C{role}, checking after each (and calling
        C{check(rig, result)}).  C{down}: see L{injectFault}.

        @return: the L{FaultRig} and the L{FaultResult}s.
        """
        rig = await self.startRig()
        results = []
        for kind in FAULTS:
            result = await injectFault(rig, role, kind, down)
            results.append(result)
            if check is not None:
                check(rig, result)
            self.assertGuarantees(rig, result)
        await rig.drain()
        self.assertGuarantees(rig, f"{role} faults", final=True)
        return rig, results


class RoleFaultTests(_FaultTestCase):
    """
    Each role, hit by each kind of fault.
    """

    async def test_cloud(self):
        """
        The cloud survives kill -9 + restart, SIGSTOP past liveness + SIGCONT
        and a clean stop + restart with every guarantee intact.
        """
        await self.survive("cloud")

    async def test_proxy(self):
        """
        The proxy survives kill -9 + restart, SIGSTOP past liveness + SIGCONT
        and a clean stop + restart with every guarantee intact.
        """
        await self.survive("proxy")

    async def test_server(self):
        """
        The server survives the three faults; once it is known gone (at once
        after kill -9 or a clean stop: its connection is gone; within the
        liveness window after SIGSTOP), a failFast request for it fails at
        once with no route, and the others wait for it within their budget.
        """

        def check(rig, result):
            self.assertDetected(rig, result)
            if result.kind != FREEZE:
                self.assertLessEqual(result.detected - result.ended, HEARTBEAT, result)
            self.assertIsNotNone(result.noRouteAnswer, result)
            self.assertLessEqual(result.noRouteAnswer, HEARTBEAT, result)
            start, end = result.at + result.detected, result.at + result.restarting
            during = [r for r in rig.driver.records if start <= r.issued < end]
            self.assertNotEqual(during, [], result)
            # Since issue 9 a request for a known target waits for it within
            # its budget: it is answered once the server is back, or ends
            # Unavailable at its deadline, never another error.  One whose
            # deadline comes just as the server is back may have had its last
            # attempt taken by the server with too little time left to be
            # answered: that one ends RequestTimeout (it may have run).
            budget = rig.driver.timeout
            back = (result.at + result.recovered, result.at + result.firstReply + HEARTBEAT)

            def allowed(r):
                if isinstance(r.error, errors.Unavailable):
                    return True
                return (isinstance(r.error, errors.RequestTimeout)
                        and back[0] <= r.issued + budget <= back[1])

            wrong = [
                (r.n, round(r.issued - result.at, 3), r.error) for r in during
                if r.error is not None and not allowed(r)
            ]
            self.assertEqual(wrong, [], result)

        # Keep it down half a second, so that requests come meanwhile.
        await self.survive("server", check, down=0.5)

    async def test_client(self):
        """
        A client process that exits cleanly is seen gone at once; a killed or
        frozen one within interval x liveness + one interval; the others'
        traffic is untouched and every view converges when it is back.
        """
        rig, results = await self.survive("client", self.assertDetected)
        self.assertEqual([r.kind for r in results], [KILL, FREEZE, STOP])
        failed = [(r.n, r.error) for r in rig.driver.records if not r.succeeded]
        self.assertEqual(failed, [])

    async def test_clientRestartReplacesIncarnation(self):
        """
        A client killed and restarted at once with the same id replaces its
        old incarnation everywhere: one disconnection of the old, one
        connection of the new, no stale or duplicate entry.
        """
        rig = await self.startRig()
        old = rig.node("client").incarnation
        await restartAtOnce(rig)
        new = rig.node("client").incarnation
        self.assertNotEqual(old, new)
        for role in ("cloud", "proxy", "server"):
            events = [
                line for line in rig.node(role).lines
                if f"client {rig.ids['client']} (" in line and "connected via" in line
            ]
            self.assertEqual(len(events), 3, f"{role}: {events}")
            self.assertIn(f"({old}) connected", events[0])
            self.assertIn(f"({old}) disconnected", events[1])
            self.assertIn(f"({new}) connected", events[2])
        await rig.drain()
        self.assertGuarantees(rig, "a client restart", final=True)


class LossyHopTests(_FaultTestCase):
    """
    A hop that drops and duplicates a fraction of messages, in front of the
    cloud.
    """

    async def chaos(self, rig, seconds, during=None):
        """
        Let traffic run through the lossy hop, heal it, and wait until
        everything flows and converged.
        """
        reactor = self.reactor()
        end = reactor.seconds() + seconds
        if during is not None:
            await during()
        left = end - reactor.seconds()
        if left > 0:
            await sleep(reactor, left)
        healed = reactor.seconds()
        await rig.heal()
        await together(rig.resumed(healed), rig.waitConverged(5.0))
        await rig.streamsWhole()
        await rig.drain()

    async def test_lossyClientHop(self):
        """
        With a tenth of the driver's requests, replies and notifications
        dropped and another tenth duplicated, requests still get one outcome
        each, duplicates run no handler twice, and lost notifications are
        replayed.
        """
        rig = await self.startRig(chaos=(0.1, 0.1, 1234), chaosAt="driver")
        await self.chaos(rig, 4.0)
        self.assertGuarantees(rig, "a lossy client hop", final=True)
        hop = rig.hop.stats()
        self.assertGreater(hop.get("dropped", 0), 0, hop)
        self.assertGreater(hop.get("duplicated", 0), 0, hop)
        client = rig.driver.client.stats()
        # The faults were felt, and repaired: duplicated notifications
        # dropped, lost ones replayed, duplicated or retried requests
        # answered from the server's reply cache.
        self.assertGreater(client["seq.duplicates"], 0, client)
        self.assertGreater(client["replayed"], 0, client)
        server = await rig.serverStats()
        self.assertGreater(server["cache.hits"], 0, server)

    async def test_lossyProxyHop(self):
        """
        With a fifth of the messages between proxy and cloud dropped and a
        tenth duplicated, while a client comes and goes, the cloud's routes
        and the proxy's and server's presence views converge once the hop
        heals.
        """
        rig = await self.startRig(chaos=(0.2, 0.1, 4321), chaosAt="proxy")

        async def churn():
            for _ in range(2):
                await rig.kill9("client")
                await rig.start("client")

        await self.chaos(rig, 4.0, churn)
        self.assertGuarantees(rig, "a lossy proxy hop", final=True)
        hop = rig.hop.stats()
        self.assertGreater(hop.get("dropped", 0), 0, hop)


class ExactlyOnceMatrixTests(TestCase):
    """
    Issue 9: every role (cloud, proxy, server C{a1}, client process) x
    every fault (kill -9 + restart, SIGSTOP past liveness + SIGCONT, SIGTERM
    + restart), under steady traffic to a service C{echo} offered by two
    servers, on the cloud path and on direct links, with handlers taking
    100 ms.  Per end-to-end request id: exactly one outcome, one handler
    run (except the documented case: a server killed or frozen past
    liveness while it ran the handler), and no failure the application
    sees (every fault here is shorter than the request's budget).
    """

    timeout = 90

    async def matrix(self, role):
        """
        Run the three faults on C{role} in one topology and check each cell.
        """
        from twisted.internet import reactor

        rig = MatrixRig(reactor, self.mktemp())
        self.addCleanup(rig.shutdown)
        await rig.startAll()
        cells = await runMatrixRole(rig, role)
        await rig.drain()
        report = []
        for cell in cells:
            bad = list(cell.problems)
            bad += [f"{who} request {n} failed: {error!r}" for who, n, error in cell.failures]
            if cell.clientFailures:
                bad.append(f"c2 saw {cell.clientFailures} failures")
            bad += [f"handler ran {len(runs)} times for {key}: {runs}" for key, runs in cell.doubleRuns.items()]
            if cell.requests == 0:
                bad.append("no request issued")
            if bad:
                report.append(f"{role} {cell.kind}: " + "\n    ".join(bad[:20]))
        problems = rig.problems()
        if problems:
            report.append("at the end: " + "\n    ".join(problems[:20]))
        if report:
            self.fail("\n".join(report))
        return cells

    async def test_cloud(self):
        """
        Cloud faults: nothing the application sees, no handler run twice.
        """
        await self.matrix("cloud")

    async def test_proxy(self):
        """
        Proxy faults: nothing the application sees, no handler run twice.
        """
        await self.matrix("proxy")

    async def test_server(self):
        """
        Faults of server a1: a2 takes over within the budget; only what a1
        ran before it was killed or frozen past liveness may run again.
        """
        await self.matrix("a1")

    async def test_client(self):
        """
        Faults of the client process: the other clients see nothing.
        """
        await self.matrix("client")
