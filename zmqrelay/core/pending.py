"""
Connections that hold no session: how long they have waited, and which to
cut.

A ROUTER accepts any TCP connection, and ZeroMQ keeps it (a descriptor, its
buffers) for as long as the peer does.  A peer that connects and never says
HELLO, or whose session ended while its connection stays, would cost us
that for ever.  L{PendingConnections} tracks every such connection by its
descriptor (as a socket monitor names it) and says which have waited longer
than the handshake timeout, or are the oldest beyond the cap, so the
L{zmqrelay.edge.front.Front} can cut them.

Pure: the time is passed in, descriptors are plain integers.
"""

from collections import OrderedDict


class PendingConnections:
    """
    The connections of one ROUTER that hold no session, oldest first.

    @ivar timeout: seconds a connection may wait without a session.
    @ivar limit: connections that may wait at once.
    """

    def __init__(self, timeout, limit):
        self.timeout = timeout
        self.limit = limit
        # fd -> (since, address), in the order they started waiting.
        self._waiting = OrderedDict()
        # fd -> address, every open connection we were told of.
        self._open = {}
        # Descriptors that said hello before their ACCEPTED event reached us.
        self._early = set()

    def __len__(self):
        return len(self._waiting)

    def accepted(self, fd, address, now):
        """
        A connection was accepted on C{fd}.

        @return: L{list} of C{(fd, address)} to cut now: the oldest waiting
            ones beyond C{limit}.
        """
        self._open[fd] = address
        if fd in self._early:
            self._early.discard(fd)
            return []
        self._waiting.pop(fd, None)
        self._waiting[fd] = (now, address)
        excess = []
        while len(self._waiting) > self.limit:
            old, (_, oldAddress) = self._waiting.popitem(last=False)
            excess.append((old, oldAddress))
        return excess

    def closed(self, fd):
        """
        The connection on C{fd} ended.
        """
        self._open.pop(fd, None)
        self._waiting.pop(fd, None)
        self._early.discard(fd)

    def attached(self, fd):
        """
        The connection on C{fd} now holds a session.
        """
        if fd < 0:
            return
        if fd in self._open:
            self._waiting.pop(fd, None)
        elif len(self._early) < self.limit:
            self._early.add(fd)

    def detached(self, fd, now):
        """
        The session on C{fd} ended (or moved to another connection) while
        the connection may stay: it waits again, from C{now}.
        """
        address = self._open.get(fd)
        if address is None or fd in self._waiting:
            return
        self._waiting[fd] = (now, address)

    def expireSoon(self, fd, now):
        """
        Let the connection on C{fd} be taken by the next L{expired}, whether
        it waited or held a session (its session has ended).
        """
        address = self._open.get(fd)
        if address is None:
            return
        self._waiting[fd] = (now - self.timeout, address)
        self._waiting.move_to_end(fd, last=False)

    def address(self, fd):
        """
        @return: the peer address recorded when C{fd} was accepted, or
            C{None}.
        """
        return self._open.get(fd)

    def expired(self, now):
        """
        Take the connections that have waited C{timeout} or longer.

        @return: L{list} of C{(fd, address)}, oldest first; they are no
            longer tracked as waiting.
        """
        result = []
        deadline = now - self.timeout
        waiting = self._waiting
        while waiting:
            fd, (since, address) = next(iter(waiting.items()))
            if since > deadline:
                break
            del waiting[fd]
            result.append((fd, address))
        return result
