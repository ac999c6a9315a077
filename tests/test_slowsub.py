"""
Tests for L{zmqrelay.core.slowsub}: which subscribers are cut off as slow
consumers, and when, with a fake clock and fake figures.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from zmqrelay.core.slowsub import QUIET, SlowSubscribers

MiB = 1024 * 1024


class Figures:
    """
    What a plane would report: bytes published, each connection's
    C{(acked, notsent)}, and the cuts asked for.
    """

    def __init__(self):
        self.published = 0
        self.messages = 0
        self.connections = {}
        self.cuts = []
        self.reads = 0

    def backlog(self, fd):
        self.reads += 1
        return self.connections.get(fd)

    def cut(self, fd, address):
        self.cuts.append((fd, address))
        return self.connections.pop(fd, None) is not None

    def send(self, n, readers=(), stuck=()):
        """
        Publish C{n} bytes; C{readers} take all of it, C{stuck} none (their
        kernel buffer is full: 1 MiB unsent).
        """
        self.published += n
        self.messages += 1
        for fd in readers:
            if fd in self.connections:
                acked, notsent = self.connections[fd]
                self.connections[fd] = (acked + n, 0)
        for fd in stuck:
            if fd in self.connections:
                acked, _ = self.connections[fd]
                self.connections[fd] = (acked, MiB)


class SlowSubscribersTests(unittest.TestCase):
    """
    L{SlowSubscribers} bounds what is held per subscriber in bytes.
    """

    def setUp(self):
        self.clock = Clock()
        self.figures = Figures()
        self.guard = SlowSubscribers(
            self.clock, 32 * MiB, lambda: (self.figures.published, self.figures.messages), self.figures.backlog,
            self.figures.cut, timer=lambda: 0.0,
        )
        self.guard.start()
        self.addCleanup(self.guard.stop)

    def connect(self, fd, acked=0):
        self.figures.connections[fd] = (acked, 0)
        self.guard.accepted(fd, ("127.0.0.1", 40000 + fd))

    def test_stuckSubscriberCut(self):
        """
        A subscriber that reads nothing while more than the limit is
        published is cut, counted, and forgotten; one that reads keeps its
        connection.
        """
        self.connect(7)
        self.connect(8)
        for _ in range(40):
            self.figures.send(MiB, readers=[8], stuck=[7])
            self.clock.advance(0.1)
        self.assertEqual(self.figures.cuts, [(7, ("127.0.0.1", 40007))])
        self.assertEqual(self.guard.counters["slow-cut"], 1)
        self.assertGreater(self.guard.counters["slow-cut-bytes"], 32 * MiB)
        self.assertEqual(len(self.guard), 1)

    def test_cutOnceOverLimit(self):
        """
        The cut comes at the first scan after the bound is crossed, not
        later: within an eighth of the limit past it here.
        """
        self.connect(7)
        sent = 0
        while not self.figures.cuts:
            self.figures.send(MiB, stuck=[7])
            sent += MiB
            self.clock.advance(0.1)
            self.assertLess(sent, 64 * MiB)
        self.assertLessEqual(sent, 32 * MiB + 32 * MiB // 8 + MiB + MiB)

    def test_narrowSubscriberKept(self):
        """
        A subscriber that gets little of what is published (few topics),
        but keeps up, is never cut however much is published: each scan
        finds its kernel buffer nearly empty and measures it afresh.
        """
        self.connect(7)
        for _ in range(200):
            self.figures.send(MiB)
            acked, _ = self.figures.connections[7]
            self.figures.connections[7] = (acked + 100, QUIET // 2)
            self.clock.advance(0.1)
        self.assertEqual(self.figures.cuts, [])

    def test_slowReaderAcked(self):
        """
        What the peer acknowledged is not held here: a subscriber that
        reads most of what is published, though its buffer stays full, is
        not cut.
        """
        self.connect(7)
        for _ in range(200):
            self.figures.published += MiB
            acked, _ = self.figures.connections[7]
            self.figures.connections[7] = (acked + MiB - 64 * 1024, 512 * 1024)
            self.clock.advance(0.1)
        self.assertEqual(self.figures.cuts, [])

    def test_recoversThenStalls(self):
        """
        A subscriber measured afresh while it kept up is cut only once the
        limit is published after it stalls.
        """
        self.connect(7)
        for _ in range(100):
            self.figures.send(MiB, readers=[7])
            self.clock.advance(0.1)
        for _ in range(30):
            self.figures.send(MiB, stuck=[7])
            self.clock.advance(0.1)
        self.assertEqual(self.figures.cuts, [])
        for _ in range(10):
            self.figures.send(MiB, stuck=[7])
            self.clock.advance(0.1)
        self.assertEqual(len(self.figures.cuts), 1)

    def test_smallNotificationsLagging(self):
        """
        A subscriber that lags on small notifications holds at most its
        high-water mark of them (libzmq drops for it beyond): however far
        behind, it is not cut; with large ones it is.
        """
        guard = SlowSubscribers(
            self.clock, 32 * MiB, lambda: (self.figures.published, self.figures.messages),
            self.figures.backlog, self.figures.cut, hwm=1000, timer=lambda: 0.0,
        )
        self.figures.connections[5] = (0, 0)
        guard.accepted(5, ("127.0.0.1", 5))
        for _ in range(1000):
            for _ in range(1000):
                self.figures.send(100, stuck=[5])
            guard.check()
        self.assertEqual(self.figures.cuts, [])
        for _ in range(40):
            self.figures.send(MiB, stuck=[5])
            guard.check()
        self.assertEqual(len(self.figures.cuts), 1)

    def test_lastHwm(self):
        """
        The bytes of the last C{hwm + 1} notifications come from the
        figures read each tick, the mean size taken within the tick where
        they begin; C{None} while the figures do not go back that far.
        """
        figures = [(0, 0)]
        guard = SlowSubscribers(
            self.clock, 8 * MiB, lambda: figures[-1], self.figures.backlog,
            self.figures.cut, hwm=9,
        )
        guard.start()
        self.addCleanup(guard.stop)
        self.figures.connections[1] = (0, 0)
        guard.accepted(1, ("127.0.0.1", 1))
        # 5 notifications of 100 bytes, then 8 of 1000.
        figures.append((500, 5))
        self.clock.advance(0.1)
        self.assertIsNone(guard._lastHwm())
        figures.append((8500, 13))
        self.clock.advance(0.1)
        # The last 10: 8 x 1000, and 2 of the interval before at 100 each.
        self.assertEqual(guard._lastHwm(), 8200)

    def test_quietScansNothing(self):
        """
        While less than an eighth of the limit is published, no connection
        is looked at: idle subscribers cost one figure a tick.
        """
        for fd in range(100):
            self.connect(fd)
        reads = self.figures.reads
        for _ in range(50):
            self.figures.published += 1024
            self.clock.advance(0.1)
        self.assertEqual(self.figures.reads, reads)

    def test_idleReadsNothing(self):
        """
        While no connection is watched, a tick reads nothing (the figure of
        what was published costs a round trip to the fan-out thread); the
        first connection reads it afresh.
        """
        reads = []

        def published():
            reads.append(1)
            return self.figures.published, self.figures.messages

        guard = SlowSubscribers(self.clock, 8 * MiB, published, self.figures.backlog,
                                self.figures.cut)
        guard.start()
        self.addCleanup(guard.stop)
        self.clock.advance(10)
        self.assertEqual(len(reads), 1)
        self.figures.published += 5 * MiB
        self.figures.connections[2] = (0, 0)
        guard.accepted(2, ("127.0.0.1", 2))
        self.assertEqual(len(reads), 2)
        self.assertEqual(guard._connections[2].published, 5 * MiB)

    def test_budget(self):
        """
        A scan that took t seconds delays the next by t / BUDGET at least.
        """
        times = iter([0.0, 0.5] + [0.5] * 100)
        guard = SlowSubscribers(
            self.clock, 8 * MiB, lambda: (self.figures.published, self.figures.messages), self.figures.backlog,
            self.figures.cut, timer=lambda: next(times),
        )
        self.figures.connections[3] = (0, 0)
        guard.accepted(3, ("127.0.0.1", 1))
        self.figures.published += 2 * MiB
        self.assertIsNotNone(guard.check())
        self.figures.published += 2 * MiB
        self.clock.advance(9.0)
        self.assertIsNone(guard.check())
        self.clock.advance(1.1)
        self.assertIsNotNone(guard.check())

    def test_closedForgotten(self):
        """
        A connection that ended, or that cannot be measured (not TCP), is
        not watched.
        """
        self.connect(7)
        self.guard.accepted(9, ("x", 1))
        self.assertEqual(len(self.guard), 1)
        self.guard.closed(7)
        self.assertEqual(len(self.guard), 0)

    def test_connectionEvent(self):
        """
        A monitor's reports watch and forget connections; once stopped,
        reports are ignored (a late one must not be watched).
        """
        self.figures.connections[4] = (0, 0)
        self.guard.connectionEvent("accepted", 4, ("127.0.0.1", 4))
        self.assertEqual(len(self.guard), 1)
        self.guard.connectionEvent("closed", 4, None)
        self.assertEqual(len(self.guard), 0)
        self.guard.stop()
        self.guard.connectionEvent("accepted", 4, ("127.0.0.1", 4))
        self.assertEqual(len(self.guard), 0)

    def test_goneDuringScan(self):
        """
        A connection the kernel no longer knows is forgotten at the next
        scan, never cut.
        """
        self.connect(7)
        del self.figures.connections[7]
        self.figures.published += 8 * MiB
        self.guard.check()
        self.assertEqual(len(self.guard), 0)
        self.assertEqual(self.figures.cuts, [])

    def test_cutRefused(self):
        """
        A cut that fails (the descriptor holds another connection now) is
        not counted.
        """
        self.connect(7)
        self.figures.cut = lambda fd, address: False
        self.guard.cut = self.figures.cut
        for _ in range(40):
            self.figures.send(MiB, stuck=[7])
            self.clock.advance(0.1)
        self.assertEqual(self.guard.counters["slow-cut"], 0)
        self.assertEqual(len(self.guard), 0)

    def test_off(self):
        """
        A limit of 0 watches nothing and schedules nothing.
        """
        guard = SlowSubscribers(Clock(), 0, lambda: (0, 0), self.figures.backlog, self.figures.cut)
        guard.start()
        guard.accepted(1, ("127.0.0.1", 1))
        self.assertEqual(len(guard), 0)
        self.assertEqual(guard.clock.getDelayedCalls(), [])

    def test_stop(self):
        """
        L{SlowSubscribers.stop} cancels its timer.
        """
        self.guard.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
