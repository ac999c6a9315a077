"""
Tests of C{bench/idleclients.py}: the growth table it builds from its
figures, and one small run at two client counts, each against a fresh cloud
and a fresh bare ROUTER.
"""

import json
import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import loadBench, readLineWithin, runBench


def _loadIdleclients():
    """
    @return: the module C{bench/idleclients.py}.
    """
    return loadBench("idleclients")


def _node(clients, welcomed, lastWelcome, cpu, io, rssKiB, byes=0, reasons=None, presence=None):
    """
    @return: one node's figures, as C{measure} returns them (by default the
        cloud and its proxy list every welcomed client).
    """
    return {
        "clients": clients, "welcomed": welcomed, "lastWelcome": lastWelcome, "retries": 0,
        "byes": byes, "reasons": reasons or {}, "cpu": cpu, "io": io,
        "rssPerClient": rssKiB * 1024.0, "counters": {},
        "presence": {"cloud": welcomed, "proxy": welcomed} if presence is None else presence,
    }


def _pair(clients, connect, cloud, router, floor=None):
    if floor is None:
        floor = dict(router, cpu=router["cpu"] * 1.25)
    return {"clients": clients, "connect": connect, "steady": 10.0, "processes": 1,
            "cloud": cloud, "router": router, "floor": floor,
            "ratio": cloud["rssPerClient"] / router["rssPerClient"]}


class ReportTests(SynchronousTestCase):
    """
    The Markdown block made from the figures of a run.
    """

    def setUp(self):
        self.idleclients = _loadIdleclients()

    def figures(self, counts):
        """
        @return: the figures of a run whose main count is 10,000, with the
            pairs C{counts} beside it.
        """
        main = _pair(10000, 30.0, _node(10000, 10000, 8.0, 0.36, 0.17, 46.0),
                     _node(10000, 0, None, 0.24, 0.10, 40.0))
        return {
            "command": "python bench/idleclients.py --clients 10000 --counts 1000,3000",
            "date": "2026-12-06", "heartbeat": 1.0, "load": {"before": 1.5, "after": 2.5},
            "clients": 10000, "connect": 30.0, "steady": 10.0, "processes": 10,
            "cloud": main["cloud"], "router": main["router"], "floor": main["floor"], "ratio": main["ratio"],
            "counts": sorted(counts + [main], key=lambda pair: pair["clients"]),
        }

    def test_growthRows(self):
        """
        One row per count in ascending order, with CPU per client in us per second and the RSS ratio.
        """
        text = self.idleclients._report(self.figures([
            _pair(1000, 5.0, _node(1000, 1000, 2.0, 0.05, 0.02, 44.0), _node(1000, 0, None, 0.02, 0.01, 40.0)),
        ]))
        self.assertIn("`python bench/idleclients.py --clients 10000 --counts 1000,3000`", text)
        self.assertIn("load average 1.5 before the run, 2.5 at the end", text)
        self.assertIn("A proxy is attached to the cloud, as a site's would be; after the steady phase both are "
                      "asked `sys presence`.", text)
        self.assertIn("| zmqrelay cloud | 10000 | 8.0 s | 0 | 36 % | 17 % | 46.0 KiB |", text)
        self.assertIn("| heartbeat floor (pyzmq) | - | - | 0 | 30 % | 10 % | 40.0 KiB |", text)
        self.assertIn("the heartbeat floor alone used 30 % of a core (10 % in libzmq's I/O thread) on the same "
                      "load; the cloud used 1.20x the floor.", text)
        table = text.split("### How the cost grows with client count", 1)[1]
        self.assertIn("| 1,000 | 1,000 | 2.0 s | 5 % | 2 % | 2 % | 2 % | 50.0 us/s | 44.0 / 40.0 KiB | 1.10x |",
                      table)
        self.assertIn("| 10,000 | 10,000 | 8.0 s | 36 % | 17 % | 24 % | 30 % | 36.0 us/s | 46.0 / 40.0 KiB "
                      "| 1.15x |", table)
        self.assertLess(table.index("| 1,000 |"), table.index("| 10,000 |"))
        self.assertIn("Every client of every row was welcomed within its connect phase, and listed by the "
                      "`presence` of the cloud and of its proxy", table)
        self.assertIn("| `presence` complete at cloud and proxy | cloud 10,000, proxy 10,000 listed, of 10,000 "
                      "welcomed | met |", text)

    def test_presenceIncomplete(self):
        """
        A proxy that lists fewer clients than were welcomed, or a node that did not answer, fails the goal
        and is said under the growth table.
        """
        figures = self.figures([
            _pair(1000, 5.0, _node(1000, 1000, 2.0, 0.05, 0.02, 44.0,
                                   presence={"cloud": 1000, "proxy": "no answer: timeout"}),
                  _node(1000, 0, None, 0.02, 0.01, 40.0)),
        ])
        figures["cloud"]["presence"]["proxy"] = 9990
        text = self.idleclients._report(figures)
        self.assertIn("| `presence` complete at cloud and proxy | cloud 10,000, proxy 9,990 listed, of 10,000 "
                      "welcomed | **not met** |", text)
        self.assertIn("At 1,000 clients `presence`: cloud 1,000, proxy: no answer: timeout listed, of 1,000 "
                      "welcomed.", text)
        self.assertIn("At 10,000 clients `presence`: cloud 10,000, proxy 9,990 listed", text)

    def test_growthNotes(self):
        """
        A count not all welcomed, welcomed after its connect phase, or with BYEs is said under the table.
        """
        text = self.idleclients._report(self.figures([
            _pair(1000, 5.0, _node(1000, 990, 4.0, 0.05, 0.02, 44.0), _node(1000, 0, None, 0.02, 0.01, 40.0)),
            _pair(3000, 7.5, _node(3000, 3000, 9.5, 0.12, 0.06, 44.0, 2, {"BYE heartbeat-timeout": 2}),
                  _node(3000, 0, None, 0.05, 0.03, 40.0)),
        ]))
        self.assertIn("At 1,000 clients only 990 were welcomed.", text)
        self.assertIn("At 3,000 clients the last WELCOME came 9.5 s after the start, after the 7.5 s allowed", text)
        self.assertIn("At 3,000 clients the cloud sent 2 BYEs ({'BYE heartbeat-timeout': 2}).", text)
        self.assertNotIn("Every client of every row was welcomed", text)

    def test_countsConnect(self):
        """
        A --counts run allows at least 5 s to connect, and 1 s per 400 clients.
        """
        self.assertEqual(self.idleclients.countsConnect(20), 5.0)
        self.assertEqual(self.idleclients.countsConnect(3000), 7.5)

    def test_parseCounts(self):
        """
        --counts takes a comma-separated list of positive integers, empty by default.
        """
        self.assertEqual(self.idleclients._parseCounts("1000, 3000"), [1000, 3000])
        self.assertEqual(self.idleclients._parseCounts(""), [])
        self.assertRaises(ValueError, self.idleclients._parseCounts, "1000,0")
        self.assertRaises(ValueError, self.idleclients._parseCounts, "many")


class SmallRunTests(SynchronousTestCase):
    """
    C{idleclients.py} run small, as a real subprocess.
    """

    def test_twoCounts(self):
        """
        40 clients, then 20: each count on its own cloud and ROUTER, all welcomed, CPU and RSS measured.
        """
        directory = tempfile.mkdtemp(prefix="idlebench-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "figures.json")
        runBench(self, "idleclients.py", [
            "--clients", "40", "--counts", "20", "--connect", "4", "--steady", "1", "--json", path,
        ], 90)
        with open(path) as f:
            figures = json.load(f)
        self.assertEqual([pair["clients"] for pair in figures["counts"]], [20, 40])
        self.assertEqual([pair["connect"] for pair in figures["counts"]], [5.0, 4.0])
        for pair in figures["counts"]:
            clients = pair["clients"]
            self.assertEqual(pair["cloud"]["clients"], clients)
            self.assertEqual(pair["router"]["clients"], clients)
            self.assertEqual(pair["floor"]["clients"], clients)
            # Every client was welcomed by the cloud; the bare ROUTER and the floor welcome nobody.
            self.assertEqual(pair["cloud"]["welcomed"], clients, pair["cloud"])
            self.assertEqual(pair["router"]["welcomed"], 0, pair["router"])
            self.assertEqual(pair["floor"]["welcomed"], 0, pair["floor"])
            for node in (pair["cloud"], pair["router"], pair["floor"]):
                for key in ("cpu", "io"):
                    self.assertIsInstance(node[key], float, (clients, key))
                    self.assertGreaterEqual(node[key], 0.0, (clients, key))
                self.assertIsInstance(node["rssPerClient"], float, clients)
            self.assertIsInstance(pair["ratio"], float, clients)
            # The cloud and its proxy list every client.
            self.assertEqual(pair["cloud"]["presence"], {"cloud": clients, "proxy": clients})
        # The main run's figures are its row, and the report is made from the JSON alone.
        self.assertEqual(figures["cloud"], figures["counts"][1]["cloud"])
        text = _loadIdleclients()._report(figures)
        self.assertIn("--clients 40 --counts 20 --connect 4 --steady 1", text)
        self.assertIn("| 20 | 20 | ", text)
        self.assertIn("| 40 | 40 | ", text)


class HeartbeatFloorTests(SynchronousTestCase):
    """
    C{idleclients.py router --heartbeats}, the floor the CPU goal is read
    against, as a real process: it keeps a peer's liveness as PROTOCOL.md 7
    asks, and forgets a silent one.
    """

    def test_keepsAndForgets(self):
        """
        A peer that sends HB gets the protocol's HB back every heartbeat, and none once silent for three.
        """
        import subprocess
        import sys
        import time

        import zmq

        from zmqrelay.core import protocol

        from tests.integration.helpers import ROOT

        floor = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "bench", "idleclients.py"), "router", "--heartbeats",
             "--heartbeat", "0.2"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

        def stop():
            floor.kill()
            floor.wait()
            floor.stdout.close()

        self.addCleanup(stop)
        line = readLineWithin(floor.stdout, 30)
        self.assertIsNotNone(line, "the floor printed nothing within 30 s")
        self.assertIn("endpoint=", line)
        endpoint = line.strip().split("endpoint=", 1)[1]
        context = zmq.Context()
        self.addCleanup(context.term)
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        self.addCleanup(dealer.close)
        dealer.connect(endpoint)
        beat = protocol.encode(protocol.HEARTBEAT, {})

        def received(seconds):
            got = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if dealer.poll(50):
                    got.append(dealer.recv_multipart())
            return got

        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            dealer.send_multipart(beat)
            got += received(0.2)
        self.assertGreaterEqual(len(got), 3, "the floor sent no heartbeats")
        self.assertEqual(got[0], beat)
        # Silent for three heartbeats (0.6 s) and a check: forgotten.
        received(1.0)
        self.assertEqual(received(1.0), [])
