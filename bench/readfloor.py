"""
What reading and dropping one message costs a Python process at all: the
floor under issue 7's "a refused or ignored message costs <= 3 us".

A bare pyzmq ROUTER (no Twisted, no decoding, no limits) reads every message
a flood sends it and drops it, frame by frame with pyzmq's compiled C{recv}
exactly as C{zmqrelay.edge._zmq} reads; the flood is C{floodbench.py flood}
(REQs of 16-byte payloads, as fast as pyzmq sends, no HELLO).  The reader's
CPU time (all threads: its libzmq I/O thread too), from C{/proc}, divided by
the messages it read, is what any Python node pays per message it reads
before it can decide anything about it.

Then the same flood against libzmq reading alone: C{zmq.proxy_steerable}
from the ROUTER to a PUB that nobody subscribes to (so libzmq drops every
message it reads), no Python per message at all: the floor under any
reader built on libzmq, whatever its language.

    python bench/readfloor.py [--seconds 5] [--sockets 4] [--write docs/FLOOD.md]

Every process it starts is ended by pid.
"""

import argparse
import os
import platform
import sys
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BEGIN = "<!-- readfloor:begin -->"
END = "<!-- readfloor:end -->"

_recv = zmq.backend.Socket.recv


def reader(bind, seconds):
    """
    Read and drop everything for C{seconds} after the first message, then
    print how many messages and frames were read.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.bind(bind)
    print("ready: baseline readfloor endpoint=" + sock.getsockopt(zmq.LAST_ENDPOINT).decode(),
          flush=True)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    messages = frames = 0
    end = None
    while end is None or time.monotonic() < end:
        if not poller.poll(100):
            continue
        for _ in range(200):
            try:
                frame = _recv(sock, zmq.NOBLOCK, False)
            except zmq.Again:
                break
            frames += 1
            while frame.more:
                frame = _recv(sock, zmq.NOBLOCK, False)
                frames += 1
            messages += 1
        if end is None:
            end = time.monotonic() + seconds
    print(f"read messages={messages} frames={frames}", flush=True)
    time.sleep(3600)


def creader(bind, seconds):
    """
    As L{reader}, but libzmq reads and drops in C: a proxy from the ROUTER
    to a PUB without subscribers, steered to print its counters.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.bind(bind)
    sink = ctx.socket(zmq.PUB)
    sink.bind("inproc://readfloor-sink")
    control = ctx.socket(zmq.PAIR)
    control.bind("inproc://readfloor-control")
    steered = ctx.socket(zmq.PAIR)
    steered.connect("inproc://readfloor-control")
    print("ready: baseline creadfloor endpoint=" + sock.getsockopt(zmq.LAST_ENDPOINT).decode(),
          flush=True)
    import threading

    thread = threading.Thread(target=zmq.proxy_steerable, args=(sock, sink, None, steered),
                              daemon=True)
    thread.start()

    def statistics():
        control.send(b"STATISTICS")
        return [int.from_bytes(f, "little") for f in control.recv_multipart()]

    # Until the flood starts, then for the run.
    while statistics()[0] == 0:
        time.sleep(0.01)
    time.sleep(seconds)
    frames = statistics()[0]
    print(f"read messages={frames // 5} frames={frames}", flush=True)
    time.sleep(3600)


def cpuSeconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench",
                        choices=["bench", "reader", "creader"])
    parser.add_argument("--bind", default="tcp://127.0.0.1:*")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args(argv)
    if args.role == "reader":
        reader(args.bind, args.seconds)
        return 0
    if args.role == "creader":
        creader(args.bind, args.seconds)
        return 0
    import signal

    import floodbench
    from children import Children
    from relaybench import writeInto

    def terminated(signum, frame):
        # So that the finally below ends every process this one started.
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, terminated)

    def floor(role):
        children = Children("readfloor-")
        try:
            ready = children.start("reader", [
                sys.executable, os.path.abspath(__file__), role, "--seconds", str(args.seconds),
            ])
            pid = children.pid("reader")
            children.spawn("flooder", [
                sys.executable, floodbench.__file__, "flood", ready["endpoint"], "--target", "x",
                "--seconds", str(args.seconds + 2.0), "--count", "100000000", "--size", "16",
                "--sockets", str(args.sockets), "--ids", "none", "--id", "floor",
            ])
            children.waitFor("flooder", r"^flooding")
            before = cpuSeconds(pid)
            match = children.waitFor("reader", r"read messages=(\d+) frames=(\d+)",
                                     args.seconds + 30)
            cpu = cpuSeconds(pid) - before
            return cpu, int(match.group(1)), int(match.group(2))
        finally:
            children.stopAll()

    cpu, messages, frames = floor("reader")
    ccpu, cmessages, cframes = floor("creader")
    load = os.getloadavg()[0]
    perMessage = cpu / max(messages, 1) * 1e6
    block = "\n".join([
        f"Generated by `python bench/readfloor.py` on {time.strftime('%Y-%m-%d')}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"libzmq {zmq.zmq_version()}, pyzmq {zmq.__version__}; load average {load:.1f} after.",
        "",
        f"A bare pyzmq ROUTER read and dropped {messages:,} messages ({frames:,} frames, "
        f"{frames / max(messages, 1):.0f} a message) from {args.sockets} flooding DEALERs in "
        f"{args.seconds:g} s: **{perMessage:.2f} us of CPU per message** (its libzmq I/O "
        f"thread included), {cpu / max(frames, 1) * 1e6:.2f} us per frame.",
        "",
        f"libzmq alone (`zmq.proxy` from the ROUTER to a PUB nobody subscribes to: no Python "
        f"per message) read and dropped {cmessages:,} messages of the same flood in "
        f"{args.seconds:g} s: **{ccpu / max(cmessages, 1) * 1e6:.2f} us of CPU per message**, "
        f"{ccpu / max(cframes, 1) * 1e6:.2f} us per frame.",
    ])
    print(block)
    if args.write:
        writeInto(args.write, block, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
