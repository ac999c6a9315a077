"""
Presence: which clients are connected, by id, on which paths.

A node learns about clients from two kinds of source: the clients attached to
itself, and the replicated view of the node upstream of it (see
L{zmqrelay.core.replica}).  L{PresenceView} merges them per client id and tells
observers only about real transitions: a client reachable on two paths is
connected once and disconnected once; a restarted client (new incarnation)
replaces the old one at once.

With several clouds, a client moves from one to another when its cloud dies
or drains.  A view given a clock and a C{moveGrace} (the liveness window)
keeps a client whose last path was lost (not closed with a goodbye) for that
long: if it appears on another path meanwhile, with the same incarnation,
observers see a move (C{clientMoved}, when they have it), never a
disconnection.  Such a view also lets the newer of two incarnations win
(by C{since}), whatever order the clouds' reports come in.

Pure: no sockets; time only through the injected clock.
"""

from collections import deque

from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.interfaces import IPresenceObserver, IPresenceView

log = Logger()

DIRECT = "direct"
PROXY = "proxy"
CLOUD = "cloud"
PATHS = (DIRECT, PROXY, CLOUD)

# Disconnect reasons.
BYE = "bye"
#: A BYE with reason C{moved}: the client left this node for another one
#: (PROTOCOL.md 21.4), so it gets the move grace as a lost one does.
MOVED = "moved"
HEARTBEAT_TIMEOUT = "heartbeat-timeout"
REPLACED = "replaced"
UPSTREAM_LOST = "upstream-lost"
RESYNC = "resync"
SHUTDOWN = "shutdown"


class PresenceEvent:
    """
    One connection or disconnection of a client.

    @ivar clientId: the client's id.
    @ivar incarnation: the client process's incarnation.
    @ivar connected: C{True} for a connection.
    @ivar path: the path that changed (C{'direct'}, C{'proxy'}, C{'cloud'}).
    @ivar reason: why it disconnected (C{''} for connections).
    @ivar since: when the client connected (seconds, the attaching node's clock).
    """

    __slots__ = ("clientId", "incarnation", "connected", "path", "reason", "since")

    def __init__(self, clientId, incarnation, connected, path, reason="", since=0.0):
        self.clientId = clientId
        self.incarnation = incarnation
        self.connected = connected
        self.path = path
        self.reason = reason
        self.since = since

    def __repr__(self):
        what = "connected" if self.connected else f"disconnected ({self.reason})"
        return f"<PresenceEvent {self.clientId}/{self.incarnation} {what} via {self.path}>"


class ClientPresence:
    """
    What is known about one connected client.

    @ivar clientId: its id.
    @ivar incarnation: its current incarnation.
    @ivar since: when its current incarnation first connected.
    @ivar paths: a L{dict} of path name to (incarnation, since).
    """

    __slots__ = ("clientId", "incarnation", "since", "paths")

    def __init__(self, clientId, incarnation, since):
        self.clientId = clientId
        self.incarnation = incarnation
        self.since = since
        self.paths = {}

    def asDict(self):
        """
        @return: a plain L{dict} for logs and tools.
        """
        return {
            "client": self.clientId,
            "inc": self.incarnation,
            "since": self.since,
            "paths": sorted(self.paths),
        }


@implementer(IPresenceView)
class PresenceView:
    """
    The merged, per-client-id presence of one node.
    """

    retiredKept = 4

    def __init__(self, clock=None, moveGrace=0.0):
        """
        @param clock: an L{IReactorTime}, needed for C{moveGrace}.
        @param moveGrace: seconds a client whose last path was lost (not
            closed with a goodbye) still counts as connected, waiting for
            it on another path (0: report the disconnection at once).
        """
        if moveGrace > 0 and clock is None:
            raise ValueError("moveGrace needs a clock")
        self._clients = {}
        self._retired = {}
        self._observers = []
        self.clock = clock
        self.moveGrace = moveGrace
        # Client id -> (delayed call, the lost path, its reason).
        self._leaving = {}
        self.counters = {"moved": 0}

    def addObserver(self, observer):
        self._observers.append(observer)

    def removeObserver(self, observer):
        self._observers.remove(observer)

    def connectedClients(self):
        return dict(self._clients)

    def isConnected(self, clientId):
        return clientId in self._clients

    def get(self, clientId):
        """
        @return: the L{ClientPresence} of C{clientId}, or C{None}.
        """
        return self._clients.get(clientId)

    def attach(self, clientId, path, incarnation, since):
        """
        A client is reachable on C{path}.
        """
        if incarnation in self._retired.get(clientId, ()):
            return
        record = self._clients.get(clientId)
        if (
            record is not None and record.incarnation != incarnation and self.moveGrace > 0
            and since < record.since
        ):
            # An older process than the one we hold (a cloud that still
            # remembers it): the newer wins, here as everywhere.
            self._retire(clientId, incarnation)
            return
        if record is not None and record.incarnation != incarnation:
            self._stopLeaving(clientId)
            # A new process with the same id: the old one is gone, whatever
            # paths still remember it.
            self._retire(clientId, record.incarnation)
            del self._clients[clientId]
            self._emit(
                "clientDisconnected",
                PresenceEvent(
                    clientId, record.incarnation, False, path, REPLACED, record.since
                ),
            )
            record = None
        if record is None:
            record = self._clients[clientId] = ClientPresence(clientId, incarnation, since)
            record.paths[path] = (incarnation, since)
            self._emit(
                "clientConnected",
                PresenceEvent(clientId, incarnation, True, path, "", since),
            )
        else:
            moved = self._stopLeaving(clientId)
            record.paths[path] = (incarnation, since)
            if moved is not None:
                self.counters["moved"] += 1
                self._emit(
                    "clientMoved",
                    PresenceEvent(clientId, incarnation, True, path, moved[2], record.since),
                )

    def detach(self, clientId, path, incarnation, reason):
        """
        A client is no longer reachable on C{path}.
        """
        record = self._clients.get(clientId)
        if record is None or record.incarnation != incarnation:
            return
        if record.paths.pop(path, None) is None:
            return
        if not record.paths:
            if self.moveGrace > 0 and reason not in (BYE, REPLACED):
                # Lost, not gone: it may be on its way to another cloud.
                if clientId not in self._leaving:
                    call = self.clock.callLater(self.moveGrace, self._gone, clientId)
                    self._leaving[clientId] = (call, path, reason)
                return
            self._gone(clientId, path, reason)

    def _gone(self, clientId, path=None, reason=None):
        """
        C{clientId} has no path left (and did not come back within the
        grace): tell observers.
        """
        leaving = self._leaving.pop(clientId, None)
        if leaving is not None:
            call, lostPath, lostReason = leaving
            if call.active():
                call.cancel()
            path = path or lostPath
            reason = reason or lostReason
        record = self._clients.pop(clientId, None)
        if record is None:
            return
        self._retired.pop(clientId, None)
        self._emit(
            "clientDisconnected",
            PresenceEvent(clientId, record.incarnation, False, path, reason, record.since),
        )

    def _stopLeaving(self, clientId):
        """
        @return: (call, path, reason) of C{clientId}'s grace, now cancelled,
            or C{None}.
        """
        leaving = self._leaving.pop(clientId, None)
        if leaving is not None and leaving[0].active():
            leaving[0].cancel()
        return leaving

    def stop(self):
        """
        Report at once every client still within its grace (the node is
        stopping): no timer is left behind.
        """
        for clientId in list(self._leaving):
            self._gone(clientId)

    def detachPath(self, path, reason):
        """
        Every client reachable on C{path} is no longer reachable on it.
        """
        for record in list(self._clients.values()):
            entry = record.paths.get(path)
            if entry is not None:
                self.detach(record.clientId, path, entry[0], reason)

    def _retire(self, clientId, incarnation):
        retired = self._retired.get(clientId)
        if retired is None:
            retired = self._retired[clientId] = deque(maxlen=self.retiredKept)
        retired.append(incarnation)

    def _emit(self, method, event):
        for observer in list(self._observers):
            # clientMoved is optional: an observer without it sees nothing.
            hook = getattr(observer, method, None)
            if hook is None:
                continue
            try:
                hook(event)
            except Exception:
                log.failure("presence observer {observer} failed", observer=observer)


def _checkValue(value):
    if not (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)
    ):
        raise ValueError(f"bad presence value {value!r}")


def checkPresenceEntry(key, value):
    """
    Check one entry of a replicated C{presence} map before it is stored.

    @raise ValueError: unless the key is C{(clientId, path)} and the value
        C{[incarnation, since]}.
    """
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise ValueError(f"bad presence key {key!r}")
    _checkValue(value)


def localEntryCheck(path, via=None):
    """
    @return: a check for entries of a C{local} map: keys
        C{(clientId, path, via)} (C{via} any id if C{None}), values
        C{[incarnation, since]}.
    """

    def check(key, value):
        if not (
            isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, str) for k in key)
            and key[1] in path and (via is None or key[2] == via)
        ):
            raise ValueError(f"bad local presence key {key!r}")
        _checkValue(value)

    return check


def replicaChanges(changes):
    """
    Turn the changes of a replicated presence map into attach and detach steps.

    Entries are keyed C{(clientId, path)} with values C{[incarnation, since]}.
    A value that changed but kept its incarnation (a resync) is no step at
    all, so observers see no flapping.

    @param changes: as returned by L{zmqrelay.core.replica.MapReplica.apply}.
    @return: an iterator of C{('detach', clientId, path, incarnation, reason)}
        and C{('attach', clientId, path, incarnation, since)}.
    @raise ValueError: on a malformed entry.
    """
    for key, old, new, reason in changes:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            raise ValueError(f"bad presence key {key!r}")
        clientId, path = key
        for value in (old, new):
            if value is not None and not (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], str)
                and isinstance(value[1], (int, float))
            ):
                raise ValueError(f"bad presence value {value!r}")
        if old is not None and (new is None or new[0] != old[0]):
            yield ("detach", clientId, path, old[0], reason or RESYNC)
        if new is not None and (old is None or new[0] != old[0]):
            yield ("attach", clientId, path, new[0], new[1])


def localChanges(changes):
    """
    Turn the changes of a replicated C{local} map (the clients attached below
    a node, reported upward) into attach and detach steps.

    Entries are keyed C{(clientId, path, attachNodeId)} with values
    C{[incarnation, since]}; the path a holder records is
    C{'<path>@<attachNodeId>'} (C{'direct@a1'}, C{'proxy@siteA'}), so two
    servers a client is attached to directly are two paths.

    @return: an iterator of steps as from L{replicaChanges}.
    @raise ValueError: on a malformed entry.
    """
    relabelled = []
    for key, old, new, reason in changes:
        if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, str) for k in key)):
            raise ValueError(f"bad local presence key {key!r}")
        clientId, path, via = key
        relabelled.append(((clientId, f"{path}@{via}"), old, new, reason))
    return replicaChanges(relabelled)


@implementer(IPresenceObserver)
class PresenceLog:
    """
    An L{IPresenceObserver} that logs every event; plugins install it.

    Given a clock, it logs at most C{rate} events a second (C{burst} at
    once): when thousands of clients connect at once, one line each would
    cost the node more than the connections themselves.  What it leaves out
    is counted (C{unlogged}) and said in the next line it logs.
    """

    def __init__(self, logger=None, clock=None, rate=20.0, burst=200.0):
        self.log = logger or log
        self.clock = clock
        self.unlogged = 0
        self._bucket = None
        if clock is not None:
            from zmqrelay.core.ratelimit import TokenBucket

            self._bucket = TokenBucket(rate, burst, clock.seconds())

    def _emit(self, text, **fields):
        if self._bucket is not None and self._bucket.take(self.clock.seconds()) != 0.0:
            self.unlogged += 1
            return
        if self.unlogged:
            fields["unlogged"] = self.unlogged
            text += " ({unlogged} presence events not logged before this one)"
            self.unlogged = 0
        self.log.info(text, **fields)

    def _emitEvent(self, text, event):
        self._emit(
            text, client=event.clientId, inc=event.incarnation, path=event.path, reason=event.reason,
        )

    def clientConnected(self, event):
        self._emitEvent("client {client} ({inc}) connected via {path}", event)

    def clientMoved(self, event):
        self._emitEvent("client {client} ({inc}) moved to {path} (lost: {reason})", event)

    def clientDisconnected(self, event):
        self._emitEvent("client {client} ({inc}) disconnected via {path}: {reason}", event)