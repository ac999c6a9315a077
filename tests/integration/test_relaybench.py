"""
Tests of C{bench/relaybench.py}: one tiny run over every system it starts
(zmqrelay, the pyzmq, pyzmq-raw and libzmq proxy chains, majortomo when it
is installed) prints the report blocks of issue 13 and writes them between
its markers.
"""

import os
import re
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import loadBench, runBench


def _loadRelaybench():
    """
    @return: the module C{bench/relaybench.py}.
    """
    return loadBench("relaybench")


def _majortomoInstalled():
    try:
        import majortomo.broker  # noqa: F401
    except ImportError:
        return False
    return True


class TargetTests(SynchronousTestCase):
    """
    A target row compares the ratio of two figures with its goal.
    """

    def setUp(self):
        self.relaybench = _loadRelaybench()

    def test_atMostMetAndNotMet(self):
        """
        An "at most" goal is met at or below it and not met above.
        """
        target = self.relaybench.target
        self.assertIn("| 1.25x | <= 1.25x | met |", target("t", ("25", 25.0), ("20", 20.0), "", 1.25, True))
        self.assertIn("| 1.30x | <= 1.25x | **not met** |",
                      target("t", ("26", 26.0), ("20", 20.0), "", 1.25, True))

    def test_atLeastMetAndNotMet(self):
        """
        An "at least" goal is met at or above it and not met below.
        """
        target = self.relaybench.target
        self.assertIn("| 5.00x | >= 5x | met |", target("t", ("50", 50.0), ("10", 10.0), "", 5.0, False))
        self.assertIn("| 0.90x | >= 1x | **not met** |", target("t", ("9", 9.0), ("10", 10.0), "", 1.0, False))

    def test_ratioOfZero(self):
        """
        A ratio over a figure measured as 0 (a process's CPU in a short run
        under load: the kernel counts clock ticks) is shown as "-", and the
        report does not fail on it.
        """
        self.assertEqual(self.relaybench._x(3.0, 1.5), "2.00x")
        self.assertEqual(self.relaybench._x(3.0, 0.0), "-")

    def test_notMeasured(self):
        """
        A figure missing on either side makes the row "not measured", never met.
        """
        row = self.relaybench.target("t", ("-", None), ("x 3", 3.0), "", 1.0, False)
        self.assertTrue(row.endswith("| not measured |"))

    def test_addedLatency(self):
        """
        The added latency per hop is half the p50 difference of cloud and direct.
        """
        results = {("s", "cloud"): {"p50": 900.0}, ("s", "direct"): {"p50": 300.0}}
        self.assertEqual(self.relaybench.addedLatency(results, "s"), 300.0)
        self.assertIsNone(self.relaybench.addedLatency(results, "other"))


class TinyRunTests(SynchronousTestCase):
    """
    C{relaybench.py} with tiny figures runs every system and reports them.
    """

    def test_tinyRun(self):
        """
        A tiny run writes every issue 13 table between the markers, leaving the text around them.
        """
        directory = tempfile.mkdtemp(prefix="relaybench-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "BENCH.md")
        with open(path, "w") as f:
            f.write("# head\n\n<!-- bench:begin -->\nold figures\n<!-- bench:end -->\n\ntail text\n")
        runBench(self, "relaybench.py", [
            "--rounds", "1", "--seconds", "0.3", "--latency-count", "50", "--large-count", "0",
            "--no-clouds", "--sizes", "10240", "--relay-window", "64", "--write", path,
        ], 90)
        with open(path) as f:
            text = f.read()
        self.assertTrue(text.startswith("# head\n\n<!-- bench:begin -->\nMeasured "), text[:200])
        self.assertTrue(text.endswith("<!-- bench:end -->\n\ntail text\n"), text[-200:])
        self.assertNotIn("old figures", text)
        # The relays' window given is in the command the report names.
        self.assertIn("--relay-window 64", text)
        for row in ("| cloud | 2 |", "libzmq proxy req/s", "| cloud | relay: proxy |",
                    "### How the cost grows with message size", "| 10 KiB |",
                    "### Issue 13 targets", "| relay hop, CPU us per request and reply",
                    "### CPU per request one at a time, us", "| proxy | relay: proxy |",
                    "| end, CPU us per request", "| added latency per relay hop",
                    "| cloud path, req/s with 100 outstanding", "Added latency per relay hop: zmqrelay"):
            self.assertIn(row, text)
        # Both CPU ratios against pyzmq-raw and the latency and rate ratios
        # against libzmq were computed (a ratio and a verdict on each row).
        verdicts = re.findall(r"\| [0-9.]+x \| [<>]= [0-9.]+x \| (met|\*\*not met\*\*) \|", text)
        if _majortomoInstalled():
            self.assertIn("| 16 clients, one request each |", text)
            self.assertIn("| one client, 100 outstanding |", text)
            self.assertEqual(len(verdicts), 6, text)
        else:
            self.assertIn("Not measured: majortomo is not installed here", text)
            self.assertEqual(len(verdicts), 4, text)
