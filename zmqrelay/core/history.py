"""
A server's recent notifications, per topic, for replay.

Sequence numbers count per topic and are kept for up to C{counters} topics;
payloads are kept for replay within three bounds: the last C{size}
notifications of each topic, the C{topics} most recently published topics,
and C{maxBytes} for all of them together.  Past the byte bound the oldest
notifications are forgotten first, whatever their topic, so a replay (which
comes shortly after the gap it fills) finds the recent notifications of
every topic.  Forgetting payloads only makes older gaps unrecoverable
(reported as lost); forgetting a topic's counter (past C{counters} topics)
restarts its numbering, which subscribers would take for duplicates, so
that bound is set far higher.

Pure: no sockets, no reactor.
"""

from collections import OrderedDict

#: Bytes counted for each kept notification besides its payload: the
#: Python objects that hold it (key, entry, sequence number), measured
#: with C{tracemalloc} on CPython 3.11 and rounded up.
ITEM_OVERHEAD = 192

#: Bytes counted for each topic with kept notifications besides the
#: topic itself.
TOPIC_OVERHEAD = 256


class _Kept:
    """
    The notifications kept for one topic: sequence numbers C{first} to
    C{last}, all of them (payloads are only ever forgotten oldest first).
    """

    __slots__ = ("topic", "first", "last")

    def __init__(self, topic, seq):
        self.topic = topic
        self.first = seq
        self.last = seq - 1


class NotificationHistory:
    """
    Sequence numbers and recent payloads of a publisher's topics.

    @ivar size: notifications kept per topic at most.
    @ivar topics: topics whose notifications are kept at most.
    @ivar counters: topics whose sequence number is remembered at most.
    @ivar maxBytes: bytes the kept notifications may take in all (their
        payloads, topics and an estimate of the objects holding them).
    @ivar bytes: what the kept notifications take now, counted the same way.
    @ivar evicted: notifications forgotten to stay within C{maxBytes}.
    """

    def __init__(self, size=1000, topics=10000, counters=1000000, maxBytes=16 * 1024 * 1024):
        self.size = size
        self.topics = topics
        self.counters = counters
        self.maxBytes = maxBytes
        self.bytes = 0
        self.evicted = 0
        self._seqs = OrderedDict()
        # topic -> _Kept, least recently published first.
        self._kept = OrderedDict()
        # (topic, seq) -> payload, oldest first across topics.
        self._items = OrderedDict()

    def __len__(self):
        """
        @return: how many notifications are kept.
        """
        return len(self._items)

    def record(self, topic, payload):
        """
        Give the next notification on C{topic} its sequence number.

        @return: the sequence number (1 for a topic's first).
        """
        seqs = self._seqs
        seq = seqs.get(topic, 0) + 1
        if seq > 1:
            seqs.move_to_end(topic)
        seqs[topic] = seq
        if len(seqs) > self.counters:
            seqs.popitem(last=False)
        kept = self._kept.get(topic)
        if kept is not None and kept.last != seq - 1:
            # Its counter was forgotten and restarted: what was kept
            # belongs to the old numbering.
            del self._kept[topic]
            self._dropTopic(kept)
            kept = None
        if kept is None:
            kept = self._kept[topic] = _Kept(topic, seq)
            self.bytes += len(topic) + TOPIC_OVERHEAD
        else:
            self._kept.move_to_end(topic)
        self._items[(kept.topic, seq)] = payload
        kept.last = seq
        self.bytes += len(payload) + ITEM_OVERHEAD
        if kept.last - kept.first + 1 > self.size:
            self._dropOldest(kept)
        if len(self._kept) > self.topics:
            self._dropTopic(self._kept.popitem(last=False)[1])
        while self.bytes > self.maxBytes and self._items:
            (oldest, _), _ = next(iter(self._items.items()))
            self._dropOldest(self._kept[oldest])
            self.evicted += 1
        return seq

    def _dropOldest(self, kept):
        """
        Forget the oldest notification kept for C{kept}'s topic, and the
        topic too if that was its last.
        """
        payload = self._items.pop((kept.topic, kept.first))
        self.bytes -= len(payload) + ITEM_OVERHEAD
        kept.first += 1
        if kept.first > kept.last:
            del self._kept[kept.topic]
            self.bytes -= len(kept.topic) + TOPIC_OVERHEAD

    def _dropTopic(self, kept):
        """
        Forget every notification kept for C{kept}'s topic (already taken
        out of C{_kept}).
        """
        for seq in range(kept.first, kept.last + 1):
            self.bytes -= len(self._items.pop((kept.topic, seq))) + ITEM_OVERHEAD
        self.bytes -= len(kept.topic) + TOPIC_OVERHEAD

    def replay(self, topic, first, last):
        """
        @return: the (sequence, payload) pairs kept for C{topic} with
            C{first <= sequence <= last}, in order.
        """
        kept = self._kept.get(topic)
        if kept is None:
            return []
        items = self._items
        return [
            (seq, items[(kept.topic, seq)])
            for seq in range(max(first, kept.first), min(last, kept.last) + 1)
        ]
