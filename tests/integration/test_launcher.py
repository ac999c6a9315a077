"""
Tests for L{zmqrelay.tools.launcher}: nodes never outlive whoever started them.
"""

import os
import signal
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import readLineWithin
from zmqrelay.tools.launcher import ROOT

_PARENT = """
import sys
from twisted.internet import defer, task
from zmqrelay.tools.launcher import Topology

async def main(reactor):
    topology = Topology(reactor)
    node = await topology.start("cloud", "zmqrelay-cloud", [
        "--id", "orphan-check", "--listen", "tcp://127.0.0.1:*",
        "--pub", "tcp://127.0.0.1:*", "--sub", "tcp://127.0.0.1:*"])
    print("CHILD", node.pid, flush=True)
    await defer.Deferred()

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


class OrphanTests(SynchronousTestCase):
    """
    A node whose parent is SIGKILLed dies too.
    """

    def test_nodeDiesWithItsParent(self):
        """
        SIGKILL the process that started a twistd node (as when a test runner
        is killed): the node is gone within seconds, not left running.
        """
        parent = subprocess.Popen(
            [sys.executable, "-c", _PARENT], cwd=ROOT, stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        child = None

        def cleanup():
            for pid in (parent.pid, child):
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            parent.wait(10)
            parent.stdout.close()

        self.addCleanup(cleanup)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = readLineWithin(parent.stdout, max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            line = line.decode()
            if line.startswith("CHILD"):
                child = int(line.split()[1])
                break
            if not line:
                self.fail("the parent exited before starting its node")
        self.assertIsNotNone(child, "the node did not start in time")
        self.assertTrue(_alive(child))
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(_alive(child), "the node outlived its parent")
