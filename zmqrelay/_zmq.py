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
  - high-water marks, linger, message size limits and ZMTP heartbeats are
    set on every socket before it binds or connects;
  - the context is shut down once, however often it is asked.

Roles never touch this module directly: they receive a L{SocketFactory} (or a
fake of it in tests).
"""

import zmq
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory
from zope.interface import implementer

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

ROUTER = zmq.ROUTER
DEALER = zmq.DEALER
XPUB = zmq.XPUB
XSUB = zmq.XSUB
SUB = zmq.SUB

_KINDS = {"router": ROUTER, "dealer": DEALER, "xpub": XPUB, "xsub": XSUB, "sub": SUB}


class SocketOptions:
    """
    The socket options every zmqrelay socket gets.

    @ivar hwm: send and receive high-water marks (messages).
    @ivar maxMessageSize: ZeroMQ's C{MAXMSGSIZE} (bytes; -1 for none).
    @ivar heartbeat: ZMTP heartbeat interval in seconds (0 for none).
    @ivar readBudget: messages read per reactor turn before yielding.
    @ivar curve: C{None}, or a dict with C{'server'} (bool), C{'public'},
        C{'secret'} and (clients) C{'serverkey'}, all Z85 bytes.
    """

    def __init__(
        self,
        hwm=10000,
        maxMessageSize=-1,
        heartbeat=0,
        readBudget=200,
        curve=None,
    ):
        self.hwm = hwm
        self.maxMessageSize = maxMessageSize
        self.heartbeat = heartbeat
        self.readBudget = readBudget
        self.curve = curve


@implementer(ISocket)
class ZmqSocket(ZmqConnection):
    """
    One ZeroMQ socket in the reactor.

    @ivar onMessage: called with the L{list} of frames of each message (and,
        for a socket made with C{userIds}, the ZAP C{User-Id} of the
        connection it came on, or C{None}).
    @ivar sent: messages sent.
    @ivar dropped: messages a send could not queue (high-water mark or no
        such peer).
    @ivar unroutable: C{True} if the last send that failed did so because no
        connection has that routing id any more (ROUTER_MANDATORY): the peer
        is gone, not merely slow.
    """

    def __init__(self, factory, socketType, onMessage, options, userIds=False):
        self.socketType = socketType
        self.highWaterMark = options.hwm
        self.onMessage = onMessage
        self._recv = _rawRecv
        if userIds:
            # Only here do we need a frame after reading it: the hot path of
            # every other socket stays as it is.
            self._lastFrame = None
            self._owner = onMessage
            self._recv = self._recvNoting
            self.onMessage = self._deliverWithUserId
        self.readBudget = options.readBudget
        self.reactor = factory.reactor
        self._readLater = None
        self._reading = False
        self.sent = 0
        self.dropped = 0
        self.unroutable = False
        ZmqConnection.__init__(self, factory)
        sock = self.socket
        if options.maxMessageSize >= 0:
            sock.setsockopt(zmq.MAXMSGSIZE, options.maxMessageSize)
        if socketType == ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if socketType == XPUB:
            # A slow subscriber must not block the publisher: drop for it and
            # let sequence numbers show the gap.
            sock.setsockopt(zmq.XPUB_NODROP, 0)
        if options.heartbeat:
            ivl = int(options.heartbeat * 1000)
            sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ivl * 3)
            sock.setsockopt(zmq.HEARTBEAT_TTL, ivl * 3)
        if options.curve is not None:
            self.useCurve(options.curve)

    def useCurve(self, curve):
        """
        Set the security of the binds and connects that follow (libzmq copies
        the options of a socket into each endpoint when it is made).

        @param curve: C{None} for none, or a dict with C{'public'} and
            C{'secret'} and either C{'server': True} (and a ZAP
            C{'domain'}) or C{'serverkey'}, keys in Z85.
        """
        sock = self.socket
        if curve is None:
            sock.setsockopt(zmq.CURVE_SERVER, 0)
            return
        if curve.get("server"):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            if curve.get("domain"):
                sock.setsockopt(zmq.ZAP_DOMAIN, curve["domain"])
            try:
                # No ZAP handler to ask: refuse, never let everyone in.
                sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            except (AttributeError, zmq.ZMQError):
                pass
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve["serverkey"])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve["public"])
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve["secret"])

    def _recvNoting(self, sock, flags, copy):
        frame = self._lastFrame = _rawRecv(sock, flags, copy)
        return frame

    def _deliverWithUserId(self, frames):
        # The last frame read belongs to this message; so does its User-Id.
        try:
            userId = self._lastFrame.get("User-Id")
        except (AttributeError, zmq.ZMQError):
            userId = None
        self._lastFrame = None
        self._owner(frames, userId)

    def bind(self, address):
        """
        Bind to C{address} (C{*} ports allowed).

        @return: the endpoint actually bound.
        """
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.bind, address)])
        return self.socket.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")

    def connect(self, address):
        """
        Connect to C{address}; ZeroMQ reconnects by itself after a drop.
        """
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, address)])

    def disconnect(self, address):
        """
        Undo a L{connect}.
        """
        try:
            self.socket.disconnect(address)
        except zmq.ZMQError:
            pass
        self.endpoints = [e for e in self.endpoints if e.address != address]

    def subscribe(self, prefix):
        """
        SUB sockets: receive messages starting with C{prefix}.
        """
        self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self._checkReadable()

    def unsubscribe(self, prefix):
        """
        SUB sockets: undo one L{subscribe}.
        """
        self.socket.setsockopt(zmq.UNSUBSCRIBE, prefix)
        self._checkReadable()

    def doRead(self):
        """
        Read at most C{readBudget} messages, then yield to the reactor.
        """
        later = self._readLater
        if later is not None:
            self._readLater = None
            if later.active():
                later.cancel()
        sock = self.socket
        if sock is None:
            return
        recv = self._recv
        onMessage = self.onMessage
        self._reading = True
        try:
            for _ in range(self.readBudget):
                try:
                    # Frames, not bytes, from recv: they carry the RCVMORE
                    # flag, saving a getsockopt per frame.
                    frame = recv(sock, _NOBLOCK, False)
                    frames = [frame.bytes]
                    while frame.more:
                        frame = recv(sock, _NOBLOCK, False)
                        frames.append(frame.bytes)
                except zmq.Again:
                    return
                except zmq.ZMQError as e:
                    log.error("zmq read error {error}", error=e)
                    return
                try:
                    onMessage(frames)
                except Exception:
                    log.failure("unhandled error handling a message")
                if self.socket is None:
                    return
            # Budget spent; the descriptor is edge-triggered and will not
            # wake us for what is still queued, so come back ourselves.
            self._readLater = self.reactor.callLater(0, self.doRead)
        finally:
            self._reading = False

    def _checkReadable(self):
        """
        After we touch the socket, ZeroMQ may have consumed the edge that
        would have woken the reactor: look, and schedule a read if needed.
        """
        if self._reading or self._readLater is not None or self.socket is None:
            return
        if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._readLater = self.reactor.callLater(0, self.doRead)

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
            return False
        self.sent += 1
        if not self._reading and self._readLater is None:
            if sock.get(_EVENTS) & _POLLIN:
                self._readLater = self.reactor.callLater(0, self.doRead)
        return True

    def close(self):
        """
        Close the socket now (linger 0); safe to call twice.
        """
        if self._readLater is not None:
            if self._readLater.active():
                self._readLater.cancel()
            self._readLater = None
        if self.socket is not None:
            self.shutdown()

    def connectionLost(self, reason):
        """
        The reactor dropped us: make sure it does not poll a closed socket.
        """
        if self.factory is not None:
            self.factory.reactor.removeReader(self)


@implementer(ISocketFactory)
class SocketFactory:
    """
    Owns one ZeroMQ context and makes reactor-driven sockets from it.

    @ivar reactor: the reactor sockets are read in.
    """

    def __init__(self, reactor, options=None):
        self.reactor = reactor
        self.options = options or SocketOptions()
        self._factory = ZmqFactory()
        self._factory.reactor = reactor
        self._factory.lingerPeriod = 0
        self._closed = False

    @property
    def context(self):
        """
        The underlying L{zmq.Context} (for ZAP).
        """
        return self._factory.context

    def socket(self, socketType, onMessage, options=None, userIds=False):
        """
        Make a socket.

        @param socketType: C{'router'}, C{'dealer'}, C{'xpub'}, C{'xsub'} or
            C{'sub'}.
        @param onMessage: called with each message's frames.
        @param options: L{SocketOptions}, or C{None} for the factory's.
        @param userIds: call C{onMessage(frames, userId)} with the ZAP
            C{User-Id} of the connection each message came on (CURVE
            servers; see L{zmqrelay.security}).
        @rtype: L{ZmqSocket}
        """
        return ZmqSocket(
            self._factory, _KINDS[socketType], onMessage, options or self.options, userIds
        )

    def shutdown(self):
        """
        Close every socket and terminate the context; idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._factory.shutdown()
