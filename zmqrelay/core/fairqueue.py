"""
Requests waiting for room toward one next hop, taken round-robin over the
clients that sent them.

A relay forwards at most a window of requests to each next hop at once
(L{zmqrelay.roles.forwarder.Forwarder}); what arrives beyond it waits here,
one queue per client id.  Taking one request from each client in turn
means a client that floods waits behind itself, not in front of everyone
else: a well-behaved client's request waits for at most one request of each
other busy client, plus the window, whatever the flooder sent.

Pure: no time, no sockets.
"""

from collections import OrderedDict, deque


class FairQueue:
    """
    Items queued per key and taken one key at a time, in turn.
    """

    def __init__(self):
        self._queues = OrderedDict()
        self._size = 0

    def __len__(self):
        return self._size

    def push(self, key, item):
        """
        Queue C{item} behind the others of C{key}.
        """
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(item)
        self._size += 1

    def pop(self):
        """
        Take the oldest item of the key whose turn it is; that key then goes
        to the back of the line.

        @return: the item, or C{None} if nothing waits.
        """
        queues = self._queues
        if not queues:
            return None
        key = next(iter(queues))
        queue = queues[key]
        item = queue.popleft()
        self._size -= 1
        if queue:
            queues.move_to_end(key)
        else:
            del queues[key]
        return item

    def remove(self, predicate):
        """
        Take every item for which C{predicate(item)} is true, keeping the
        order of the rest.

        @return: the L{list} of items taken.
        """
        taken = []
        for key in list(self._queues):
            self._take(key, predicate, taken)
        return taken

    def removeFrom(self, key, predicate):
        """
        Like L{remove}, looking only at the items of C{key} (a client that
        is gone: its own queue, not everyone's).

        @return: the L{list} of items taken.
        """
        taken = []
        if key in self._queues:
            self._take(key, predicate, taken)
        return taken

    def _take(self, key, predicate, taken):
        """
        Move the items of C{key} that C{predicate} accepts to C{taken}.
        """
        kept = deque()
        count = len(taken)
        for item in self._queues[key]:
            (taken if predicate(item) else kept).append(item)
        self._size -= len(taken) - count
        if kept:
            self._queues[key] = kept
        else:
            del self._queues[key]

    def keys(self):
        """
        @return: the keys with something waiting, in turn order.
        """
        return list(self._queues)
