"""
Tests for L{zmqrelay.tools.launcher.NodeProcess}: stopping a child, with a
fake transport and a L{Clock}.
"""

import signal

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.error import ProcessDone
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.tools import launcher


class _Transport:
    pid = 4242


class StopTests(SynchronousTestCase):
    """
    L{NodeProcess.stop}: SIGTERM, SIGKILL at the timeout, and a wait that can be given up.
    """

    def setUp(self):
        self.clock = Clock()
        self.signals = []
        self.patch(launcher.os, "kill", lambda pid, signum: self.signals.append((pid, signum)))
        self.node = launcher.NodeProcess(self.clock, "n1")
        self.node.transport = _Transport()

    def test_endsWithinTimeout(self):
        """
        SIGTERM at once; the stop fires with the exit status when the child ends, and no SIGKILL follows.
        """
        d = self.node.stop(timeout=5.0)
        self.assertIn((4242, signal.SIGTERM), self.signals)
        self.node.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(self.successResultOf(d), 0)
        self.clock.advance(10)
        self.assertNotIn((4242, signal.SIGKILL), self.signals)

    def test_cancelledWaitStillKills(self):
        """
        Cancelling one stop's Deferred gives up that wait only: the SIGKILL still comes at the
        timeout, and another waiter on the child still learns that it ended.
        """
        first = self.node.stop(timeout=5.0)
        second = self.node.stop(timeout=5.0)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.clock.advance(5.0)
        self.assertIn((4242, signal.SIGKILL), self.signals)
        self.node.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(self.successResultOf(second), 0)
        self.assertEqual(self.successResultOf(self.node.ended), 0)
