"""
C{zmqrelay top} in a real terminal: a tmux pane on a private tmux server
runs it against a live topology, and the captured pane names every node.
"""

import os
import shlex
import shutil
import subprocess

from twisted.internet import defer
from twisted.trial import unittest

from tests.integration.helpers import (
    Cluster,
    childEnvironment,
    cloudClient,
    poll,
    startDistributed,
    zmqrelayCommand,
)
from zmqrelay.tools.launcher import ROOT

NODES = ("cloud", "proxyA", "proxyB", "a1", "a2", "b1")


class TopTests(unittest.TestCase):
    """
    C{zmqrelay top} shows the whole topology, refreshing.
    """

    timeout = 90

    def setUp(self):
        if shutil.which("tmux") is None:
            raise unittest.SkipTest("tmux is not installed (.ci/run installs it)")
        self.cluster = Cluster(self)
        return startDistributed(self.cluster)

    def tmux(self, *args):
        return subprocess.run(
            ["tmux", "-L", self.socket] + list(args),
            capture_output=True, text=True, timeout=10, check=False,
        )

    @defer.inlineCallbacks
    def test_topNamesEveryNode(self):
        """
        top, run in a tmux pane, refreshes and names the cloud, both proxies
        and all three servers with their services, and the clients' paths.
        """
        client = yield cloudClient(self.cluster, "top-watcher")
        for i in range(5):
            yield client.request("echo", b"%d" % i)
        self.socket = f"zmqrelay-top-{os.getpid()}"
        # The private tmux server, and what runs in it, end with the test.
        self.addCleanup(self.tmux, "kill-server")
        command = zmqrelayCommand() + [
            "top", "--cloud", self.cluster["cloud"].endpoints["control"], "--count", "3",
            "--interval", "0.5",
        ]
        env = childEnvironment()
        shell = "cd {} && env {} {}; echo TOP-EXITED $?; sleep 60".format(
            shlex.quote(ROOT),
            " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k in ("PATH", "PYTHONPATH")),
            " ".join(shlex.quote(a) for a in command),
        )
        started = self.tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "50", shell)
        self.assertEqual(started.returncode, 0, started.stderr)

        def pane():
            return self.tmux("capture-pane", "-p", "-t", "top").stdout

        yield poll(lambda: "TOP-EXITED" in pane(), 40.0, 0.2, "top to finish its refreshes")
        text = pane()
        self.assertIn("TOP-EXITED 0", text)
        self.assertIn("zmqrelay top: attached to cloud", text)
        for name in NODES:
            self.assertIn(name, text)
        self.assertIn("req/s", text)
        self.assertIn("echo", text)
        self.assertIn("cloud", text)
        # Rates need two refreshes: numbers, not blanks, in the cloud's row.
        rows = [line for line in text.splitlines() if line.strip("│ ").startswith("cloud ")]
        self.assertRegex(rows[0], r"cloud +│ cloud .*\d+\.\d", text)
