"""
Tests for L{zmqrelay.core.fairqueue}.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.fairqueue import FairQueue


class FairQueueTests(SynchronousTestCase):
    """
    Round-robin over keys, first in first out within a key.
    """

    def test_roundRobin(self):
        """
        A key with many items gets one turn per round, like every other.
        """
        queue = FairQueue()
        for i in range(5):
            queue.push("flood", ("flood", i))
        queue.push("a", ("a", 0))
        queue.push("b", ("b", 0))
        self.assertEqual(len(queue), 7)
        taken = [queue.pop() for _ in range(7)]
        self.assertEqual(taken[:3], [("flood", 0), ("a", 0), ("b", 0)])
        self.assertEqual(taken[3:], [("flood", i) for i in range(1, 5)])
        self.assertIsNone(queue.pop())
        self.assertEqual(len(queue), 0)

    def test_latecomerServedNextRound(self):
        """
        A key that arrives while another has a long queue is served after at
        most one more item of that other key.
        """
        queue = FairQueue()
        for i in range(100):
            queue.push("flood", i)
        queue.pop()
        queue.push("good", "mine")
        self.assertEqual([queue.pop(), queue.pop()], [1, "mine"])

    def test_remove(self):
        """
        remove() takes the matching items and keeps the order of the rest.
        """
        queue = FairQueue()
        for i in range(6):
            queue.push(i % 2, i)
        self.assertEqual(sorted(queue.remove(lambda item: item >= 4)), [4, 5])
        self.assertEqual(len(queue), 4)
        self.assertEqual([queue.pop() for _ in range(4)], [0, 1, 2, 3])
        self.assertEqual(queue.keys(), [])

    def test_removeFrom(self):
        """
        removeFrom() looks at one key's items only, keeps the order of the
        rest, and forgets a key left empty.
        """
        queue = FairQueue()
        for i in range(6):
            queue.push(i % 2, i)
        self.assertEqual(queue.removeFrom(1, lambda item: item >= 3), [3, 5])
        self.assertEqual(queue.removeFrom(0, lambda item: True), [0, 2, 4])
        self.assertEqual(queue.removeFrom(7, lambda item: True), [])
        self.assertEqual((len(queue), queue.keys()), (1, [1]))
        self.assertEqual(queue.pop(), 1)

    @given(st.lists(st.tuples(st.integers(0, 4), st.integers())))
    def test_everythingOnceInKeyOrder(self, pushes):
        """
        Every item pushed comes out once, and each key's items in the order
        they went in.
        """
        queue = FairQueue()
        for key, value in pushes:
            queue.push(key, (key, value))
        out = []
        while len(queue):
            out.append(queue.pop())
        self.assertEqual(sorted(out), sorted(pushes))
        for key in range(5):
            self.assertEqual([v for k, v in out if k == key], [v for k, v in pushes if k == key])
