"""
A server's recent notifications, per topic, for replay.

Bounded twice: C{size} notifications per topic and C{topics} topics (the
least recently published topic is forgotten first).

Pure: no sockets, no reactor.
"""

from collections import OrderedDict, deque


class NotificationHistory:
    """
    Sequence numbers and recent payloads of a publisher's topics.
    """

    def __init__(self, size=1000, topics=10000):
        self.size = size
        self.topics = topics
        self._topics = OrderedDict()

    def record(self, topic, payload):
        """
        Give the next notification on C{topic} its sequence number.

        @return: the sequence number (1 for a topic's first).
        """
        entry = self._topics.get(topic)
        if entry is None:
            entry = self._topics[topic] = [0, deque(maxlen=self.size)]
            if len(self._topics) > self.topics:
                self._topics.popitem(last=False)
        else:
            self._topics.move_to_end(topic)
        entry[0] += 1
        entry[1].append((entry[0], payload))
        return entry[0]

    def replay(self, topic, first, last):
        """
        @return: the (sequence, payload) pairs kept for C{topic} with
            C{first <= sequence <= last}, in order.
        """
        entry = self._topics.get(topic)
        if entry is None:
            return []
        return [(seq, payload) for seq, payload in entry[1] if first <= seq <= last]
