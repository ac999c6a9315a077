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
