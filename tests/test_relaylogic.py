"""
Tests of C{bench/relaylogic.py}: the cloud it drives on fake sockets
answers every request of every cycle, and its figures are sane.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import loadBench


class RelayLogicTests(SynchronousTestCase):
    """
    The harness that measures a relay's own Python per request.
    """

    def setUp(self):
        self.relaylogic = loadBench("relaylogic")

    def test_cycle(self):
        """
        Every request of a cycle goes to the proxy and its reply back to the client, each counted once.
        """
        bench = self.relaylogic.Bench(5)
        self.addCleanup(bench.stop)
        for _ in range(3):
            self.assertEqual(bench.cycle(), 5)
        counters = bench.cloud.forwarder.counters
        self.assertEqual((counters["forwarded"], counters["answered"]), (15, 15))
        self.assertEqual(len(bench.cloud.forwarder.inflight), 0)

    def test_measure(self):
        """
        A whole cycle costs more than its fake peers' part.
        """
        cycle, peers = self.relaylogic.measure(4, 10, rounds=1)
        self.assertGreater(peers, 0)
        self.assertGreater(cycle, peers)

    def test_heartbeatCost(self):
        """
        With every client welcomed, an idle client's HB costs the Front a positive time.
        """
        self.assertGreater(self.relaylogic.heartbeatCost(50, rounds=1), 0)

    def test_idleCost(self):
        """
        The idle measure times back to back first, then sleeps the given pauses before each cycle.
        """
        slept = []
        results = self.relaylogic.idleCost(2, 5, [0.0005, 0.002], sleep=slept.append)
        self.assertEqual([pause for pause, _, _ in results], [0, 0.0005, 0.002])
        self.assertEqual(slept, [0.0005] * 5 + [0.002] * 5)
        for _, median, mean in results:
            self.assertGreater(median, 0)
            self.assertGreater(mean, 0)

    def test_idleOption(self):
        """
        --idle refuses what is not a list of positive milliseconds.
        """
        for bad in ("x", "0", "1,-2"):
            with self.assertRaises(SystemExit):
                self.relaylogic.main(["--idle", bad])
