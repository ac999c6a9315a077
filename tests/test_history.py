"""
Tests for L{zmqrelay.core.history}: a publisher's recent notifications.
"""

import msgpack
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.core.history import ITEM_OVERHEAD, TOPIC_OVERHEAD, NotificationHistory
from zmqrelay.roles.server import Server

from tests.fakes import FakeSocketFactory, RecordingHandler, helloFrames


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


def _counted(history):
    """
    @return: the bytes C{history} should count for what it keeps, recomputed
        from its replays.
    """
    total = 0
    for topic in list(history._kept):
        items = history.replay(topic, 0, 2**63)
        total += len(topic) + TOPIC_OVERHEAD
        total += sum(len(payload) + ITEM_OVERHEAD for _, payload in items)
    return total


class ByteBoundTests(SynchronousTestCase):
    """
    L{NotificationHistory} keeps its payloads within C{maxBytes}, all topics
    together, forgetting the oldest first.
    """

    def test_oldestFirstAcrossTopics(self):
        """
        Past the byte bound the oldest notifications go first, whatever their
        topic, and what is kept stays within the bound.
        """
        perItem = 1000 + ITEM_OVERHEAD
        history = NotificationHistory(maxBytes=2 * TOPIC_OVERHEAD + 2 + 5 * perItem)
        for i in range(4):
            history.record(b"a", b"a" * 1000)
            history.record(b"b", b"b" * 1000)
        self.assertEqual([s for s, _ in history.replay(b"a", 1, 10)], [3, 4])
        self.assertEqual([s for s, _ in history.replay(b"b", 1, 10)], [2, 3, 4])
        self.assertLessEqual(history.bytes, history.maxBytes)
        self.assertEqual(history.bytes, _counted(history))
        self.assertEqual(history.evicted, 3)
        self.assertEqual(len(history), 5)

    def test_replayStartsLater(self):
        """
        A replay of a range partly forgotten for bytes returns only the
        newer part, in order.
        """
        history = NotificationHistory(maxBytes=TOPIC_OVERHEAD + 1 + 3 * (100 + ITEM_OVERHEAD))
        for i in range(1, 11):
            history.record(b"t", b"%03d" % i + b"x" * 97)
        self.assertEqual([s for s, _ in history.replay(b"t", 1, 10)], [8, 9, 10])
        self.assertEqual(history.replay(b"t", 9, 9), [(9, b"009" + b"x" * 97)])

    def test_olderTopicGoesWhole(self):
        """
        A topic all of whose notifications are forgotten for bytes is
        forgotten too (its topic bytes given back), but keeps its numbering.
        """
        history = NotificationHistory(maxBytes=TOPIC_OVERHEAD + 5 + 2 * (500 + ITEM_OVERHEAD))
        history.record(b"old", b"o" * 500)
        history.record(b"newer", b"n" * 500)
        history.record(b"newer", b"n" * 500)
        self.assertEqual(history.replay(b"old", 1, 1), [])
        self.assertEqual(list(history._kept), [b"newer"])
        self.assertEqual(history.bytes, _counted(history))
        self.assertEqual(history.record(b"old", b""), 2)

    def test_largerThanTheBound(self):
        """
        A notification larger than the whole bound is numbered but not kept,
        and counts nothing.
        """
        history = NotificationHistory(maxBytes=1000)
        self.assertEqual(history.record(b"t", b"x" * 2000), 1)
        self.assertEqual(history.replay(b"t", 1, 1), [])
        self.assertEqual((history.bytes, len(history)), (0, 0))
        self.assertEqual(history.record(b"t", b"y"), 2)
        self.assertEqual(history.replay(b"t", 1, 2), [(2, b"y")])

    def test_zeroKeepsNothing(self):
        """
        C{maxBytes=0} keeps no payload; numbering goes on.
        """
        history = NotificationHistory(maxBytes=0)
        self.assertEqual([history.record(b"t", b"p") for _ in range(3)], [1, 2, 3])
        self.assertEqual(history.replay(b"t", 1, 3), [])
        self.assertEqual(history.bytes, 0)

    def test_countBoundsGiveBytesBack(self):
        """
        Notifications forgotten by the per-topic and the topic count bounds
        are no longer counted, so the byte count matches what is kept.
        """
        history = NotificationHistory(size=3, topics=2)
        for i in range(10):
            history.record(b"t%d" % (i % 3), b"z" * (i + 1))
        self.assertEqual(history.bytes, _counted(history))
        self.assertEqual(len(history), sum(
            len(history.replay(topic, 0, 100)) for topic in (b"t0", b"t1", b"t2")))
        self.assertEqual(history.evicted, 0)

    def test_restartedCounterDropsOldPayloads(self):
        """
        A topic whose counter was forgotten (fewer C{counters} than
        C{topics}) restarts at 1 without its old payloads being replayed
        under the new numbers.
        """
        history = NotificationHistory(topics=10, counters=1)
        history.record(b"a", b"a1")
        history.record(b"a", b"a2")
        history.record(b"b", b"b1")
        self.assertEqual(history.record(b"a", b"new"), 1)
        self.assertEqual(history.replay(b"a", 1, 5), [(1, b"new")])
        self.assertEqual(history.bytes, _counted(history))


class ServerHistoryBytesTests(SynchronousTestCase):
    """
    A server's replay history follows C{historyBytes}.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()
        config = NodeConfig(
            "s1", incarnation="s1-inc", historyBytes=TOPIC_OVERHEAD + 1 + 2 * (1000 + ITEM_OVERHEAD)
        )
        self.server = Server(
            config, RecordingHandler(), ("echo",), listen="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.server.startService()
        self.addCleanup(self.stop)

    def stop(self):
        self.successResultOf(self.server.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_replayAfterByteEviction(self):
        """
        A client asking to replay notifications forgotten for bytes gets
        only the ones still kept; the server's stats show the bytes kept
        and how many were forgotten.
        """
        for _ in range(4):
            self.server.publish(b"t", b"p" * 1000)
        [router] = self.factory.ofKind("router")
        router.receive([b"c"] + helloFrames("c1", "ci"))
        ask = msgpack.packb({"topic": b"t", "inc": "s1-inc", "first": 1, "last": 4}, use_bin_type=True)
        router.receive([b"c"] + protocol.encode(
            protocol.REQUEST, {"id": 4, "to": "s1", "sys": "replay"}, ask))
        [reply] = [m for r, m in router.messages(routed=True) if m.type == protocol.REPLY]
        self.assertEqual([seq for seq, _ in msgpack.unpackb(reply.payload)["items"]], [3, 4])
        stats = self.server.stats()
        self.assertEqual(stats["history.evicted"], 2)
        self.assertEqual(stats["history.bytes"], self.server.history.bytes)
        self.assertLessEqual(stats["history.bytes"], self.server.config.historyBytes)
