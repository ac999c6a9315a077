"""
Tests for L{zmqrelay.core.replycache}: answering retried requests once.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.core.replycache import ENTRY_OVERHEAD, ReplyCache, answerSize
from zmqrelay.roles.server import Server

from tests.fakes import FakeSocketFactory, RecordingHandler, helloFrames


class ReplyCacheTests(SynchronousTestCase):
    """
    L{ReplyCache} remembers answers and running requests.
    """

    def test_firstTime(self):
        """
        An unknown key is not in the cache and counts no hit.
        """
        cache = ReplyCache()
        self.assertIsNone(cache.lookup(("c", "i", 1)))
        self.assertEqual(cache.hits, 0)

    def test_runningThenDone(self):
        """
        A running request is found (to join), and its waiters get the answer.
        """
        cache = ReplyCache()
        key = ("c", "i", 1)
        cache.begin(key).waiters.append(("peer1", 10))
        joined = cache.lookup(key)
        self.assertFalse(joined.done)
        joined.waiters.append(("peer2", 11))
        waiters = cache.finish(key, protocol.REPLY, {}, b"answer")
        self.assertEqual(waiters, [("peer1", 10), ("peer2", 11)])
        answer = cache.lookup(key)
        self.assertTrue(answer.done)
        self.assertEqual((answer.msgtype, answer.header, answer.payload), (protocol.REPLY, {}, b"answer"))
        self.assertEqual(answer.waiters, [])
        self.assertEqual(cache.hits, 2)
        self.assertEqual(len(cache), 1)

    def test_keysDistinct(self):
        """
        The same request id from another incarnation or client is another request.
        """
        cache = ReplyCache()
        cache.begin(("c", "i1", 1))
        cache.finish(("c", "i1", 1), protocol.REPLY, {}, b"x")
        self.assertIsNone(cache.lookup(("c", "i2", 1)))
        self.assertIsNone(cache.lookup(("d", "i1", 1)))
        self.assertIsNone(cache.lookup(("c", "i1", 2)))

    def test_errorsCached(self):
        """
        An error answer is cached like a reply.
        """
        cache = ReplyCache()
        cache.begin("k")
        cache.finish("k", protocol.ERROR, {"code": "handler-error", "msg": "no"}, b"")
        self.assertEqual(cache.lookup("k").header["code"], "handler-error")

    def test_bounded(self):
        """
        Beyond its size the cache forgets the oldest answers first.
        """
        cache = ReplyCache(size=2)
        for i in range(3):
            cache.begin(i)
            cache.finish(i, protocol.REPLY, {}, b"%d" % i)
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.lookup(0))
        self.assertEqual(cache.lookup(2).payload, b"2")

    def test_runningNeverForgotten(self):
        """
        Running requests are kept whatever the size; they are not answers yet.
        """
        cache = ReplyCache(size=1)
        for i in range(3):
            cache.begin(("run", i))
        cache.begin("done")
        cache.finish("done", protocol.REPLY, {}, b"")
        cache.begin("done2")
        cache.finish("done2", protocol.REPLY, {}, b"")
        for i in range(3):
            self.assertIsNotNone(cache.lookup(("run", i)))
        self.assertIsNone(cache.lookup("done"))
        self.assertEqual(len(cache), 4)

    def test_finishWithoutBegin(self):
        """
        finish() for a key never begun records the answer and has no waiters.
        """
        cache = ReplyCache()
        self.assertEqual(cache.finish("k", protocol.REPLY, {}, b"x"), [])
        self.assertTrue(cache.lookup("k").done)

    def test_sizeZero(self):
        """
        A cache of size 0 keeps no answers but still hands waiters their answer.
        """
        cache = ReplyCache(size=0)
        cache.begin("k").waiters.append(("peer", 1))
        self.assertEqual(cache.finish("k", protocol.REPLY, {}, b"x"), [("peer", 1)])
        self.assertIsNone(cache.lookup("k"))
        self.assertEqual(len(cache), 0)


class ByteBoundTests(SynchronousTestCase):
    """
    L{ReplyCache} keeps its answers within C{maxBytes}, oldest forgotten
    first, never a running request.
    """

    def finish(self, cache, key, payload, header=None):
        cache.begin(key).waiters.append(("peer", key))
        return cache.finish(key, protocol.REPLY, header or {}, payload)

    def test_oldestForgottenFirst(self):
        """
        Past the byte bound the oldest answers are forgotten, and what is
        kept stays within it.
        """
        one = answerSize(("c", "i", 1), {}, b"x" * 1000)
        cache = ReplyCache(maxBytes=3 * one)
        for i in range(5):
            self.finish(cache, ("c", "i", i), b"x" * 1000)
        self.assertEqual([i for i in range(5) if cache.lookup(("c", "i", i))], [2, 3, 4])
        self.assertEqual(cache.bytes, 3 * one)
        self.assertEqual(cache.evicted, 2)

    def test_sizeCountsKeyHeaderAndPayload(self):
        """
        An answer counts its payload, its header's strings and its key's
        strings, besides a fixed overhead.
        """
        self.assertEqual(answerSize("k", {}, b""), ENTRY_OVERHEAD)
        self.assertEqual(
            answerSize(("client", "inc", 7), {"code": "handler-error", "msg": "no"}, b"abc"),
            ENTRY_OVERHEAD + 3 + len("client") + len("inc") + 8 + 4 + 13 + 3 + 2,
        )

    def test_largerThanTheBound(self):
        """
        An answer larger than the whole bound still goes to its waiters but
        is not kept: a retry of it is a new request.
        """
        cache = ReplyCache(maxBytes=1000)
        self.assertEqual(self.finish(cache, "big", b"x" * 2000), [("peer", "big")])
        self.assertIsNone(cache.lookup("big"))
        self.assertEqual((cache.bytes, len(cache)), (0, 0))

    def test_runningNotCounted(self):
        """
        Running requests are neither counted nor forgotten for bytes.
        """
        cache = ReplyCache(maxBytes=0)
        running = cache.begin("run")
        self.assertEqual(cache.bytes, 0)
        self.finish(cache, "done", b"x")
        self.assertIs(cache.lookup("run"), running)
        self.assertIsNone(cache.lookup("done"))

    def test_countBoundGivesBytesBack(self):
        """
        Answers forgotten by the count bound are no longer counted.
        """
        cache = ReplyCache(size=2)
        for i in range(4):
            self.finish(cache, i, b"y" * (i + 1))
        self.assertEqual(cache.bytes, answerSize(2, {}, b"yyy") + answerSize(3, {}, b"yyyy"))
        self.assertEqual(cache.evicted, 0)

    def test_finishedTwice(self):
        """
        A key finished again replaces its answer, counted once.
        """
        cache = ReplyCache()
        cache.finish("k", protocol.REPLY, {}, b"first")
        cache.finish("k", protocol.REPLY, {}, b"second!")
        self.assertEqual(cache.bytes, answerSize("k", {}, b"second!"))
        self.assertEqual(cache.lookup("k").payload, b"second!")


class ServerReplyCacheBytesTests(SynchronousTestCase):
    """
    A server's reply cache follows C{replyCacheBytes}: a retry within it is
    answered from the cache, one whose answer was forgotten for bytes runs
    the handler again, as one past the count bound does (PROTOCOL.md 10.3).
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()
        self.handler = RecordingHandler()
        # Room for two answers of b"re:" + 1000 bytes from client c1/ci.
        one = answerSize(("c1", "ci", 1), {}, b"re:" + b"q" * 1000)
        config = NodeConfig("s1", incarnation="s1-inc", replyCacheBytes=2 * one)
        self.server = Server(
            config, self.handler, ("echo",), listen="tcp://127.0.0.1:*",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.server.startService()
        self.addCleanup(self.stop)
        [self.router] = self.factory.ofKind("router")
        self.router.receive([b"c"] + helloFrames("c1", "ci"))

    def stop(self):
        self.successResultOf(self.server.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def request(self, rid):
        self.router.receive([b"c"] + protocol.encode(protocol.REQUEST, {"id": rid}, b"q" * 1000))

    def test_retryAfterByteEviction(self):
        """
        Of three answered requests, the retry of the newest is answered from
        the cache, the retry of the oldest (forgotten for bytes) runs the
        handler again; every retry gets the reply.
        """
        for rid in (1, 2, 3):
            self.request(rid)
        self.assertEqual(len(self.handler.requests), 3)
        self.request(3)
        self.assertEqual(len(self.handler.requests), 3)
        self.request(1)
        self.assertEqual([r.requestId for r in self.handler.requests], [1, 2, 3, 1])
        replies = [m for r, m in self.router.messages(routed=True) if m.type == protocol.REPLY]
        self.assertEqual([r.header["id"] for r in replies], [1, 2, 3, 3, 1])
        stats = self.server.stats()
        self.assertEqual((stats["cache.hits"], stats["cache.evicted"]), (1, 2))
        self.assertLessEqual(stats["cache.bytes"], self.server.config.replyCacheBytes)
