"""
A subscriber's view of notification sequence numbers.

Every notification carries (server id, server incarnation, sequence) and its
topic; sequences count per (server, topic).  L{SequenceTracker} tells, for
each arriving notification, whether to deliver it (new), drop it (a
duplicate, e.g. the same notification over the direct and the cloud path), or
deliver it and ask for a replay of what was skipped (a gap).

Pure: no sockets, no reactor.
"""

from collections import OrderedDict


class Notification:
    """
    One notification as a receiver sees it.

    @ivar topic: L{bytes}.
    @ivar payload: L{bytes}.
    @ivar serverId: the publishing server.
    @ivar incarnation: the publishing server's incarnation.
    @ivar seq: its sequence number on (server, topic).
    @ivar replayed: C{True} if it was recovered by replay after a gap.
    """

    __slots__ = ("topic", "payload", "serverId", "incarnation", "seq", "replayed")

    def __init__(self, topic, payload, serverId, incarnation, seq, replayed=False):
        self.topic = topic
        self.payload = payload
        self.serverId = serverId
        self.incarnation = incarnation
        self.seq = seq
        self.replayed = replayed

    def __repr__(self):
        return f"<Notification {self.topic!r} {self.serverId}#{self.seq}>"


class Gap:
    """
    Notifications that were lost for good.

    @ivar serverId: the publisher.
    @ivar incarnation: its incarnation.
    @ivar topic: the topic.
    @ivar first: the first missing sequence number.
    @ivar last: the last missing sequence number.
    """

    __slots__ = ("serverId", "incarnation", "topic", "first", "last")

    def __init__(self, serverId, incarnation, topic, first, last):
        self.serverId = serverId
        self.incarnation = incarnation
        self.topic = topic
        self.first = first
        self.last = last

    def __repr__(self):
        return f"<Gap {self.serverId} {self.topic!r} {self.first}..{self.last}>"


class _Stream:
    __slots__ = ("incarnation", "last", "missing", "untracked", "retired")

    def __init__(self, incarnation, last):
        self.incarnation = incarnation
        self.last = last
        self.missing = set()
        self.untracked = []
        self.retired = ()


DELIVER = "deliver"
DUPLICATE = "duplicate"


class SequenceTracker:
    """
    Per (server, topic) stream state, bounded in streams and in missing
    numbers remembered.

    @ivar counters: C{delivered}, C{duplicates}, C{gaps}.
    """

    def __init__(self, streams=10000, missing=10000):
        self.maxStreams = streams
        self.maxMissing = missing
        self.counters = {"delivered": 0, "duplicates": 0, "gaps": 0}
        self._streams = OrderedDict()

    def receive(self, serverId, incarnation, topic, seq):
        """
        Account for one arriving notification.

        @return: (verdict, missing): verdict is C{DELIVER} or C{DUPLICATE};
            missing is C{None} or a (first, last) range skipped just now,
            to ask the server to replay.
        """
        key = (serverId, topic)
        stream = self._streams.get(key)
        if stream is None or stream.incarnation != incarnation:
            retired = OrderedDict() if stream is None else stream.retired
            lastSeen = retired.pop(incarnation, None)
            if lastSeen is not None and seq <= lastSeen:
                # A late copy of what another process of the server already
                # gave us (say, on the slower of two paths).
                retired[incarnation] = lastSeen
                self.counters["duplicates"] += 1
                return DUPLICATE, None
            if stream is not None:
                # Another incarnation speaks: keep where the one we followed
                # was, so its late copies are known for what they are.
                retired[stream.incarnation] = stream.last
                while len(retired) > 4:
                    retired.popitem(last=False)
            stream = self._streams[key] = _Stream(incarnation, seq)
            stream.retired = retired
            if lastSeen is not None and seq > lastSeen + 1:
                # Back to an incarnation we had followed: what it skipped
                # meanwhile is a gap like any other.
                stream.missing.update(range(lastSeen + 1, min(seq, lastSeen + 1 + self.maxMissing)))
                self.counters["gaps"] += 1
                self.counters["delivered"] += 1
                return DELIVER, (lastSeen + 1, seq - 1)
            if len(self._streams) > self.maxStreams:
                self._streams.popitem(last=False)
            self.counters["delivered"] += 1
            return DELIVER, None
        self._streams.move_to_end(key)
        if seq == stream.last + 1:
            stream.last = seq
            self.counters["delivered"] += 1
            return DELIVER, None
        if seq > stream.last:
            first, last = stream.last + 1, seq - 1
            stream.last = seq
            self.counters["gaps"] += 1
            self.counters["delivered"] += 1
            if len(stream.missing) + (last - first + 1) <= self.maxMissing:
                stream.missing.update(range(first, last + 1))
            elif len(stream.untracked) < self.maxMissing:
                # Too many to remember one by one: a late arrival from this
                # range reads as a duplicate, but stillMissing() must still
                # report the range as lost rather than let it vanish.
                stream.untracked.append((first, last))
            return DELIVER, (first, last)
        if seq in stream.missing:
            stream.missing.discard(seq)
            self.counters["delivered"] += 1
            return DELIVER, None
        self.counters["duplicates"] += 1
        return DUPLICATE, None

    def forget(self, keep):
        """
        Forget the streams of topics no longer subscribed to, so that
        subscribing again later does not read what was published meanwhile
        as a gap.

        @param keep: called with a topic; C{False} forgets its streams.
        """
        for key in [k for k in self._streams if not keep(k[1])]:
            del self._streams[key]

    def stillMissing(self, serverId, incarnation, topic, first, last):
        """
        Give up on a range: what of it never arrived?

        @return: the sequence numbers of C{first..last} still missing (now
            forgotten), sorted.
        """
        stream = self._streams.get((serverId, topic))
        if stream is None or stream.incarnation != incarnation:
            return list(range(first, last + 1))
        lost = [s for s in stream.missing if first <= s <= last]
        stream.missing.difference_update(lost)
        kept = []
        for a, b in stream.untracked:
            if a > last or b < first:
                kept.append((a, b))
                continue
            lost.extend(range(max(a, first), min(b, last) + 1))
            if a < first:
                kept.append((a, first - 1))
            if b > last:
                kept.append((last + 1, b))
        stream.untracked = kept
        return sorted(lost)
