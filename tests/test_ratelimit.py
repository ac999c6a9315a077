"""
Tests for L{zmqrelay.core.ratelimit}: token buckets and peer guards.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core.ratelimit import PeerGuard, TokenBucket


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} with explicit times.
    """

    def test_burstThenRetryAfter(self):
        """
        A full bucket allows a burst, then says how long until the next token.
        """
        bucket = TokenBucket(rate=2.0, burst=4, now=0.0)
        self.assertEqual([bucket.take(0.0) for _ in range(4)], [0.0] * 4)
        self.assertAlmostEqual(bucket.take(0.0), 0.5)
        self.assertAlmostEqual(bucket.take(0.25), 0.25)

    def test_refill(self):
        """
        Tokens come back at the rate and never above the burst.
        """
        bucket = TokenBucket(rate=2.0, burst=4, now=0.0)
        for _ in range(4):
            bucket.take(0.0)
        self.assertEqual(bucket.take(0.5), 0.0)
        self.assertNotEqual(bucket.take(0.5), 0.0)
        # A long idle time refills to the burst only.
        self.assertEqual([bucket.take(100.0) for _ in range(4)], [0.0] * 4)
        self.assertGreater(bucket.take(100.0), 0.0)

    def test_amount(self):
        """
        take() of several tokens spends or refuses them together.
        """
        bucket = TokenBucket(rate=100.0, burst=100, now=0.0)
        self.assertEqual(bucket.take(0.0, 80), 0.0)
        self.assertAlmostEqual(bucket.take(0.0, 80), 0.6)
        self.assertAlmostEqual(bucket.tokens, 20.0)

    def test_zeroRate(self):
        """
        An empty bucket with rate 0 never refills: retry-after is infinite.
        """
        bucket = TokenBucket(rate=0, burst=1, now=0.0)
        self.assertEqual(bucket.take(0.0), 0.0)
        self.assertEqual(bucket.take(1000.0), float("inf"))


class PeerGuardTests(SynchronousTestCase):
    """
    L{PeerGuard}: retry-after, strikes, cooldown and recovery.
    """

    def guard(self, **kw):
        args = dict(
            now=0.0, msgRate=1.0, msgBurst=2, byteRate=0, byteBurst=0,
            strikeLimit=2, cooldown=10.0,
        )
        args.update(kw)
        return PeerGuard(**args)

    def test_acceptWithinLimits(self):
        """
        Messages within the burst are accepted with 0.0.
        """
        guard = self.guard()
        self.assertEqual(guard.check(0.0, 10), 0.0)
        self.assertEqual(guard.check(0.0, 10), 0.0)

    def test_retryAfter(self):
        """
        Over the limit, the answer is the seconds until a token is back.
        """
        guard = self.guard()
        guard.check(0.0, 1)
        guard.check(0.0, 1)
        self.assertAlmostEqual(guard.check(0.0, 1), 1.0)
        self.assertAlmostEqual(guard.check(0.5, 1), 0.5)

    def test_strikesThenCooldownThenRecovery(self):
        """
        More than strikeLimit refusals: the one that crosses the limit is
        answered with the whole cooldown as its retry-after, then silence for
        the cooldown, then service resumes.
        """
        guard = self.guard()
        guard.check(0.0, 1)
        guard.check(0.0, 1)
        self.assertGreater(guard.check(0.0, 1), 0)
        self.assertGreater(guard.check(0.0, 1), 0)
        self.assertEqual(guard.check(0.0, 1), 10.0)
        self.assertIsNone(guard.check(0.0, 1))
        self.assertEqual(guard.ignoredUntil, 10.0)
        self.assertIsNone(guard.check(5.0, 1))
        self.assertIsNone(guard.check(9.999, 1))
        self.assertEqual(guard.check(10.0, 1), 0.0)
        self.assertEqual(guard.check(10.0, 1), 0.0)
        # Strikes were reset: one refusal is an error again, not silence.
        self.assertGreater(guard.check(10.0, 1), 0)

    def test_strikesExpire(self):
        """
        Strikes further apart than the cooldown do not add up.
        """
        guard = self.guard(msgBurst=1)
        for t in (0.0, 11.0, 22.0, 33.0):
            self.assertEqual(guard.check(t, 1), 0.0)
            self.assertIsNotNone(guard.check(t, 1))
        self.assertEqual(guard.ignoredUntil, 0.0)

    def test_byteLimit(self):
        """
        The byte bucket refuses a message that would exceed it.
        """
        guard = self.guard(msgRate=0, byteRate=100.0, byteBurst=100)
        self.assertIsNone(guard.messages)
        self.assertEqual(guard.check(0.0, 80), 0.0)
        self.assertAlmostEqual(guard.check(0.0, 80), 0.6)

    def test_minimumRetry(self):
        """
        A refusal always carries a positive retry-after.
        """
        guard = self.guard(msgRate=1e9, msgBurst=1)
        guard.check(0.0, 1)
        self.assertGreaterEqual(guard.check(0.0, 1), 0.001)

    def test_noLimits(self):
        """
        A guard without rates accepts everything.
        """
        guard = self.guard(msgRate=0, byteRate=0)
        self.assertEqual([guard.check(0.0, 10**9) for _ in range(100)], [0.0] * 100)


class StrikeTests(SynchronousTestCase):
    """
    Strikes counted from outside the guard's own buckets.
    """

    def test_strikeCrossesLimit(self):
        """
        strike() returns True once the limit is crossed, and the peer is then
        ignored for the cooldown.
        """
        guard = PeerGuard(0.0, 10, 10, 0, 0, 2, 5.0)
        self.assertEqual([guard.strike(1.0) for _ in range(3)], [False, False, True])
        self.assertEqual(guard.ignoredUntil, 6.0)
        self.assertIsNone(guard.check(2.0, 1))
        self.assertEqual(guard.check(6.0, 1), 0.0)
