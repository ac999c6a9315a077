"""
Rate limits per peer: token buckets and a cooldown for repeat offenders.

Pure: the time is passed in.
"""


class TokenBucket:
    """
    A token bucket: C{rate} tokens a second, at most C{burst} saved up.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst, now):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now, amount=1.0):
        """
        Spend C{amount} tokens if there are enough.

        @return: 0.0 if they were spent, else the seconds until there will be
            enough (the retry-after to tell the sender).
        """
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= amount:
            self.tokens = tokens - amount
            return 0.0
        self.tokens = tokens
        if self.rate <= 0:
            return float("inf")
        return (min(amount, self.burst) - tokens) / self.rate


class PeerGuard:
    """
    The limits of one peer: messages/s, bytes/s, and a cooldown.

    A peer that goes over a limit gets a retry-after.  One that goes over
    C{strikes} times within a cooldown period is ignored until the cooldown
    ends: its messages are dropped without an answer, so a flood costs us
    as little as possible.

    @ivar ignoredUntil: time until which the peer is ignored.
    """

    __slots__ = ("messages", "bytes", "strikes", "strikeLimit", "cooldown", "ignoredUntil", "firstStrike")

    def __init__(self, now, msgRate, msgBurst, byteRate, byteBurst, strikeLimit, cooldown):
        self.messages = TokenBucket(msgRate, msgBurst, now) if msgRate > 0 else None
        self.bytes = TokenBucket(byteRate, byteBurst, now) if byteRate > 0 else None
        self.strikes = 0
        self.strikeLimit = strikeLimit
        self.cooldown = cooldown
        self.ignoredUntil = 0.0
        self.firstStrike = 0.0

    def check(self, now, size):
        """
        Account for one message of C{size} bytes.

        @return: C{0.0} to accept it; a positive retry-after to refuse it
            with an error (the refusal that crosses the strike limit gets
            the whole cooldown); C{None} to drop it silently (peer in
            cooldown).
        """
        if now < self.ignoredUntil:
            return None
        wait = 0.0
        if self.messages is not None:
            wait = self.messages.take(now)
        if not wait and self.bytes is not None:
            wait = self.bytes.take(now, size)
        if not wait:
            return 0.0
        if self.strike(now):
            # This refusal is still answered, with the cooldown as its
            # retry-after; what follows it until then is not.
            return max(self.cooldown, 0.001)
        return max(wait, 0.001)

    def strike(self, now):
        """
        Count one refusal (of this guard's own, or another limit's, such as
        requests in flight).

        @return: C{True} if it took the peer over the strike limit: it is
            ignored from now until C{ignoredUntil}.
        """
        if now - self.firstStrike > self.cooldown:
            self.firstStrike = now
            self.strikes = 0
        self.strikes += 1
        if self.strikes > self.strikeLimit:
            self.ignoredUntil = now + self.cooldown
            self.strikes = 0
            return True
        return False
