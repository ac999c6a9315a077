"""
The adapter between ZeroMQ sockets and the Twisted reactor.

This is the only module that imports txzmq.  It fixes, once, what txzmq
leaves to its users:

  - reads are bounded per reactor turn (a flooding peer cannot starve
    timers), and the edge-triggered ZeroMQ descriptor is re-read by us after
    we yield;
  - the injected reactor is used everywhere, never the global one;
  - sends never raise: a full queue (high-water mark) or an unroutable peer
    (C{ROUTER_MANDATORY}) is a C{False} result the caller counts;
  - high-water marks, linger, message size limits, TCP keepalive and the
    ZMTP handshake timeout are set on every socket before it binds or
    connects; ZMTP heartbeats are never switched on (libzmq 4.3.5 can abort
    the process when one fires while a reset peer's input is paused at the
    high-water mark: libzmq issue #4364);
  - a message is read frame by frame with bounds on its frame count and
    total size: what exceeds them is discarded as it is read, never kept;
  - every path that touches a socket re-checks C{ZMQ_EVENTS}: ZeroMQ's
    descriptor is edge-triggered, and a send (even a failed one) can consume
    the edge that announced input;
  - connections can be watched (a socket monitor) and cut one by one, so a
    peer that never says hello costs nothing after a timeout;
  - the context is shut down once, however often it is asked.

Roles never touch this module directly: they receive a L{SocketFactory} (or a
fake of it in tests).
"""

import struct

import zmq
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory
from zope.interface import implementer

from zmqrelay.core.config import SocketOptions
from zmqrelay.edge.sockopts import applyOptions, useCurve
from zmqrelay.edge.tcp import cutConnection, peerAddress, tcpBacklog
from zmqrelay.interfaces import ISocket, ISocketFactory

log = Logger()

# The per-frame hot path calls pyzmq's compiled send/recv directly, with flags
# as plain ints: C{send_multipart}/C{recv_multipart} cost several
# microseconds a message in Python-level enum arithmetic and option lookups
# (see docs/BENCHMARKS.md).
_rawSend = zmq.backend.Socket.send
_rawRecv = zmq.backend.Socket.recv
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_COPY_THRESHOLD = zmq.COPY_THRESHOLD
_SRCFD = int(zmq.SRCFD)

ROUTER = zmq.ROUTER
DEALER = zmq.DEALER
XPUB = zmq.XPUB
XSUB = zmq.XSUB
SUB = zmq.SUB
PAIR = zmq.PAIR

_KINDS = {"router": ROUTER, "dealer": DEALER, "xpub": XPUB, "xsub": XSUB, "sub": SUB}

#: Socket monitor events, by the names L{ZmqSocket.monitor} reports.
ACCEPTED = "accepted"
CLOSED = "closed"
_MONITOR_EVENT = struct.Struct("=hi")
_MONITORED = {
    int(zmq.EVENT_ACCEPTED): ACCEPTED,
    int(zmq.EVENT_DISCONNECTED): CLOSED,
    int(zmq.EVENT_CLOSED): CLOSED,
}


#: Messages read between two sends of the outboxes waiting (BATCHes).
FLUSH_EVERY = 32

#: Why a message was discarded while being read.
TOO_LARGE = "too-large"
TOO_MANY_FRAMES = "too-many-frames"


@implementer(ISocket)
class ZmqSocket(ZmqConnection):
    """
    One ZeroMQ socket in the reactor.

    @ivar onMessage: called with the L{list} of frames of each message (and,
        for a socket made with C{userIds}, the ZAP C{User-Id} of the
        connection it came on, or C{None}).
    @ivar onDiscard: C{None}, or called with C{(frames, reason, size)} for a
        message discarded while it was read (C{reason} L{TOO_LARGE} or
        L{TOO_MANY_FRAMES}; C{frames} the first frames, those within both
        bounds; C{size} the bytes read): the owner may answer it.
    @ivar sent: messages sent.
    @ivar dropped: messages a send could not queue (high-water mark or no
        such peer).
    @ivar discarded: messages discarded while being read.
    @ivar unroutable: C{True} if the last send that failed did so because no
        connection has that routing id any more (ROUTER_MANDATORY): the peer
        is gone, not merely slow.
    """

    def __init__(self, factory, socketType, onMessage, options, userIds=False):
        self.socketType = socketType
        self.highWaterMark = options.hwm
        self.onMessage = onMessage
        self.onDiscard = None
        if userIds:
            self._owner = onMessage
            self.onMessage = self._deliverWithUserId
        self.readBudget = options.readBudget
        self.maxFrames = options.maxFrames
        self.maxBytes = options.maxMessageSize if options.maxMessageSize >= 0 else float("inf")
        self.reactor = factory.reactor
        self._readLater = None
        self._checkLater = None
        #: The L{SocketFactory} whose outboxes a long read sends now and then.
        self.flusher = None
        self._reading = False
        #: C{True} while this socket waits in its factory's list of sockets
        #: to check after the sends of the current flush.
        self._checkDue = False
        self._lastFrame = None
        #: Whole messages taken before a disconnect (L{_takeHalfRead}), each
        #: C{(frames, discard, size, lastFrame)}, delivered by the next read.
        self._held = []
        self._monitor = None
        self.sent = 0
        self.dropped = 0
        self.discarded = 0
        self.unroutable = False
        ZmqConnection.__init__(self, factory)
        sock = self.socket
        if socketType == ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if socketType == XPUB:
            # A slow subscriber must not block the publisher: drop for it and
            # let sequence numbers show the gap.
            sock.setsockopt(zmq.XPUB_NODROP, 0)
        applyOptions(sock, options)

    def limitInput(self, messages):
        """
        Set the receive high-water mark (before L{bind}): see
        L{zmqrelay.interfaces.ISocket.limitInput}.
        """
        self.socket.setsockopt(zmq.RCVHWM, messages)

    def limitOutput(self, messages):
        """
        Set the send high-water mark (before L{bind}): see
        L{zmqrelay.interfaces.ISocket.limitOutput}.
        """
        self.socket.setsockopt(zmq.SNDHWM, messages)

    def useCurve(self, curve):
        """
        Set the security of the binds and connects that follow (libzmq copies
        the options of a socket into each endpoint when it is made).

        @param curve: see the module function L{useCurve}.
        """
        useCurve(self.socket, curve)


    def _deliverWithUserId(self, frames):
        # The last frame read belongs to this message; so does its User-Id.
        try:
            userId = self._lastFrame.get("User-Id")
        except (AttributeError, zmq.ZMQError):
            userId = None
        self._owner(frames, userId)

    def sourceFd(self):
        """
        While a message is delivered: the file descriptor of the connection
        it came on (C{-1} if it came on none, as over C{inproc://}).

        Only meaningful until the next message is read; pair it with
        L{monitor} events, which name connections by the same descriptor.
        """
        try:
            return self._lastFrame.get(_SRCFD)
        except (AttributeError, zmq.ZMQError):
            return -1

    def bind(self, address):
        """
        Bind to C{address} (C{*} ports allowed).

        @return: the endpoint actually bound.
        """
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.bind, address)])
        endpoint = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
        self.checkReadable()
        return endpoint

    def connect(self, address):
        """
        Connect to C{address}; ZeroMQ reconnects by itself after a drop.
        """
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, address)])
        self.checkReadable()

    def disconnect(self, address):
        """
        Undo a L{connect}.
        """
        self._takeHalfRead()
        try:
            self.socket.disconnect(address)
        except zmq.ZMQError:
            pass
        self.endpoints = [e for e in self.endpoints if e.address != address]
        self.checkReadable()

    def subscribe(self, prefix):
        """
        SUB sockets: receive messages starting with C{prefix}.
        """
        self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self.checkReadable()

    def unsubscribe(self, prefix):
        """
        SUB sockets: undo one L{subscribe}.
        """
        self.socket.setsockopt(zmq.UNSUBSCRIBE, prefix)
        self.checkReadable()

    def monitor(self, onEvent):
        """
        Watch this socket's connections.

        @param onEvent: called with C{(event, fd, address)} for each
            connection accepted (L{ACCEPTED}, with the peer's address) and
            each one that ended (L{CLOSED}, address C{None}); the descriptor
            is the one L{sourceFd} names for its messages.
        """
        if self._monitor is not None or self.socket is None:
            return
        self._monitor = watchConnections(self.factory, self.socket, onEvent, self.readBudget)

    def cut(self, fd, address, reset=False):
        """
        End one connection of this socket (see L{cutConnection}).

        @return: C{True} if it was shut down.
        """
        return cutConnection(fd, address, reset)

    def backlog(self, fd):
        """
        The kernel's figures of one connection (see L{tcpBacklog}).
        """
        return tcpBacklog(fd)

    def doRead(self):
        """
        Read at most C{readBudget} messages, then yield to the reactor.

        A message of more than C{maxFrames} frames or C{maxBytes} bytes is
        discarded frame by frame as it is read (ZeroMQ's C{MAXMSGSIZE}
        bounds each frame, not their number): it is counted and handed to
        C{onDiscard}, never to C{onMessage}.
        """
        later = self._readLater
        if later is not None:
            self._readLater = None
            if later.active():
                later.cancel()
        later = self._checkLater
        if later is not None:
            # Reading until EAGAIN leaves nothing for the check to find.
            self._checkLater = None
            if later.active():
                later.cancel()
        sock = self.socket
        if sock is None:
            return
        if self._held:
            self._deliverHeld()
            if self.socket is None:
                return
        readMessage = self._readMessage
        deliver = self._deliver
        flusher = self.flusher
        self._reading = True
        if flusher is not None:
            flusher._reads += 1
        try:
            for n in range(self.readBudget):
                if flusher is not None and n and not n % FLUSH_EVERY and flusher._flushes:
                    # What was sent while reading leaves now, not after the
                    # whole budget: under a flood that is a millisecond or more.
                    flusher.runFlushes()
                try:
                    frames, discard, size = readMessage(sock)
                except zmq.Again:
                    return
                except zmq.ZMQError as e:
                    log.error("zmq read error {error}", error=e)
                    return
                deliver(frames, discard, size)
                if self.socket is None:
                    return
            # Budget spent; the descriptor is edge-triggered and will not
            # wake us for what is still queued, so come back ourselves.
            self._readLater = self.reactor.callLater(0, self.doRead)
        finally:
            self._reading = False
            if flusher is not None:
                flusher._reads -= 1
                if not flusher._reads and flusher._flushes:
                    # What this read made the node send leaves now, in this
                    # reactor turn: no timer, no extra turn for it.
                    flusher.runFlushes()

    def _readMessage(self, sock):
        """
        Read one whole message, frame by frame.

        @return: C{(frames, discard, size)}: C{discard} is C{None}, or why
            the message is discarded (then C{frames} holds what was kept of
            it and C{size} its length in bytes).
        @raise zmq.Again: no message waits.
        """
        recv = _rawRecv
        discard = None
        size = 0
        # Frames, not bytes, from recv: they carry the RCVMORE flag, saving
        # a getsockopt per frame, and their length before anything is copied.
        frame = recv(sock, _NOBLOCK, False)
        frames = [frame.bytes]
        if frame.more:
            maxFrames = self.maxFrames
            maxBytes = self.maxBytes
            size = len(frames[0])
            while frame.more:
                frame = recv(sock, _NOBLOCK, False)
                size += len(frame)
                if discard is not None:
                    continue
                if size > maxBytes:
                    discard = TOO_LARGE
                elif len(frames) >= maxFrames:
                    discard = TOO_MANY_FRAMES
                else:
                    frames.append(frame.bytes)
        self._lastFrame = frame
        return frames, discard, size

    def _takeHalfRead(self):
        """
        Before a disconnect: take one whole message, if one waits, and keep
        it for the next read.

        A C{ZMQ_EVENTS} check makes libzmq take the first frame of the next
        message off its pipe (SUB, XSUB and ROUTER sockets prefetch).  If
        C{zmq_disconnect} then ends that pipe, the rest of the message is
        gone, and libzmq 4.3.5 asserts on the next read (C{!_more},
        C{fq.cpp}) and aborts the process.  Once one whole message has been
        read nothing is half read.  Inside L{doRead} nothing is (every
        message there is read whole before it is delivered).
        """
        if self._reading or self.socket is None:
            return
        try:
            frames, discard, size = self._readMessage(self.socket)
        except zmq.ZMQError:
            return
        self._held.append((frames, discard, size, self._lastFrame))
        self._lastFrame = None
        if self._readLater is None:
            self._readLater = self.reactor.callLater(0, self.doRead)

    def _deliver(self, frames, discard, size):
        """
        Hand one message read to C{onMessage}, or, if it is discarded, count
        it and hand it to C{onDiscard}; then forget its last frame.
        """
        try:
            if discard is None:
                self.onMessage(frames)
            else:
                self.discarded += 1
                if self.onDiscard is not None:
                    self.onDiscard(frames, discard, size)
        except Exception:
            log.failure("unhandled error handling a message")
        self._lastFrame = None

    def _deliverHeld(self):
        held, self._held = self._held, []
        for frames, discard, size, self._lastFrame in held:
            self._deliver(frames, discard, size)
            if self.socket is None:
                return

    def checkReadable(self):
        """
        After we touch the socket, ZeroMQ may have consumed the edge that
        would have woken the reactor: look, and schedule a read if needed.

        Call it after any direct use of C{self.socket} (a socket option
        set, a send done by hand).
        """
        if self._inputWaits():
            self._readLater = self.reactor.callLater(0, self.doRead)

    _checkReadable = checkReadable

    def _inputWaits(self):
        """
        @return: C{True} if ZeroMQ holds input we are not about to read.
        """
        if self._reading or self._readLater is not None or self.socket is None:
            return False
        try:
            return bool(self.socket.get(_EVENTS) & _POLLIN)
        except zmq.ZMQError:
            return False

    def send(self, frames):
        """
        Queue one multipart message without blocking.

        @param frames: a L{list} of L{bytes}.
        @return: C{True} if queued; C{False} if the peer is unknown or its
            queue is full (counted in C{dropped}).
        """
        sock = self.socket
        if sock is None:
            return False
        try:
            for frame in frames:
                if frame.__class__ is not bytes:
                    # Not our usual traffic: let pyzmq check every frame
                    # before it sends the first.
                    sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
                    break
            else:
                # As send_multipart(copy=False) does: small frames copied,
                # large ones zero-copy.  libzmq takes a multipart message
                # whole or not at all, so only the first frame can fail.
                send = _rawSend
                last = len(frames) - 1
                for i in range(last):
                    frame = frames[i]
                    send(sock, frame, _MORE, len(frame) < _COPY_THRESHOLD)
                frame = frames[last]
                send(sock, frame, _NOBLOCK, len(frame) < _COPY_THRESHOLD)
        except zmq.ZMQError as e:
            # EAGAIN: high-water mark; EHOSTUNREACH: ROUTER_MANDATORY and the
            # peer is gone.  Both are ordinary under load and churn.
            self.dropped += 1
            self.unroutable = e.errno == zmq.EHOSTUNREACH
            if e.errno not in (zmq.EAGAIN, zmq.EHOSTUNREACH):
                log.warn("zmq send error {error}", error=e)
            # A failed send touched the socket too: it may have consumed the
            # edge for input that arrived meanwhile (a node that missed it
            # would stay deaf until some other event woke it).
            if not self._reading and self._readLater is None and self._checkLater is None:
                self._checkSoon()
            return False
        self.sent += 1
        if not self._reading and self._readLater is None and self._checkLater is None:
            # Look at ZMQ_EVENTS once, after this reactor turn's sends, not
            # after each (a getsockopt costs as much as sending a frame).
            self._checkSoon()
        return True

    def _checkSoon(self):
        """
        Look at C{ZMQ_EVENTS} once this turn's sends are done: at the end of
        the factory's flush if one is running (no timer), else on a timer.
        """
        flusher = self.flusher
        if flusher is not None and flusher._flushing:
            if not self._checkDue:
                self._checkDue = True
                flusher._checks.append(self)
        else:
            self._checkLater = self.reactor.callLater(0, self._recheck)

    def _checkAfterFlush(self):
        """
        The factory's flush is over: if ZeroMQ holds input for us (a send
        may have consumed the edge announcing it), read it on the next turn.
        """
        self._checkDue = False
        if self._inputWaits():
            self._readLater = self.reactor.callLater(0, self.doRead)

    def _recheck(self):
        """
        After this turn's sends: read now if ZeroMQ holds input for us.
        """
        self._checkLater = None
        if self._inputWaits():
            self.doRead()

    def close(self):
        """
        Close the socket now (linger 0); safe to call twice.
        """
        for later in (self._readLater, self._checkLater):
            if later is not None and later.active():
                later.cancel()
        self._readLater = self._checkLater = None
        self._held = []
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            if self.socket is not None:
                try:
                    self.socket.disable_monitor()
                except zmq.ZMQError:
                    pass
            monitor.close()
        if self.socket is not None:
            self.shutdown()

    def connectionLost(self, reason):
        """
        The reactor dropped us: make sure it does not poll a closed socket.
        """
        if self.factory is not None:
            self.factory.reactor.removeReader(self)

def watchConnections(factory, raw, onEvent, readBudget=200):
    """
    Watch the connections of a pyzmq socket (a monitor), from the reactor.

    @param factory: the txzmq factory whose reactor reads the monitor.
    @param raw: the C{zmq.Socket}; call this before another thread uses it.
    @param onEvent: called with C{(event, fd, address)} as
        L{ZmqSocket.monitor} describes.
    @return: the L{ZmqSocket} that reads the monitor (close it to stop).
    """
    address = f"inproc://zmqrelay-monitor-{id(raw):x}"
    raw.monitor(address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)

    def onMonitorMessage(frames):
        # As zmq.utils.monitor.parse_monitor_message reads it (16-bit event,
        # 32-bit value, then the endpoint), without making an enum of each
        # (about 2 us an event; a peer that churns connections makes two).
        if len(frames) != 2 or len(frames[0]) != _MONITOR_EVENT.size:
            return
        event, fd = _MONITOR_EVENT.unpack(frames[0])
        name = _MONITORED.get(event)
        if name is None:
            return
        onEvent(name, fd, peerAddress(fd) if name == ACCEPTED else None)

    options = SocketOptions(hwm=0, readBudget=readBudget, handshake=0)
    monitor = ZmqSocket(factory, PAIR, onMonitorMessage, options)
    monitor.connect(address)
    return monitor


class _ContextFactory(ZmqFactory):
    """
    txzmq's factory, with the I/O threads of its context given per instance.
    """

    def __init__(self, ioThreads):
        self.ioThreads = ioThreads
        ZmqFactory.__init__(self)


@implementer(ISocketFactory)
class SocketFactory:
    """
    Owns one ZeroMQ context and makes reactor-driven sockets from it.

    @ivar reactor: the reactor sockets are read in.
    """

    def __init__(self, reactor, options=None, ioThreads=1):
        """
        @param ioThreads: I/O threads of the ZeroMQ context (libzmq spreads
            connections over them, fewest first).
        """
        self.reactor = reactor
        self.options = options or SocketOptions()
        self._flushes = []
        #: Sockets sent on during the flush that runs, to check after it.
        self._checks = []
        self._flushing = False
        #: How many sockets of this factory are reading right now.
        self._reads = 0
        self._factory = _ContextFactory(ioThreads)
        self._factory.reactor = reactor
        self._factory.lingerPeriod = 0
        self._closed = False

    @property
    def context(self):
        """
        The underlying L{zmq.Context} (for ZAP).
        """
        return self._factory.context

    def flushSoon(self, flush):
        """
        See L{zmqrelay.interfaces.ISocketFactory.flushSoon}.

        @return: C{True} if a socket of this factory is reading now: C{flush}
            is then called when that read ends, if not sooner.
        """
        if flush not in self._flushes:
            self._flushes.append(flush)
        return self._reads > 0

    def runFlushes(self):
        """
        Call what L{flushSoon} was given, each once; then look at
        C{ZMQ_EVENTS} once on each socket they sent on.
        """
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._flushes:
                flushes, self._flushes = self._flushes, []
                for flush in flushes:
                    try:
                        flush()
                    except Exception:
                        log.failure("flushing an outbox failed")
        finally:
            self._flushing = False
        checks, self._checks = self._checks, []
        for sock in checks:
            sock._checkAfterFlush()

    def socket(self, socketType, onMessage, options=None, userIds=False):
        """
        Make a socket.

        @param socketType: C{'router'}, C{'dealer'}, C{'xpub'}, C{'xsub'} or
            C{'sub'}.
        @param onMessage: called with each message's frames.
        @param options: L{SocketOptions}, or C{None} for the factory's.
        @param userIds: call C{onMessage(frames, userId)} with the ZAP
            C{User-Id} of the connection each message came on (CURVE
            servers; see L{zmqrelay.edge.security}).
        @rtype: L{ZmqSocket}
        """
        sock = ZmqSocket(
            self._factory, _KINDS[socketType], onMessage, options or self.options, userIds
        )
        sock.flusher = self
        return sock

    def watchConnections(self, raw, onEvent):
        """
        Watch the connections of a pyzmq socket of this factory's context
        that another thread is to use (see L{watchConnections}).

        @return: the monitor's L{ZmqSocket}; close it to stop watching.
        """
        return watchConnections(self._factory, raw, onEvent, self.options.readBudget)

    def notificationPlane(self, subscriptions, publisherOptions, subscriberOptions,
                          subscriberHwm, subscriberSndbuf):
        """
        Make the data plane of a notification relay: notifications moved
        inside libzmq, in threads (see L{zmqrelay.edge.plane}).

        @param subscriptions: inproc endpoint of the reactor XPUB (made by
            L{socket}) that receives what subscribers ask for.
        @rtype: L{zmqrelay.edge.plane.NotificationPlane}
        """
        from zmqrelay.edge.plane import NotificationPlane

        return NotificationPlane(
            self, subscriptions, publisherOptions, subscriberOptions,
            subscriberHwm, subscriberSndbuf,
        )

    def shutdown(self):
        """
        Close every socket and terminate the context; idempotent.
        """
        if self._closed:
            return
        self._closed = True
        # Nothing is sent any more: let go of the outboxes' owners.
        self._flushes = []
        self._checks = []
        self._factory.shutdown()
