"""
The ROUTER side of a hop: the peers attached to a node.

L{Front} owns one bound ROUTER socket.  It does the work every role shares:
decoding, the HELLO/WELCOME handshake and version negotiation, one
L{PeerSession} per attached node, heartbeats both ways, limits per peer, and
clear errors for bad input.  What a message I{means} is left to the role
(the C{owner}), through a small set of callbacks:

  - C{owner.peerHello(session)}: may raise L{zmqrelay.core.errors.Rejected};
  - C{owner.peerJoined(session)} / C{owner.peerLeft(session, reason)};
  - C{owner.peerResumed(session)}: the same peer process came back on a new
    connection (same id and incarnation) and needs our state again;
  - C{owner.peerMessage(session, message)}: may raise
    L{zmqrelay.core.protocol.ProtocolError}, which goes back to the peer as ERR;
  - C{owner.welcomeExtras(session)}: extra WELCOME fields.

With CURVE (see L{zmqrelay.edge.security}) every message comes with the node id
bound to the key of its connection: a HELLO must claim that id and its
role, and a session only takes messages from the key that opened it.

What a peer without a session can make us do is bounded too.  Its
connection is cut once it has held no session for the handshake timeout,
and only so many such connections may wait at once (L{PendingConnections});
what it sends is read within a small budget per connection and a global
one for all strangers, past which it is dropped unread.
"""

from collections import OrderedDict

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zmqrelay.core import protocol
from zmqrelay.edge import security
from zmqrelay.edge.outbox import reportUndelivered
from zmqrelay.core.errors import Rejected
from zmqrelay.core.pending import PendingConnections
from zmqrelay.core.presence import MOVED
from zmqrelay.core.ratelimit import PeerGuard, TokenBucket

log = Logger()

_MAX_ID = 256

#: The slowest heartbeat (seconds) and the most missed beats a peer may ask
#: for in its hello: a silent session must end within a bounded time, or idle
#: connections could pile up sessions for ever.
MAX_HEARTBEAT = 60.0
MAX_LIVENESS = 10

#: The largest header frame read to answer an over-size message.
_MAX_HEADER = 4096

#: Messages a second, and at once, one connection without a session may
#: send before what it sends is dropped unread (a HELLO, a retry, a BYE fit).
STRANGER_RATE = 5.0
STRANGER_BURST = 20.0

#: Seconds between deciding to cut a connection flooding without a session
#: and cutting it: what it was answered gets the time to leave, and what it
#: sends meanwhile is read and dropped (the reason to keep this short).
CUT_GRACE = 0.05

#: Why a session ended, when its connection is cut on the next tick (with
#: the counter).  A client struck out (C{over-limit}) is not among them: its
#: last answers and its BYE must get the time to leave; if it goes on
#: sending, its connection, now without a session, is cut as a stranger's
#: over its budget, else after the handshake timeout.
_CUT_REASONS = {"heartbeat-timeout": "cut-dead"}

_REQUEST = protocol.REQUEST
_REPLY = protocol.REPLY
_HB = protocol.HEARTBEAT
#: An HB's frames (signature, type, empty header, payload) per version.
_HEARTBEATS = {v: protocol.encode(protocol.HEARTBEAT, {}, b"", v) for v in range(256)}
_EMPTY_MAP = _HEARTBEATS[1][2]
_BATCH = protocol.BATCH
_UNBATCHED = protocol.UNBATCHED

#: Monitor events (as L{zmqrelay.edge._zmq} names them).
_ACCEPTED = "accepted"


def _typeOf(frames):
    """
    @return: the type frame of a message as a ROUTER reads it (routing id,
        signature, type, ...), or C{None}.
    """
    return frames[2] if len(frames) > 2 else None


def _peekHeader(frames):
    """
    @return: the header of a routed message if its header frame is small
        and decodes (to name the request in an ERR), else C{None}.
    """
    if len(frames) > 3 and len(frames[3]) <= _MAX_HEADER:
        try:
            return protocol.decodeHeader(frames[3])
        except protocol.ProtocolError:
            pass
    return None


class PeerSession:
    """
    One node attached to our ROUTER, after HELLO.

    @ivar nodeId: its id.
    @ivar role: its role.
    @ivar incarnation: its incarnation.
    @ivar version: the negotiated protocol version.
    @ivar hello: its HELLO header.
    @ivar since: when it said hello.
    @ivar lastSeen: when we last heard from it.
    @ivar lastSent: when we last sent to it.
    @ivar maxSize: the largest message it accepts (its HELLO's C{max}).
    @ivar batchMax: the most messages it accepts in one BATCH (its HELLO's
        C{batch}; C{0}: none).
    @ivar takesParts: whether it takes snapshots in parts (its HELLO's
        C{parts}; see L{zmqrelay.core.replica.sendSnapshot}).
    @ivar outbox: what was sent to it this reactor turn and waits to go out
        (as one BATCH if more than one), or C{None}.
    @ivar gone: C{True} once a send found no connection with its routing id:
        the next tick drops it.
    @ivar userId: with CURVE, the node id bound to its key; else C{None}.
    @ivar fd: the descriptor of its connection (C{-1} if unknown).
    @ivar stale: C{True} from a stall of ours longer than its liveness
        window to the next tick: its requests read meanwhile were sent
        before it gave up on us, and are dropped.
    """

    def __init__(self, front, routingId, nodeId, role, incarnation, version, hello, now):
        self.front = front
        self.routingId = routingId
        self.nodeId = nodeId
        self.role = role
        self.incarnation = incarnation
        self.version = version
        self.hello = hello
        self.maxSize = protocol.announcedMax(hello, front.config.maxMessageSize)
        self.batchMax = protocol.batchLimit(hello)
        self.takesParts = protocol.takesParts(hello)
        self.outbox = None
        self.since = now
        self.lastSeen = now
        self.lastSent = now
        self.heartbeat = front.config.heartbeat
        self.liveness = front.config.liveness
        self.guard = None
        self.alive = True
        self.gone = False
        self.draining = False
        self.userId = None
        self.fd = -1
        self.stale = False

    def resume(self, routingId, version, hello, now):
        """
        The same peer process came back on a new connection (same id and
        incarnation): take its new routing id and what its new HELLO says.
        """
        self.routingId = routingId
        self.version = version
        self.hello = hello
        self.maxSize = protocol.announcedMax(hello, self.front.config.maxMessageSize)
        self.batchMax = protocol.batchLimit(hello)
        self.takesParts = protocol.takesParts(hello)
        self.lastSeen = now
        self.gone = False
        self.stale = False

    def send(self, msgtype, header, payload=b""):
        """
        Send one message to this peer.

        @return: C{True} if queued.
        """
        return self.front.sendTo(self, msgtype, header, payload)

    def strike(self):
        """
        The node refused this peer for another limit (requests in flight):
        count it as a strike of its rate limit (see L{Front.strike}).
        """
        self.front.strike(self)

    def __repr__(self):
        return f"<PeerSession {self.role} {self.nodeId}/{self.incarnation}>"


class Front:
    """
    A bound ROUTER and the sessions of the peers attached to it.

    @ivar sessions: routing id to L{PeerSession}.
    @ivar byNode: node id to L{PeerSession}.
    @ivar counters: what was received, refused and dropped.
    """

    #: Errors sent to peers without a session, per second (a stranger's flood
    #: must not turn into our flood).
    strangerReplies = 100.0

    def __init__(self, owner, config, reactor, socketFactory, address, options=None):
        self.owner = owner
        self.config = config
        self.reactor = reactor
        self.socketFactory = socketFactory
        self.address = address
        self.options = options
        self.authority = security.authority(config)
        self.endpoint = None
        self.sessions = {}
        self.byNode = {}
        self._guards = OrderedDict()
        self.counters = {
            "received": 0,
            "requests": 0,
            "refused-messages": 0,
            "malformed": 0,
            "refused": 0,
            "ignored": 0,
            "rejected": 0,
            "unknown-type": 0,
            "too-large": 0,
            "auth": 0,
            "wrong-key": 0,
            "ignored-strangers": 0,
            "discarded": 0,
            "cut-silent": 0,
            "cut-excess": 0,
            "cut-dead": 0,
            "cut-abusive": 0,
            "unlogged": 0,
            "batches-in": 0,
            "batched-in": 0,
            "batches-out": 0,
            "batched-out": 0,
            "undelivered": 0,
            "errors-unanswered": 0,
            "strangers-unanswered": 0,
        }
        # ERR answers sent, and hellos rejected, by error code.
        self.errors = {}
        self.rejects = {}
        self._socket = None
        self._ticker = None
        self._lastTick = None
        self._strangers = None
        self._strangerBudget = None
        self._strangerBuckets = OrderedDict()
        self._logBucket = None
        self._sessionLog = TokenBucket(20.0, 200.0, reactor.seconds())
        self._pending = PendingConnections(config.handshakeTimeout, config.maxPending)
        self._byFd = {}
        # Role -> node id -> session (what peers(role) answers).
        self._byRole = {}
        # Sessions whose requests are stale until the next tick.
        self._stale = []
        # Descriptors of ended sessions to cut on the next tick, with the
        # counter that counts the cut.
        self._dying = {}
        # Descriptors cut for abuse, until the monitor says they closed.
        self._cutFds = set()
        self._cutTimer = None
        # Sessions with an outbox, and the call that sends them.
        self._outgoing = []
        self._flushTimer = None

    def start(self):
        """
        Bind and start heartbeats.

        @return: the endpoint bound.
        """
        now = self.reactor.seconds()
        self._strangers = TokenBucket(self.strangerReplies, self.strangerReplies, now)
        self._logBucket = TokenBucket(1.0, 10.0, now)
        self._sessionLog = TokenBucket(20.0, 200.0, now)
        rate = self.config.strangerRate
        self._strangerBudget = TokenBucket(rate, rate, now) if rate > 0 else None
        if self.authority is not None:
            options = self.options or security.boundOptions(self.config, security.CONTROL)
            self._socket = self.socketFactory.socket("router", self._onMessage, options, userIds=True)
        else:
            self._socket = self.socketFactory.socket("router", self._onMessage, self.options)
        self._socket.onDiscard = self._onDiscard
        # Peers write into this socket: what one connection may have queued
        # unread here is bounded apart from the send side's --hwm.
        self._socket.limitInput(self.config.inputHwm)
        # And what may wait toward one peer that does not read: a deaf
        # client holds at most this many answers here (relays get theirs
        # in batches, so this many messages are many more requests).
        self._socket.limitOutput(self.config.outputHwm)
        self.endpoint = self._socket.bind(self.address)
        if not self.endpoint.startswith("inproc:"):
            # Connections by descriptor, so those that hold no session can
            # be cut (inproc ones have no descriptor and cost no file).
            self._socket.monitor(self._onConnectionEvent)
        self._lastTick = now
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.config.heartbeat / 2.0, now=False)
        return self.endpoint

    def stop(self):
        """
        Say goodbye to every peer and close the socket.
        """
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        if self._cutTimer is not None and self._cutTimer.active():
            self._cutTimer.cancel()
        self._cutTimer = None
        for session in list(self.sessions.values()):
            self.sendTo(session, protocol.BYE, {"reason": "shutdown"})
            session.alive = False
        self.flush()
        self.sessions.clear()
        self.byNode.clear()
        self._byRole.clear()
        self._byFd.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # Sending

    def sendTo(self, session, msgtype, header, payload=b""):
        """
        Send one message to a session.

        To a peer that takes batches (its HELLO's C{batch}) the message waits
        in the session's outbox until the end of this reactor turn, and goes
        out with whatever else was sent to that peer meanwhile as one BATCH
        (PROTOCOL.md 3.3).  C{header} must not change after this call.  If
        that send fails, the owner's C{undelivered(session, type, header)}
        is called for each message of it.

        @return: C{True} if queued (or waiting in the outbox).
        """
        if self._socket is None:
            return False
        if session.batchMax and msgtype not in _UNBATCHED:
            out = session.outbox
            if out is None:
                session.outbox = out = []
                self._outgoing.append(session)
                if self._flushTimer is None and not self.socketFactory.flushSoon(self.flush):
                    # No read is going on to send it when it ends: at the
                    # end of this turn, then.
                    self._flushTimer = self.reactor.callLater(0, self._flushLater)
            out.append((msgtype, header, payload))
            session.lastSent = self.reactor.seconds()
            if msgtype == protocol.ERROR:
                code = header.get("code")
                self.errors[code] = self.errors.get(code, 0) + 1
            return True
        if session.outbox:
            # What waits goes first: the peer sees our messages in order.
            self._flushSession(session)
        return self._sendNow(session, msgtype, header, payload)

    def _flushLater(self):
        self._flushTimer = None
        self.flush()

    def flush(self):
        """
        Send every outbox now.
        """
        if self._flushTimer is not None:
            if self._flushTimer.active():
                self._flushTimer.cancel()
            self._flushTimer = None
        outgoing, self._outgoing = self._outgoing, []
        for session in outgoing:
            self._flushSession(session)

    def _flushSession(self, session):
        items = session.outbox
        session.outbox = None
        if not items:
            return
        if len(items) == 1:
            self._sendItems(session, items)
            return
        for chunk in protocol.batches(items, session.batchMax, session.maxSize - protocol.HEADROOM):
            self._sendItems(session, chunk)

    def _sendItems(self, session, items):
        if self._socket is None:
            ok = False
        elif len(items) == 1:
            msgtype, header, payload = items[0]
            ok = self._sendNow(session, msgtype, header, payload, counted=True)
        else:
            ok = self._socket.send(
                [session.routingId] + protocol.encodeBatch(items, session.version)
            )
            if ok:
                self.counters["batches-out"] += 1
                self.counters["batched-out"] += len(items)
            elif getattr(self._socket, "unroutable", False):
                session.gone = True
        if not ok:
            reportUndelivered(self.owner, session, items, self.counters)

    def _sendNow(self, session, msgtype, header, payload, counted=False):
        if self._socket is None:
            return False
        ok = self._socket.send(
            [session.routingId] + protocol.encode(msgtype, header, payload, session.version)
        )
        if ok:
            session.lastSent = self.reactor.seconds()
            if msgtype == protocol.ERROR and not counted:
                code = header.get("code")
                self.errors[code] = self.errors.get(code, 0) + 1
        elif getattr(self._socket, "unroutable", False):
            # ROUTER_MANDATORY: its connection is gone (the process died, or
            # is back on a new connection and will say hello there).  Do not
            # wait for its heartbeats to time out: requests for it should
            # fail with no route now.
            session.gone = True
        return ok

    def _sendRaw(self, routingId, msgtype, header):
        # No session, so no negotiated version: our highest (PROTOCOL.md 3.1).
        if self._socket is not None:
            self._socket.send([routingId] + protocol.encode(msgtype, header, b"", max(self.config.versions)))

    def peers(self, role=None):
        """
        @return: the live sessions, optionally only those of one role.
        """
        if role is None:
            return list(self.sessions.values())
        # Indexed: a cloud asks for its proxies at every presence change,
        # and scanning ten thousand clients each time is quadratic.
        return list(self._byRole.get(role, {}).values())

    # Receiving

    def _onMessage(self, frames, userId=None):
        self.counters["received"] += 1
        routingId = frames[0]
        session = self.sessions.get(routingId)
        if session is not None and session.userId != userId:
            # Another key on the routing id of a session whose peer is gone:
            # not that session.
            self.counters["wrong-key"] += 1
            session = None
        size = sum(map(len, frames))
        now = self.reactor.seconds()
        if session is None:
            if not self._strangerMayTalk(routingId, now):
                self.counters["ignored-strangers"] += 1
                return
        else:
            session.lastSeen = now
            if session.guard is not None and not self._admitted(session, now, size, frames):
                return
        if session is not None and len(frames) > 3 and frames[2] == _HB and (
            frames[3] == _EMPTY_MAP and frames[1][:4] == protocol.SIGNATURE and len(frames[1]) == 5
        ):
            # A plain heartbeat (ten thousand idle clients send ten thousand
            # a second): it has done its work (lastSeen) already.
            return
        if size > self.config.maxMessageSize:
            self.counters["too-large"] += 1
            # Read just the header (small) so the ERR names the request and
            # the sender fails it at once instead of timing out.
            header = _peekHeader(frames)
            self._error(
                routingId, session, header, protocol.E_TOO_LARGE,
                f"message of {size} bytes, limit {self.config.maxMessageSize}",
                answer=_typeOf(frames) != protocol.ERROR,
            )
            return
        try:
            message = protocol.decode(frames, 1)
        except protocol.ProtocolError as e:
            self.counters["malformed"] += 1
            self._error(routingId, session, None, e.code, e.message)
            return
        msgtype = message.type
        if msgtype == _BATCH and session is not None:
            self._batch(routingId, session, message, now, userId)
            return
        self._dispatch(routingId, session, message, now, userId)

    def _batch(self, routingId, session, message, now, userId):
        """
        A BATCH from a peer we let send them: each of its messages as if it
        had come alone.
        """
        limit = self.config.batch
        try:
            items = protocol.decodeBatch(message, limit if limit >= 2 else 0)
        except protocol.ProtocolError as e:
            self.counters["malformed"] += 1
            self._error(routingId, session, None, e.code, e.message)
            return
        self.counters["batches-in"] += 1
        self.counters["batched-in"] += len(items)
        for item in items:
            if not session.alive:
                return
            # A client's limits count every message of a batch, as if it had
            # come alone (the batch itself counted once more).
            if session.guard is not None and not self._admitted(
                session, now, len(item.payload), header=item.header, msgtype=item.type
            ):
                continue
            self._dispatch(routingId, session, item, now, userId)

    def _admitted(self, session, now, size, frames=None, header=None, msgtype=None):
        """
        Take one message of C{size} bytes from a client's limits.

        @return: C{True} if it may be handled; otherwise it was ignored (in
            cooldown) or refused with ERR over-limit (its header read from
            C{frames} or given), and a refusal that crossed the strike limit
            ended the session.
        """
        guard = session.guard
        wait = guard.check(now, size)
        if wait is None:
            self.counters["ignored"] += 1
            return False
        if wait:
            self.counters["refused"] += 1
            self._refuse(session, frames, wait, header, msgtype)
            if guard.ignoredUntil > now:
                # Past the strike limit: disconnected for the cooldown.  What
                # it goes on sending comes without a session: a few messages,
                # then its connection is cut.
                self.drop(session, "over-limit")
            return False
        return True

    def _dispatch(self, routingId, session, message, now, userId):
        msgtype = message.type
        if session is None:
            if msgtype == protocol.HELLO:
                self._hello(routingId, message, now, userId)
            elif msgtype != protocol.BYE:
                self._error(
                    routingId, None, message.header, protocol.E_HELLO_FIRST,
                    "no session: send HELLO first", answer=msgtype != protocol.ERROR,
                )
            return
        if msgtype == _REQUEST:
            self.counters["requests"] += 1
            if session.stale:
                # Sent before our stall, by a peer that has since given up on
                # us and retried elsewhere: running it now could run it twice.
                # If the peer did not give up, its own retry comes back here.
                self.counters["stale"] = self.counters.get("stale", 0) + 1
                return
        elif msgtype == _REPLY:
            pass
        elif msgtype == protocol.HEARTBEAT:
            if message.header.get("drain") is True and not session.draining:
                # The peer is draining (PROTOCOL.md 7.1).
                session.draining = True
                hook = getattr(self.owner, "peerDraining", None)
                if hook is not None:
                    hook(session)
            return
        elif msgtype == protocol.HELLO:
            self._hello(routingId, message, now, userId)
            return
        elif msgtype == protocol.BYE:
            # A client leaving us for another node (PROTOCOL.md 21.4) is
            # moving, not gone: its presence gets the move grace.
            moved = message.header.get("reason") == MOVED and session.role == protocol.CLIENT
            self.drop(session, MOVED if moved else "bye")
            return
        try:
            self.owner.peerMessage(session, message)
        except protocol.ProtocolError as e:
            if e.code == protocol.E_UNKNOWN_TYPE:
                self.counters["unknown-type"] += 1
            else:
                self.counters["malformed"] += 1
            self._error(routingId, session, message.header, e.code, e.message,
                        answer=msgtype != protocol.ERROR)

    def _strangerMayTalk(self, routingId, now):
        """
        Take one message from a connection without a session out of its own
        small budget and the budget of all strangers.

        @return: C{True} if the message may be read.
        """
        buckets = self._strangerBuckets
        bucket = buckets.get(routingId)
        if bucket is None:
            bucket = buckets[routingId] = TokenBucket(STRANGER_RATE, STRANGER_BURST, now)
            # As many as may wait for a session, and a margin: a forgotten
            # connection starts again with a fresh but small budget.
            while len(buckets) > 2 * self.config.maxPending + 16:
                buckets.popitem(last=False)
        if bucket.take(now) != 0.0:
            # Over its own budget: a connection that floods without a session
            # is cut, so what it queued, and sends next, is never read.
            self._cutStranger()
            return False
        budget = self._strangerBudget
        return budget is None or budget.take(now) == 0.0

    def strike(self, session):
        """
        Count a refusal of C{session} by another limit than its rate (its
        requests in flight) as a strike: a client that keeps sending into a
        refusal is disconnected for the cooldown like one over its rate.
        """
        guard = session.guard
        if guard is None or not session.alive:
            return
        now = self.reactor.seconds()
        if guard.strike(now):
            self.counters["refused"] += 1
            self.sendTo(session, protocol.ERROR, {
                "code": protocol.E_OVER_LIMIT,
                "msg": f"ignored for {self.config.cooldown:g} s after repeated refusals",
                "retry": round(self.config.cooldown, 3),
            })
            self.drop(session, "over-limit")

    def _cutStranger(self):
        """
        Cut the connection of the message being read, if it holds no
        session and we know its peer (its ACCEPTED event came).
        """
        if self._socket is None:
            return
        fd = self._socket.sourceFd()
        if fd < 0 or fd in self._byFd or fd in self._cutFds:
            return
        if self._pending.address(fd) is None:
            return
        # Soon, not now: what we answered it (hello-first, and a BYE if it
        # was just struck out) gets the time to leave; meanwhile what it
        # sends is dropped unread.
        self._cutFds.add(fd)
        self._dying[fd] = "cut-abusive"
        self._pending.expireSoon(fd, self.reactor.seconds())
        if self._cutTimer is None:
            self._cutTimer = self.reactor.callLater(CUT_GRACE, self._cutExpired)

    def _cutExpired(self):
        """
        Cut the connections whose time is up (those marked by
        L{_cutStranger}, and any silent one past the handshake timeout).
        """
        self._cutTimer = None
        self._cutDue()

    def _cutDue(self):
        for fd, address in self._pending.expired(self.reactor.seconds()):
            self._cutWaiting(fd, address, self._dying.pop(fd, "cut-silent"))

    def _onDiscard(self, frames, reason, size):
        """
        The socket discarded a message as it read it (too many frames, or
        too large in all): tell the sender, as for any bad message.
        """
        self.counters["discarded"] += 1
        routingId = frames[0]
        session = self.sessions.get(routingId)
        now = self.reactor.seconds()
        if session is None:
            if not self._strangerMayTalk(routingId, now):
                self.counters["ignored-strangers"] += 1
                return
        elif session.guard is not None and session.guard.check(now, size) is None:
            self.counters["ignored"] += 1
            return
        header = _peekHeader(frames)
        answer = _typeOf(frames) != protocol.ERROR
        if reason == "too-large":
            self.counters["too-large"] += 1
            self._error(
                routingId, session, header, protocol.E_TOO_LARGE,
                f"message of {size} bytes or more, limit {self.config.maxMessageSize}",
                answer=answer,
            )
        else:
            self.counters["malformed"] += 1
            self._error(
                routingId, session, header, protocol.E_BAD_MESSAGE,
                "too many frames in one message", answer=answer,
            )

    def _refuse(self, session, frames, wait, header=None, msgtype=None):
        self.counters["refused-messages"] += 1
        if frames is not None:
            msgtype = _typeOf(frames)
            try:
                header = protocol.decode(frames[1:]).header
            except protocol.ProtocolError:
                pass
        if session.guard is not None and session.guard.ignoredUntil > self.reactor.seconds():
            # This refusal crossed the strike limit: the last answer the
            # peer gets until its cooldown ends.
            text = f"ignored for {self.config.cooldown:g} s after repeated refusals"
        else:
            text = "rate limit exceeded"
        self._error(
            session.routingId, session, header, protocol.E_OVER_LIMIT, text, retryAfter=wait,
            answer=msgtype != protocol.ERROR,
        )

    def _error(self, routingId, session, header, code, text, retryAfter=None, answer=True):
        """
        Answer a bad message with ERR, and log it at a bounded rate.

        @param answer: C{False} if the bad message is itself an ERR: nobody
            answers an ERR with an ERR (PROTOCOL.md 10); it is logged and
            counted (C{errors-unanswered}) only.
        """
        now = self.reactor.seconds()
        if self._logBucket.take(now) == 0.0:
            log.warn(
                "{peer}: {code}: {text}{unanswered}",
                peer=session.nodeId if session is not None else routingId.hex(),
                code=code,
                text=text,
                unanswered="" if answer else " (an ERR: not answered)",
            )
        if not answer:
            self.counters["errors-unanswered"] += 1
            return
        if session is None and self._strangers.take(now) != 0.0:
            # Answers to connections without a session are bounded too.
            self.counters["strangers-unanswered"] += 1
            return
        reply = {"code": code, "msg": text}
        if header is not None:
            rid = header.get("id")
            if isinstance(rid, int) and not isinstance(rid, bool):
                reply["id"] = rid
        if retryAfter is not None:
            reply["retry"] = round(retryAfter, 3)
        if session is not None:
            self.sendTo(session, protocol.ERROR, reply)
        else:
            self._sendRaw(routingId, protocol.ERROR, reply)
            self.errors[code] = self.errors.get(code, 0) + 1

    def _reject(self, routingId, code, text, retryAfter=None):
        self.counters["rejected"] += 1
        self.rejects[code] = self.rejects.get(code, 0) + 1
        # Counted always; logged and answered at a bounded rate, like any
        # other bad input (a HELLO flood must not become a log flood).
        now = self.reactor.seconds()
        if self._logBucket.take(now) == 0.0:
            log.error("refused hello from {peer}: {code}: {text}", peer=routingId.hex(), code=code, text=text)
        if self._strangers.take(now) != 0.0:
            return
        reply = {"code": code, "msg": text, "versions": list(self.config.versions)}
        if retryAfter is not None:
            reply["retry"] = round(retryAfter, 3)
        self._sendRaw(routingId, protocol.REJECT, reply)

    def _hello(self, routingId, message, now, userId=None):
        header = message.header
        try:
            versions = protocol.versionList(header)
            nodeId = protocol.field(header, "id", str, required=True)
            role = protocol.field(header, "role", str, required=True)
            incarnation = protocol.field(header, "inc", str, required=True)
            hb = protocol.field(header, "hb", int, 0)
            liveness = protocol.field(header, "liveness", int, 0)
        except protocol.ProtocolError as e:
            self._reject(routingId, e.code, e.message)
            return
        if not nodeId or len(nodeId) > _MAX_ID or len(incarnation) > _MAX_ID:
            self._reject(routingId, protocol.E_BAD_MESSAGE, "bad node id or incarnation")
            return
        version = protocol.negotiate(self.config.versions, versions)
        if version is None:
            self._reject(
                routingId, protocol.E_VERSION,
                f"no common protocol version: you speak {sorted(versions)}, "
                f"we speak {list(self.config.versions)}",
            )
            return
        session = PeerSession(self, routingId, nodeId, role, incarnation, version, header, now)
        session.userId = userId
        c = self.config
        session.heartbeat = min(max(c.heartbeat, hb / 1000.0), max(c.heartbeat, MAX_HEARTBEAT))
        session.liveness = min(max(c.liveness, liveness), max(c.liveness, MAX_LIVENESS))
        try:
            if self.authority is not None:
                self.authority.checkHello(userId, nodeId, role)
            self.owner.peerHello(session)
        except Rejected as e:
            if e.code == protocol.E_AUTH:
                self.counters["auth"] += 1
            self._reject(routingId, e.code, e.message)
            return
        guard = None
        if role == protocol.CLIENT:
            # A client's limits follow its id, not its session: saying hello
            # again (new connection, new incarnation) neither resets them nor
            # ends a cooldown, and the hellos themselves count.
            guard = self._guardFor(nodeId, now)
            wait = guard.check(now, 0)
            if wait != 0.0:
                self.counters["refused"] += 1
                if wait is None:
                    wait = guard.ignoredUntil - now
                self._reject(
                    routingId, protocol.E_OVER_LIMIT,
                    "too many messages from this client id; wait before saying hello again",
                    retryAfter=max(wait, 0.001),
                )
                return
        old = self.sessions.get(routingId) or self.byNode.get(nodeId)
        if old is not None:
            if old.incarnation == incarnation and old.role == role and old.nodeId == nodeId:
                # The same process on a new connection: keep its session (and
                # everything hanging off it), move it to the new routing id.
                # It dropped its copies of our replicated state when its old
                # connection ended, so the owner sends them again.
                del self.sessions[old.routingId]
                self._attach(old, now)
                old.resume(routingId, version, header, now)
                self.sessions[routingId] = old
                self._welcome(old)
                self.owner.peerResumed(old)
                return
            self.drop(old, "replaced")
        # The id may be held by a session on another connection too (the
        # hello came on a connection that had said hello as someone else):
        # one session per node id, or that one would linger unfindable.
        other = self.byNode.get(nodeId)
        if other is not None:
            self.drop(other, "replaced")
        session.guard = guard
        self._guards.pop(nodeId, None)
        self._attach(session, now)
        self.sessions[routingId] = session
        self.byNode[nodeId] = session
        self._byRole.setdefault(role, {})[nodeId] = session
        self._welcome(session)
        self.owner.peerJoined(session)

    def _attach(self, session, now):
        """
        The message being read (a HELLO) came on the connection C{session}
        now holds: that connection no longer waits for a session, and the
        one the session held before (if another) does.
        """
        fd = self._socket.sourceFd() if self._socket is not None else -1
        if fd == session.fd:
            return
        self._detach(session, now)
        session.fd = fd
        if fd >= 0:
            self._byFd[fd] = session
            self._pending.attached(fd)

    def _detach(self, session, now, cut=None):
        fd = session.fd
        if fd < 0:
            return
        session.fd = -1
        if self._byFd.get(fd) is session:
            del self._byFd[fd]
            if cut:
                # Cut on the next tick, not now: the BYE we are about to
                # send gets the time to leave.
                self._pending.detached(fd, now - self._pending.timeout)
                self._dying[fd] = cut
            else:
                self._pending.detached(fd, now)

    def _onConnectionEvent(self, event, fd, address):
        self._dying.pop(fd, None)
        self._cutFds.discard(fd)
        if event == _ACCEPTED:
            now = self.reactor.seconds()
            for old, oldAddress in self._pending.accepted(fd, address, now):
                self._cutWaiting(old, oldAddress, "cut-excess")
            if fd in self._byFd:
                # Its HELLO was read before this event: it waits for nothing.
                self._pending.attached(fd)
        else:
            self._pending.closed(fd)

    def _cutWaiting(self, fd, address, counter):
        if fd in self._byFd:
            # The descriptor was reused by a connection that has a session
            # (its events reached us late): keep it.
            self._pending.attached(fd)
            return
        if self._socket is not None and self._socket.cut(fd, address):
            self.counters[counter] += 1
            if self._logBucket.take(self.reactor.seconds()) == 0.0:
                log.info(
                    "cut connection from {address}: {why}",
                    address=address, why=counter,
                )

    def _welcome(self, session):
        c = self.config
        header = {
            "id": c.nodeId,
            "role": self.owner.role,
            "inc": c.incarnation,
            "version": session.version,
            "versions": list(c.versions),
            "hb": int(round(session.heartbeat * 1000)),
            "liveness": session.liveness,
            "max": c.maxMessageSize,
            "inflight": c.maxInFlight,
            "you": session.nodeId,
        }
        if c.batch >= 2:
            header["batch"] = c.batch
        if session.role != protocol.CLIENT:
            # Replicated maps go to relays and servers only.
            header["parts"] = True
        header.update(self.owner.welcomeExtras(session))
        self.sendTo(session, protocol.WELCOME, header)

    #: Limits kept for client ids without a session (bounded, oldest first out).
    guardsKept = 10000

    def _guardFor(self, nodeId, now):
        """
        The L{PeerGuard} of a client id: its session's, one kept since its
        last session ended, or a new one.
        """
        session = self.byNode.get(nodeId)
        if session is not None and session.guard is not None:
            return session.guard
        # Kept until a session takes it: a refused hello must not lose it.
        guard = self._guards.get(nodeId)
        if guard is None:
            c = self.config
            guard = PeerGuard(
                now, c.rate, c.burst, c.byteRate, max(c.byteRate, c.maxMessageSize),
                c.strikes, c.cooldown,
            )
        return guard

    def drop(self, session, reason):
        """
        Forget a session (it said bye, went silent, or was replaced).
        """
        # A connection silent for the liveness window (it may be half-open)
        # is cut on the next tick; any other waits out the handshake timeout
        # for a HELLO.
        self._detach(session, self.reactor.seconds(), cut=_CUT_REASONS.get(reason))
        if self.sessions.get(session.routingId) is session:
            del self.sessions[session.routingId]
        if self.byNode.get(session.nodeId) is session:
            del self.byNode[session.nodeId]
            self._byRole.get(session.role, {}).pop(session.nodeId, None)
            if session.guard is not None:
                self._guards[session.nodeId] = session.guard
                while len(self._guards) > self.guardsKept:
                    self._guards.popitem(last=False)
        if not session.alive:
            return
        session.alive = False
        if reason != "bye" and reason != MOVED:
            self.sendTo(session, protocol.BYE, {"reason": reason})
        if self._sessionLog.take(self.reactor.seconds()) == 0.0:
            log.info(
                "{role} {peer} ({inc}) left: {reason}",
                role=session.role, peer=session.nodeId, inc=session.incarnation, reason=reason,
            )
        else:
            # Thousands leaving at once (a partition, a restart) must not
            # cost a log line each; presence events and counters say it.
            self.counters["unlogged"] += 1
        try:
            self.owner.peerLeft(session, reason)
        except Exception:
            # Whatever the owner got wrong, the session is gone and the
            # heartbeat loop this may run in must go on.
            log.failure("forgetting {peer} failed", peer=session.nodeId)

    def _tick(self):
        now = self.reactor.seconds()
        interval = self.config.heartbeat / 2.0
        last, self._lastTick = self._lastTick, now
        # What a stall left queued was read before this tick (the reactor
        # reads its sockets between two ticks): from now on it is fresh.
        for session in self._stale:
            session.stale = False
        self._stale = []
        if last is not None and now - last - interval > interval:
            # This process did not run for a while (CPU starved, stopped):
            # its peers' silence over that time is ours, not theirs.
            stall = now - last - interval
            self.counters["stalls"] = self.counters.get("stalls", 0) + 1
            for session in self.sessions.values():
                session.lastSeen += stall
                if stall > session.heartbeat * session.liveness:
                    # We were silent toward it past its liveness window: it
                    # has given up on us, and what it sent before must not
                    # run now (see _onMessage).
                    session.stale = True
                    self._stale.append(session)
        # One pass over the sessions (ten thousand clients are ten thousand
        # of them, twice a heartbeat): those that look gone, and those owed
        # a heartbeat.
        suspects = []
        due = []
        for session in self.sessions.values():
            if session.gone or now - session.lastSeen > session.heartbeat * session.liveness:
                suspects.append(session)
            elif now - session.lastSent >= session.heartbeat:
                due.append(session)
        if suspects and not all(s.gone for s in suspects):
            # What they sent may be waiting, unread, in our socket.
            read = getattr(self._socket, "doRead", None)
            if read is not None:
                read()
        # Connections whose time is up; those of sessions dropped below go
        # on the next tick, after their BYE.
        self._cutDue()
        if suspects:
            for session in suspects:
                if not session.alive:
                    continue
                if session.gone:
                    self.drop(session, "connection-lost")
                elif now - session.lastSeen > session.heartbeat * session.liveness:
                    self.drop(session, "heartbeat-timeout")
                elif now - session.lastSent >= session.heartbeat:
                    due.append(session)
        for session in due:
            if session.alive:
                self._heartbeat(session)

    def _heartbeat(self, session):
        """
        Send C{session} a heartbeat (pre-encoded: a cloud sends one to every
        idle client every heartbeat).
        """
        if session.batchMax or self._socket is None:
            self.sendTo(session, protocol.HEARTBEAT, {})
            return
        if self._socket.send([session.routingId] + _HEARTBEATS[session.version]):
            session.lastSent = self.reactor.seconds()
        elif getattr(self._socket, "unroutable", False):
            session.gone = True

