"""
Would coalescing pay here?  (issue 13, point 2)

Measures what a relay hop costs per request when requests travel one per
ZeroMQ message, as zmqrelay sends them, and when C{k} of them travel as one
message (a msgpack list of C{[type, header, payload]} items), as a
coalescing relay would send them.  Both relays do the least a zmqrelay relay
must do per request: decode its msgpack header, give it a new id, encode the
header again; nothing else (no sessions, limits, in-flight table, Twisted).
So the difference between the two is what coalescing could save per request
at best; what zmqrelay does on top (measured by C{relaybench.py}) stays.

    python bench/coalesce.py [--seconds 2] [--batches 1,4,16,64] [--write docs/BENCHMARKS.md]

One relay process (C{coalesce.py relay}), driven by this process (client and
echo in one poll loop), 100 requests outstanding, 100-byte payloads; the
relay's CPU time (all threads, from C{/proc}) over the run divided by the
requests answered.  Every process it starts is ended by pid.
"""

import argparse
import os
import platform
import sys
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BEGIN = "<!-- coalesce:begin -->"
END = "<!-- coalesce:end -->"

SIG = b"ZRLY\x01"
REQ = b"REQ"
BATCH = b"BAT"
BUDGET = 200

from baseline import _NOBLOCK, recvRaw, sendRaw  # noqa: E402

_pack = msgpack.Packer(use_bin_type=True).pack
_unpack = msgpack.unpackb


def cpuSeconds(pid):
    """
    @return: user + system CPU seconds of process C{pid}, all threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay(bind, connect):
    """
    Front ROUTER at C{bind}, back DEALER to C{connect}: rewrite each
    request's id (one per message, or each item of a batch) on the way in,
    and each answer's id on the way out.
    """
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    front.bind(bind)
    back = ctx.socket(zmq.DEALER)
    back.connect(connect)
    for s in (front, back):
        s.sndhwm = s.rcvhwm = 10000
    print("ready: baseline coalesce-relay endpoint=" + front.getsockopt(zmq.LAST_ENDPOINT).decode(),
          flush=True)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    counter = [0]

    def rewrite(header):
        h = _unpack(header, raw=False)
        counter[0] += 1
        h["id"] = counter[0]
        return _pack(h)

    def move(frames, routed):
        if routed:
            rid, frames = frames[0], frames[1:]
        if frames[1] == BATCH:
            items = _unpack(frames[2], raw=False)
            for item in items:
                item[1] = rewrite(item[1])
            frames = [frames[0], BATCH, _pack(items)]
        else:
            frames = [frames[0], frames[1], rewrite(frames[2]), frames[3]]
        return frames, (rid if routed else None)

    # One client at a time: answers go to whoever asked last.
    origin = None
    while True:
        for sock, _ in poller.poll():
            for _ in range(BUDGET):
                try:
                    frames = recvRaw(sock, _NOBLOCK)
                except zmq.Again:
                    break
                if sock is front:
                    frames, origin = move(frames, True)
                    sendRaw(back, frames)
                else:
                    frames, _ = move(frames, False)
                    sendRaw(front, [origin] + frames)


def drive(client, echo, batch, seconds, window=100, payload=b"x" * 100):
    """
    Keep C{window} requests outstanding through the relay for C{seconds},
    C{batch} per message (0: plain messages), then wait for the last
    answers (at most 5 s).

    @return: requests answered before C{seconds} were over.
    """
    header = _pack({"id": 1, "to": "echo", "ttl": 5000})

    def sendSome(n):
        if batch:
            while n > 0:
                k = min(batch, n)
                client.send_multipart([SIG, BATCH, _pack([[REQ, header, payload]] * k)])
                n -= k
        else:
            for _ in range(n):
                client.send_multipart([SIG, REQ, header, payload])

    poller = zmq.Poller()
    poller.register(client, zmq.POLLIN)
    poller.register(echo, zmq.POLLIN)
    sendSome(window)
    outstanding = window
    done = 0
    end = time.monotonic() + seconds
    drained = end + 5.0
    while outstanding and time.monotonic() < drained:
        running = time.monotonic() < end
        for sock, _ in poller.poll(100):
            for _ in range(BUDGET):
                try:
                    frames = recvRaw(sock, _NOBLOCK)
                except zmq.Again:
                    break
                if sock is echo:
                    sendRaw(echo, frames)
                else:
                    n = len(_unpack(frames[2])) if frames[1] == BATCH else 1
                    outstanding -= n
                    if running:
                        done += n
                        sendSome(n)
                        outstanding += n
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "relay"])
    parser.add_argument("--bind")
    parser.add_argument("--connect")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args(argv)
    if args.role == "relay":
        relay(args.bind, args.connect)
        return 0
    from children import Children
    from relaybench import machine, writeInto
    client = None

    batches = [int(b) for b in args.batches.split(",")]
    ctx = zmq.Context()
    echo = ctx.socket(zmq.ROUTER)
    echo.sndhwm = echo.rcvhwm = 10000
    echo.bind("tcp://127.0.0.1:*")
    echoEndpoint = echo.getsockopt(zmq.LAST_ENDPOINT).decode()
    children = Children("coalesce-")
    results = {}
    try:
        ready = children.start("relay", [
            sys.executable, os.path.abspath(__file__), "relay",
            "--bind", "tcp://127.0.0.1:*", "--connect", echoEndpoint,
        ])
        endpoint = ready["endpoint"]
        pid = children.pid("relay")
        client = ctx.socket(zmq.DEALER)
        client.sndhwm = client.rcvhwm = 10000
        client.connect(endpoint)
        drive(client, echo, 0, 0.3)
        for _ in range(args.rounds):
            for batch in [0] + batches:
                before = cpuSeconds(pid)
                started = time.monotonic()
                done = drive(client, echo, batch, args.seconds)
                elapsed = time.monotonic() - started
                cost = (cpuSeconds(pid) - before) / max(done, 1) * 1e6
                results.setdefault(batch, []).append((cost, done / elapsed))
                print(f"batch {batch}: {done} requests, {cost:.1f} us each", flush=True)
    finally:
        children.stopAll()
        for sock in (client, echo):
            if sock is not None:
                sock.close(linger=0)
        ctx.term()
    info = machine()
    load = os.getloadavg()[0]
    rows = []
    plain = sorted(c for c, _ in results[0])[len(results[0]) // 2]
    for batch in [0] + batches:
        costs = sorted(c for c, _ in results[batch])
        rates = sorted(r for _, r in results[batch])
        cost = costs[len(costs) // 2]
        label = "one request per message" if batch == 0 else f"{batch} requests per message"
        rows.append(f"| {label} | {cost:.1f} | {plain / cost:.2f}x | {rates[len(rates) // 2]:,.0f} |")
    block = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {info['nproc']} CPUs; Python "
        f"{platform.python_version()}, pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}. "
        f"Load average after the run: {load:.1f}.",
        "",
        f"Command: `python bench/coalesce.py{' --write ' + args.write if args.write else ''}`: "
        f"{args.rounds} rounds of {args.seconds:g} s per variant, 100 requests outstanding, "
        "100-byte payloads, medians.",
        "",
        "| relay moves | CPU us per request (request and answer) | cheaper than one per message | req/s |",
        "|---|---|---|---|",
    ] + rows)
    print(block)
    if args.write:
        writeInto(args.write, block, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
