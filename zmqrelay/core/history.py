"""
A server's recent notifications, per topic, for replay.

Sequence numbers count per topic and are kept for up to C{counters} topics;
payloads are kept for replay for C{size} notifications of each of the
C{topics} most recently published topics.  Forgetting a topic's payloads
only makes older gaps unrecoverable (reported as lost); forgetting its
counter (past C{counters} topics) restarts its numbering, which subscribers
would take for duplicates, so that bound is set far higher.

Pure: no sockets, no reactor.
"""

from collections import OrderedDict, deque


class NotificationHistory:
    """
    Sequence numbers and recent payloads of a publisher's topics.
    """

    def __init__(self, size=1000, topics=10000, counters=1000000):
        self.size = size
        self.topics = topics
        self.counters = counters
        self._seqs = OrderedDict()
        self._kept = OrderedDict()

    def record(self, topic, payload):
        """
        Give the next notification on C{topic} its sequence number.

        @return: the sequence number (1 for a topic's first).
        """
        seq = self._seqs.pop(topic, 0) + 1
        self._seqs[topic] = seq
        if len(self._seqs) > self.counters:
            self._seqs.popitem(last=False)
        kept = self._kept.pop(topic, None)
        if kept is None:
            kept = deque(maxlen=self.size)
        self._kept[topic] = kept
        if len(self._kept) > self.topics:
            self._kept.popitem(last=False)
        kept.append((seq, payload))
        return seq

    def replay(self, topic, first, last):
        """
        @return: the (sequence, payload) pairs kept for C{topic} with
            C{first <= sequence <= last}, in order.
        """
        kept = self._kept.get(topic)
        if kept is None:
            return []
        return [(seq, payload) for seq, payload in kept if first <= seq <= last]
