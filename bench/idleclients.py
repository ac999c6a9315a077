"""
Many idle clients on one cloud: how fast they are all welcomed, what they
cost the cloud in CPU and memory once they only heartbeat, and what the same
connections cost a bare pyzmq ROUTER (issue 13, part 4).

    .venv/bin/python bench/idleclients.py --clients 10000 [--counts 1000,3000]
        [--json PATH] [--write docs/BENCHMARKS.md]

The clients are raw pyzmq DEALERs spread over a few load processes (this
file, run as C{idleclients.py load ...}); each says HELLO (PROTOCOL.md 6.1),
then sends HB every heartbeat as a real client does.  C{--counts} repeats
the load at other client counts, each against a fresh cloud and a fresh bare
ROUTER, for a second table: how the cost grows with the client count.

Every process it starts is ended by pid (and dies with it: the nodes, load
processes and the baseline ROUTER ask Linux to kill them when it ends).
Bounded: each phase has a deadline.
"""

import argparse
import json
import os
import signal
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


def _dieWithParent():
    """
    Ask Linux to SIGKILL this process when its parent ends, so that a
    benchmark killed outright leaves no load process or baseline running.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def load(args):
    """
    One load process: C{--count} DEALERs, HELLO each, then HB every
    heartbeat until SIGTERM or until C{--seconds} have passed; print a JSON
    summary.
    """
    _dieWithParent()
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
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
    while time.monotonic() < deadline and not stopping:
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
    The baseline: a bare pyzmq ROUTER that reads and drops everything; with
    C{--heartbeats}, the floor of keeping the protocol's liveness instead
    (L{heartbeatFloor}).
    """
    _dieWithParent()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"ready: baseline router endpoint=tcp://127.0.0.1:{port}", flush=True)
    if args.heartbeats:
        return heartbeatFloor(sock, args.heartbeat)
    while True:
        if sock.poll(1000):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break


def heartbeatFloor(sock, heartbeat):
    """
    The least a node written in Python over pyzmq can do to keep every
    idle peer's session alive by PROTOCOL.md 7: read each message with
    pyzmq's compiled C{Socket.recv} (as C{zmqrelay.edge._zmq} does), note
    when each peer was last heard from, and every half heartbeat send a
    pre-encoded HB (compiled C{Socket.send}, one call per frame) to each
    peer that was sent nothing for a whole heartbeat, and forget the peers
    silent for three.  No session, no decoding, no limits: the floor
    under the cloud's own cost, measured on the same load.
    """
    recv, send = zmq.backend.Socket.recv, zmq.backend.Socket.send
    noblock, more = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)
    beat = protocol.encode(protocol.HEARTBEAT, {})
    head, last = beat[:-1], beat[-1]
    heard = {}
    sent = {}
    nextCheck = time.monotonic() + heartbeat / 2
    while True:
        wait = max(0.0, nextCheck - time.monotonic())
        if sock.poll(wait * 1000):
            now = time.monotonic()
            while True:
                try:
                    frame = recv(sock, noblock, False)
                except zmq.Again:
                    break
                peer = frame.bytes
                while frame.more:
                    frame = recv(sock, noblock, False)
                heard[peer] = now
                if peer not in sent:
                    sent[peer] = 0.0
        now = time.monotonic()
        if now < nextCheck:
            continue
        nextCheck = now + heartbeat / 2
        due, gone = now - heartbeat, now - 3 * heartbeat
        lost = []
        for peer, when in sent.items():
            if heard[peer] < gone:
                lost.append(peer)
            elif when <= due:
                try:
                    send(sock, peer, more, True)
                    for frame in head:
                        send(sock, frame, more, True)
                    send(sock, last, noblock, True)
                except zmq.ZMQError:
                    pass
                sent[peer] = now
        for peer in lost:
            del sent[peer], heard[peer]


def processesFor(clients, args):
    """
    @return: how many load processes carry C{clients}: C{--processes} if it
        was given (at most one per client), else one per 1,000 clients (a
        context holds about 1,000 sockets).
    """
    if args.processes:
        return max(1, min(args.processes, clients))
    return max(1, (clients + 999) // 1000)


def presenceCount(endpoint, prefixes, timeout=10.0):
    """
    Ask a node's C{sys presence} and count the clients it lists whose id
    starts with one of C{prefixes}.

    @return: the count, or a L{str} saying why there is none.
    """
    try:
        listed = msgpack.unpackb(attacks.ask(endpoint, "", "presence", timeout=timeout), raw=False)
    except BenchError as e:
        return f"no answer: {e}"
    prefixes = tuple(prefixes)
    return sum(1 for clientId in listed if clientId.startswith(prefixes))


def measure(children, name, pid, endpoint, clients, connect, steady, args, baseline=False, presenceAt=()):
    """
    Run the load of C{clients} idle clients against one node: C{connect}
    seconds to connect, then C{steady} seconds measured; the load processes
    are told to end (SIGTERM) once the node's counters are read, and the
    clients listed by each node of C{presenceAt} (name, control endpoint)
    counted.

    @return: the node's figures.
    """
    rssBefore = _rss(pid)
    processes = processesFor(clients, args)
    perProcess = (clients + processes - 1) // processes
    # A bound for the load processes only: they end when told to, below.
    seconds = connect + steady + 60
    loads = []
    for p in range(processes):
        count = min(perProcess, clients - p * perProcess)
        if count <= 0:
            break
        argv = [sys.executable, os.path.abspath(__file__), "load", endpoint,
                "--count", str(count), "--heartbeat", str(args.heartbeat),
                "--seconds", str(seconds), "--prefix", f"{name}{p}"]
        if baseline:
            argv.append("--baseline")
        loads.append(f"{name}-load{p}")
        children.spawn(loads[-1], argv)
    time.sleep(connect)
    cpu0, io0, t0 = _cpuSeconds(pid), _cpuSeconds(pid, "ZMQbg/IO"), time.monotonic()
    time.sleep(steady)
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
    prefixes = [f"{name}{p}-" for p in range(len(loads))]
    presence = {node: presenceCount(where, prefixes) for node, where in presenceAt}
    for loadName in loads:
        try:
            os.kill(children.pid(loadName), signal.SIGTERM)
        except ProcessLookupError:
            pass
    results = []
    for loadName in loads:
        children.wait(loadName, 30)
        for line in children.lines(loadName):
            if line.startswith("{"):
                results.append(json.loads(line))
    if len(results) != len(loads):
        raise BenchError(f"{len(loads) - len(results)} of {len(loads)} load processes printed no summary")
    return {
        "clients": clients,
        "welcomed": sum(r["welcomed"] for r in results),
        "lastWelcome": max((r["lastWelcome"] or 0) for r in results) if results else None,
        "retries": sum(r["retries"] for r in results),
        "byes": sum(r["byes"] for r in results),
        "reasons": _sumDicts(r.get("reasons", {}) for r in results),
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "io": (io1 - io0) / (t1 - t0),
        "rssPerClient": (rss - rssBefore) / clients,
        "counters": {k: v for k, v in counters.items() if k.startswith("front.") and v},
        "presence": presence,
    }


def measurePair(args, clients, connect, steady):
    """
    Measure C{clients} idle clients on a fresh cloud (with a proxy attached,
    whose presence must list them all too), then the same load on a fresh
    bare pyzmq ROUTER, then on the heartbeat floor (L{heartbeatFloor}); each
    is stopped before the next starts.

    @return: a L{dict}: the count, its phases, C{cloud}, C{router} and
        C{floor} (as L{measure} returns them) and C{ratio}, the cloud's RSS
        per client over the ROUTER's.
    """
    pair = {"clients": clients, "connect": connect, "steady": steady,
            "processes": processesFor(clients, args)}
    children = Children("idle-")
    try:
        endpoint = children.twistd("cloud", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*",
            "--sub", "tcp://127.0.0.1:*", "--heartbeat", str(args.heartbeat),
        ] + args.node_options.split())["control"]
        proxy = children.twistd("proxy", "zmqrelay-proxy", [
            "--id", "proxy", "--cloud", endpoint, "--listen", "tcp://127.0.0.1:*",
            "--pub", "tcp://127.0.0.1:*", "--sub", "tcp://127.0.0.1:*", "--heartbeat", str(args.heartbeat),
        ] + args.node_options.split())["control"]
        pair["cloud"] = measure(children, "c", children.pid("cloud"), endpoint, clients, connect, steady, args,
                                presenceAt=[("cloud", endpoint), ("proxy", proxy)])
    finally:
        children.stopAll()
    children = Children("idle-")
    try:
        endpoint = children.start("router", [sys.executable, os.path.abspath(__file__), "router"])["endpoint"]
        pair["router"] = measure(children, "r", children.pid("router"), endpoint, clients, connect, steady,
                                 args, True)
    finally:
        children.stopAll()
    children = Children("idle-")
    try:
        endpoint = children.start("floor", [
            sys.executable, os.path.abspath(__file__), "router", "--heartbeats",
            "--heartbeat", str(args.heartbeat),
        ])["endpoint"]
        pair["floor"] = measure(children, "f", children.pid("floor"), endpoint, clients, connect, steady,
                                args, True)
    finally:
        children.stopAll()
    pair["ratio"] = pair["cloud"]["rssPerClient"] / max(pair["router"]["rssPerClient"], 1)
    return pair


def countsConnect(clients):
    """
    @return: the seconds a C{--counts} run allows its clients to connect:
        at least 5, and 1 per 400 clients.
    """
    return max(5.0, clients / 400)


def _presenceGoal(node):
    """
    @return: C{(measured, met)} for the presence goal: the clients the cloud
        and its proxy list, against those the load processes had welcomed.
    """
    presence = node.get("presence") or {}
    if not presence:
        return "not measured", False
    listed = ", ".join(
        f"{where} {count:,}" if isinstance(count, int) else f"{where}: {count}"
        for where, count in sorted(presence.items())
    )
    met = all(count == node["welcomed"] == node["clients"] for count in presence.values())
    return f"{listed} listed, of {node['welcomed']:,} welcomed", met


def _growthTable(figures):
    """
    @return: the lines of the second table: one row per client count.
    """
    rows = figures["counts"]
    main = figures["clients"]
    others = [r for r in rows if r["clients"] != main]
    lines = [
        "",
        "### How the cost grows with client count",
        "",
        f"One row per client count, each measured on a fresh cloud, then on a fresh bare pyzmq ROUTER and on "
        f"the heartbeat floor "
        f"under the same load. The {main:,}-client row is the run above"
        + (f"; the others allow max(5, clients / 400) s to connect and then measure "
           f"{others[0]['steady']:g} s of steady state" if others else "")
        + f". CPU per client is the cloud's steady CPU divided by its clients: microseconds of CPU per "
        f"second per idle client (one HB each way every {figures['heartbeat']:g} s). RSS per client is "
        "what each process grew over its run, divided by the clients.",
        "",
        "| clients | welcomed (cloud) | last welcome | cloud CPU (one core) | of which libzmq I/O "
        "| bare ROUTER CPU | heartbeat floor CPU | cloud CPU per client | RSS per client, cloud / ROUTER "
        "| ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows:
        n, cloud, router = row["clients"], row["cloud"], row["router"]
        last = f"{cloud['lastWelcome']:.1f} s" if cloud["lastWelcome"] else "-"
        lines.append(
            f"| {n:,} | {cloud['welcomed']:,} | {last} | {cloud['cpu'] * 100:.0f} % | "
            f"{cloud['io'] * 100:.0f} % | {router['cpu'] * 100:.0f} % | "
            f"{row['floor']['cpu'] * 100:.0f} % | {cloud['cpu'] / n * 1e6:.1f} us/s | "
            f"{cloud['rssPerClient'] / 1024:.1f} / {router['rssPerClient'] / 1024:.1f} KiB | "
            f"{row['ratio']:.2f}x |"
        )
        if cloud["welcomed"] < n:
            notes.append(f"At {n:,} clients only {cloud['welcomed']:,} were welcomed.")
        elif (cloud["lastWelcome"] or 0) > row["connect"]:
            notes.append(
                f"At {n:,} clients the last WELCOME came {cloud['lastWelcome']:.1f} s after the start, "
                f"after the {row['connect']:g} s allowed: its steady phase still held connection work."
            )
        if cloud["byes"]:
            notes.append(f"At {n:,} clients the cloud sent {cloud['byes']} BYEs ({cloud['reasons']}).")
        listed, complete = _presenceGoal(cloud)
        if not complete:
            notes.append(f"At {n:,} clients `presence`: {listed}.")
    if not notes:
        notes.append("Every client of every row was welcomed within its connect phase, and listed by the "
                     "`presence` of the cloud and of its proxy; no BYE was sent.")
    return lines + [""] + [" ".join(notes)]


def _report(figures):
    """
    @return: the Markdown section for docs/BENCHMARKS.md, made from the
        figures L{main} collects (and writes with C{--json}).
    """
    import platform

    cloud, router = figures["cloud"], figures["router"]
    load = figures["load"]
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
        ("`presence` complete at cloud and proxy",) + _presenceGoal(cloud),
    ]
    lines = [
        f"Generated by `{figures['command']}` on {figures['date']}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, libzmq {zmq.zmq_version()}; load average {load['before']:.1f} before "
        f"the run, {load['after']:.1f} at the end (the load processes, {figures['processes']} for "
        f"{figures['clients']:,} clients, share the same {os.cpu_count()} cores).",
        "",
        f"{figures['clients']} raw pyzmq DEALERs connect at once, say HELLO and then only heartbeat "
        f"(every {figures['heartbeat']:g} s); HELLO again after 3 s without WELCOME. Steady state "
        f"measured over {figures['steady']:g} s after {figures['connect']:g} s. A proxy is attached to the "
        "cloud, as a site's would be; after the steady phase both are asked `sys presence`.",
        "",
        "| | welcomed | last welcome | HELLO retries | CPU (one core) | of which libzmq I/O | RSS per client |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    floor = figures["floor"]
    for name, f in (("zmqrelay cloud", cloud), ("bare pyzmq ROUTER", router),
                    ("heartbeat floor (pyzmq)", floor)):
        last = f"{f['lastWelcome']:.1f} s" if f["lastWelcome"] else "-"
        lines.append(
            f"| {name} | {f['welcomed'] if name == 'zmqrelay cloud' else '-'} | {last} | "
            f"{f['retries']} | {f['cpu'] * 100:.0f} % | {f['io'] * 100:.0f} % | "
            f"{f['rssPerClient'] / 1024:.1f} KiB |"
        )
    lines += [
        "",
        "The bare ROUTER reads and drops every message (`recv_multipart`). The heartbeat floor "
        "(`idleclients.py router --heartbeats`) is the least a node in Python over pyzmq can do to keep "
        "these sessions alive by PROTOCOL.md 7: it reads every message with the compiled `Socket.recv` "
        "zmqrelay uses, notes when each peer was last heard from, and every half heartbeat sends a "
        "pre-encoded HB to each peer it sent nothing for a whole heartbeat; no sessions, decoding or limits.",
        "",
        "| goal | measured | |", "|---|---|---|",
    ]
    for goal, measured, ok in goals:
        lines.append(f"| {goal} | {measured} | {'met' if ok else '**not met**'} |")
    lines += [
        "",
        f"The CPU goal against the floor: the heartbeat floor alone used {floor['cpu'] * 100:.0f} % of a core "
        f"({floor['io'] * 100:.0f} % in libzmq's I/O thread) on the same load; the cloud used "
        f"{cloud['cpu'] / max(floor['cpu'], 1e-9):.2f}x the floor.",
    ]
    lines += _growthTable(figures)
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


def _parseCounts(text):
    """
    @return: the client counts of C{--counts} (C{"1000,3000"}), as L{int}s.
    @raise ValueError: if one is not a positive integer.
    """
    counts = [int(v) for v in text.split(",") if v.strip()]
    if any(n <= 0 for n in counts):
        raise ValueError(text)
    return counts


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
    p = sub.add_parser("router")
    p.add_argument("--heartbeats", action="store_true",
                   help="keep every peer's liveness as PROTOCOL.md 7 asks, as cheaply as pyzmq can")
    p.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--counts", default="",
                        help="other client counts (e.g. 1000,3000), each measured on a fresh cloud and "
                             "ROUTER with max(5, count/400) s to connect, for the growth table")
    parser.add_argument("--processes", type=int, default=0,
                        help="load processes (default: one per 1000 clients; a context holds ~1000 sockets)")
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--connect", type=float, default=30.0, help="seconds allowed to welcome all")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady state measured")
    parser.add_argument("--node-options", default="")
    parser.add_argument("--json")
    parser.add_argument("--write", help="write the report into this file's idle block")
    args = parser.parse_args()
    if args.command == "load":
        return load(args)
    if args.command == "router":
        return router(args)
    try:
        counts = _parseCounts(args.counts)
    except ValueError:
        parser.error(f"--counts: not a list of positive client counts: {args.counts!r}")

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    command = " ".join(["python", "bench/idleclients.py"] + sys.argv[1:])
    loadBefore = os.getloadavg()[0]
    runs = [(args.clients, args.connect)]
    runs += [(n, countsConnect(n)) for n in sorted(set(counts)) if n != args.clients]
    try:
        pairs = [measurePair(args, n, connect, args.steady) for n, connect in runs]
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    first = pairs[0]
    figures = {
        "command": command, "date": time.strftime("%Y-%m-%d"), "heartbeat": args.heartbeat,
        "load": {"before": loadBefore, "after": os.getloadavg()[0]},
        "clients": args.clients, "connect": args.connect, "steady": args.steady,
        "processes": first["processes"],
        "cloud": first["cloud"], "router": first["router"], "floor": first["floor"], "ratio": first["ratio"],
        "counts": sorted(pairs, key=lambda pair: pair["clients"]),
    }
    print(json.dumps(figures, indent=1))
    if args.write:
        _write(args.write, _report(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
