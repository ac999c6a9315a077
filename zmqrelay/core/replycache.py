"""
The server's memory of answered requests, so a retry is not run twice.

Keyed by (client id, client incarnation, client request id): a retry reuses
its request id, whatever path it takes.  Bounded: the oldest answers are
forgotten first; requests still running are never forgotten (their number is
bounded by the in-flight limits upstream).

Pure: no sockets, no reactor.
"""

from collections import OrderedDict


class CachedAnswer:
    """
    The answer to one request, or the promise of one.

    @ivar done: C{True} once the handler finished.
    @ivar msgtype: REP or ERR, once done.
    @ivar header: the answer's header fields (without C{id}), once done.
    @ivar payload: the answer's payload, once done.
    @ivar waiters: (peer, request id, peer incarnation) to answer when done.
    """

    __slots__ = ("done", "msgtype", "header", "payload", "waiters")

    def __init__(self):
        self.done = False
        self.msgtype = None
        self.header = None
        self.payload = b""
        self.waiters = []


class ReplyCache:
    """
    A bounded map of request keys to L{CachedAnswer}.

    @ivar hits: retried requests answered (or joined) from here.
    """

    def __init__(self, size=10000):
        self.size = size
        self.hits = 0
        self._done = OrderedDict()
        self._running = {}

    def __len__(self):
        return len(self._done) + len(self._running)

    def lookup(self, key):
        """
        @return: the L{CachedAnswer} for C{key}, or C{None} if this is the
            first time it is asked.
        """
        answer = self._running.get(key) or self._done.get(key)
        if answer is not None:
            self.hits += 1
        return answer

    def begin(self, key):
        """
        Record that the handler is running for C{key}.

        @rtype: L{CachedAnswer}
        """
        answer = self._running[key] = CachedAnswer()
        return answer

    def finish(self, key, msgtype, header, payload):
        """
        Record the answer for C{key}.

        @return: the waiters to send it to.
        """
        answer = self._running.pop(key, None)
        if answer is None:
            answer = CachedAnswer()
        answer.done = True
        answer.msgtype = msgtype
        answer.header = header
        answer.payload = payload
        waiters, answer.waiters = answer.waiters, []
        self._done[key] = answer
        while len(self._done) > self.size:
            self._done.popitem(last=False)
        return waiters
