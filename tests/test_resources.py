"""
Tests for L{zmqrelay.edge.resources}.
"""

import resource

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.edge.resources import raiseFileLimit


class FileLimitTests(SynchronousTestCase):
    """
    The open files limit of a node process.
    """

    def setUp(self):
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, limits)
        self.soft, self.hard = limits

    def test_raisedToHard(self):
        """
        The soft limit goes up to the hard one.
        """
        if self.hard == resource.RLIM_INFINITY or self.hard < 64:
            raise self.skipTest("no finite hard limit to raise to")
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, self.hard), self.hard))
        self.assertEqual(raiseFileLimit(), self.hard)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], self.hard)

    def test_neverLowered(self):
        """
        Asking for less than the current soft limit changes nothing.
        """
        self.assertEqual(raiseFileLimit(16), self.soft)
