"""
The flood benchmark: what one client sending as fast as it can does to the
others.

What it starts (every process by pid, every one ended at the end)::

    cloud <- proxy <- server      (real twistd -n processes, default limits)
    flooder                       (this script's C{flood} command, a process)

and, in this process, C{--clients} normal clients: raw pyzmq DEALERs that
say HELLO to the cloud and then send one request (echo, through cloud,
proxy and server) every C{--interval} seconds, one at a time, timing each
round trip.  It runs twice: I{quiet}, then with the flooder hammering the
cloud as one more client.  It reports, for each run, the normal clients'
requests, losses (no answer within 2 s, or an error) and p50/p99/max
latency; what the flooder sent and what the cloud did with it (answered,
refused over-limit with a retry-after, ignored in cooldown); and the
heartbeat timeouts any node logged (there should be none: reading is
bounded per reactor turn, so a flood cannot starve the timers).

Usage::

    python bench/floodbench.py                        # print the report
    python bench/floodbench.py --write docs/FLOOD.md  # and update the doc
    python bench/floodbench.py flood ENDPOINT --target SERVER [--seconds S] [--count N]
                                     [--sockets N] [--ids same|each|none]

With C{--write}, only the part of the file between the C{flood:begin} and
C{flood:end} markers is replaced.  The C{flood} command is the flooder alone
(the integration tests use it too): it says HELLO as a client, sends REQs
without waiting for answers until C{--count} or C{--seconds}, and prints one
JSON line with what it sent and received; C{--sockets} and C{--ids} spread
it over several connections, as one id, as one id each, or with no HELLO.
C{bench/attacks.py} runs the other attacks of issue 7 and uses this
flooder for its floods.
"""

import argparse
import json
import os
import platform
import re
import signal
import sys
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from zmqrelay.core import protocol# noqa: E402
from children import BenchError, Children  # noqa: E402

BEGIN = "<!-- flood:begin -->"
END = "<!-- flood:end -->"
SERVER_ID = "flood-server"
#: A normal client's request that got no answer within this is lost.
LOST_AFTER = 2.0
#: Log lines that mean a hop's heartbeats were late: a session dropped for
#: silence, on either side of any hop.
HEARTBEAT_TROUBLE = re.compile(r"heartbeat-timeout|lost: heartbeat")


# ---------------------------------------------------------------------------
# The flooder


def _hello(sock, clientId, timeout=10.0):
    sock.send_multipart(protocol.encode(protocol.HELLO, {
        "id": clientId, "role": protocol.CLIENT, "inc": os.urandom(8).hex(),
        "versions": list(protocol.SUPPORTED_VERSIONS), "hb": 1000, "liveness": 3,
    }))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(100):
            message = protocol.decode(sock.recv_multipart())
            if message.type == protocol.WELCOME:
                return message
            if message.type in (protocol.REJECT, protocol.ERROR):
                raise BenchError(f"hello refused: {message.header}")
    raise BenchError(f"no WELCOME within {timeout}s")


def flood(endpoint, target, seconds, count, size, clientId, out=sys.stdout, sockets=1, ids="same"):
    """
    Send REQs to C{target} through C{endpoint} as fast as possible, never
    waiting for answers, for at most C{seconds} and C{count} messages.

    @param sockets: how many DEALERs the flood is spread over (round
        robin), each on its own connection.
    @param ids: C{"same"}: every socket says HELLO as C{clientId} (one id
        on many connections); C{"each"}: socket I{i} says HELLO as
        C{clientId-i} (many ids); C{"none"}: no HELLO at all (a stranger's
        flood, answered at most with C{hello-first}).
    @return: a L{dict} of what was sent and received.
    """
    context = zmq.Context()
    socks = []
    summary = {"sent": 0, "full": 0, "replies": 0, "errors": {}, "maxRetryAfter": 0.0,
               "sockets": sockets, "ids": ids}

    def drain():
        for sock in socks:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) < 3:
                    continue
                if frames[1] == protocol.REPLY:
                    summary["replies"] += 1
                elif frames[1] == protocol.ERROR:
                    header = msgpack.unpackb(frames[2], raw=False)
                    code = str(header.get("code"))
                    summary["errors"][code] = summary["errors"].get(code, 0) + 1
                    retry = header.get("retry")
                    if isinstance(retry, (int, float)):
                        summary["maxRetryAfter"] = max(summary["maxRetryAfter"], retry)

    try:
        for i in range(sockets):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10000)
            sock.connect(endpoint)
            socks.append(sock)
            if ids == "same":
                _hello(sock, clientId)
            elif ids == "each":
                _hello(sock, f"{clientId}-{i}")
        out.write("flooding\n")
        out.flush()
        sig = protocol._SIG[protocol.CURRENT_VERSION]
        payload = b"f" * size
        pack = msgpack.Packer(use_bin_type=True).pack
        start = time.monotonic()
        deadline = start + seconds
        n = 0
        while n < count:
            if (n & 255) == 0:
                drain()
                if time.monotonic() >= deadline:
                    break
            header = pack({"id": n + 1, "to": target, "ttl": 5000})
            try:
                socks[n % sockets].send_multipart(
                    [sig, protocol.REQUEST, header, payload], zmq.NOBLOCK
                )
            except zmq.Again:
                summary["full"] += 1
                drain()
                if time.monotonic() >= deadline:
                    break
                continue
            n += 1
        summary["sent"] = n
        summary["seconds"] = round(time.monotonic() - start, 3)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            drain()
            time.sleep(0.01)
    finally:
        for sock in socks:
            sock.close(0)
        context.term()
    out.write(json.dumps(summary) + "\n")
    out.flush()
    return summary


# ---------------------------------------------------------------------------
# The nodes


# ---------------------------------------------------------------------------
# The normal clients


class NormalClient:
    """
    One raw DEALER client sending one request at a time.
    """

    def __init__(self, context, endpoint, name, curve=None):
        """
        @param curve: C{None}, or a function that makes the socket dial
            with CURVE (given the socket, before it connects).
        """
        self.name = name
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve(self.sock)
        self.sock.connect(endpoint)
        _hello(self.sock, name)
        self.rid = 0
        self.pending = None
        self.next = 0.0
        self.reset()

    def reset(self):
        self.latencies = []
        self.lost = 0
        self.errors = {}

    def send(self, now, target, payload=b"normal", sys=None):
        self.rid += 1
        header = {"id": self.rid, "to": target, "ttl": int(LOST_AFTER * 1000)}
        if sys:
            header["sys"] = sys
        self.sock.send_multipart(protocol.encode(protocol.REQUEST, header, payload))
        self.pending = (self.rid, now)

    def read(self, now):
        """
        Read what arrived; settle the pending request if answered.

        @return: the payload of the answer, or C{None}.
        """
        answer = None
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return answer
            message = protocol.decode(frames)
            if message.type not in (protocol.REPLY, protocol.ERROR):
                continue
            if self.pending is None or message.header.get("id") != self.pending[0]:
                continue
            if message.type == protocol.REPLY:
                self.latencies.append(now - self.pending[1])
                answer = message.payload
            else:
                code = message.header.get("code")
                self.errors[code] = self.errors.get(code, 0) + 1
                self.lost += 1
            self.pending = None

    def expire(self, now):
        if self.pending is not None and now - self.pending[1] > LOST_AFTER:
            self.lost += 1
            self.pending = None

    def ask(self, target, sys=None, timeout=5.0):
        """
        One request, waited for synchronously.

        @return: the reply payload.
        """
        self.send(time.perf_counter(), target, b"", sys)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                answer = self.read(time.perf_counter())
                if answer is not None:
                    return answer
                if self.pending is None:
                    raise BenchError(f"{target} {sys}: {self.errors}")
        raise BenchError(f"no answer from {target!r} ({sys}) within {timeout}s")

    def close(self):
        self.sock.close(0)


def drive(clients, target, duration, interval):
    """
    Each client sends one request every C{interval} seconds (staggered), one
    at a time, for C{duration} seconds.
    """
    for c in clients:
        c.reset()
        c.pending = None
    poller = zmq.Poller()
    for c in clients:
        poller.register(c.sock, zmq.POLLIN)
    bySocket = {c.sock: c for c in clients}
    start = time.perf_counter()
    end = start + duration
    for i, c in enumerate(clients):
        c.next = start + interval * i / len(clients)
    while True:
        now = time.perf_counter()
        if now >= end and all(c.pending is None for c in clients):
            break
        if now >= end + LOST_AFTER + 0.5:
            break
        for c in clients:
            c.expire(now)
            if c.pending is None and now < end and now >= c.next:
                c.send(now, target)
                c.next += interval
                if c.next < now:
                    c.next = now + interval
        due = min([c.next for c in clients if c.pending is None] + [now + 0.02])
        timeout = max(0.0, min(due - now, 0.02))
        for sock, _ in poller.poll(timeout * 1000):
            bySocket[sock].read(time.perf_counter())
    for c in clients:
        poller.unregister(c.sock)


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def summarize(clients):
    latencies = [x for c in clients for x in c.latencies]
    errors = {}
    for c in clients:
        for code, n in c.errors.items():
            errors[code] = errors.get(code, 0) + n
    return {
        "answered": len(latencies),
        "lost": sum(c.lost for c in clients),
        "errors": errors,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
    }


def heartbeatTrouble(children):
    return sum(
        1 for name in ("cloud", "proxy", "server") for line in children.lines(name)
        if HEARTBEAT_TROUBLE.search(line)
    )


# ---------------------------------------------------------------------------
# The run


def run(args):
    children = Children("floodbench-")
    context = zmq.Context()
    clients = []
    try:
        loop = "tcp://127.0.0.1:*"
        common = ["--heartbeat", str(args.heartbeat)] + args.node_options.split()
        cloud = children.twistd("cloud", "zmqrelay-cloud", [
            "--id", "flood-cloud", "--listen", loop, "--pub", loop, "--sub", loop,
        ] + common)
        proxy = children.twistd("proxy", "zmqrelay-proxy", [
            "--id", "flood-proxy", "--listen", loop, "--pub", loop, "--sub", loop,
            "--cloud", cloud["control"],
        ] + common)
        children.twistd("server", "zmqrelay-server", [
            "--id", SERVER_ID, "--listen", loop, "--pub", loop, "--proxy", proxy["control"],
        ] + common)
        for i in range(args.clients):
            clients.append(NormalClient(context, cloud["control"], f"normal-{i}"))
        # Routes propagate asynchronously: wait until the server answers.
        deadline = time.monotonic() + 20.0
        while True:
            try:
                clients[0].ask(SERVER_ID, timeout=1.0)
                break
            except BenchError:
                if time.monotonic() > deadline:
                    raise
                clients[0].reset()
                time.sleep(0.1)

        results = {}
        drive(clients, SERVER_ID, 1.0, args.interval)  # warm-up, not counted
        before = heartbeatTrouble(children)
        drive(clients, SERVER_ID, args.seconds, args.interval)
        results["quiet"] = summarize(clients)
        results["quiet"]["heartbeat"] = heartbeatTrouble(children) - before

        children.spawn("flooder", [
            sys.executable, os.path.abspath(__file__), "flood", cloud["control"],
            "--target", SERVER_ID, "--seconds", str(args.seconds + 1.0),
            "--count", str(args.flood_count), "--size", str(args.size),
        ])
        children.waitFor("flooder", r"^flooding")
        before = heartbeatTrouble(children)
        drive(clients, SERVER_ID, args.seconds, args.interval)
        results["flood"] = summarize(clients)
        children.wait("flooder", args.seconds + 30.0)
        flooder = json.loads(children.lines("flooder")[-1])
        results["flood"]["heartbeat"] = heartbeatTrouble(children) - before
        clients[0].reset()
        stats = msgpack.unpackb(clients[0].ask("", sys="stats"), raw=False)
        return results, flooder, stats
    finally:
        for c in clients:
            c.close()
        context.term()
        children.stopAll()


def _ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def report(results, flooder, stats, args, command):
    rate = flooder["sent"] / flooder["seconds"] if flooder.get("seconds") else 0.0
    lines = [
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"libzmq {zmq.zmq_version()}; load average {stats['load']:.1f} around the run "
        f"(other work on the machine competes for the same cores).",
        "",
        f"{args.clients} normal clients, one request at a time every {_ms(args.interval)} each, "
        f"client -> cloud -> proxy -> server, {args.seconds:g} s per run; nodes with "
        f"`{f'--heartbeat {args.heartbeat:g} {args.node_options}'.strip()}` "
        f"and otherwise their default limits.",
        "",
        "| run | answered | lost | p50 | p99 | max | heartbeat timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("quiet", "flood"):
        r = results[name]
        lost = str(r["lost"]) + (f" {r['errors']}" if r["errors"] else "")
        lines.append(
            f"| {name} | {r['answered']} | {lost} | {_ms(r['p50'])} | {_ms(r['p99'])} | "
            f"{_ms(r['max'])} | {r['heartbeat']} |"
        )
    errors = ", ".join(f"{n} {code}" for code, n in sorted(flooder["errors"].items())) or "none"
    lines += [
        "",
        f"The flooder sent {flooder['sent']} requests in {flooder['seconds']:g} s "
        f"({rate:,.0f}/s, {args.size}-byte payloads; its send queue was full "
        f"{flooder['full']} times); it got {flooder['replies']} replies and errors: "
        f"{errors} (largest retry-after {flooder['maxRetryAfter']:g} s).",
        f"The cloud counted: received {stats.get('front.received')}, "
        f"refused {stats.get('front.refused')} (over-limit, with a retry-after), "
        f"ignored {stats.get('front.ignored')} (in cooldown), "
        f"forwarded {stats.get('forward.forwarded')}.",
    ]
    return "\n".join(lines)


def writeInto(path, block):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = f"# Flood\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise BenchError(f"{path} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "flood":
        parser = argparse.ArgumentParser(prog="floodbench.py flood")
        parser.add_argument("endpoint")
        parser.add_argument("--target", required=True)
        parser.add_argument("--seconds", type=float, default=5.0)
        parser.add_argument("--count", type=int, default=1000000)
        parser.add_argument("--size", type=int, default=16)
        parser.add_argument("--id", default=f"flooder-{os.getpid()}")
        parser.add_argument("--sockets", type=int, default=1,
                            help="DEALERs to spread the flood over")
        parser.add_argument("--ids", choices=("same", "each", "none"), default="same",
                            help="HELLO as one id on every socket, one id per socket, or not at all")
        a = parser.parse_args(argv[1:])
        flood(a.endpoint, a.target, a.seconds, a.count, a.size, a.id, sockets=a.sockets, ids=a.ids)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--flood-count", type=int, default=2000000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--node-options", default="",
                        help="extra options for every node, e.g. '--rate 2000 --burst 200'")
    parser.add_argument("--write", metavar="PATH")
    args = parser.parse_args(argv)

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    load = os.getloadavg()[0]
    results, flooder, stats = run(args)
    stats["load"] = max(load, os.getloadavg()[0])
    command = "python bench/floodbench.py " + " ".join(argv)
    block = report(results, flooder, stats, args, command.strip())
    print(block)
    if args.write:
        writeInto(args.write, block)


if __name__ == "__main__":
    main()
