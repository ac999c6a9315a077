"""
The server's memory of answered requests, so a retry is not run twice.

Keyed by (client id, client incarnation, client request id): a retry reuses
its request id, whatever path it takes.  Bounded in count and in bytes: the
oldest answers are forgotten first; requests still running are never
forgotten (their number is bounded by the in-flight limits upstream).  A
retry whose answer was forgotten is taken for a new request (the handler
runs again), as after a server restart.

Pure: no sockets, no reactor.
"""

from collections import OrderedDict

#: Bytes counted for each kept answer besides its payload, header values
#: and key: the Python objects that hold it, measured with C{tracemalloc}
#: on CPython 3.11 and rounded up.
ENTRY_OVERHEAD = 512


def _length(value):
    """
    @return: the bytes of C{value} if it is a string, else 8.
    """
    if isinstance(value, (bytes, str)):
        return len(value)
    return 8


def answerSize(key, header, payload):
    """
    @return: the bytes an answer is counted for in a L{ReplyCache}.
    """
    size = ENTRY_OVERHEAD + len(payload)
    if key.__class__ is tuple:
        for part in key:
            size += len(part) if part.__class__ is str or part.__class__ is bytes else 8
    if header:
        for k, v in header.items():
            size += _length(k) + _length(v)
    return size


class CachedAnswer:
    """
    The answer to one request, or the promise of one.

    @ivar done: C{True} once the handler finished.
    @ivar msgtype: REP or ERR, once done.
    @ivar header: the answer's header fields (without C{id}), once done.
    @ivar payload: the answer's payload, once done.
    @ivar waiters: (peer, request id, peer incarnation) to answer when done.
    """

    __slots__ = ("done", "msgtype", "header", "payload", "waiters", "size")

    def __init__(self):
        self.done = False
        self.msgtype = None
        self.header = None
        self.payload = b""
        self.waiters = []
        self.size = 0


class ReplyCache:
    """
    A bounded map of request keys to L{CachedAnswer}.

    @ivar size: answers kept at most.
    @ivar maxBytes: bytes the kept answers may take in all (see
        L{answerSize}); an answer larger than that is not kept.
    @ivar bytes: what the kept answers take now, counted the same way.
    @ivar hits: retried requests answered (or joined) from here.
    @ivar evicted: answers forgotten to stay within C{maxBytes}.
    """

    def __init__(self, size=10000, maxBytes=16 * 1024 * 1024):
        self.size = size
        self.maxBytes = maxBytes
        self.bytes = 0
        self.hits = 0
        self.evicted = 0
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
        answer.size = answerSize(key, header, payload)
        waiters, answer.waiters = answer.waiters, []
        replaced = self._done.pop(key, None)
        if replaced is not None:
            self.bytes -= replaced.size
        self._done[key] = answer
        self.bytes += answer.size
        while len(self._done) > self.size:
            self.bytes -= self._done.popitem(last=False)[1].size
        while self.bytes > self.maxBytes and self._done:
            self.bytes -= self._done.popitem(last=False)[1].size
            self.evicted += 1
        return waiters
