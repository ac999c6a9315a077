"""
Tests for L{zmqrelay.core.history}: a publisher's recent notifications.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.history import NotificationHistory


class NotificationHistoryTests(SynchronousTestCase):
    """
    L{NotificationHistory} numbers notifications per topic and replays them.
    """

    def test_sequencePerTopic(self):
        """
        Each topic counts from 1 on its own.
        """
        history = NotificationHistory()
        self.assertEqual([history.record(b"a", b"1"), history.record(b"a", b"2")], [1, 2])
        self.assertEqual(history.record(b"b", b"x"), 1)
        self.assertEqual(history.record(b"a", b"3"), 3)

    def test_replayRange(self):
        """
        replay() returns the kept (seq, payload) pairs in the range, in order.
        """
        history = NotificationHistory()
        for i in range(1, 6):
            history.record(b"t", b"p%d" % i)
        self.assertEqual(history.replay(b"t", 2, 4), [(2, b"p2"), (3, b"p3"), (4, b"p4")])
        self.assertEqual(history.replay(b"t", 5, 99), [(5, b"p5")])
        self.assertEqual(history.replay(b"t", 7, 9), [])
        self.assertEqual(history.replay(b"t", 4, 2), [])
        self.assertEqual(history.replay(b"other", 1, 5), [])

    def test_sizeBound(self):
        """
        Only the last C{size} notifications of a topic are kept.
        """
        history = NotificationHistory(size=3)
        for i in range(1, 11):
            history.record(b"t", b"%d" % i)
        self.assertEqual([s for s, _ in history.replay(b"t", 1, 10)], [8, 9, 10])

    def test_topicBound(self):
        """
        Beyond C{topics}, the least recently published topic is forgotten.
        """
        history = NotificationHistory(topics=2)
        history.record(b"a", b"")
        history.record(b"b", b"")
        history.record(b"a", b"")
        history.record(b"c", b"")
        self.assertEqual(history.replay(b"b", 1, 10), [])
        self.assertEqual([s for s, _ in history.replay(b"a", 1, 10)], [1, 2])
        self.assertEqual([s for s, _ in history.replay(b"c", 1, 10)], [1])


class EvictionTests(SynchronousTestCase):
    """
    Forgetting a topic's payloads does not restart its numbering.
    """

    def test_numberingSurvivesPayloadEviction(self):
        """
        A topic whose payloads were evicted keeps counting from where it was,
        so subscribers never take its next notification for a duplicate.
        """
        history = NotificationHistory(size=10, topics=1)
        history.record(b"a", b"1")
        history.record(b"a", b"2")
        history.record(b"b", b"x")
        self.assertEqual(history.replay(b"a", 1, 2), [])
        self.assertEqual(history.record(b"a", b"3"), 3)
