"""
Tests of C{bench/notifybench.py} and its server application
C{bench/publisher.py}: the publisher's pacing and refusals under a fake
clock, the target verdicts, and one tiny run over both chains that writes
its block between the notify markers.
"""

import json
import os
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.errors import OverLimit
from tests.integration.helpers import loadBench as _load, runBench


class FakeServer:
    """
    The part of a server the publisher uses; refuses the publishes whose
    sequence numbers are in C{refuse}.
    """

    def __init__(self, refuse=()):
        self.reactor = Clock()
        self.nodeId = "s"
        self.counters = {"published": 0}
        self.refuse = set(refuse)
        self.seq = 0
        self.published = []

    def publish(self, topic, payload):
        self.seq += 1
        if self.seq in self.refuse:
            error = OverLimit("full", 0.01)
            error.seq = self.seq
            raise error
        self.published.append((topic, payload))
        return self.seq


class _Request:
    def __init__(self, payload):
        self.payload = payload


class PublisherTests(SynchronousTestCase):
    """
    The benchmark's server application publishes at the rate asked, counts
    refusals and backs off after each.
    """

    def setUp(self):
        self.module = _load("publisher")

    def test_pacedRun(self):
        """
        A run of 1000/s for 1 s publishes 1000 notifications of the asked size
        over that second, not at once, and reports the sequence numbers used.
        """
        server = FakeServer()
        app = self.module.publisher(server, topic="t", size="8", tick="0.005")
        d = app.handleRequest(_Request(b"run 1000 1"))
        server.reactor.advance(0.5)
        self.assertNoResult(d)
        self.assertTrue(450 <= len(server.published) <= 510, len(server.published))
        server.reactor.advance(0.6)
        summary = json.loads(self.successResultOf(d))
        self.assertEqual((summary["offered"], summary["refused"]), (1000, 0))
        self.assertEqual((summary["first"], summary["last"]), (1, 1000))
        self.assertEqual(server.published[0], (b"t", b"n" * 8))
        self.assertEqual(server.reactor.getDelayedCalls(), [])

    def test_overLimitCountedAndBacksOff(self):
        """
        A publish that raises OverLimit is counted and ends that tick's batch;
        the next tick catches up, so the offered count is still reached.
        """
        server = FakeServer(refuse={3, 4})
        app = self.module.publisher(server, topic="t", size="8", tick="0.005")
        d = app.handleRequest(_Request(b"run 1000 0.1"))
        # The first tick published 1, then 2, and stopped at the refused 3.
        self.assertEqual(server.seq, 1)
        server.reactor.advance(0.005)
        self.assertEqual(server.seq, 3)
        for _ in range(30):
            server.reactor.advance(0.005)
        summary = json.loads(self.successResultOf(d))
        self.assertEqual((summary["offered"], summary["refused"]), (100, 2))
        self.assertEqual(len(server.published), 98)

    def test_otherRequestsEchoed(self):
        """
        Anything but a run is echoed.
        """
        app = self.module.publisher(FakeServer())
        self.assertEqual(app.handleRequest(_Request(b"hello")), b"hello")


class TargetTests(SynchronousTestCase):
    """
    The target rows judge the highest rate run.
    """

    def setUp(self):
        self.bench = _load("notifybench")

    def _figures(self, rate, received, cpu, refused=0):
        offered = int(rate * 3)
        run = {
            "rate": rate, "offered": offered, "refused": refused, "seconds": 3.0,
            "subscribers": [{"received": r, "gaps": offered - r} for r in received],
            "cpu": {"proxy": cpu * offered / 1e6, "cloud": cpu * offered / 1e6, "server": 1.0},
        }
        return self.bench.figures(run, "server")

    def test_metAtTheTargetRate(self):
        """
        Lossless, cheap and unrefused at 100k/s meets all three targets.
        """
        z = self._figures(100000, [300000] * 4, 2.5)
        rows = self.bench.targets([z], [z])
        self.assertEqual([row[3] for row in rows], ["met", "met", "met"])

    def test_notMet(self):
        """
        A loss, a relay over 3 us, or a refusal is not met.
        """
        z = self._figures(100000, [300000, 299999, 300000, 300000], 3.5, refused=1)
        rows = self.bench.targets([z], [z])
        self.assertEqual([row[3] for row in rows], ["**not met**"] * 3)
        self.assertIn("lost", rows[1][1])

    def test_lowRateNotMeasured(self):
        """
        Run below 100k/s, the loss and publishing targets are not measured.
        """
        z = self._figures(2000, [6000] * 4, 2.0)
        rows = self.bench.targets([z], [z])
        self.assertEqual(rows[0][3], "met")
        self.assertTrue(rows[1][3].startswith("not measured"))
        self.assertTrue(rows[2][3].startswith("not measured"))


class TinyRunTests(SynchronousTestCase):
    """
    C{notifybench.py} with tiny figures runs both chains and reports them.
    """

    def test_tinyRun(self):
        """
        One rate for 0.5 s: every subscriber of both chains hears the run,
        the zmqrelay relays' counters account for it, and the block goes
        between the notify markers, leaving the rest of the file alone.
        """
        directory = tempfile.mkdtemp(prefix="notifybench-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "BENCH.md")
        figures = os.path.join(directory, "figures.json")
        with open(path, "w") as f:
            f.write("# head\n\n<!-- notify:begin -->\nold figures\n<!-- notify:end -->\n\ntail text\n")
        runBench(self, "notifybench.py", [
            "--rates", "4000", "--seconds", "0.5", "--write", path, "--json", figures,
        ], 60)
        with open(path) as f:
            text = f.read()
        self.assertTrue(text.startswith("# head\n\n<!-- notify:begin -->\nMeasured "), text[:200])
        self.assertTrue(text.endswith("<!-- notify:end -->\n\ntail text\n"), text[-200:])
        self.assertNotIn("old figures", text)
        for row in ("| 4,000 | zmqrelay | ", "| 4,000 | libzmq proxy | ", "| target | zmqrelay |",
                    "Load average before the run"):
            self.assertIn(row, text)
        with open(figures) as f:
            result = json.load(f)
        for name in ("zmqrelay", "libzmq"):
            [run] = result[name]
            self.assertEqual(run["offered"], 2000, name)
            self.assertEqual(len(run["received"]), 4, name)
            for received in run["received"]:
                # Every subscriber heard the run, and nothing twice.
                self.assertTrue(1000 <= received <= 2000, (name, run["received"]))
            for relay in ("proxy", "cloud"):
                self.assertGreater(run["relayUs"][relay], 0.0, name)
            self.assertGreater(run["publisherUs"], 0.0, name)
        relays = result["zmqrelay"][0]["relays"]
        sent = result["zmqrelay"][0]["sent"]
        self.assertEqual(relays["proxy"]["notifications"], sent)
        self.assertLessEqual(relays["cloud"]["notifications"], relays["proxy"]["upstream"])
        self.assertGreaterEqual(relays["cloud"]["delivered"], max(result["zmqrelay"][0]["received"]))
        self.assertEqual([t["verdict"][:12] for t in result["targets"]][1:], ["not measured"] * 2)
