"""
Tests for L{zmqrelay.core.replycache}: answering retried requests once.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.replycache import ReplyCache


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
