"""
Tests of C{bench/recovery.py}'s writing of RECOVERY.md: each of its two
parts (the times, the exactly-once matrix) is written without losing the other.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import loadBench


class WriteReportTests(SynchronousTestCase):
    """
    L{writeReport} replaces the part it was given and keeps the other.
    """

    def setUp(self):
        self.recovery = loadBench("recovery")
        self.path = self.mktemp()
        self.matrix = self.recovery.MATRIX_TITLE + "\n\n| matrix | old |\n"

    def read(self):
        with open(self.path) as f:
            return f.read()

    def test_timesKeepTheMatrix(self):
        """
        Writing the times replaces the head and keeps the matrix section after it.
        """
        with open(self.path, "w") as f:
            f.write("# Recovery times\n\nold times\n\n" + self.matrix)
        self.recovery.writeReport(self.path, "# Recovery times\n\nnew times\n", matrix=False)
        self.assertEqual(self.read(), "# Recovery times\n\nnew times\n\n" + self.matrix)

    def test_matrixKeepsTheTimes(self):
        """
        Writing the matrix replaces its section (or adds it) and keeps the times before it.
        """
        with open(self.path, "w") as f:
            f.write("# Recovery times\n\ntimes\n")
        new = self.recovery.MATRIX_TITLE + "\n\n| matrix | new |\n"
        self.recovery.writeReport(self.path, new, matrix=True)
        self.assertEqual(self.read(), "# Recovery times\n\ntimes\n\n" + new)
        self.recovery.writeReport(self.path, new.replace("new", "newer"), matrix=True)
        self.assertEqual(self.read(), "# Recovery times\n\ntimes\n\n" + new.replace("new", "newer"))

    def test_newFile(self):
        """
        Into a file that does not exist yet, the part given is all there is.
        """
        self.recovery.writeReport(self.path, "# Recovery times\n\ntimes\n", matrix=False)
        self.assertEqual(self.read(), "# Recovery times\n\ntimes\n")
