"""
The data plane of a notification relay: notifications move from publishers
to subscribers inside libzmq, in threads of their own, and never reach
Python; subscriptions come out to the reactor to be checked, and only what
the reactor sends back goes upstream.

Three C{zmq.proxy_steerable} loops, each in its own thread and each the
only user of its sockets::

    publishers -> XSUB (bound) --[intake]--> PUB (inproc, no drop)
                                              |            |
                      XSUB (inproc) <---------+            +--> XSUB (inproc)
                        |  [fan-out]                         [upstream] |
    subscribers <- XPUB (bound)                   upstream XSUB <- XPUB (dialled)

Each inner XSUB is connected to the PUB above it and to the reactor's own
XPUB (the subscription endpoint): the subscriptions and ends that the
subscribers' XPUB reports travel up through its XSUB to that reactor
socket, which reports each prefix once; the PUB only filters with them.
The reactor checks them and hands back what may go upstream
(L{NotificationPlane.subscribe}); the intake thread sends it on the bound
XSUB between two runs of its proxy (a socket is used by one thread only:
the reactor asks the proxy to pause and end, the thread sends, and runs the
proxy again).

Where a notification can be lost, it is counted or bounded:

  - the inner PUB never drops (C{XPUB_NODROP}): a full queue makes the
    intake wait, so it reads no more and TCP pushes back on the publisher,
    whose own send then fails (the server tells the application:
    L{zmqrelay.roles.server.Server.publish}); a wait longer than
    L{SEND_WAIT} drops that one notification, counted in C{dropped};
  - an upstream XPUB drops at once, counted in C{dropped}, when its queue
    toward a slow or stopped upstream relay is full (L{UPSTREAM_WAIT}): a
    stalled cloud must not stall the intake;
  - the subscribers' XPUB drops for a subscriber whose queue is full (its
    sequence numbers show the gap and it asks the server to replay), so
    that one subscriber that does not read costs the others nothing.
    libzmq counts nothing there: these drops are not counted by the relay.
"""

import itertools
import struct
import threading
from collections import deque

import zmq
from twisted.logger import Logger

from zmqrelay.core import protocol
from zmqrelay.edge.sockopts import applyOptions
from zmqrelay.edge.tcp import cutConnection, tcpBacklog

log = Logger()

#: How long a thread waits (ms) for room in a queue that never drops
#: before it drops the notification it holds (counted).
SEND_WAIT = 100

#: How long an upstream thread waits (ms) for room toward its upstream
#: relay: not at all.  Its inner XSUB is fed by the intake's PUB, which never
#: drops: an upstream thread that waited would fill that pipe and stall the
#: intake, so one stopped or slow cloud would slow every local subscriber
#: (and every other cloud) to one notification per wait.  A full upstream
#: queue drops the notification at once instead, counted in C{dropped}; the
#: upstream's subscribers see the gap and ask for a replay.
UPSTREAM_WAIT = 0

#: How long the reactor waits (s) for a proxy thread to answer a command.
COMMAND_WAIT = 2.0

#: How long the reactor waits (s) for the fan-out thread's figures when
#: watching slow subscribers; past it, the last figures stand.
FIGURES_WAIT = 0.05

#: Frames of one notification.  libzmq's proxy counts frames, not
#: messages: notifications are counted as frames / this.
FRAMES = len(protocol.encodeNotification(b"", {}, b""))

_names = itertools.count(1)
_U64 = struct.Struct("=Q")


class ProxyThread:
    """
    One C{zmq.proxy_steerable} between two sockets, run in a thread that
    uses them alone; the reactor steers it over an inproc C{PAIR}.

    @ivar dropped: messages the proxy could not send within L{SEND_WAIT}
        (a queue that never drops stayed full), each discarded whole.
    """

    def __init__(self, context, name, frontend, backend):
        self.name = name
        self.frontend = frontend
        self.backend = backend
        self.dropped = 0
        self._calls = deque()
        self._base = [0] * 8
        self._last = None
        # Commands whose answer has not come (their asker gave up).
        self._unanswered = 0
        address = f"inproc://zmqrelay-steer-{name}-{next(_names)}"
        self._control = context.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(address)
        self._steered = context.socket(zmq.PAIR)
        self._steered.setsockopt(zmq.LINGER, 0)
        self._steered.connect(address)
        self._thread = threading.Thread(target=self._run, name=f"zmqrelay-{name}", daemon=True)

    def start(self):
        """
        Start forwarding (the sockets are the thread's from now on).
        """
        self._thread.start()

    def _ask(self, command, wait=COMMAND_WAIT):
        """
        Send one command and wait for its answer (the proxy answers each).

        @param wait: seconds to wait for it; a shorter wait than
            L{COMMAND_WAIT} gives up without a log line.
        @return: the answer's frames, or C{None} if none came in time.
        """
        control = self._control
        # Answers that came after their asker gave up belong to no one now.
        while control.poll(0):
            control.recv_multipart()
            self._unanswered = max(0, self._unanswered - 1)
        if self._unanswered and wait < COMMAND_WAIT:
            # It has not answered the last one yet: do not wait again.
            return None
        control.send(command)
        if not control.poll(wait * 1000):
            self._unanswered += 1
            if wait >= COMMAND_WAIT:
                log.warn("notification relay: {name} did not answer {command}",
                         name=self.name, command=command.decode("ascii"))
            return None
        return control.recv_multipart()

    def statistics(self, wait=COMMAND_WAIT):
        """
        @param wait: seconds to wait for the thread's answer; without one
            in time, the last figures it gave.
        @return: the proxy's 8 counters since it started (messages and bytes
            in and out at the frontend, then at the backend), multipart
            messages counted once.
        """
        if not self._thread.is_alive():
            return list(self._last or self._base)
        answer = self._ask(b"STATISTICS", wait)
        if answer is None or len(answer) != 8:
            return list(self._last or self._base)
        self._last = [b + _U64.unpack(f)[0] for b, f in zip(self._base, answer)]
        return list(self._last)

    def call(self, function):
        """
        Run C{function()} in the thread, between two runs of the proxy; the
        proxy is paused and its counters kept first, so none is lost.

        @param function: a callable using this thread's sockets, or C{None}
            to end the thread (it closes them).
        """
        self._calls.append(function)
        if not self._thread.is_alive():
            return
        self._ask(b"PAUSE")
        answer = self._ask(b"STATISTICS")
        if answer is not None and len(answer) == 8:
            self._base = [b + _U64.unpack(f)[0] for b, f in zip(self._base, answer)]
        self._ask(b"TERMINATE")

    def stop(self):
        """
        End the thread, close its sockets and wait for it (briefly).
        """
        if self._thread.is_alive():
            self.call(None)
            self._thread.join(COMMAND_WAIT + SEND_WAIT / 1000.0)
        elif self._thread.ident is None:
            self._close()
        self._control.close()

    def _close(self):
        for sock in (self.frontend, self.backend, self._steered):
            sock.close(linger=0)

    def _run(self):
        frontend, backend, steered = self.frontend, self.backend, self._steered
        while True:
            try:
                zmq.proxy_steerable(frontend, backend, None, steered)
            except zmq.ContextTerminated:
                self._close()
                return
            except zmq.ZMQError as e:
                if e.errno != zmq.EAGAIN:
                    log.error("notification relay: {name} stopped: {error}", name=self.name, error=e)
                    self._close()
                    return
                # A send waited SEND_WAIT for room in vain: that message is
                # lost; skip what is left of it, so the next one starts clean.
                self.dropped += 1
                try:
                    while frontend.getsockopt(zmq.RCVMORE):
                        frontend.recv(zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                continue
            # TERMINATE: the reactor has something for us to do.
            while self._calls:
                function = self._calls.popleft()
                if function is None:
                    self._close()
                    return
                try:
                    function()
                except Exception:
                    log.failure("notification relay: {name} call failed", name=self.name)


class NotificationPlane:
    """
    Moves notifications from a bound XSUB to a bound XPUB (and to an
    upstream relay) inside libzmq; see the module docstring.

    @ivar subscriptions: the inproc endpoint of the reactor's XPUB that
        receives what subscribers ask for.
    """

    def __init__(self, factory, subscriptions, publisherOptions, subscriberOptions,
                 subscriberHwm, subscriberSndbuf):
        """
        @param factory: the L{zmqrelay.edge._zmq.SocketFactory} whose context
            the sockets share.
        @param publisherOptions: L{SocketOptions} of the bound XSUB.
        @param subscriberOptions: L{SocketOptions} of the bound XPUB.
        @param subscriberHwm: notifications queued per subscriber.
        @param subscriberSndbuf: kernel send buffer per subscriber.
        """
        self.factory = factory
        self.context = factory.context
        self.options = factory.options
        self.subscriptions = subscriptions
        self.publisherOptions = publisherOptions or factory.options
        self.subscriberOptions = subscriberOptions or factory.options
        self.subscriberHwm = subscriberHwm
        self.subscriberSndbuf = subscriberSndbuf
        self._middle = f"inproc://zmqrelay-plane-{next(_names)}"
        self.intake = None
        self.fanout = None
        self.upstream = None
        self._upstreamEndpoint = None
        # Several upstreams (a proxy of several clouds, issue 10): key ->
        # (endpoint, thread), beside the one of connectUpstream.
        self._more = {}
        self._retired = [0, 0]
        self._final = None
        self._onSubscriber = None
        self._monitor = None

    def _socket(self, kind, options=None):
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if options is not None:
            applyOptions(sock, options)
        return sock

    def _inner(self):
        """
        An inner XSUB: notifications from the intake's PUB, subscriptions
        up to the reactor.
        """
        sock = self._socket(zmq.XSUB)
        sock.setsockopt(zmq.RCVHWM, self.options.hwm)
        # Subscriptions are few and each matters: never drop one.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(self._middle)
        sock.connect(self.subscriptions)
        return sock

    def start(self, subAddress, pubAddress):
        """
        Bind, and start the intake and the fan-out.

        @return: (sub endpoint, pub endpoint) as bound.
        """
        xsub = self._socket(zmq.XSUB, self.publisherOptions)
        middle = self._socket(zmq.PUB)
        middle.setsockopt(zmq.SNDHWM, self.options.hwm)
        middle.setsockopt(zmq.XPUB_NODROP, 1)
        middle.setsockopt(zmq.SNDTIMEO, SEND_WAIT)
        middle.bind(self._middle)
        xpub = self._socket(zmq.XPUB, self.subscriberOptions)
        # Options are copied into each connection when it is made: these
        # bound every subscriber that connects.
        xpub.setsockopt(zmq.SNDHWM, self.subscriberHwm)
        xpub.setsockopt(zmq.SNDBUF, self.subscriberSndbuf)
        xpub.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            xsub.bind(subAddress)
            xpub.bind(pubAddress)
        except zmq.ZMQError:
            for sock in (xsub, middle, xpub):
                sock.close(linger=0)
            raise
        sub = xsub.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
        pub = xpub.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
        if self._onSubscriber is not None:
            # Before the fan-out thread owns the socket.
            self._monitor = self.factory.watchConnections(xpub, self._onSubscriber)
        self.intake = ProxyThread(self.context, "intake", xsub, middle)
        self.fanout = ProxyThread(self.context, "fanout", self._inner(), xpub)
        self.intake.start()
        self.fanout.start()
        return sub, pub

    def watchSubscribers(self, onEvent):
        """
        Report the subscribers' connections, from L{start} on: C{onEvent}
        is called in the reactor with C{(event, fd, address)}, as
        L{zmqrelay.edge._zmq.ZmqSocket.monitor} describes.
        """
        self._onSubscriber = onEvent

    def fanoutBytes(self):
        """
        @return: C{(bytes, notifications)} handed to the subscribers' XPUB
            so far (once per notification, however many subscribers it went
            to).
        """
        if self.fanout is None:
            return 0, 0
        # Asked ten times a second from the reactor: never wait long.
        stats = self.fanout.statistics(FIGURES_WAIT)
        return stats[7], stats[6] // FRAMES

    def subscriberBacklog(self, fd):
        """
        @return: C{(acked, notsent)} of a subscriber's TCP connection (see
            L{zmqrelay.edge.tcp.tcpBacklog}), or C{None}.
        """
        return tcpBacklog(fd)

    def cutSubscriber(self, fd, address):
        """
        End one subscriber's connection if it still has the peer
        C{address}: libzmq frees what it queued for it, and the kernel what
        it held (the connection is reset).

        @return: C{True} if it was ended.
        """
        return cutConnection(fd, address, reset=True)

    def subscribe(self, frames):
        """
        Send (un)subscriptions to the publishers, in order.

        @param frames: L{list} of single-frame messages (C{\\x01} or
            C{\\x00} and a prefix).
        """
        xsub = self.intake.frontend
        frames = list(frames)

        def send():
            for frame in frames:
                xsub.send(frame)

        self.intake.call(send)

    def connectUpstream(self, endpoint, options=None):
        """
        Publish to an upstream XSUB too (replacing any earlier one), from a
        socket of its own that never drops.

        @param options: L{SocketOptions} for dialling it (CURVE), or C{None}.
        """
        if endpoint == self._upstreamEndpoint:
            return
        self.disconnectUpstream()
        xpub = self._socket(zmq.XPUB, options or self.options)
        xpub.setsockopt(zmq.SNDHWM, self.options.hwm)
        xpub.setsockopt(zmq.XPUB_NODROP, 1)
        xpub.setsockopt(zmq.SNDTIMEO, UPSTREAM_WAIT)
        xpub.connect(endpoint)
        self._upstreamEndpoint = endpoint
        self.upstream = ProxyThread(self.context, "upstream", self._inner(), xpub)
        self.upstream.start()

    def disconnectUpstream(self):
        """
        Stop publishing upstream.
        """
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            self._retire(upstream)
        self._upstreamEndpoint = None

    def _retire(self, thread):
        stats = thread.statistics()
        thread.stop()
        self._retired[0] += stats[0]
        self._retired[1] += thread.dropped

    def addUpstream(self, key, endpoint, options=None):
        """
        Publish to one more upstream XSUB (one of several clouds), named
        C{key}; a new endpoint for the same key replaces the old one.
        Each has a socket and a thread of its own, so one slow cloud
        delays no other.
        """
        old = self._more.get(key)
        if old is not None and old[0] == endpoint:
            return
        self.removeUpstream(key)
        xpub = self._socket(zmq.XPUB, options or self.options)
        xpub.setsockopt(zmq.SNDHWM, self.options.hwm)
        xpub.setsockopt(zmq.XPUB_NODROP, 1)
        xpub.setsockopt(zmq.SNDTIMEO, UPSTREAM_WAIT)
        xpub.connect(endpoint)
        thread = ProxyThread(self.context, f"upstream-{len(self._more)}", self._inner(), xpub)
        self._more[key] = (endpoint, thread)
        thread.start()

    def removeUpstream(self, key):
        """
        Stop publishing to the upstream named C{key}.
        """
        old = self._more.pop(key, None)
        if old is not None:
            self._retire(old[1])

    def counters(self):
        """
        @return: C{notifications} (read from publishers), C{delivered}
            (handed to the subscribers' XPUB), C{upstream} (sent upstream):
            frames counted by libzmq divided by L{FRAMES}; C{notification-bytes}
            (read from publishers); C{dropped} (see the module docstring).
        """
        if self.intake is None:
            return dict(self._final or {
                "notifications": 0, "notification-bytes": 0, "delivered": 0, "upstream": 0,
                "dropped": 0})
        # Frontend in, its bytes, frontend out, its bytes, then the backend's.
        intake = self.intake.statistics()
        fanout = self.fanout.statistics()
        upstream = self.upstream.statistics()[0] if self.upstream is not None else 0
        dropped = self.intake.dropped + self.fanout.dropped + self._retired[1]
        if self.upstream is not None:
            dropped += self.upstream.dropped
        for _, thread in self._more.values():
            upstream += thread.statistics()[0]
            dropped += thread.dropped
        return {
            "notifications": intake[0] // FRAMES,
            "notification-bytes": intake[1],
            "delivered": fanout[0] // FRAMES,
            "upstream": (upstream + self._retired[0]) // FRAMES,
            "dropped": dropped,
        }

    def stop(self):
        """
        End every thread and close every socket; the counters keep their
        last values.
        """
        if self.intake is not None:
            self._final = self.counters()
        self.disconnectUpstream()
        for key in list(self._more):
            self.removeUpstream(key)
        for thread in (self.fanout, self.intake):
            if thread is not None:
                thread.stop()
        self.fanout = self.intake = None
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
