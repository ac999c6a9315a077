"""
Where a lone request's time goes: the one-relay path (client -> relay ->
end), one request at a time, per thread, for four systems:

  - zmqrelay: client -> proxy -> server;
  - the Twisted floor: a relay and an echo that run on Twisted and
    zmqrelay's socket adapter and move frames with no protocol at all (this
    file, run as C{onebyone.py relay} and C{onebyone.py echo}): the least a
    node on this stack can cost;
  - pyzmq-raw: the same without Twisted (C{bench/baseline.py --raw});
  - majortomo: client -> broker -> worker (C{bench/baseline.py mdbroker,
    mdworker}), if it is installed (the C{bench} extra) and not left out
    with C{--no-majortomo}.

The first table gives each chain's round trips per second and its ratio to
majortomo's: issue 13 asks for zmqrelay at 1x or more, and the Twisted
floor tells how much room this stack leaves for the protocol's work.

    python bench/onebyone.py [--rounds 3] [--seconds 2] [--no-majortomo] [--write docs/BENCHMARKS.md]

For the relay and the end of each system it reads, for every thread, from
C{/proc/<pid>/task/<tid>/}: the voluntary and involuntary context switches
(C{status}), the time the scheduler ran it (C{schedstat}, exact) and its
user and system time (C{stat}, in clock ticks), before and after a run of
round trips, and divides by the round trips.  The same number of voluntary
switches per request means both systems sleep and wake as often (a relay's
main thread twice a request, once per message); the user and system times
then say whether the difference is in the kernel (system calls, wakeups) or
in the process itself (Python and libzmq in user space).

A second table takes the end alone (the direct path: client -> end) and puts
a third end beside zmqrelay's server and the raw echo: a Twisted reactor
echoing frames on zmqrelay's own socket adapter (C{zmqrelay.edge._zmq}) with
nothing else (this file, run as C{onebyone.py echo}), which tells what the
reactor and the adapter cost from what the server's own logic costs.

The rounds alternate the systems, so that other work on the machine hits
them alike; figures are medians over the rounds.  Every process it starts is
ended by pid.
"""

import argparse
import os
import signal
import sys
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BEGIN = "<!-- onebyone:begin -->"
END = "<!-- onebyone:end -->"

#: The clock ticks of C{/proc/<pid>/task/<tid>/stat}, in microseconds.
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def threadFigures(pid):
    """
    @return: C{{thread name: [voluntary, involuntary, run us, user us,
        system us]}} of process C{pid}, threads of one name summed.
    """
    figures = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(base + "/comm") as f:
                name = f.read().strip()
            with open(base + "/status") as f:
                status = f.read()
            with open(base + "/schedstat") as f:
                run = int(f.read().split()[0]) / 1000.0
            with open(base + "/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            # A thread that ended meanwhile.
            continue
        voluntary = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
        involuntary = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        row = figures.setdefault(name, [0.0] * 5)
        for i, value in enumerate((voluntary, involuntary, run, int(stat[11]) * TICK_US,
                                   int(stat[12]) * TICK_US)):
            row[i] += value
    return figures


def perRequest(before, after, count):
    """
    @return: C{after - before} per request, for each thread name in both.
    """
    return {
        name: [(after[name][i] - before[name][i]) / count for i in range(5)]
        for name in after if name in before
    }


def measure(client, pids, seconds, payload):
    """
    One run of round trips, one at a time.

    @return: C{(round trips, p50 seconds, {role: {thread: figures}})}.
    """
    before = {role: threadFigures(pid) for role, pid in pids.items()}
    times = client.latency(10 ** 6, seconds, payload)
    after = {role: threadFigures(pid) for role, pid in pids.items()}
    count = max(len(times), 1)
    times.sort()
    return len(times), times[len(times) // 2], {
        role: perRequest(before[role], after[role], count) for role in pids
    }


def twistedEcho(bind):
    """
    The Twisted echo: a ROUTER on zmqrelay's socket adapter that sends every
    message back as it came, and nothing else.  Runs until killed.
    """
    from baseline import _dieWithParent
    from twisted.internet import reactor

    from zmqrelay.edge._zmq import SocketFactory

    _dieWithParent()

    factory = SocketFactory(reactor)
    holder = []
    sock = factory.socket("router", lambda frames: holder[0].send(frames))
    holder.append(sock)
    endpoint = sock.bind(bind)
    print(f"ready: baseline twisted-echo endpoint={endpoint}", flush=True)
    reactor.run()


def twistedRelay(bind, connect):
    """
    The Twisted relay: a ROUTER bound to C{bind} and a DEALER connected to
    C{connect}, on zmqrelay's socket adapter, each message moved as it came
    to the other socket and nothing else.  What it reads in one read is sent
    when that read ends, as zmqrelay's nodes send their outboxes
    (L{zmqrelay.interfaces.ISocketFactory.flushSoon}).  With the Twisted echo
    behind it, it is the floor of a relay hop on this stack: a reactor, the
    adapter, and no protocol.  Runs until killed.
    """
    from baseline import _dieWithParent
    from twisted.internet import reactor

    from zmqrelay.edge._zmq import SocketFactory

    _dieWithParent()

    factory = SocketFactory(reactor)
    outbox = []

    def flush():
        sending, outbox[:] = list(outbox), []
        for sock, frames in sending:
            sock.send(frames)

    def forwardTo(name):
        def forward(frames):
            outbox.append((sockets[name], frames))
            factory.flushSoon(flush)
        return forward

    sockets = {"front": factory.socket("router", forwardTo("back")),
               "back": factory.socket("dealer", forwardTo("front"))}
    sockets["back"].connect(connect)
    endpoint = sockets["front"].bind(bind)
    print(f"ready: baseline twisted-relay endpoint={endpoint}", flush=True)
    reactor.run()


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def report(results, args, info, load, ends=None, note=None):
    """
    @return: the Markdown block: the round trips of each system on the
        one-relay path (against majortomo's, if it ran; else C{note} says
        why not), then one row per system, role and thread (and, with
        C{ends}, a table of the end alone, per system).
    """
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {info['nproc']} CPUs ({info['cpu']}), "
        f"Linux {info['kernel']}; Python {info['python']}, pyzmq {info['pyzmq']}, libzmq "
        f"{info['libzmq']}, Twisted {info['twisted']}. Load average before the run: {load[0]:.1f}, "
        f"after: {load[1]:.1f}.",
        "",
        f"Command: `python bench/onebyone.py{' --write ' + args.write if args.write else ''}`: the proxy "
        f"path, then each end alone on the direct path, one request at a time ({args.payload}-byte "
        f"payloads), {args.rounds} rounds of {args.seconds:g} s per system and path, alternating; "
        "medians over the rounds, per round trip.",
        "",
        "| system (one relay) | round trips/s | p50 round trip, us | / majortomo |",
        "|---|---:|---:|---:|",
    ]
    rates = {system: _median([count for count, _, _ in runs]) / args.seconds
             for system, runs in results.items() if runs}
    for system, runs in results.items():
        if not runs:
            continue
        p50 = _median([p for _, p, _ in runs]) * 1e6
        ratio = f"{rates[system] / rates['majortomo']:.2f}x" if rates.get("majortomo") else "-"
        lines.append(f"| {system} | {rates[system]:,.0f} | {p50:.0f} | {ratio} |")
    if "majortomo" not in rates:
        lines += ["", f"majortomo: not measured: {note or 'not installed'}."]
    lines += [
        "",
        "Per thread, per round trip:",
        "",
        "| system | p50 round trip, us | process | thread | voluntary switches | involuntary "
        "| run, us | user, us | system, us |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for system, runs in results.items():
        p50 = _median([p for _, p, _ in runs]) * 1e6
        for role in ("relay", "end"):
            names = set.intersection(*[set(r[role]) for _, _, r in runs])
            # The main thread first (named after the program), then libzmq's.
            for name in sorted(names, key=lambda n: (n.startswith("ZMQ"), n)):
                if not any(r[role][name][0] or r[role][name][2] for _, _, r in runs):
                    continue
                cells = [_median([r[role][name][i] for _, _, r in runs]) for i in range(5)]
                thread = name if name.startswith("ZMQ") else "main"
                lines.append(
                    f"| {system} | {p50:.0f} | {role} | {thread} | {cells[0]:.2f} | {cells[1]:.2f} "
                    f"| {cells[2]:.0f} | {cells[3]:.0f} | {cells[4]:.0f} |"
                )
    if ends:
        lines += [
            "",
            "The end alone (direct path: client -> end), main thread; the Twisted echo is a reactor echoing "
            "frames on zmqrelay's socket adapter and nothing else:",
            "",
            "| end | p50 round trip, us | voluntary switches | involuntary | run, us | user, us | system, us |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for system, runs in ends.items():
            p50 = _median([p for _, p, _ in runs]) * 1e6
            names = set.intersection(*[set(r["end"]) for _, _, r in runs])
            main = [n for n in names if not n.startswith("ZMQ")]
            if not main:
                continue
            cells = [_median([r["end"][main[0]][i] for _, _, r in runs]) for i in range(5)]
            lines.append(
                f"| {system} | {p50:.0f} | {cells[0]:.2f} | {cells[1]:.2f} | {cells[2]:.0f} "
                f"| {cells[3]:.0f} | {cells[4]:.0f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "echo", "relay"])
    parser.add_argument("--bind", default="tcp://127.0.0.1:*",
                        help="the endpoint of the Twisted echo or relay (echo, relay)")
    parser.add_argument("--connect", help="what the Twisted relay forwards to (relay)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="round trips per run, seconds")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes")
    parser.add_argument("--write", metavar="FILE", help="write the report into this file's onebyone block")
    parser.add_argument("--no-majortomo", action="store_true", help="leave majortomo's broker out")
    args = parser.parse_args(argv)
    if args.role == "echo":
        twistedEcho(args.bind)
        return 0
    if args.role == "relay":
        if not args.connect:
            parser.error("relay needs --connect")
        twistedRelay(args.bind, args.connect)
        return 0
    import relaybench
    from children import BenchError, Children

    def terminated(signum, frame):
        # As Ctrl-C: the children are ended below.
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    load = [os.getloadavg()[0]]
    context = zmq.Context()
    children = Children("onebyone-")
    payload = b"x" * args.payload
    results = {}
    ends = {"zmqrelay server": [], "Twisted echo": [], "pyzmq-raw echo": []}
    versus = {}

    def run(endpoint, kind, pids):
        # A fresh client each run: one idle while another system runs would
        # outlive its session (3 s without a message).
        if kind == "mdp":
            client = relaybench.MdpClient(context, endpoint)
        else:
            hello = kind == "zmqrelay"
            client = relaybench.LoadClient(context, endpoint, relaybench.SERVER_ID if hello else "echo",
                                           hello=hello)
        try:
            if kind == "zmqrelay":
                client.ready()
            client.latency(300, 0.5, payload)
            return measure(client, pids, args.seconds, payload)
        finally:
            client.sock.close(0)

    try:
        zmqrelay = relaybench.startZmqrelay(children)
        raw = relaybench.startBaseline(children, "raw")
        here = os.path.abspath(__file__)
        echo = children.start("twisted-echo", [sys.executable, here, "echo"])
        relay = children.start("twisted-relay", [sys.executable, here, "relay", "--connect", echo["endpoint"]])
        systems = [
            ("zmqrelay", zmqrelay.paths["proxy"], "zmqrelay",
             {"relay": children.pid("proxy"), "end": children.pid("server")}),
            ("Twisted floor", relay["endpoint"], "frames",
             {"relay": children.pid("twisted-relay"), "end": children.pid("twisted-echo")}),
            ("pyzmq-raw", raw.paths["proxy"], "frames",
             {"relay": children.pid("raw-relay2"), "end": children.pid("raw-echo")}),
        ]
        broker, versus["note"] = (None, "skipped (--no-majortomo)") if args.no_majortomo \
            else relaybench.startMajortomo(children)
        if broker is not None:
            systems.append(("majortomo", broker, "mdp",
                            {"relay": children.pid("md-broker"), "end": children.pid("md-worker")}))
        for name, *_ in systems:
            results[name] = []
        direct = [
            ("zmqrelay server", zmqrelay.paths["direct"], "zmqrelay", children.pid("server")),
            ("Twisted echo", echo["endpoint"], "frames", children.pid("twisted-echo")),
            ("pyzmq-raw echo", raw.paths["direct"], "frames", children.pid("raw-echo")),
        ]
        for _ in range(args.rounds):
            for name, endpoint, kind, pids in systems:
                count, p50, figures = run(endpoint, kind, pids)
                results[name].append((count, p50, figures))
                print(f"{name}: {count} round trips, p50 {p50 * 1e6:.0f} us", flush=True)
            for name, endpoint, kind, pid in direct:
                count, p50, figures = run(endpoint, kind, {"end": pid})
                ends[name].append((count, p50, figures))
                print(f"{name} alone: {count} round trips, p50 {p50 * 1e6:.0f} us", flush=True)
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    finally:
        children.stopAll()
        context.term()
    load.append(os.getloadavg()[0])
    block = report(results, args, relaybench.machine(), load, ends, versus.get("note"))
    print(block)
    if args.write:
        relaybench.writeInto(args.write, block, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
