"""
Tests of C{bench/onebyone.py}: the per-thread figures it reads from
C{/proc}, the report it makes of them, and one short real run.
"""

import os
import shutil
import tempfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import loadBench, runBench


class FiguresTests(SynchronousTestCase):
    """
    What it reads of a process's threads, and what it makes of two readings.
    """

    def setUp(self):
        self.onebyone = loadBench("onebyone")

    def test_threadFigures(self):
        """
        Each thread name of a live process gets its switches and run, user and system times, summed by name.
        """
        started, done = threading.Event(), threading.Event()

        def spin():
            started.set()
            done.wait(5)

        thread = threading.Thread(target=spin, name="onebyone-test")
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(done.set)
        started.wait(5)
        figures = self.onebyone.threadFigures(os.getpid())
        self.assertTrue(figures)
        for name, row in figures.items():
            self.assertEqual(len(row), 5, name)
            self.assertTrue(all(value >= 0 for value in row), (name, row))
        # Both threads of this process (the main one and the one above) were counted.
        self.assertGreaterEqual(sum(row[0] for row in figures.values()), 1)

    def test_perRequest(self):
        """
        The difference of two readings, divided by the round trips; a thread missing from either is left out.
        """
        before = {"python": [10, 2, 1000.0, 800.0, 200.0], "gone": [1, 1, 1, 1, 1]}
        after = {"python": [30, 6, 3000.0, 2400.0, 600.0], "new": [5, 5, 5, 5, 5]}
        self.assertEqual(self.onebyone.perRequest(before, after, 10),
                         {"python": [2.0, 0.4, 200.0, 160.0, 40.0]})

    def test_report(self):
        """
        One row per system, process and thread, main thread first, with the medians over the rounds.
        """
        import argparse

        def run(p50, scale):
            return (100, p50, {
                "relay": {"ZMQbg/IO/0": [4.0, 0.1, 150.0 * scale, 20.0, 130.0],
                          "twistd": [2.0, 1.9, 280.0 * scale, 240.0 * scale, 40.0]},
                "end": {"twistd": [1.0, 0.9, 160.0, 140.0, 20.0]},
            })

        results = {"zmqrelay": [run(0.00077, 1.0), run(0.00080, 1.1), run(0.00090, 3.0)]}
        args = argparse.Namespace(write=None, payload=100, rounds=3, seconds=2.0)
        info = {"nproc": 2, "cpu": "cpu", "kernel": "k", "python": "3.11", "pyzmq": "27", "libzmq": "4.3.5",
                "twisted": "26"}
        text = self.onebyone.report(results, args, info, (0.5, 0.7), note="skipped (--no-majortomo)")
        self.assertIn("Load average before the run: 0.5, after: 0.7.", text)
        self.assertIn("majortomo: not measured: skipped (--no-majortomo).", text)
        rows = [line for line in text.splitlines() if line.startswith("| zmqrelay |")]
        self.assertEqual(rows, [
            # Round trips/s: the median count over the run's seconds.
            "| zmqrelay | 50 | 800 | - |",
            "| zmqrelay | 800 | relay | main | 2.00 | 1.90 | 308 | 264 | 40 |",
            "| zmqrelay | 800 | relay | ZMQbg/IO/0 | 4.00 | 0.10 | 165 | 20 | 130 |",
            "| zmqrelay | 800 | end | main | 1.00 | 0.90 | 160 | 140 | 20 |",
        ])


    def test_reportAgainstMajortomo(self):
        """
        With majortomo measured, each system's round trips/s is given as a ratio of majortomo's.
        """
        import argparse

        def run(count):
            return (count, 0.0005, {"relay": {}, "end": {}})

        results = {"zmqrelay": [run(2700), run(3000), run(2400)],
                   "Twisted floor": [run(3300), run(3300), run(3300)],
                   "majortomo": [run(3000), run(2900), run(3100)]}
        args = argparse.Namespace(write=None, payload=100, rounds=3, seconds=2.0)
        info = {"nproc": 2, "cpu": "cpu", "kernel": "k", "python": "3.11", "pyzmq": "27", "libzmq": "4.3.5",
                "twisted": "26"}
        lines = self.onebyone.report(results, args, info, (0.5, 0.7)).splitlines()
        self.assertIn("| zmqrelay | 1,350 | 500 | 0.90x |", lines)
        self.assertIn("| Twisted floor | 1,650 | 500 | 1.10x |", lines)
        self.assertIn("| majortomo | 1,500 | 500 | 1.00x |", lines)
        self.assertFalse([line for line in lines if "not measured" in line])


class ShortRunTests(SynchronousTestCase):
    """
    C{onebyone.py} run short, as a real subprocess, against real nodes.
    """

    def test_shortRun(self):
        """
        One round of each system gives a row per relay and end main thread, woken every round trip, in the file.
        """
        directory = tempfile.mkdtemp(prefix="onebyone-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "BENCH.md")
        output = runBench(self, "onebyone.py",
                          ["--rounds", "1", "--seconds", "0.5", "--no-majortomo", "--write", path], 120)
        with open(path) as f:
            text = f.read()
        self.assertIn("<!-- onebyone:begin -->", text)
        self.assertIn("majortomo: not measured: skipped (--no-majortomo).", text)
        for system in ("zmqrelay", "Twisted floor", "pyzmq-raw"):
            # Round trips were made through each one-relay chain.
            [summary] = [line for line in text.splitlines()
                         if line.startswith(f"| {system} |") and line.endswith("| - |")]
            self.assertGreater(float(summary.split("|")[2].replace(",", "")), 0, summary)
            for role in ("relay", "end"):
                rows = [line for line in text.splitlines()
                        if line.startswith(f"| {system} |") and f"| {role} | main |" in line]
                self.assertEqual(len(rows), 1, (system, role, output))
                voluntary = float(rows[0].split("|")[5])
                # Each round trip wakes each main thread about once (a little
                # less when the suite's other processes keep it busy, so that
                # the next request finds it awake): the figures are read.
                self.assertGreaterEqual(voluntary, 0.5, rows[0])
        # The ends alone, the Twisted echo among them.
        for end in ("zmqrelay server", "Twisted echo", "pyzmq-raw echo"):
            rows = [line for line in text.splitlines() if line.startswith(f"| {end} |")]
            self.assertEqual(len(rows), 1, (end, output))
            self.assertGreaterEqual(float(rows[0].split("|")[3]), 0.5, rows[0])
