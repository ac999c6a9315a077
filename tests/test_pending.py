"""
Tests for L{zmqrelay.core.pending}: connections that hold no session.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.pending import PendingConnections

A = ("127.0.0.1", 1000)
B = ("127.0.0.1", 1001)


class PendingConnectionsTests(SynchronousTestCase):
    """
    Waiting, expiring, the cap, and connections that hold a session.
    """

    def test_expiredAfterTimeout(self):
        """
        A connection that waits the timeout is taken once, oldest first.
        """
        pending = PendingConnections(5.0, 10)
        pending.accepted(1, A, 0.0)
        pending.accepted(2, B, 1.0)
        self.assertEqual(pending.expired(4.9), [])
        self.assertEqual(pending.expired(6.0), [(1, A), (2, B)])
        self.assertEqual(pending.expired(60.0), [])

    def test_capCutsOldest(self):
        """
        Beyond the limit, accepting one more gives back the oldest waiting.
        """
        pending = PendingConnections(5.0, 1)
        self.assertEqual(pending.accepted(1, A, 0.0), [])
        self.assertEqual(pending.accepted(2, B, 1.0), [(1, A)])
        self.assertEqual(len(pending), 1)

    def test_attachedNeverExpires(self):
        """
        A connection that holds a session does not wait; when its session
        ends it waits again from then.
        """
        pending = PendingConnections(5.0, 10)
        pending.accepted(1, A, 0.0)
        pending.attached(1)
        self.assertEqual(pending.expired(100.0), [])
        pending.detached(1, 100.0)
        self.assertEqual(pending.expired(104.0), [])
        self.assertEqual(pending.expired(105.0), [(1, A)])

    def test_attachedBeforeAccepted(self):
        """
        A session whose ACCEPTED event comes late is not made to wait.
        """
        pending = PendingConnections(5.0, 10)
        pending.attached(3)
        pending.accepted(3, A, 0.0)
        self.assertEqual(pending.expired(100.0), [])

    def test_closedForgotten(self):
        """
        A closed connection is neither waiting nor known.
        """
        pending = PendingConnections(5.0, 10)
        pending.accepted(1, A, 0.0)
        pending.closed(1)
        self.assertIsNone(pending.address(1))
        self.assertEqual(pending.expired(100.0), [])

    def test_expireSoon(self):
        """
        expireSoon puts a connection first in line for the next expired(),
        ahead of older ones that have not waited long enough.
        """
        pending = PendingConnections(5.0, 10)
        pending.accepted(1, A, 0.0)
        pending.accepted(2, B, 1.0)
        pending.attached(2)
        pending.expireSoon(2, 2.0)
        self.assertEqual(pending.expired(2.0), [(2, B)])
        pending.expireSoon(9, 2.0)
        self.assertEqual(pending.expired(2.0), [])
