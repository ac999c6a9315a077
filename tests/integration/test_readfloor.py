"""
Tests of C{bench/readfloor.py}: one tiny run writes its block between the
readfloor markers, with a sane cost per message.
"""

import os
import re
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import runBench


class ReadFloorTests(SynchronousTestCase):
    """
    The read-and-drop floor of issue 7's per-message goal.
    """

    def test_tinyRun(self):
        """
        Half a second of flood against a bare pyzmq ROUTER, then against
        libzmq alone: messages were read (5 frames each), their cost is
        positive and bounded, and the block replaces the marked one,
        leaving the rest of the file alone.
        """
        directory = tempfile.mkdtemp(prefix="readfloor-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "FLOOD.md")
        with open(path, "w") as f:
            f.write("# head\n\n<!-- readfloor:begin -->\nold\n<!-- readfloor:end -->\n\ntail\n")
        runBench(self, "readfloor.py", ["--seconds", "0.5", "--sockets", "1", "--write", path], 60)
        with open(path) as f:
            text = f.read()
        self.assertTrue(text.startswith("# head\n\n<!-- readfloor:begin -->\n"), text)
        self.assertTrue(text.endswith("<!-- readfloor:end -->\n\ntail\n"), text)
        self.assertNotIn("\nold\n", text)
        match = re.search(r"read and dropped ([\d,]+) messages \(([\d,]+) frames, 5 a message\)", text)
        self.assertIsNotNone(match, text)
        self.assertGreater(int(match.group(1).replace(",", "")), 1000)
        costs = [float(c) for c in re.findall(r"\*\*([\d.]+) us of CPU per message\*\*", text)]
        # The pyzmq reader's, then libzmq's alone.
        self.assertEqual(len(costs), 2, text)
        for cost in costs:
            self.assertTrue(0 < cost < 1000, cost)
        match = re.search(r"libzmq alone .* read and dropped ([\d,]+) messages", text)
        self.assertGreater(int(match.group(1).replace(",", "")), 1000, text)
