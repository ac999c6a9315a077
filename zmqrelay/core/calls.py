"""
Calls a node started and waits answers for: client requests and server
messages to clients.

Every call has an id, a timer and a canceller: its L{Deferred} always fires,
with the answer, a typed error from the peer, L{RequestTimeout}, or
L{TargetLost} when the peer it went to is gone.
"""

import itertools

from twisted.internet.defer import Deferred

from zmqrelay.core import errors, protocol


#: The longest retry-after taken from a peer (seconds).
MAX_RETRY_AFTER = 60.0


def retryAfter(value):
    """
    A peer's retry-after, made safe to hand to C{callLater}: a number from 0
    to L{MAX_RETRY_AFTER}, or C{None}.  (A negative or NaN delay makes the
    reactor raise in the middle of a callback chain; an infinite one never
    fires, and the request would wait for ever.)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not value >= 0:
        return None
    return min(value, MAX_RETRY_AFTER)


class _Call:
    __slots__ = ("rid", "deferred", "timer", "peer")

    def __init__(self, rid, deferred, timer, peer):
        self.rid = rid
        self.deferred = deferred
        self.timer = timer
        self.peer = peer


class Calls:
    """
    The calls in flight from one node.

    @ivar late: answers that came for no call (after a timeout or a retry).
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self._ids = itertools.count(1)
        self._calls = {}
        # Peer -> how many calls wait on it.
        self._byPeer = {}
        self.late = 0
        #: C{None}, or called with a peer when a call to it has ended (it was
        #: answered, failed, timed out, forgotten or cancelled; not when
        #: L{failPeer} or L{failAll} end them all): room for another.
        self.onRoom = None

    def __len__(self):
        return len(self._calls)

    def outstanding(self, peer):
        """
        @return: how many calls sent to C{peer} wait for their answer.
        """
        return self._byPeer.get(peer, 0)

    def newId(self):
        """
        @return: a fresh request id.
        """
        return next(self._ids)

    def expect(self, rid, peer, timeout):
        """
        Wait for the answer to request C{rid}, sent to C{peer}.

        @return: a L{Deferred} firing with the reply payload or failing with
            a L{zmqrelay.core.errors.RelayError}; cancelling it forgets the call.
        """

        def cancel(d):
            call = self._forget(rid)
            if call is not None:
                self._room(call.peer)

        d = Deferred(cancel)
        timer = self.reactor.callLater(timeout, self._timedOut, rid, timeout)
        self._calls[rid] = _Call(rid, d, timer, peer)
        self._byPeer[peer] = self._byPeer.get(peer, 0) + 1
        return d

    def _forget(self, rid):
        call = self._calls.pop(rid, None)
        if call is not None:
            if call.timer.active():
                call.timer.cancel()
            left = self._byPeer[call.peer] - 1
            if left:
                self._byPeer[call.peer] = left
            else:
                del self._byPeer[call.peer]
        return call

    def _room(self, peer):
        if self.onRoom is not None:
            self.onRoom(peer)

    def _timedOut(self, rid, timeout):
        call = self._forget(rid)
        if call is not None:
            call.deferred.errback(errors.RequestTimeout(f"no answer within {timeout:.3g}s"))
            self._room(call.peer)

    def settle(self, peer, message):
        """
        Deliver a REP or ERR.

        @return: C{True} if it answered a call.
        """
        rid = message.header.get("id")
        call = self._calls.get(rid) if isinstance(rid, int) and not isinstance(rid, bool) else None
        if call is None or call.peer is not peer:
            self.late += 1
            return False
        self._forget(rid)
        if message.type == protocol.REPLY:
            call.deferred.callback(message.payload)
        else:
            header = message.header
            retry = header.get("retry")
            error = errors.fromWire(
                str(header.get("code", "error")),
                str(header.get("msg", "")),
                retryAfter(retry),
            )
            # ERR no-route with known: the target exists, none of it is in
            # reach now; an ERR from a server says which (PROTOCOL.md 10.2).
            error.known = header.get("known") is True
            server, sinc = header.get("server"), header.get("sinc")
            error.server = (server, sinc) if isinstance(server, str) and isinstance(sinc, str) else None
            call.deferred.errback(error)
        self._room(peer)
        return True

    def fail(self, rid, error):
        """
        Fail call C{rid} now, if it is still waiting.
        """
        call = self._forget(rid)
        if call is not None:
            call.deferred.errback(error)
            self._room(call.peer)

    def forget(self, rid):
        """
        Stop waiting for call C{rid} without firing it (its answer came by
        another way).
        """
        call = self._forget(rid)
        if call is not None:
            self._room(call.peer)

    def failPeer(self, peer, error):
        """
        Fail every call that went to C{peer}.
        """
        for rid in [c.rid for c in self._calls.values() if c.peer is peer]:
            call = self._forget(rid)
            call.deferred.errback(error)

    def failAll(self, error):
        """
        Fail every call.
        """
        for rid in list(self._calls):
            call = self._forget(rid)
            call.deferred.errback(error)
