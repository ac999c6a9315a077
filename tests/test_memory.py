"""
Tests for L{zmqrelay.edge.memory}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.edge import memory


class MemoryTrimmerTests(SynchronousTestCase):
    """
    The periodic trim.
    """

    def test_trimsEveryInterval(self):
        """
        Once started, the trimmer trims every interval and counts the trims
        that returned memory; stopped, it leaves no timer.
        """
        clock = Clock()
        results = [True, False, True]
        trimmer = memory.MemoryTrimmer(clock, 5.0, trimmer=lambda: results.pop(0))
        trimmer.start()
        trimmer.start()
        clock.advance(4.9)
        self.assertEqual(len(results), 3)
        clock.advance(0.1)
        clock.advance(5.0)
        clock.advance(5.0)
        self.assertEqual(results, [])
        self.assertEqual(trimmer.trims, 2)
        trimmer.stop()
        trimmer.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failureContained(self):
        """
        A trim that raises is logged; the loop goes on.
        """
        clock = Clock()
        calls = []

        def broken():
            calls.append(1)
            raise OSError("no")

        trimmer = memory.MemoryTrimmer(clock, 1.0, trimmer=broken)
        trimmer.start()
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
        trimmer.stop()

    def test_realTrim(self):
        """
        The real trim runs without error (returns a bool) on this system.
        """
        self.assertIn(memory.trim(), (True, False))
