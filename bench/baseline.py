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

Each process prints one line, C{ready: baseline <role> endpoint=<bound
endpoint>}, once it can take traffic, and runs until SIGTERM or SIGINT.
"""

import argparse
import signal
import sys

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["echo", "relay"])
    parser.add_argument("--bind", default="tcp://127.0.0.1:*")
    parser.add_argument("--connect", help="the next hop (relay only)")
    parser.add_argument("--raw", action="store_true", help="compiled frame I/O")
    args = parser.parse_args(argv)
    if args.role == "echo":
        echo(args.bind, args.raw)
    else:
        if not args.connect:
            parser.error("a relay needs --connect")
        relay(args.bind, args.connect, args.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
