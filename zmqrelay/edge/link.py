"""
The DEALER side of a hop: one node's connection toward another.

L{UpstreamLink} is a small state machine in the manner of Twisted's
C{ClientService}::

    STOPPED --start--> CONNECTING --WELCOME--> CONNECTED
                          |   ^                   |
       hello timeout,     |   |  backoff          | silence, BYE,
       REJECT (long wait) v   |                   | upstream forgot us
                         WAITING <----------------+

Every attempt uses a fresh DEALER socket, so nothing queued for a dead
session is delivered to a new one.  Delays come from a pluggable policy
(exponential backoff with jitter by default) and an injectable clock.
After a REJECT the link waits C{rejectDelay} at least: never a tight loop.

The owner is told through:

  - C{owner.linkUp(link)}: WELCOME received (C{link.welcome} has it);
  - C{owner.linkDown(link, reason)}: the session ended;
  - C{owner.linkMessage(link, message)}: any other message; may raise
    L{zmqrelay.core.protocol.ProtocolError}, which is logged and counted;
  - C{owner.helloExtras(link)}: extra HELLO fields.
"""

import random
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zmqrelay.core import errors, protocol
from zmqrelay.core.calls import retryAfter
from zmqrelay.edge import security
from zmqrelay.edge.outbox import reportUndelivered
from zmqrelay.core.ratelimit import TokenBucket

log = Logger()

STOPPED = "stopped"
CONNECTING = "connecting"
CONNECTED = "connected"
WAITING = "waiting"


def backoffPolicy(initialDelay, maxDelay, factor=2.0, jitter=random.random):
    """
    Exponential backoff with jitter that stays within C{maxDelay}.

    Twisted's C{backoffPolicy} adds up to a whole second of jitter on top of
    the delay; with the sub-second delays a relay wants after a peer
    restarts, that second would dominate.  Here the jitter scales the delay
    instead, between half and all of it, so peers that lost the same
    upstream still spread out.

    @return: a callable taking the attempt number (1 for the first retry)
        and returning the delay in seconds.
    """

    def policy(attempt):
        delay = min(initialDelay * factor ** min(max(attempt - 1, 0), 64), maxDelay)
        return delay * (0.5 + jitter() / 2.0)

    return policy


class UpstreamLink:
    """
    A connection from this node to one upstream node.

    @ivar endpoint: the ZeroMQ endpoint dialled.
    @ivar state: one of C{STOPPED}, C{CONNECTING}, C{CONNECTED}, C{WAITING}.
    @ivar welcome: the last WELCOME header, or C{None}.
    @ivar nodeId: the upstream node's id once connected.
    @ivar lastError: the last L{zmqrelay.core.errors.RelayError} (a REJECT), or C{None}.
    """

    def __init__(self, owner, config, reactor, socketFactory, endpoint, name=None,
                 retryPolicy=None, options=None):
        self.owner = owner
        self.config = config
        self.reactor = reactor
        self.socketFactory = socketFactory
        self.endpoint = endpoint
        self.name = name or endpoint
        # With CURVE, the endpoint's server key (if we know it) secures the hop.
        self.options = options if options is not None else security.dialOptions(config, endpoint)
        self.retryPolicy = retryPolicy or backoffPolicy(
            config.reconnectInitial, config.reconnectMax
        )
        self.state = STOPPED
        self.welcome = None
        self.nodeId = None
        self.role = None
        self.incarnation = None
        self.version = protocol.CURRENT_VERSION
        self.lastError = None
        self.lastSeen = 0.0
        self.lastSent = 0.0
        self.heartbeat = config.heartbeat
        self.maxSize = config.maxMessageSize
        #: How many requests the node we dial lets us have in flight through
        #: it (WELCOME C{inflight}; C{None}: it said nothing).
        self.inflight = None
        # The most messages the upstream takes in one BATCH (its WELCOME's
        # batch; 0: none), and what waits to go out as one.
        self.batchMax = 0
        #: Whether the upstream takes snapshots in parts (its WELCOME's
        #: C{parts}; see L{zmqrelay.core.replica.sendSnapshot}).
        self.takesParts = False
        self._outbox = None
        self._flushTimer = None
        self.liveness = config.liveness
        self.attempt = 0
        # The upstream said it is draining (HB with drain, PROTOCOL.md 7.1).
        self.draining = False
        self._lastTick = 0.0
        self.counters = {"connects": 0, "lost": 0, "rejects": 0, "malformed": 0, "unknown-type": 0,
                         "stalls": 0, "batches-in": 0, "batched-in": 0, "batches-out": 0,
                         "batched-out": 0, "undelivered": 0, "before-welcome": 0}
        # Bad input is counted always but logged at a bounded rate.
        self._logBucket = TokenBucket(1.0, 10.0, reactor.seconds())
        self._socket = None
        self._timer = None
        self._ticker = None
        self._waiters = []

    def __repr__(self):
        return f"<UpstreamLink {self.name} {self.state} {self.nodeId}>"

    @property
    def alive(self):
        """
        C{True} while a session is up.
        """
        return self.state == CONNECTED

    def start(self):
        """
        Start connecting.
        """
        if self.state == STOPPED:
            self._connect()

    def stop(self, reason="shutdown"):
        """
        Say goodbye and close; the link stays down.

        @param reason: the BYE's C{reason}: C{"shutdown"}, or C{"moved"}
            when leaving a node for another one (PROTOCOL.md 8, 21.4).
        """
        if self.state == CONNECTED:
            self.send(protocol.BYE, {"reason": reason})
            self.flush()
        wasUp = self.state == CONNECTED
        self.state = STOPPED
        self._cancelTimer()
        self._stopTicker()
        self._closeSocket()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(errors.ShuttingDown("link stopped"))
        if wasUp:
            self.owner.linkDown(self, "shutdown")

    def whenUp(self, timeout):
        """
        @return: a L{Deferred} firing with this link when it is connected,
            or failing with L{zmqrelay.core.errors.RequestTimeout} after
            C{timeout} seconds.  Cancelling it stops the wait.
        """
        if self.state == CONNECTED:
            d = Deferred()
            d.callback(self)
            return d

        def cancel(d):
            if d in self._waiters:
                self._waiters.remove(d)

        d = Deferred(cancel)
        self._waiters.append(d)

        def timedOut(failure):
            failure.trap(defer.TimeoutError)
            raise errors.RequestTimeout(f"{self.name} not connected after {timeout}s")

        d.addTimeout(timeout, self.reactor)
        d.addErrback(timedOut)
        return d

    def send(self, msgtype, header, payload=b""):
        """
        Send one message upstream.

        If the upstream takes batches (its WELCOME's C{batch}), the message
        waits until the end of this reactor turn and goes out with whatever
        else was sent upstream meanwhile as one BATCH (PROTOCOL.md 3.3);
        C{header} must not change after this call.  If that send fails, the
        owner's C{undelivered(link, type, header)} is called for each of its
        messages.

        @return: C{True} if queued; C{False} if not connected or full.
        """
        if self.state != CONNECTED:
            return False
        if self.batchMax and msgtype not in protocol.UNBATCHED:
            out = self._outbox
            if out is None:
                self._outbox = out = []
                if self._flushTimer is None and not self.socketFactory.flushSoon(self.flush):
                    # No read is going on to send it when it ends: at the
                    # end of this turn, then.
                    self._flushTimer = self.reactor.callLater(0, self._flushLater)
            out.append((msgtype, header, payload))
            self.lastSent = self.reactor.seconds()
            return True
        if self._outbox:
            self.flush()
        ok = self._socket.send(protocol.encode(msgtype, header, payload, self.version))
        if ok:
            self.lastSent = self.reactor.seconds()
        return ok

    def _flushLater(self):
        self._flushTimer = None
        self.flush()

    def flush(self):
        """
        Send what waits in the outbox now.
        """
        if self._flushTimer is not None:
            if self._flushTimer.active():
                self._flushTimer.cancel()
            self._flushTimer = None
        items, self._outbox = self._outbox, None
        if not items:
            return
        if self.state != CONNECTED or self._socket is None:
            # The session ended this turn: the owner fails what went to it.
            self.counters["undelivered"] += len(items)
            return
        for chunk in protocol.batches(items, self.batchMax, self.maxSize - protocol.HEADROOM):
            self._sendItems(chunk)

    def _sendItems(self, items):
        if len(items) == 1:
            msgtype, header, payload = items[0]
            ok = self._socket.send(protocol.encode(msgtype, header, payload, self.version))
        else:
            ok = self._socket.send(protocol.encodeBatch(items, self.version))
            if ok:
                self.counters["batches-out"] += 1
                self.counters["batched-out"] += len(items)
        if not ok:
            reportUndelivered(self.owner, self, items, self.counters)

    # The state machine

    def _connect(self):
        self.state = CONNECTING
        self.batchMax = 0
        self.takesParts = False
        self._outbox = None
        self.counters["connects"] += 1
        self._closeSocket()
        self._socket = self.socketFactory.socket("dealer", self._onMessage, self.options)
        self._socket.connect(self.endpoint)
        c = self.config
        hello = {
            "id": c.nodeId,
            "role": self.owner.role,
            "inc": c.incarnation,
            "versions": list(c.versions),
            "hb": int(round(c.heartbeat * 1000)),
            "liveness": c.liveness,
            "max": c.maxMessageSize,
        }
        if c.batch >= 2:
            hello["batch"] = c.batch
        if self.owner.role != protocol.CLIENT:
            # Replicated maps go to relays and servers only.
            hello["parts"] = True
        hello.update(self.owner.helloExtras(self))
        self._socket.send(protocol.encode(protocol.HELLO, hello, b"", max(c.versions)))
        self._timer = self.reactor.callLater(c.helloTimeout, self._helloTimedOut)

    def _helloTimedOut(self):
        self._timer = None
        log.info("{link}: no WELCOME within {t}s", link=self.name, t=self.config.helloTimeout)
        self._wait(self._nextDelay())

    def _nextDelay(self):
        self.attempt += 1
        return self.retryPolicy(self.attempt)

    def _wait(self, delay):
        self._cancelTimer()
        self._stopTicker()
        self._closeSocket()
        self.state = WAITING
        self._timer = self.reactor.callLater(delay, self._retry)

    def _retry(self):
        self._timer = None
        self._connect()

    def _lost(self, reason, delay=None):
        """
        The session is over; tell the owner and try again later.
        """
        self.counters["lost"] += 1
        log.info("{link}: upstream {peer} lost: {reason}", link=self.name, peer=self.nodeId, reason=reason)
        self._wait(self._nextDelay() if delay is None else delay)
        try:
            self.owner.linkDown(self, reason)
        except Exception:
            log.failure("{link}: cleaning up after the lost session failed", link=self.name)

    def _onMessage(self, frames):
        now = self.reactor.seconds()
        try:
            message = protocol.decode(frames)
        except protocol.ProtocolError as e:
            self.counters["malformed"] += 1
            if self._logBucket.take(now) == 0.0:
                log.warn("{link}: malformed message: {error}", link=self.name, error=e)
            return
        self.lastSeen = now
        msgtype = message.type
        if self.state == CONNECTING:
            if msgtype == protocol.WELCOME:
                self._welcomed(message, now)
            elif msgtype == protocol.REJECT or msgtype == protocol.ERROR:
                self._rejected(message.header)
            else:
                # Before WELCOME nothing else belongs to this session (HB
                # from a node that still thinks we are attached, say).
                self.counters["before-welcome"] += 1
            return
        if self.state != CONNECTED:
            return
        if msgtype == protocol.BATCH:
            try:
                items = protocol.decodeBatch(message, self.config.batch if self.config.batch >= 2 else 0)
            except protocol.ProtocolError as e:
                self.counters["malformed"] += 1
                if self._logBucket.take(now) == 0.0:
                    log.warn("{link}: bad batch: {error}", link=self.name, error=e)
                return
            self.counters["batches-in"] += 1
            self.counters["batched-in"] += len(items)
            for item in items:
                if self.state != CONNECTED:
                    return
                self._dispatch(item, now)
            return
        self._dispatch(message, now)

    def _dispatch(self, message, now):
        msgtype = message.type
        if msgtype == protocol.HEARTBEAT:
            if message.header.get("drain") is True and not self.draining:
                self.draining = True
                hook = getattr(self.owner, "linkDraining", None)
                if hook is not None:
                    hook(self)
            return
        if msgtype not in protocol.KNOWN_TYPES:
            self._unknownType(message, now)
            return
        if msgtype == protocol.BYE:
            self._lost("bye")
        elif msgtype == protocol.REJECT:
            self._rejected(message.header)
            self.owner.linkDown(self, "rejected")
        elif msgtype == protocol.ERROR and message.header.get("code") == protocol.E_HELLO_FIRST:
            # The upstream restarted and does not know us: say hello again now.
            self._lost("upstream-restarted", delay=0)
        else:
            if msgtype == protocol.REQUEST:
                self.counters["requests"] = self.counters.get("requests", 0) + 1
            try:
                self.owner.linkMessage(self, message)
            except protocol.ProtocolError as e:
                self.counters["malformed"] += 1
                if self._logBucket.take(now) == 0.0:
                    log.warn("{link}: bad {type}: {error}", link=self.name, type=msgtype, error=e)
                if e.code != protocol.E_UNKNOWN_TYPE and (
                    msgtype == protocol.REQUEST or msgtype == protocol.MESSAGE
                ):
                    # The asker of a REQ or MSG we cannot read waits for an
                    # answer: it gets this one, not its deadline (PROTOCOL.md
                    # 9).  A known type we do not take from upstream is only
                    # counted, and nobody answers an ERR with an ERR.
                    self._answerError(message, e.code, e.message)

    def _unknownType(self, message, now):
        """
        Tolerant reader: a newer upstream's message type is answered with
        unknown-type (never with a crash, and never an ERR for an ERR).
        """
        self.counters["unknown-type"] += 1
        text = f"unknown message type {protocol.typeName(message.type)}"
        if self._logBucket.take(now) == 0.0:
            log.warn("{link}: {text}", link=self.name, text=text)
        self._answerError(message, protocol.E_UNKNOWN_TYPE, text)

    def _answerError(self, message, code, text):
        """
        Answer C{message} from upstream with ERR C{code}, with its C{id} if
        it had a readable one.
        """
        header = {"code": code, "msg": text}
        rid = message.header.get("id")
        if rid.__class__ is int:
            header["id"] = rid
        self.send(protocol.ERROR, header)

    def _welcomed(self, message, now):
        header = message.header
        version = header.get("version")
        if version not in self.config.versions:
            self._rejected({"code": protocol.E_VERSION, "msg": f"upstream chose version {version!r}"})
            return
        self._cancelTimer()
        self.state = CONNECTED
        self.attempt = 0
        self.lastError = None
        self.version = version
        self.welcome = header
        self.nodeId = header.get("id")
        self.role = header.get("role")
        self.incarnation = header.get("inc")
        hb = header.get("hb")
        self.heartbeat = hb / 1000.0 if isinstance(hb, int) and hb > 0 else self.config.heartbeat
        liveness = header.get("liveness")
        self.liveness = liveness if isinstance(liveness, int) and liveness > 0 else self.config.liveness
        self.maxSize = protocol.announcedMax(header, self.config.maxMessageSize)
        inflight = header.get("inflight")
        self.inflight = (
            inflight if inflight.__class__ is int and inflight > 0 else None
        )
        self.batchMax = protocol.batchLimit(header)
        self.takesParts = protocol.takesParts(header)
        self.lastSent = now
        self.draining = False
        self._lastTick = now
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.heartbeat / 2.0, now=False)
        log.info(
            "{link}: connected to {role} {peer} (protocol v{version})",
            link=self.name, role=self.role, peer=self.nodeId, version=version,
        )
        self.owner.linkUp(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    def _rejected(self, header):
        self.counters["rejects"] += 1
        code = header.get("code", protocol.E_REJECTED)
        text = header.get("msg", "")
        versions = header.get("versions")
        self.lastError = errors.fromWire(str(code), str(text))
        delay = max(self.config.rejectDelay, self._nextDelay())
        retry = retryAfter(header.get("retry"))
        if retry is not None:
            # over-limit: the id may say HELLO again only after this (what is
            # left of its cooldown); sooner would be refused again.
            delay = max(delay, retry)
        log.error(
            "{link}: refused by upstream: {code}: {text} (it speaks {versions}, we speak "
            "{ours}); next try in {delay:.1f}s",
            link=self.name, code=code, text=text, versions=versions,
            ours=list(self.config.versions), delay=delay,
        )
        self._wait(delay)
        hook = getattr(self.owner, "linkRefused", None)
        if hook is not None:
            hook(self)

    def _tick(self):
        now = self.reactor.seconds()
        interval = self.heartbeat / 2.0
        stall = now - self._lastTick - interval
        self._lastTick = now
        if stall > interval:
            # This process did not run for a while (CPU starved, stopped):
            # the peer's silence over that time is ours, not its.
            self.counters["stalls"] += 1
            if self.state == CONNECTED and stall > self.heartbeat * self.liveness:
                # But we were silent toward it for longer than its liveness
                # window: it has ended our session, failed what it had sent
                # us, and the senders retried elsewhere.  What waits in our
                # socket from then must not run here now: a fresh socket and
                # HELLO at once (a resume, if it kept the session after all).
                self._lost("stalled", delay=0)
                return
            self.lastSeen += stall
        if now - self.lastSeen > self.heartbeat * self.liveness:
            # What the peer sent may be waiting, unread, in our socket.
            read = getattr(self._socket, "doRead", None)
            if read is not None:
                read()
            if self.state != CONNECTED or now - self.lastSeen <= self.heartbeat * self.liveness:
                return
            self._lost("heartbeat-timeout")
        elif now - self.lastSent >= self.heartbeat:
            self.send(protocol.HEARTBEAT, {})

    def _cancelTimer(self):
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _stopTicker(self):
        if self._ticker is not None:
            if self._ticker.running:
                self._ticker.stop()
            self._ticker = None

    def _closeSocket(self):
        if self._flushTimer is not None:
            if self._flushTimer.active():
                self._flushTimer.cancel()
            self._flushTimer = None
        if self._outbox:
            # The session is over: the owner fails what went to it.
            self.counters["undelivered"] += len(self._outbox)
        self._outbox = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
