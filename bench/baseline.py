"""
The baseline the relay benchmark compares zmqrelay against: a plain pyzmq
ROUTER/DEALER relay chain, no Twisted, no decoding.

Two roles, each one process::

    python bench/baseline.py echo  --bind tcp://127.0.0.1:* [--raw]
    python bench/baseline.py relay --bind tcp://127.0.0.1:* --connect ENDPOINT [--raw]

An C{echo} worker binds a ROUTER and sends every message back as it came.  A
C{relay} binds a ROUTER (its front, where the previous hop connects) and
connects a DEALER to the next hop: what arrives at the front (with the
sender's routing id prepended by ZeroMQ) goes out of the back unchanged, and
what comes back is routed to the front by its first frame.  A chain
C{client -> relay -> relay -> echo} is the same shape as C{client -> cloud ->
proxy -> server}, minus everything zmqrelay does per message (decoding,
sessions, limits, request ids, deadlines).

The loop is the usual C{zmq.Poller} one, draining each readable socket up to
a budget per turn, with C{recv_multipart}/C{send_multipart}.  With C{--raw},
messages are moved frame by frame with pyzmq's compiled C{send}/C{recv} and
integer flags, as C{zmqrelay.edge._zmq} does: that removes several microseconds of
Python per message (pyzmq's flag enums) and shows what the relay logic
itself costs on top of the cheapest pyzmq frame I/O.

With C{--libzmq}, the relay is libzmq's own C{zmq.proxy(router, dealer)}
and the echo C{zmq.proxy(router, router)} (one ROUTER as both ends: what it
receives, prefixed by the sender's routing id, goes back out of the same
ROUTER, so to the sender): every message moves inside libzmq, no Python
per message.  That is the floor of any relay over ZeroMQ.

Two more roles run the Majordomo (MDP/0.2) comparison::

    python bench/baseline.py mdbroker --bind tcp://127.0.0.1:*
    python bench/baseline.py mdworker --connect ENDPOINT [--service NAME]

C{mdbroker} is majortomo's broker (C{pip install majortomo}, the C{bench}
extra), unchanged except that it reports the port it bound; C{mdworker} is a
minimal MDP worker of our own that answers every request with its body
unchanged, one request at a time (as MDP workers do).

Each process prints one line, C{ready: baseline <role> endpoint=<bound
endpoint>}, once it can take traffic, and runs until SIGTERM or SIGINT (the
C{--libzmq} processes, blocked in C{zmq.proxy}, end on SIGTERM's default
action).
"""

import argparse
import signal
import sys
import time

import zmq

#: Messages read from one socket per poll turn (zmqrelay's default read
#: budget, so both loops yield at the same rate).
BUDGET = 200

#: High-water marks, as zmqrelay's default.
HWM = 10000


def _socket(context, kind):
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return sock


_rawSend = zmq.backend.Socket.send
_rawRecv = zmq.backend.Socket.recv
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)
_COPY_THRESHOLD = zmq.COPY_THRESHOLD


def recvRaw(sock, flags):
    """
    C{recv_multipart(flags)} without its per-frame option lookups.
    """
    frame = _rawRecv(sock, flags, False)
    frames = [frame.bytes]
    while frame.more:
        frame = _rawRecv(sock, flags, False)
        frames.append(frame.bytes)
    return frames


def sendRaw(sock, frames):
    """
    C{send_multipart(frames, copy=False)} without its per-frame enum
    arithmetic: frames under pyzmq's copy threshold are copied, larger ones
    sent zero-copy (as C{zmqrelay.edge._zmq} does).
    """
    last = len(frames) - 1
    for i in range(last):
        frame = frames[i]
        _rawSend(sock, frame, _MORE, len(frame) < _COPY_THRESHOLD)
    frame = frames[last]
    _rawSend(sock, frame, 0, len(frame) < _COPY_THRESHOLD)


def _stopOnSignal(flag):
    def stop(signum, frame):
        flag[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def echo(bind, raw=False):
    """
    Run an echo worker bound to C{bind} until signalled.

    @param raw: move frames with L{recvRaw}/L{sendRaw}.
    """
    context = zmq.Context()
    sock = _socket(context, zmq.ROUTER)
    sock.bind(bind)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
    running = [True]
    _stopOnSignal(running)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    print(f"ready: baseline echo endpoint={endpoint}", flush=True)
    if raw:
        def recv(flags):
            return recvRaw(sock, flags)

        def send(frames):
            sendRaw(sock, frames)
    else:
        recv = sock.recv_multipart
        send = sock.send_multipart
    try:
        while running[0]:
            if not poller.poll(200):
                continue
            for _ in range(BUDGET):
                try:
                    frames = recv(_NOBLOCK)
                except zmq.Again:
                    break
                send(frames)
    finally:
        sock.close()
        context.term()


def relay(bind, connect, raw=False):
    """
    Run one relay: a ROUTER bound to C{bind}, a DEALER connected to
    C{connect}, until signalled.

    @param raw: move frames with L{recvRaw}/L{sendRaw}.
    """
    context = zmq.Context()
    front = _socket(context, zmq.ROUTER)
    front.bind(bind)
    back = _socket(context, zmq.DEALER)
    back.connect(connect)
    endpoint = front.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
    running = [True]
    _stopOnSignal(running)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    print(f"ready: baseline relay endpoint={endpoint}", flush=True)
    if raw:
        pairs = (
            (lambda flags: recvRaw(front, flags), lambda frames: sendRaw(back, frames), front),
            (lambda flags: recvRaw(back, flags), lambda frames: sendRaw(front, frames), back),
        )
    else:
        pairs = (
            (front.recv_multipart, back.send_multipart, front),
            (back.recv_multipart, front.send_multipart, back),
        )
    try:
        while running[0]:
            events = dict(poller.poll(200))
            for recv, send, source in pairs:
                if source not in events:
                    continue
                for _ in range(BUDGET):
                    try:
                        frames = recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    send(frames)
    finally:
        front.close()
        back.close()
        context.term()


def proxyEcho(bind):
    """
    Run libzmq's C{zmq.proxy(router, router)} bound to C{bind}: every
    message goes back to its sender, without Python in the loop.
    """
    context = zmq.Context()
    sock = _socket(context, zmq.ROUTER)
    sock.bind(bind)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
    print(f"ready: baseline echo endpoint={endpoint}", flush=True)
    zmq.proxy(sock, sock)


def proxyRelay(bind, connect):
    """
    Run libzmq's C{zmq.proxy(router, dealer)}: a ROUTER bound to C{bind}
    in front, a DEALER connected to C{connect} behind.
    """
    context = zmq.Context()
    front = _socket(context, zmq.ROUTER)
    front.bind(bind)
    back = _socket(context, zmq.DEALER)
    back.connect(connect)
    endpoint = front.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
    print(f"ready: baseline relay endpoint={endpoint}", flush=True)
    zmq.proxy(front, back)


# Majordomo (MDP/0.2, https://rfc.zeromq.org/spec:18/MDP/): the frames of
# the worker side, as majortomo's broker speaks them.

MDP_WORKER = b"MDPW02"
MDP_CLIENT = b"MDPC02"
MDP_READY = b"\x01"
MDP_REQUEST = b"\x02"
MDP_FINAL = b"\x04"
MDP_HEARTBEAT = b"\x05"
MDP_DISCONNECT = b"\x06"

#: Seconds between a worker's heartbeats to the broker (majortomo's default
#: interval; its broker drops a worker silent for 10 s).
MDP_HEARTBEAT_INTERVAL = 2.5


def mdBroker(bind):
    """
    Run majortomo's broker bound to C{bind} until signalled.
    """
    import logging

    from majortomo.broker import Broker

    # majortomo logs every message at INFO: keep that off, as a deployment
    # would, so the run measures the broker and not the log handler.
    logging.basicConfig(level=logging.WARNING)

    class ReportingBroker(Broker):
        """
        majortomo's broker, printing the endpoint it bound (the bind URL
        may ask for any free port).
        """

        def bind(self):
            super().bind()
            endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode("ascii")
            self._bind_url = endpoint
            print(f"ready: baseline mdbroker endpoint={endpoint}", flush=True)

    broker = ReportingBroker(bind=bind, zmq_context=zmq.Context())

    def stop(signum, frame):
        broker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    broker.run()


def mdWorker(connect, service):
    """
    Run one MDP worker for C{service} connected to the broker at
    C{connect}: each request's body goes back as the FINAL reply.
    """
    context = zmq.Context()
    sock = _socket(context, zmq.DEALER)
    sock.connect(connect)
    running = [True]
    _stopOnSignal(running)
    sock.send_multipart([b"", MDP_WORKER, MDP_READY, service])
    lastSent = time.monotonic()
    print(f"ready: baseline mdworker endpoint={connect}", flush=True)
    try:
        while running[0]:
            if sock.poll(200):
                while True:
                    try:
                        frames = sock.recv_multipart(_NOBLOCK)
                    except zmq.Again:
                        break
                    # [b"", MDPW02, command, ...]: a REQUEST carries the
                    # client's address, an empty frame and the body.
                    command = frames[2]
                    if command == MDP_REQUEST:
                        sock.send_multipart([b"", MDP_WORKER, MDP_FINAL] + frames[3:])
                        lastSent = time.monotonic()
                    elif command == MDP_DISCONNECT:
                        running[0] = False
                        break
            if time.monotonic() - lastSent >= MDP_HEARTBEAT_INTERVAL:
                sock.send_multipart([b"", MDP_WORKER, MDP_HEARTBEAT])
                lastSent = time.monotonic()
        sock.send_multipart([b"", MDP_WORKER, MDP_DISCONNECT])
    finally:
        sock.close()
        context.term()


def _dieWithParent():
    """
    Ask Linux to SIGKILL this process when its parent ends (as the
    benchmark's twistd nodes do), so that a benchmark killed outright
    leaves no baseline running.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def main(argv=None):
    _dieWithParent()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["echo", "relay", "mdbroker", "mdworker"])
    parser.add_argument("--bind", default="tcp://127.0.0.1:*")
    parser.add_argument("--connect", help="the next hop (relay) or the broker (mdworker)")
    parser.add_argument("--raw", action="store_true", help="compiled frame I/O")
    parser.add_argument("--libzmq", action="store_true", help="zmq.proxy moves every message")
    parser.add_argument("--service", default="echo", help="the MDP service (mdworker)")
    args = parser.parse_args(argv)
    if args.role in ("relay", "mdworker") and not args.connect:
        parser.error(f"a {args.role} needs --connect")
    if args.role == "echo":
        if args.libzmq:
            proxyEcho(args.bind)
        else:
            echo(args.bind, args.raw)
    elif args.role == "relay":
        if args.libzmq:
            proxyRelay(args.bind, args.connect)
        else:
            relay(args.bind, args.connect, args.raw)
    elif args.role == "mdbroker":
        mdBroker(args.bind)
    else:
        mdWorker(args.connect, args.service.encode("ascii"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
