"""
Tests for L{tests.integration.faulthelpers.freePort}, which every restart
test relies on to bring a node back on the same endpoint.
"""

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.integration import faulthelpers


class FreePortTests(SynchronousTestCase):
    """
    Ports given out are free, never given twice, and in this worker's stripe.
    """

    def test_neverTwice(self):
        """A port once given is not given again soon in the same process."""
        ports = [faulthelpers.freePort() for _ in range(200)]
        self.assertEqual(len(set(ports)), len(ports))

    def test_belowEphemeralRangeInStripe(self):
        """Inside a trial worker (cwd named by its number) ports are in its stripe."""
        low, high = faulthelpers._ephemeralRange()
        if low <= 21000:
            raise SkipTest(f"no room below the ephemeral range ({low}-{high}): bind(0) is used")
        workdir = self.mktemp()
        os.makedirs(os.path.join(workdir, "3"))
        here = os.getcwd()
        self.addCleanup(os.chdir, here)
        os.chdir(os.path.join(workdir, "3"))
        ports = [faulthelpers.freePort() for _ in range(2000)]
        for port in ports:
            self.assertTrue(20000 <= port < low, port)
            self.assertEqual(port % faulthelpers._STRIPES, 3)
        # More than the stripe holds: the oldest are given again, never one
        # of the last thousand.
        for i in range(0, len(ports) - 1000, 250):
            self.assertEqual(len(set(ports[i:i + 1000])), 1000)
