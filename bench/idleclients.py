"""
Many idle clients on one cloud: how fast they are all welcomed, what they
cost the cloud in CPU and memory once they only heartbeat, and what the same
connections cost a bare pyzmq ROUTER (issue 13, part 4).

    .venv/bin/python bench/idleclients.py --clients 10000 [--write docs/BENCHMARKS.md]

The clients are raw pyzmq DEALERs spread over a few load processes (this
file, run as C{idleclients.py load ...}); each says HELLO (PROTOCOL.md 6.1),
then sends HB every heartbeat as a real client does.  Every process it starts
is ended by pid.  Bounded: each phase has a deadline.
"""

import argparse
import json
import os
import sys
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from children import BenchError, Children  # noqa: E402
import attacks  # noqa: E402
import msgpack  # noqa: E402

from zmqrelay.core import protocol  # noqa: E402


def _cpuSeconds(pid, thread=None):
    """
    @return: user + system CPU seconds of a process (or of its threads whose
        name starts with C{thread}).
    """
    tick = os.sysconf("SC_CLK_TCK")
    if thread is None:
        paths = [f"/proc/{pid}/stat"]
    else:
        paths = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip().startswith(thread):
                    paths.append(f"/proc/{pid}/task/{tid}/stat")
    total = 0
    for path in paths:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _sumDicts(dicts):
    total = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def load(args):
    """
    One load process: C{--count} DEALERs, HELLO each, then HB every
    heartbeat until C{--seconds} have passed; print a JSON summary.
    """
    ctx = zmq.Context()
    sockets = []
    hb = int(args.heartbeat * 1000)
    started = time.monotonic()
    welcomed = {}
    byes = 0
    reasons = {}
    poller = zmq.Poller()
    for i in range(args.count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(args.endpoint)
        sockets.append(sock)
        poller.register(sock, zmq.POLLIN)

    def hello(i):
        sockets[i].send_multipart(protocol.encode(protocol.HELLO, {
            "id": f"{args.prefix}-{i}", "role": protocol.CLIENT, "inc": "idle",
            "versions": [1], "hb": hb, "liveness": 3,
        }))

    for i in range(args.count):
        hello(i)
    helloSent = [started] * args.count
    heartbeat = protocol.encode(protocol.HEARTBEAT, {})
    index = {sock: i for i, sock in enumerate(sockets)}
    nextBeat = started + args.heartbeat
    retries = 0
    deadline = started + args.seconds
    while time.monotonic() < deadline:
        for sock, _ in poller.poll(50):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msgtype = frames[1] if len(frames) > 1 else None
                i = index[sock]
                if msgtype == protocol.WELCOME and i not in welcomed:
                    welcomed[i] = time.monotonic() - started
                elif msgtype in (protocol.BYE, protocol.ERROR, protocol.REJECT):
                    try:
                        header = protocol.decode(frames).header
                    except protocol.ProtocolError:
                        header = {}
                    why = f"{msgtype.decode()} {header.get('reason') or header.get('code')}"
                    reasons[why] = reasons.get(why, 0) + 1
                if msgtype == protocol.BYE:
                    byes += 1
                    welcomed.pop(i, None)
                    hello(i)
                    helloSent[i] = time.monotonic()
        now = time.monotonic()
        if now >= nextBeat:
            nextBeat = now + args.heartbeat
            for i, sock in enumerate(sockets):
                if i in welcomed:
                    sock.send_multipart(heartbeat, zmq.NOBLOCK)
                elif not args.baseline and now - helloSent[i] > 3 * args.heartbeat:
                    # No WELCOME within the hello timeout: say it again, as
                    # a client does.
                    retries += 1
                    hello(i)
                    helloSent[i] = now
                elif args.baseline:
                    sock.send_multipart(heartbeat, zmq.NOBLOCK)
    times = sorted(welcomed.values())
    print(json.dumps({
        "count": args.count, "welcomed": len(welcomed), "byes": byes, "retries": retries,
        "reasons": reasons,
        "lastWelcome": times[-1] if times else None,
    }), flush=True)
    for sock in sockets:
        sock.close(0)
    ctx.term()


def router(args):
    """
    The baseline: a bare pyzmq ROUTER that reads and drops everything.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"ready: baseline router endpoint=tcp://127.0.0.1:{port}", flush=True)
    while True:
        if sock.poll(1000):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break


def measure(children, name, pid, endpoint, args, baseline=False):
    """
    Run the load against one node; return its figures.
    """
    rssBefore = _rss(pid)
    perProcess = (args.clients + args.processes - 1) // args.processes
    seconds = args.connect + args.steady + 5
    for p in range(args.processes):
        count = min(perProcess, args.clients - p * perProcess)
        argv = [sys.executable, os.path.abspath(__file__), "load", endpoint,
                "--count", str(count), "--heartbeat", str(args.heartbeat),
                "--seconds", str(seconds), "--prefix", f"{name}{p}"]
        if baseline:
            argv.append("--baseline")
        children.spawn(f"{name}-load{p}", argv)
    start = time.monotonic()
    time.sleep(args.connect)
    cpu0, io0, t0 = _cpuSeconds(pid), _cpuSeconds(pid, "ZMQbg/IO"), time.monotonic()
    time.sleep(args.steady)
    cpu1, io1, t1 = _cpuSeconds(pid), _cpuSeconds(pid, "ZMQbg/IO"), time.monotonic()
    rss = _rss(pid)
    counters = {}
    if not baseline:
        for _ in range(5):
            try:
                counters = msgpack.unpackb(attacks.ask(endpoint, "", "stats", timeout=5.0), raw=False)
                break
            except BenchError as e:
                counters = {"front.error": str(e)}
    results = []
    for p in range(args.processes):
        children.wait(f"{name}-load{p}", seconds + 30)
        for line in children.lines(f"{name}-load{p}"):
            if line.startswith("{"):
                results.append(json.loads(line))
    del start
    welcomed = sum(r["welcomed"] for r in results)
    return {
        "clients": args.clients,
        "welcomed": welcomed,
        "lastWelcome": max((r["lastWelcome"] or 0) for r in results) if results else None,
        "retries": sum(r["retries"] for r in results),
        "byes": sum(r["byes"] for r in results),
        "reasons": _sumDicts(r.get("reasons", {}) for r in results),
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "io": (io1 - io0) / (t1 - t0),
        "rssPerClient": (rss - rssBefore) / args.clients,
        "counters": {k: v for k, v in counters.items() if k.startswith("front.") and v},
    }


def _report(figures, args):
    """
    @return: the Markdown section for docs/BENCHMARKS.md.
    """
    import platform

    cloud, router = figures["cloud"], figures["router"]
    load = os.getloadavg()[0]
    goals = [
        ("all welcomed within 30 s, default heartbeat",
         f"{cloud['welcomed']} of {cloud['clients']}, last after {cloud['lastWelcome']:.1f} s",
         cloud["welcomed"] == cloud["clients"] and (cloud["lastWelcome"] or 99) <= 30.0),
        ("cloud CPU in steady state <= 30 % of one core",
         f"{cloud['cpu'] * 100:.0f} % (libzmq I/O thread {cloud['io'] * 100:.0f} %)", cloud["cpu"] <= 0.30),
        ("RSS per client <= 1.25x a bare pyzmq ROUTER's",
         f"{cloud['rssPerClient'] / 1024:.1f} KiB vs {router['rssPerClient'] / 1024:.1f} KiB = "
         f"{figures['ratio']:.2f}x", figures["ratio"] <= 1.25),
        ("no live client expelled", f"{cloud['byes']} BYEs ({cloud['reasons'] or 'none'})", cloud["byes"] == 0),
    ]
    lines = [
        f"Generated by `python bench/idleclients.py --clients {args.clients} --write docs/BENCHMARKS.md` "
        f"on {time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"libzmq {zmq.zmq_version()}; load average {load:.1f} at the end (the "
        f"{args.processes} load processes share the same 2 cores).",
        "",
        f"{args.clients} raw pyzmq DEALERs connect at once, say HELLO and then only heartbeat "
        f"(every {args.heartbeat:g} s); HELLO again after 3 s without WELCOME. Steady state "
        f"measured over {args.steady:g} s after {args.connect:g} s.",
        "",
        "| | welcomed | last welcome | HELLO retries | CPU (one core) | of which libzmq I/O | RSS per client |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in (("zmqrelay cloud", cloud), ("bare pyzmq ROUTER", router)):
        last = f"{f['lastWelcome']:.1f} s" if f["lastWelcome"] else "-"
        lines.append(
            f"| {name} | {f['welcomed'] if name != 'bare pyzmq ROUTER' else '-'} | {last} | "
            f"{f['retries']} | {f['cpu'] * 100:.0f} % | {f['io'] * 100:.0f} % | "
            f"{f['rssPerClient'] / 1024:.1f} KiB |"
        )
    lines += ["", "| goal | measured | |", "|---|---|---|"]
    for goal, measured, ok in goals:
        lines.append(f"| {goal} | {measured} | {'met' if ok else '**not met**'} |")
    return "\n".join(lines)


def _write(path, block):
    begin, end = "<!-- bench:idle:begin -->", "<!-- bench:idle:end -->"
    if attacks.replaceBetween(path, begin, end, block):
        return
    with open(path) as f:
        text = f.read()
    text = text.rstrip() + f"\n\n## Ten thousand idle clients on one cloud\n\n{begin}\n{block}\n{end}\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("load")
    p.add_argument("endpoint")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--prefix", default="idle")
    p.add_argument("--baseline", action="store_true")
    sub.add_parser("router")
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=0,
                        help="load processes (default: one per 1000 clients; a context holds ~1000 sockets)")
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--connect", type=float, default=30.0, help="seconds allowed to welcome all")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady state measured")
    parser.add_argument("--node-options", default="")
    parser.add_argument("--json")
    parser.add_argument("--write", help="write the report into this file's idle block")
    args = parser.parse_args()
    if args.command is None and not args.processes:
        args.processes = max(1, (args.clients + 999) // 1000)
    if args.command == "load":
        return load(args)
    if args.command == "router":
        return router(args)
    children = Children("idle-")
    figures = {}
    try:
        cloud = children.twistd("cloud", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*",
            "--sub", "tcp://127.0.0.1:*", "--heartbeat", str(args.heartbeat),
        ] + args.node_options.split())
        endpoint = cloud["control"]
        figures["cloud"] = measure(children, "c", children.pid("cloud"), endpoint, args)
        children.stopAll()
        children = Children("idle-")
        endpoint = children.start(
            "router", [sys.executable, os.path.abspath(__file__), "router"]
        )["endpoint"]
        figures["router"] = measure(children, "r", children.pid("router"), endpoint, args, True)
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    finally:
        children.stopAll()
    figures["ratio"] = figures["cloud"]["rssPerClient"] / max(figures["router"]["rssPerClient"], 1)
    print(json.dumps(figures, indent=1))
    if args.write:
        _write(args.write, _report(figures, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
