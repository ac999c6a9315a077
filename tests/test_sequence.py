"""
Tests for L{zmqrelay.core.sequence}: duplicates and gaps in notification streams.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.sequence import DELIVER, DUPLICATE, Gap, Notification, SequenceTracker


class SequenceTrackerTests(SynchronousTestCase):
    """
    L{SequenceTracker} verdicts per (server, topic).
    """

    def setUp(self):
        self.tracker = SequenceTracker()

    def receive(self, seq, server="s1", inc="i1", topic=b"t"):
        return self.tracker.receive(server, inc, topic, seq)

    def test_firstAndNext(self):
        """
        The first notification seen (any number) and its successor are delivered.
        """
        self.assertEqual(self.receive(41), (DELIVER, None))
        self.assertEqual(self.receive(42), (DELIVER, None))
        self.assertEqual(self.tracker.counters["delivered"], 2)

    def test_duplicate(self):
        """
        The same number again (e.g. from the other path) is a duplicate.
        """
        self.receive(1)
        self.receive(2)
        self.assertEqual(self.receive(2), (DUPLICATE, None))
        self.assertEqual(self.receive(1), (DUPLICATE, None))
        self.assertEqual(self.tracker.counters["duplicates"], 2)

    def test_gapRange(self):
        """
        A skip is delivered and names the range missed.
        """
        self.receive(1)
        self.assertEqual(self.receive(5), (DELIVER, (2, 4)))
        self.assertEqual(self.tracker.counters["gaps"], 1)

    def test_missingArrivesLate(self):
        """
        A missing number arriving late is delivered once, then is a duplicate.
        """
        self.receive(1)
        self.receive(5)
        self.assertEqual(self.receive(3), (DELIVER, None))
        self.assertEqual(self.receive(3), (DUPLICATE, None))
        self.assertEqual(self.receive(6), (DELIVER, None))

    def test_stillMissing(self):
        """
        stillMissing() names what never came, then forgets it.
        """
        self.receive(1)
        self.receive(6)
        self.receive(3)
        self.assertEqual(self.tracker.stillMissing("s1", "i1", b"t", 2, 5), [2, 4, 5])
        self.assertEqual(self.tracker.stillMissing("s1", "i1", b"t", 2, 5), [])
        self.assertEqual(self.receive(4), (DUPLICATE, None))

    def test_stillMissingPartRange(self):
        """
        stillMissing() only gives up on the range asked for.
        """
        self.receive(1)
        self.receive(10)
        self.assertEqual(self.tracker.stillMissing("s1", "i1", b"t", 2, 4), [2, 3, 4])
        self.assertEqual(self.receive(7), (DELIVER, None))

    def test_stillMissingUnknownStream(self):
        """
        For an unknown stream (or another incarnation) the whole range is missing.
        """
        self.assertEqual(self.tracker.stillMissing("s9", "i", b"t", 3, 5), [3, 4, 5])
        self.receive(1)
        self.receive(5)
        self.assertEqual(self.tracker.stillMissing("s1", "other", b"t", 2, 3), [2, 3])

    def test_newIncarnationResets(self):
        """
        A restarted server's numbers start a new stream, without a gap.
        """
        self.receive(100)
        self.assertEqual(self.receive(1, inc="i2"), (DELIVER, None))
        self.assertEqual(self.receive(2, inc="i2"), (DELIVER, None))
        self.assertEqual(self.tracker.counters["gaps"], 0)

    def test_streamsIndependent(self):
        """
        Servers and topics are counted separately.
        """
        self.receive(1)
        self.assertEqual(self.receive(1, topic=b"u"), (DELIVER, None))
        self.assertEqual(self.receive(1, server="s2"), (DELIVER, None))
        self.assertEqual(self.receive(2), (DELIVER, None))

    def test_streamBound(self):
        """
        Beyond C{streams}, the least recently active stream is forgotten.
        """
        tracker = SequenceTracker(streams=2)
        tracker.receive("s1", "i", b"a", 1)
        tracker.receive("s1", "i", b"b", 1)
        tracker.receive("s1", "i", b"a", 2)
        tracker.receive("s1", "i", b"c", 1)
        # b was forgotten: its next number is a fresh start, not a duplicate.
        self.assertEqual(tracker.receive("s1", "i", b"b", 1), (DELIVER, None))
        self.assertEqual(tracker.receive("s1", "i", b"c", 1), (DUPLICATE, None))

    def test_missingBound(self):
        """
        A gap larger than C{missing} is not tracked number by number, yet still reported lost.
        """
        tracker = SequenceTracker(missing=3)
        tracker.receive("s1", "i", b"t", 1)
        self.assertEqual(tracker.receive("s1", "i", b"t", 10), (DELIVER, (2, 9)))
        self.assertEqual(tracker.receive("s1", "i", b"t", 11), (DELIVER, None))
        # Too many to track: a late one cannot be told from a duplicate...
        self.assertEqual(tracker.receive("s1", "i", b"t", 5), (DUPLICATE, None))
        # ...but giving up on the range still names every number of it, once.
        self.assertEqual(tracker.stillMissing("s1", "i", b"t", 2, 9), list(range(2, 10)))
        self.assertEqual(tracker.stillMissing("s1", "i", b"t", 2, 9), [])

    def test_missingBoundPartly(self):
        """
        Giving up on part of an untracked range keeps the rest for later.
        """
        tracker = SequenceTracker(missing=2)
        tracker.receive("s1", "i", b"t", 1)
        tracker.receive("s1", "i", b"t", 3)
        tracker.receive("s1", "i", b"t", 20)
        self.assertEqual(tracker.stillMissing("s1", "i", b"t", 1, 6), [2, 4, 5, 6])
        self.assertEqual(tracker.stillMissing("s1", "i", b"t", 7, 30), list(range(7, 20)))

    def test_reprs(self):
        """
        Notifications and gaps show what they are.
        """
        self.assertIn("s1#3", repr(Notification(b"t", b"", "s1", "i", 3)))
        self.assertIn("2..4", repr(Gap("s1", "i", b"t", 2, 4)))


class LifecycleTests(SynchronousTestCase):
    """
    Streams across server restarts and resubscriptions.
    """

    def test_lateCopiesOfAnotherIncarnation(self):
        """
        Copies of what an incarnation already gave are duplicates even after
        another incarnation spoke in between (two paths, a server restart).
        """
        tracker = SequenceTracker()
        self.assertEqual(tracker.receive("s", "old", b"t", 41)[0], DELIVER)
        self.assertEqual(tracker.receive("s", "new", b"t", 1)[0], DELIVER)
        self.assertEqual(tracker.receive("s", "old", b"t", 41)[0], DUPLICATE)
        self.assertEqual(tracker.receive("s", "new", b"t", 1)[0], DUPLICATE)
        self.assertEqual(tracker.receive("s", "new", b"t", 2), (DELIVER, None))

    def test_lateOldProcessDoesNotSilenceTheNewOne(self):
        """
        First sight of a stream from the new process, then a late
        notification of the old one on a slower path: both are delivered,
        and the new process's next notifications are not taken for
        duplicates.
        """
        tracker = SequenceTracker()
        self.assertEqual(tracker.receive("s", "new", b"t", 1)[0], DELIVER)
        self.assertEqual(tracker.receive("s", "old", b"t", 41)[0], DELIVER)
        self.assertEqual([tracker.receive("s", "new", b"t", n) for n in range(2, 6)],
                         [(DELIVER, None)] * 4)

    def test_revivedIncarnationGap(self):
        """
        Going back to an incarnation we followed, what it skipped meanwhile
        is a gap.
        """
        tracker = SequenceTracker()
        tracker.receive("s", "a", b"t", 1)
        tracker.receive("s", "b", b"t", 1)
        self.assertEqual(tracker.receive("s", "a", b"t", 5), (DELIVER, (2, 4)))

    def test_forgetUnsubscribedTopics(self):
        """
        Forgotten streams start afresh: what was published while nobody
        listened is no gap.
        """
        tracker = SequenceTracker()
        tracker.receive("s", "i", b"news.a", 3)
        tracker.receive("s", "i", b"other", 3)
        tracker.forget(lambda topic: topic.startswith((b"other",)))
        self.assertEqual(tracker.receive("s", "i", b"news.a", 5000), (DELIVER, None))
        self.assertEqual(tracker.receive("s", "i", b"other", 5)[1], (4, 4))
