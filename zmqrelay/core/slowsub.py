"""
Finds the subscribers a relay holds too much for, and cuts them off, as a
NATS server cuts off a slow consumer.

libzmq bounds what an XPUB queues for one subscriber in messages only (its
send high-water mark), and moves notifications in threads that Python never
sees, so nothing counts the bytes queued per subscriber.  They can be
bounded from outside all the same, from two figures:

  - how many bytes the XPUB was handed since some moment (C{published}:
    every subscriber was sent at most that many);
  - how many bytes of that subscriber's TCP connection its peer has
    acknowledged since then (C{acked}: those left this host, whatever the
    subscriber's application does with them next), and how many the kernel
    still holds unsent (C{notsent}).

What this node holds for a subscriber, in libzmq's queue and in the
kernel, is then at most::

    notsent at that moment + published since - acked since

and, as libzmq's queue holds at most C{hwm} notifications (it drops for
that subscriber beyond), at most::

    notsent now + the size of the last hwm + 1 notifications published

(a subscriber that lags on small notifications holds little, however far
behind it is: it is not cut; its sequence numbers show what it missed).
That moment is taken afresh whenever the connection is seen with
(almost) nothing unsent: libzmq writes to the kernel as long as it takes
more, so a connection with room in its kernel buffer has (almost) nothing
waiting in libzmq's queue either.  A subscriber that keeps up, whatever its
topics, is therefore measured from a recent moment; one that does not read
keeps its old moment while everything published since counts against it.
Over L{SlowSubscribers.limit}, and still stuck (its kernel buffer full),
its connection is cut: libzmq frees what it queued for it, and the
subscriber's ZeroMQ socket, as soon as it reads again, finds its connection
ended, reconnects and subscribes again by itself; its sequence numbers show
what it missed (it asks the server to replay it).

What this cannot see: a connection whose kernel buffer keeps room while
libzmq's queue for it grows, because the node's own I/O thread lags (it
cannot write as fast as the relay fans out).  Such a queue is bounded by
C{hwm} alone.

The first figure is an upper bound (a subscriber of a few topics was sent
less than everything published), so a cut may come early, not late: at
most one scan's worth of traffic after the bound is crossed.  The second
is known from the figures read every L{INTERVAL} (the last L{HISTORY} of
them), with the mean size within the one interval where the last C{hwm}
notifications begin.  Scans are
skipped while less than an eighth of the limit was published since the
last one (nothing can have grown by more), and never take more than
L{BUDGET} of the reactor's time.

Pure: the figures and the cut come from callables the relay passes in, the
time from an L{twisted.internet.interfaces.IReactorTime}.
"""

from collections import deque

from twisted.logger import Logger

log = Logger()

#: Seconds between two looks at what was published.
INTERVAL = 0.1

#: The share of the reactor's time scans may take: after a scan that took
#: I{t} seconds the next one waits at least I{t / BUDGET}.
BUDGET = 0.05

#: Figures of what was published kept, one per L{INTERVAL}.
HISTORY = 256

#: Bytes a connection may hold unsent in the kernel and still count as
#: keeping up (its measure starts afresh).
QUIET = 64 * 1024


class _Connection:
    """
    One subscriber's connection and the moment it is measured from.
    """

    __slots__ = ("address", "published", "acked", "notsent")

    def __init__(self, address, published, acked, notsent):
        self.address = address
        self.published = published
        self.acked = acked
        self.notsent = notsent


class SlowSubscribers:
    """
    Watches the connections of one XPUB and cuts those whose backlog here
    exceeds C{limit} bytes (see the module docstring).

    @ivar limit: bytes held for one subscriber before it is cut (0: never).
    @ivar counters: C{slow-cut} (connections cut) and C{slow-cut-bytes}
        (what was held for them when they were cut, at most).
    """

    def __init__(self, clock, limit, published, backlog, cut, hwm=None, timer=None,
                 interval=INTERVAL, budget=BUDGET, quiet=QUIET, counters=None):
        """
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param published: returns C{(bytes, notifications)} handed to the
            XPUB so far.
        @param hwm: the notifications libzmq queues for one subscriber at
            most (its send high-water mark), or C{None}.
        @param backlog: C{backlog(fd)} returns C{(acked, notsent)} for the
            connection on descriptor C{fd}, or C{None} if it cannot tell
            (not TCP, or gone).
        @param cut: C{cut(fd, address)} ends that connection if it still
            has the peer C{address}; returns true if it did.
        @param timer: returns seconds, to time scans (default: the clock).
        @param counters: a L{dict} to count in (its owner's), or C{None}
            for one of its own.
        """
        self.clock = clock
        self.limit = limit
        self.published = published
        self.backlog = backlog
        self.cut = cut
        self.hwm = hwm
        self.timer = timer or clock.seconds
        self.interval = interval
        self.budget = budget
        self.quiet = quiet
        self.counters = {} if counters is None else counters
        self.counters.setdefault("slow-cut", 0)
        self.counters.setdefault("slow-cut-bytes", 0)
        self._connections = {}
        self._seen = (0, 0)
        self._history = deque(maxlen=HISTORY)
        self._scanned = 0
        self._notBefore = 0.0
        self._call = None

    def start(self):
        """
        Look every L{interval} seconds, until L{stop}.
        """
        if self.limit > 0 and self._call is None:
            self._scanned = self._see()[0]
            self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self):
        """
        Stop looking; forget every connection.
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        self._connections.clear()

    def accepted(self, fd, address):
        """
        A subscriber connected on descriptor C{fd} from C{address}: measure
        it from now (from the last figure read of what was published, which
        only makes its measure larger).
        """
        if self.limit <= 0:
            return
        figures = self.backlog(fd)
        if figures is None:
            # Not TCP (ipc://): its backlog cannot be told, so it is not watched.
            self._connections.pop(fd, None)
            return
        acked, notsent = figures
        if not self._connections:
            # Nothing was read while nobody was watched.
            self._see()
        self._connections[fd] = _Connection(address, self._seen[0], acked, notsent)

    def closed(self, fd):
        """
        The connection on descriptor C{fd} ended.
        """
        self._connections.pop(fd, None)

    def connectionEvent(self, event, fd, address):
        """
        A socket monitor's report (C{'accepted'} or C{'closed'}, as
        L{zmqrelay.interfaces.ISocket.monitor} gives it): watch or forget
        that connection.  Reports after L{stop} are ignored.
        """
        if self._call is None:
            return
        if event == "accepted":
            self.accepted(fd, address)
        else:
            self.closed(fd)

    def __len__(self):
        return len(self._connections)

    def _tick(self):
        self._call = self.clock.callLater(self.interval, self._tick)
        self.check()

    def check(self):
        """
        Read what was published (not while no connection is watched); if
        it grew by an eighth of the limit since the last scan, and the
        budget allows, scan every connection.

        @return: the connections cut (descriptors), or C{None} if no scan
            was made.
        """
        if not self._connections:
            # An idle relay's tick costs nothing: no figure is read.
            return None
        seen = self._see()
        published = seen[0]
        if published - self._scanned < self.limit // 8:
            return None
        now = self.clock.seconds()
        if now < self._notBefore:
            return None
        began = self.timer()
        cut = self._scan(published)
        took = self.timer() - began
        self._scanned = published
        self._notBefore = now + took / self.budget
        return cut

    def _see(self):
        """
        Read what was published so far, and keep it.
        """
        seen = self._seen = self.published()
        self._history.append(seen)
        return seen

    def _lastHwm(self):
        """
        @return: the bytes of the last C{hwm + 1} notifications published,
            or C{None} if the figures kept do not go back that far.
        """
        hwm = self.hwm
        if hwm is None:
            return None
        published, messages = newer = self._seen
        for older in reversed(self._history):
            if messages - older[1] > hwm:
                span = newer[1] - older[1]
                need = hwm + 1 - (messages - newer[1])
                return published - newer[0] + -(-(newer[0] - older[0]) * need // span)
            newer = older
        return None

    def _scan(self, published):
        limit, quiet, backlog = self.limit, self.quiet, self.backlog
        lastHwm = self._lastHwm()
        cut = []
        for fd, c in list(self._connections.items()):
            figures = backlog(fd)
            if figures is None:
                del self._connections[fd]
                continue
            acked, notsent = figures
            if notsent <= quiet:
                c.published, c.acked, c.notsent = published, acked, notsent
                continue
            held = c.notsent + (published - c.published) - (acked - c.acked)
            if lastHwm is not None and notsent + lastHwm < held:
                # libzmq's queue for it holds the last hwm at most.
                held = notsent + lastHwm
            if held <= limit:
                continue
            del self._connections[fd]
            if self.cut(fd, c.address):
                cut.append(fd)
                self.counters["slow-cut"] += 1
                self.counters["slow-cut-bytes"] += held
                log.warn(
                    "cut slow subscriber {address}: up to {held} bytes "
                    "held for it (limit {limit}); it will reconnect and ask for a replay",
                    address=_show(c.address), held=held, limit=limit,
                )
        return cut


def _show(address):
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return repr(address)
