"""
Tests for L{zmqrelay.roles.drain}: stopping without cancelling.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.roles.drain import DONE, DRAINING, Drain


class DrainTests(SynchronousTestCase):
    """
    L{Drain} waits for the work in flight, within its timeout.
    """

    def setUp(self):
        self.clock = Clock()
        self.work = 2
        self.drain = Drain(self.clock, 10.0, lambda: self.work > 0)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_idleAtOnce(self):
        """
        With nothing in flight it is done at once, drained.
        """
        self.work = 0
        self.assertIs(self.successResultOf(self.drain.start()), True)
        self.assertEqual(self.drain.state, DONE)

    def test_waitsForWork(self):
        """
        It fires, drained, when the owner reports the last work ended, not before.
        """
        d = self.drain.start()
        self.assertEqual(self.drain.state, DRAINING)
        self.work = 1
        self.drain.check()
        self.assertNoResult(d)
        self.work = 0
        self.drain.check()
        self.assertIs(self.successResultOf(d), True)

    def test_noticesUnreportedEnd(self):
        """
        Work that ended without a report is noticed on the next step.
        """
        d = self.drain.start()
        self.work = 0
        self.assertNoResult(d)
        self.clock.advance(0.05)
        self.assertIs(self.successResultOf(d), True)

    def test_timeout(self):
        """
        At the timeout it fires, not drained, and a later report changes nothing.
        """
        d = self.drain.start()
        self.clock.pump([0.05] * 199)
        self.assertNoResult(d)
        self.clock.advance(0.05)
        self.assertIs(self.successResultOf(d), False)
        self.work = 0
        self.drain.check()
        self.assertIs(self.drain.drained, False)

    def test_cancel(self):
        """
        Cancelling ends the wait at once, as the timeout would: it fires, not drained, and leaves
        no timer or poll behind.
        """
        d = self.drain.start()
        d.cancel()
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual((self.drain.state, self.drain.drained), (DONE, False))
