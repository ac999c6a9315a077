"""
The relay benchmark: zmqrelay's three paths against a plain pyzmq relay
chain, pyzmq's compiled frame I/O and libzmq's own proxy, on loopback, in
one run; then the one-relay path against majortomo's Majordomo broker.

What it starts (every process by pid, every one killed at the end)::

    zmqrelay:      cloud <- proxy <- server     (real twistd -n processes)
    pyzmq:         relay1 -> relay2 -> echo     (bench/baseline.py processes)
    pyzmq-raw:     relay1 -> relay2 -> echo     (bench/baseline.py --raw)
    libzmq proxy:  relay1 -> relay2 -> echo     (bench/baseline.py --libzmq:
                                                 zmq.proxy in every process)
    majortomo:     broker <- worker             (bench/baseline.py mdbroker,
                                                 mdworker; if installed)

and what it measures, from this process acting as the client (a raw pyzmq
DEALER speaking the zmqrelay protocol, so the client is not the bottleneck):

  - requests/s with a window of outstanding requests (pipelined);
  - round-trip latency p50/p99 with one request at a time;
  - CPU time of every node process over the pipelined run (utime + stime
    from C{/proc/<pid>/stat}, all threads), divided by the requests: the
    cost of one request (and its reply) at each hop;
  - a large-message run (1 MiB payloads) on the longest path;
  - how the cost grows with message size: the cloud path pipelined with
    larger payloads (C{--sizes}), requests/s and CPU per relay hop;
  - against majortomo, client -> broker -> worker next to client -> proxy
    -> server: requests/s one at a time, with 16 clients of one request
    each, and with C{--window} outstanding from one client;
  - the targets of issue 13, each a ratio between two figures of this run,
    with "met" or "not met";
  - the cloud path with a cloud of 1 and of 2 nodes (issue 10): one load
    client per cloud node, all asking the same server through one proxy
    that dials every cloud; requests/s in all and CPU per request of each
    cloud process, so it shows how the load spreads.

Paths: I{direct} (client -> server), I{proxy} (client -> proxy -> server),
I{cloud} (client -> cloud -> proxy -> server); the baselines' are the same
hop counts (client -> echo, client -> relay2 -> echo, client -> relay1 ->
relay2 -> echo).  Rounds interleave the systems so that other load on the
machine hits them alike.

Usage::

    python bench/relaybench.py                       # print the report
    python bench/relaybench.py --write docs/BENCHMARKS.md
    python bench/relaybench.py --profile /tmp/prof   # cProfile the relays
    python bench/relaybench.py --clouds-only --write docs/BENCHMARKS.md
    python bench/relaybench.py --quick               # one short round (~1 min)
    python bench/relaybench.py --relay-window 100    # the relays' --window (default 32)

With C{--write}, only the part of the file between the C{bench:begin} and
C{bench:end} markers is replaced; the hand-written notes around it stay.
"""

import argparse
import os
import platform
import signal
import sys
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from zmqrelay.core import protocol  # noqa: E402
from baseline import MDP_CLIENT, MDP_FINAL, MDP_REQUEST  # noqa: E402
from children import BenchError, Children  # noqa: E402

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
CLOUDS_BEGIN = "<!-- bench:clouds:begin -->"
CLOUDS_END = "<!-- bench:clouds:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024

#: Node options for the benchmark: the per-client rate limits are raised so
#: that they measure the relay, not the limiter (the limiter still runs).
LIMITS = ["--rate", "1000000", "--burst", "100000", "--byte-rate", "1e10"]

SERVER_ID = "bench-server"

#: Extra options of the relays (cloud and proxy) only: C{--relay-window}.
RELAY_OPTIONS = []


def runSeconds(pid):
    """
    @return: the time every thread of process C{pid} has run on a CPU, in
        seconds, from the scheduler's own account (C{/proc/<pid>/task/*/
        schedstat}, nanoseconds): exact even when each burst of work is far
        shorter than the clock tick that C{/proc/<pid>/stat} counts in.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def cpuSeconds(pid):
    """
    @return: user + system CPU seconds of process C{pid}, all its threads.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may hold spaces and parentheses: split after the last.
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def baselineProcess(children, name, args):
    """
    Start one C{bench/baseline.py} process and wait for its ready line.
    """
    return children.start(name, [sys.executable, os.path.join(HERE, "baseline.py")] + list(args))


class LoadClient:
    """
    One DEALER connection, driven synchronously.

    With C{hello}, it says HELLO and waits for WELCOME first, and reads
    answers as zmqrelay REP/ERR; without, it talks to the baseline, whose
    echo sends the request back unchanged.

    @ivar errors: error code to count, for ERR answers.
    """

    def __init__(self, context, endpoint, target, hello=True, name="bench"):
        self.target = target
        self.hello = hello
        self.errors = {}
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.connect(endpoint)
        self.nextId = 1
        self.answerType = protocol.REPLY if hello else protocol.REQUEST
        if hello:
            self._hello(name)

    def close(self):
        if self.hello:
            self.sock.send_multipart(protocol.encode(protocol.BYE, {"reason": "done"}))
        self.sock.close()

    def _hello(self, name):
        self.sock.send_multipart(protocol.encode(protocol.HELLO, {
            "id": f"{name}-{os.getpid()}-{id(self):x}",
            "role": protocol.CLIENT,
            "inc": os.urandom(8).hex(),
            "versions": list(protocol.SUPPORTED_VERSIONS),
            "hb": 1000,
            "liveness": 3,
            "max": 4 * MiB,
            # As zmqrelay's Client: answers may come in BATCHes (PROTOCOL 3.3).
            "batch": 64,
        }))
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if not self.sock.poll(100):
                continue
            message = protocol.decode(self.sock.recv_multipart())
            if message.type == protocol.WELCOME:
                return
            if message.type in (protocol.REJECT, protocol.ERROR):
                raise BenchError(f"hello refused: {message.header}")
        raise BenchError("no WELCOME within 10s")

    def _frames(self, rid, payload):
        return [
            protocol._SIG[protocol.CURRENT_VERSION], protocol.REQUEST,
            msgpack.packb({"id": rid, "to": self.target, "ttl": 30000}), payload,
        ]

    def _answers(self, frames):
        """
        @return: the request ids answered by the message C{frames} (a BATCH
            may carry many; see L{_answer}).
        """
        if frames[1] == protocol.BATCH:
            ids = []
            for msgtype, header, payload in msgpack.unpackb(frames[3]):
                rid = self._answer([frames[0], msgtype, msgpack.packb(header), payload])
                if rid is not None:
                    ids.append(rid)
            return ids
        rid = self._answer(frames)
        return [] if rid is None else [rid]

    def _answer(self, frames):
        """
        @return: the request id answered, or C{None} for anything else
            (heartbeats); ERR answers count in C{errors} and return the id.
        """
        msgtype = frames[1]
        if msgtype == self.answerType:
            return msgpack.unpackb(frames[2])["id"]
        if msgtype == protocol.ERROR:
            header = msgpack.unpackb(frames[2])
            code = header.get("code")
            self.errors[code] = self.errors.get(code, 0) + 1
            return header.get("id")
        if msgtype == protocol.BYE:
            raise BenchError("the relay said BYE")
        return None

    def ready(self, timeout=20.0):
        """
        Send one request at a time until one is answered with a REP (routes
        may still be propagating), within C{timeout}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = sum(self.errors.values())
            self.latency(1, 2.0, b"ping")
            if sum(self.errors.values()) == before:
                return
            self.errors.clear()
            time.sleep(0.05)
        raise BenchError(f"no answer from {self.target} within {timeout}s")

    def pipelined(self, window, duration, maxRequests, payload, stall=10.0):
        """
        Keep C{window} requests outstanding for C{duration} seconds (or
        C{maxRequests} requests), then wait for the last answers.

        @return: (answers, elapsed seconds).
        """
        sock = self.sock
        send = sock.send_multipart
        recv = sock.recv_multipart
        frames = self._frames
        answers = self._answers
        outstanding = set()
        done = 0
        sent = 0
        start = time.perf_counter()
        stopAt = start + duration
        sending = True
        # zmqrelay takes requests in BATCHes (PROTOCOL.md 3.3): what this
        # client has to send at once goes as one, as zmqrelay's Client
        # sends what one reactor turn produced.  The baselines get one
        # message per request.
        batching = self.hello and len(payload) < protocol.BATCH_LARGE
        while True:
            if sending:
                items = []
                while len(outstanding) < window:
                    rid = self.nextId
                    self.nextId += 1
                    if batching:
                        items.append([protocol.REQUEST, {"id": rid, "to": self.target, "ttl": 30000},
                                      payload])
                    else:
                        send(frames(rid, payload), copy=len(payload) < 65536)
                    outstanding.add(rid)
                    sent += 1
                    if sent >= maxRequests:
                        sending = False
                        break
                for i in range(0, len(items), 64):
                    chunk = items[i:i + 64]
                    if len(chunk) == 1:
                        _, header, body = chunk[0]
                        send(frames(header["id"], body))
                    else:
                        send(protocol.encodeBatch(chunk))
                if sending and time.perf_counter() >= stopAt:
                    sending = False
            if not outstanding:
                break
            if not sock.poll(stall * 1000):
                raise BenchError(f"no answer for {stall}s with {len(outstanding)} outstanding")
            while True:
                try:
                    got = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for rid in answers(got):
                    if rid in outstanding:
                        outstanding.discard(rid)
                        done += 1
        return done, time.perf_counter() - start

    def latency(self, count, duration, payload, stall=10.0):
        """
        One request at a time, C{count} of them or for C{duration} seconds.

        @return: the round-trip times in seconds, sorted.
        """
        sock = self.sock
        times = []
        stopAt = time.perf_counter() + duration
        for _ in range(count):
            rid = self.nextId
            self.nextId += 1
            t0 = time.perf_counter()
            sock.send_multipart(self._frames(rid, payload))
            while True:
                if not sock.poll(stall * 1000):
                    raise BenchError(f"no answer for {stall}s")
                if rid in self._answers(sock.recv_multipart()):
                    break
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 >= stopAt:
                break
        times.sort()
        return times


def percentile(sortedValues, p):
    """
    @return: the C{p}th percentile (nearest rank) of sorted values.
    """
    if not sortedValues:
        return float("nan")
    k = max(0, min(len(sortedValues) - 1, int(round(p / 100.0 * len(sortedValues))) - 1))
    return sortedValues[k]


def median(values):
    """
    @return: the median of C{values}.
    """
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2.0


class System:
    """
    One system under test.

    @ivar name: its label in the report.
    @ivar hello: C{True} if it speaks the zmqrelay handshake.
    @ivar paths: path name to the endpoint a client connects to.
    @ivar hops: path name to the names of the relay processes on it.
    @ivar end: the name of the process that answers.
    """

    def __init__(self, name, hello, paths, hops, end):
        self.name = name
        self.hello = hello
        self.paths = paths
        self.hops = hops
        self.end = end


def startZmqrelay(children, profileDir=None):
    """
    Start cloud, proxy and server as twistd processes.
    """

    def prof(name):
        return os.path.join(profileDir, name + ".prof") if profileDir else None

    local = "tcp://127.0.0.1:*"
    cloud = children.twistd(
        "cloud", "zmqrelay-cloud",
        ["--id", "bench-cloud", "--listen", local, "--pub", local, "--sub", local] + LIMITS
        + RELAY_OPTIONS,
        prof("cloud"),
    )
    proxy = children.twistd(
        "proxy", "zmqrelay-proxy",
        ["--id", "bench-proxy", "--cloud", cloud["control"], "--listen", local,
         "--pub", local, "--sub", local] + LIMITS + RELAY_OPTIONS,
        prof("proxy"),
    )
    server = children.twistd(
        "server", "zmqrelay-server",
        ["--id", SERVER_ID, "--proxy", proxy["control"], "--listen", local,
         "--pub", local] + LIMITS,
        prof("server"),
    )
    return System(
        "zmqrelay", True,
        {"direct": server["control"], "proxy": proxy["control"], "cloud": cloud["control"]},
        {"direct": [], "proxy": ["proxy"], "cloud": ["cloud", "proxy"]},
        "server",
    )


#: The baseline chains: kind to (system name, process name prefix,
#: C{bench/baseline.py} flags).
BASELINES = {
    "pyzmq": ("pyzmq", "", []),
    "raw": ("pyzmq-raw", "raw-", ["--raw"]),
    "libzmq": ("libzmq proxy", "lz-", ["--libzmq"]),
}


def startBaseline(children, kind="pyzmq"):
    """
    Start an echo worker and two relays in front of it.

    @param kind: a key of L{BASELINES}: plain pyzmq, the C{--raw} variant
        (compiled frame I/O) or the C{--libzmq} one (C{zmq.proxy}).
    """
    local = "tcp://127.0.0.1:*"
    name, prefix, flag = BASELINES[kind]
    echo = baselineProcess(children, prefix + "echo", ["echo", "--bind", local] + flag)
    relay2 = baselineProcess(
        children, prefix + "relay2", ["relay", "--bind", local, "--connect", echo["endpoint"]] + flag
    )
    relay1 = baselineProcess(
        children, prefix + "relay1", ["relay", "--bind", local, "--connect", relay2["endpoint"]] + flag
    )
    return System(
        name, False,
        {"direct": echo["endpoint"], "proxy": relay2["endpoint"], "cloud": relay1["endpoint"]},
        {"direct": [], "proxy": [prefix + "relay2"], "cloud": [prefix + "relay1", prefix + "relay2"]},
        prefix + "echo",
    )


def runPath(context, children, system, path, payload, window, duration, maxRequests,
            latencyCount, latencySeconds):
    """
    Measure one path of one system: a pipelined run with the CPU time of
    every process on the path, then a latency run.

    @return: a L{dict} of results.
    """
    client = LoadClient(context, system.paths[path], SERVER_ID, system.hello)
    try:
        client.ready()
        # Warm up: connections, caches, the allocator.
        client.pipelined(window, 0.3, max(window * 5, 20), payload)
        names = system.hops[path] + [system.end]
        pids = {n: children.pid(n) for n in names}
        before = {n: cpuSeconds(p) for n, p in pids.items()}
        selfBefore = cpuSeconds(os.getpid())
        done, elapsed = client.pipelined(window, duration, maxRequests, payload)
        selfAfter = cpuSeconds(os.getpid())
        after = {n: cpuSeconds(p) for n, p in pids.items()}
        runBefore = {n: runSeconds(p) for n, p in pids.items()}
        times = client.latency(latencyCount, latencySeconds, payload) if latencyCount else []
        runAfter = {n: runSeconds(p) for n, p in pids.items()}
        errors = dict(client.errors)
    finally:
        client.close()
    return {
        "system": system.name,
        "path": path,
        "requests": done,
        "rate": done / elapsed,
        "times": times,
        "cpu": {n: (after[n] - before[n]) / done * 1e6 for n in names},
        "cpuOne": {n: (runAfter[n] - runBefore[n]) / max(len(times), 1) * 1e6 for n in names},
        "hops": system.hops[path],
        "end": system.end,
        "client": (selfAfter - selfBefore) / done * 1e6,
        "errors": errors,
        "payload": len(payload),
        "window": window,
    }


def combine(runs):
    """
    Merge the rounds of one system and path: medians of rates and CPU
    costs, percentiles over every latency sample.
    """
    first = runs[0]
    times = sorted(t for r in runs for t in r["times"])
    errors = {}
    for r in runs:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return dict(
        first,
        requests=sum(r["requests"] for r in runs),
        rate=median([r["rate"] for r in runs]),
        cpu={n: median([r["cpu"][n] for r in runs]) for n in first["cpu"]},
        cpuOne={n: median([r["cpuOne"][n] for r in runs]) for n in first["cpuOne"]},
        client=median([r["client"] for r in runs]),
        p50=percentile(times, 50) * 1e6 if times else None,
        p99=percentile(times, 99) * 1e6 if times else None,
        samples=len(times),
        errors=errors,
        rounds=len(runs),
    )


# Against majortomo (a Majordomo broker in Python): the one-relay path.

#: The MDP service the worker registers and the clients ask for.
MDP_SERVICE = b"echo"

#: Clients of one request each in the "concurrent clients" run.
CROWD = 16


class MdpClient(LoadClient):
    """
    An MDP/0.2 client of majortomo's broker, driven like L{LoadClient}.

    A request is C{[b"", MDPC02, REQUEST, service, id, payload]}; the worker
    sends the body back, so the broker's C{[b"", MDPC02, FINAL, id,
    payload]} carries the request id.
    """

    def __init__(self, context, endpoint, service=MDP_SERVICE):
        self.service = service
        super().__init__(context, endpoint, None, hello=False)

    def close(self):
        self.sock.close()

    def _frames(self, rid, payload):
        return [b"", MDP_CLIENT, MDP_REQUEST, self.service, b"%d" % rid, payload]

    def _answer(self, frames):
        if len(frames) >= 4 and frames[2] == MDP_FINAL:
            return int(frames[3])
        return None


def startMajortomo(children):
    """
    Start majortomo's broker and one worker behind it.

    @return: (the broker's endpoint, C{None}), or (C{None}, why not) if
        majortomo is not installed or does not start.
    """
    try:
        import majortomo.broker  # noqa: F401
    except ImportError as e:
        return None, f"majortomo is not installed here ({e}); `pip install -e '.[bench]'` adds it"
    try:
        broker = baselineProcess(children, "md-broker", ["mdbroker", "--bind", "tcp://127.0.0.1:*"])
        baselineProcess(children, "md-worker",
                        ["mdworker", "--connect", broker["endpoint"],
                         "--service", MDP_SERVICE.decode("ascii")])
    except BenchError as e:
        return None, f"majortomo did not start: {e}"
    return broker["endpoint"], None


def runVersus(context, children, makeClient, names, args, payload):
    """
    One round of the one-relay comparison for one system: one request at a
    time, L{CROWD} clients of one request each, then C{args.window}
    outstanding from one client (with the CPU of the processes C{names}).

    @param makeClient: a callable of a name returning a connected client.
    @return: a L{dict}: req/s of each run, p50 one at a time, CPU
        us/request per process, errors.
    """
    main = makeClient("vs")
    crowd = []
    try:
        main.ready()
        main.pipelined(args.window, 0.3, max(args.window * 5, 20), payload)
        times = main.latency(args.latency_count, args.latency_seconds, payload)
        crowd = [makeClient(f"vs{i}") for i in range(CROWD)]
        for c in crowd:
            c.ready()
        pipelinedMany(crowd, CROWD, 0.2, CROWD * 5, payload)
        done, elapsed = pipelinedMany(crowd, CROWD, args.seconds, args.max_requests, payload)
        crowdRate = done / elapsed
        pids = {n: children.pid(n) for n in names}
        before = {n: cpuSeconds(p) for n, p in pids.items()}
        done, elapsed = main.pipelined(args.window, args.seconds, args.max_requests, payload)
        after = {n: cpuSeconds(p) for n, p in pids.items()}
        errors = {}
        for c in [main] + crowd:
            for code, k in c.errors.items():
                errors[code] = errors.get(code, 0) + k
    finally:
        for c in [main] + crowd:
            c.close()
    return {
        "one": len(times) / sum(times),
        "times": times,
        "crowd": crowdRate,
        "window": done / elapsed,
        "cpu": {n: (after[n] - before[n]) / done * 1e6 for n in names},
        "errors": errors,
    }


def combineVersus(runs):
    """
    Merge the rounds of one system's L{runVersus}: medians of the rates and
    CPU costs, the p50 over every one-at-a-time round trip.
    """
    times = sorted(t for r in runs for t in r["times"])
    errors = {}
    for r in runs:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return {
        "one": median([r["one"] for r in runs]),
        "p50": percentile(times, 50) * 1e6,
        "crowd": median([r["crowd"] for r in runs]),
        "window": median([r["window"] for r in runs]),
        "cpu": {n: median([r["cpu"][n] for r in runs]) for n in runs[0]["cpu"]},
        "errors": errors,
    }


def machine():
    """
    @return: a L{dict} describing this machine and the software measured.
    """
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import twisted

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "twisted": twisted.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
    }


def _us(value):
    return "-" if value is None else f"{value:,.0f}"


def _line(r):
    return (f"{r['system']:9} {r['path']:6} {r['rate']:8,.0f} req/s  "
            + (f"p50 {_us(r['p50'])} us p99 {_us(r['p99'])} us  " if "p50" in r else "")
            + "cpu us/req " + " ".join(f"{k}={v:,.1f}" for k, v in r["cpu"].items())
            + f" client={r['client']:.1f}" + (f"  errors {r['errors']}" if r["errors"] else ""))


PATHS = [("direct", 0), ("proxy", 1), ("cloud", 2)]


def hopCosts(results, names):
    """
    The CPU cost of one relay hop and of the end, per system: the means of
    the relay rows and of the end rows over the paths every system in
    C{names} was measured on.

    @return: system name to (relay us/request or C{None}, end us/request
        or C{None}).
    """
    relay = {n: [] for n in names}
    end = {n: [] for n in names}
    for path, _ in PATHS:
        rows = {n: results.get((n, path)) for n in names}
        if None in rows.values():
            continue
        for n, r in rows.items():
            relay[n].extend(r["cpu"][hop] for hop in r["hops"])
            end[n].append(r["cpu"][r["end"]])

    def mean(values):
        return sum(values) / len(values) if values else None

    return {n: (mean(relay[n]), mean(end[n])) for n in names}


def addedLatency(results, name):
    """
    The latency one relay hop adds, one request at a time, for system
    C{name}: (p50 of the cloud path - p50 of the direct path) / 2, the
    cloud path having two relays more than the direct one.

    @return: microseconds, or C{None} if either path was not measured.
    """
    cloud = results.get((name, "cloud"))
    direct = results.get((name, "direct"))
    if not cloud or not direct or cloud["p50"] is None or direct["p50"] is None:
        return None
    return (cloud["p50"] - direct["p50"]) / 2.0


def target(label, ours, theirs, unit, goal, atMost):
    """
    One row of the targets table: the ratio C{ours / theirs} against
    C{goal}.

    @param ours: (text, value) of zmqrelay's figure; value C{None} if not
        measured.
    @param theirs: (text, value) of the baseline's figure.
    @param atMost: C{True} if the ratio must be at most C{goal}, C{False}
        if at least.
    @return: a Markdown table row.
    """
    sign = "<=" if atMost else ">="
    (oursText, a), (theirsText, b) = ours, theirs
    if a is None or b is None:
        oursText += unit if a is not None else ""
        theirsText += unit if b is not None else ""
        return f"| {label} | {oursText} | {theirsText} | - | {sign} {goal:g}x | not measured |"
    if b <= 0:
        return (f"| {label} | {oursText}{unit} | {theirsText}{unit} | - | {sign} {goal:g}x | "
                "not measurable (the baseline's figure is not positive) |")
    ratio = a / b
    met = ratio <= goal if atMost else ratio >= goal
    return (f"| {label} | {oursText}{unit} | {theirsText}{unit} | {ratio:.2f}x | {sign} {goal:g}x | "
            + ("met" if met else "**not met**") + " |")


def targetsReport(results, names, versus, args):
    """
    @return: the Markdown lines of the issue 13 targets, each a ratio of
        two figures of this run.
    """
    ref = names[0]
    costs = hopCosts(results, names)
    out = [
        "### Issue 13 targets, as ratios measured in this run",
        "",
        "| target | zmqrelay | against | ratio | goal | |",
        "|---|---|---|---|---|---|",
    ]

    def figure(name, value, digits=1):
        if name not in names and name != "majortomo":
            return (f"- ({name} not run)", None)
        if value is None:
            return ("-", None)
        return (f"{value:,.{digits}f}", value)

    def cost(name, which):
        return costs.get(name, (None, None))[which]

    raw, lz = "pyzmq-raw", "libzmq proxy"
    out.append(target(
        "relay hop, CPU us per request and reply (mean of the relay rows)",
        figure(ref, cost(ref, 0)), _labelled(raw, figure(raw, cost(raw, 0))),
        " us", 1.25, True))
    out.append(target(
        "end, CPU us per request (server vs echo, mean of the end rows)",
        figure(ref, cost(ref, 1)), _labelled(raw, figure(raw, cost(raw, 1))),
        " us", 1.5, True))
    out.append(target(
        "added latency per relay hop, one at a time: (p50 cloud - p50 direct) / 2",
        figure(ref, addedLatency(results, ref), 0),
        _labelled(lz, figure(lz, addedLatency(results, lz) if lz in names else None, 0)),
        " us", 1.3, True))
    if versus:
        ours, theirs = versus["zmqrelay"], versus["majortomo"]
        out.append(target(
            "one request at a time, req/s: client -> proxy -> server vs client -> broker -> worker",
            figure(ref, ours["one"], 0), _labelled("majortomo", figure("majortomo", theirs["one"], 0)),
            "", 1.0, False))
        out.append(target(
            f"{args.window} outstanding, req/s: the same paths",
            figure(ref, ours["window"], 0),
            _labelled("majortomo", figure("majortomo", theirs["window"], 0)), "", 5.0, False))
    else:
        out.append("| one request at a time, req/s, vs majortomo | - | - | - | >= 1x | not measured |")
        out.append(f"| {args.window} outstanding, req/s, vs majortomo | - | - | - | >= 5x | not measured |")
    cloud = results.get((ref, "cloud"))
    chain = results.get((lz, "cloud"))
    out.append(target(
        f"cloud path, req/s with {args.window} outstanding",
        figure(ref, cloud["rate"] if cloud else None, 0),
        _labelled("libzmq chain", figure(lz, chain["rate"] if chain else None, 0)),
        "", 0.5, False))
    return out


def _labelled(name, fig):
    """
    @return: C{fig} with the baseline's name before its text.
    """
    text, value = fig
    return (f"{name} {text}" if value is not None else text, value)


def sizesReport(sizes, names, args):
    """
    @param sizes: payload bytes to system name to the combined cloud-path
        result at that size.
    @return: the Markdown lines of the message-size table.
    """
    base = "pyzmq-raw" if "pyzmq-raw" in names else names[-1]
    out = [
        f"### How the cost grows with message size (cloud path, {args.window} outstanding)",
        "",
        f"The {args.payload}-byte row is the pipelined cloud run above (medians of the rounds); the "
        f"larger payloads are one run of {min(args.seconds, 1.0):g} s each. CPU per relay hop is the "
        "mean of the two relays, per request and its reply (both carry the payload).",
        "",
        "| payload | " + " | ".join(f"{n} req/s" for n in names) + " | "
        + " | ".join(f"{n} CPU us per hop" for n in names) + f" | zmqrelay / {base} per hop |",
        "|---|" + "---|" * (2 * len(names) + 1),
    ]
    for size in sorted(sizes):
        rows = sizes[size]
        if any(n not in rows for n in names):
            continue
        hop = {n: sum(rows[n]["cpu"][h] for h in rows[n]["hops"]) / len(rows[n]["hops"]) for n in names}
        out.append(f"| {_bytes(size)} | " + " | ".join(f"{rows[n]['rate']:,.0f}" for n in names) + " | "
                   + " | ".join(f"{hop[n]:,.1f}" for n in names)
                   + f" | {_x(hop[names[0]], hop[base])} |")
    return out


def _bytes(size):
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def versusReport(versus, note, args):
    """
    @param versus: C{{"zmqrelay": ..., "majortomo": ...}} of
        L{combineVersus} results, or C{None}.
    @param note: why majortomo was not measured, if it was not.
    @return: the Markdown lines of the majortomo comparison.
    """
    out = ["### Against majortomo (one relay: client -> proxy -> server vs client -> broker -> worker)", ""]
    if not versus:
        out.append(f"Not measured: {note}.")
        return out
    z, m = versus["zmqrelay"], versus["majortomo"]
    out += [
        "majortomo's broker (MDP/0.2, Python, one `recv_multipart` per loop) with one worker of our "
        "own that echoes the body (an MDP worker takes one request at a time); zmqrelay's proxy "
        "path with the example server. Requests/s are medians over the rounds.",
        "",
        "| run | zmqrelay req/s | majortomo req/s | zmqrelay / majortomo |",
        "|---|---|---|---|",
        f"| one request at a time (p50 {z['p50']:,.0f} us vs {m['p50']:,.0f} us) | {z['one']:,.0f} | "
        f"{m['one']:,.0f} | {_x(z['one'], m['one'])} |",
        f"| {CROWD} clients, one request each | {z['crowd']:,.0f} | {m['crowd']:,.0f} | "
        f"{_x(z['crowd'], m['crowd'])} |",
        f"| one client, {args.window} outstanding | {z['window']:,.0f} | {m['window']:,.0f} | "
        f"{_x(z['window'], m['window'])} |",
        "",
        f"CPU us per request in the {args.window}-outstanding run: zmqrelay "
        + ", ".join(f"{n} {v:.1f}" for n, v in z["cpu"].items()) + "; majortomo "
        + ", ".join(f"{n} {v:.1f}" for n, v in m["cpu"].items()) + ".",
    ]
    for name, r in versus.items():
        if r["errors"]:
            out.append(f"Errors answered ({name}): {r['errors']}.")
    return out


def _x(a, b):
    """
    @return: C{a / b} as a ratio for a table (C{"2.10x"}), or C{"-"} when
        C{b} is not positive: a short run under load can measure a process's
        CPU as 0 (the kernel counts it in clock ticks).
    """
    return f"{a / b:.2f}x" if b > 0 else "-"


def report(results, large, names, info, command, args, sizes=None, versus=None, versusNote=None):
    """
    @param results: (system, path) to the combined result.
    @param large: the combined large-message results.
    @param names: the systems, in column order (zmqrelay first).
    @param sizes: payload bytes to system name to the combined cloud-path
        result (L{sizesReport}), or C{None}.
    @param versus: the majortomo comparison (L{versusReport}), or C{None}.
    @param versusNote: why it is C{None}.
    @return: the Markdown of one run.
    """
    out = []
    add = out.append
    add(f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {info['nproc']} CPUs "
        f"({info['cpu']}), Linux {info['kernel']}; Python {info['python']}, "
        f"pyzmq {info['pyzmq']}, libzmq {info['libzmq']}, Twisted {info['twisted']}, "
        f"msgpack {info['msgpack']}. Load average before the run: {info['load']:.1f} (other "
        "work on the machine inflates CPU costs and latency tails).")
    add("")
    add(f"Command: `{command}`: {args.rounds} rounds of {args.seconds:g} s pipelined runs "
        f"({args.window} outstanding, {args.payload}-byte payloads) and up to "
        f"{args.latency_count} one-at-a-time round trips per path and system; rates and CPU "
        "costs are medians over the rounds, latency percentiles are over all round trips.")
    add("")
    paths = PATHS
    add("### Throughput and latency")
    add("")
    add("| path | relays | " + " | ".join(f"{n} req/s" for n in names) + " | "
        + " | ".join(f"{n} p50 / p99 us" for n in names) + " |")
    add("|---|---|" + "---|" * (2 * len(names)))
    for path, relays in paths:
        rows = [results.get((n, path)) for n in names]
        if None in rows:
            continue
        add(f"| {path} | {relays} | " + " | ".join(f"{r['rate']:,.0f}" for r in rows) + " | "
            + " | ".join(f"{_us(r['p50'])} / {_us(r['p99'])}" for r in rows) + " |")
    add("")
    add("### CPU per request (the request and its reply), us")
    add("")
    add("CPU time (user + system, all threads, from `/proc/<pid>/stat`) of each process "
        "over the pipelined run, divided by the requests answered in it.")
    add("")
    ref = names[0]
    others = names[1:]
    add(f"| path | process | {ref} | " + " | ".join(f"{n} | {ref} / {n}" for n in others) + " |")
    add("|---|---|---|" + "---|---|" * len(others))
    relayCost = {n: [] for n in names}
    for path, _ in paths:
        rows = {n: results.get((n, path)) for n in names}
        if None in rows.values():
            continue
        z = rows[ref]
        for i, hop in enumerate(z["hops"]):
            costs = {n: rows[n]["cpu"][rows[n]["hops"][i]] for n in names}
            for n in names:
                relayCost[n].append(costs[n])
            add(f"| {path} | relay: {hop} | {costs[ref]:.1f} | "
                + " | ".join(f"{costs[n]:.1f} | {_x(costs[ref], costs[n])}" for n in others)
                + " |")
        costs = {n: rows[n]["cpu"][rows[n]["end"]] for n in names}
        add(f"| {path} | end: {z['end']} | {costs[ref]:.1f} | "
            + " | ".join(f"{costs[n]:.1f} | {_x(costs[ref], costs[n])}" for n in others) + " |")
        costs = {n: rows[n]["client"] for n in names}
        add(f"| {path} | client (load generator) | {costs[ref]:.1f} | "
            + " | ".join(f"{costs[n]:.1f} | {_x(costs[ref], costs[n])}" for n in others) + " |")
    if relayCost[ref]:
        mean = {n: sum(v) / len(v) for n, v in relayCost.items()}
        add("")
        add(f"**One relay hop, mean of the relay rows: {ref} {mean[ref]:.1f} us/request; "
            + "; ".join(f"{n} {mean[n]:.1f} us/request ({ref} costs {_x(mean[ref], mean[n])})"
                        for n in others) + ".**")
    add("")
    add("### CPU per request one at a time, us")
    add("")
    add("The time each process's threads ran (the scheduler's account, "
        "`/proc/<pid>/task/*/schedstat`, exact for bursts shorter than a clock tick) over the "
        "one-at-a-time run, divided by its round trips: with nothing to batch, every request "
        "pays each process's whole wake-up, read, work and send, in the kernel as much as in "
        "Python.")
    add("")
    add("| path | process | " + " | ".join(names) + " |")
    add("|---|---|" + "---|" * len(names))
    for path, _ in paths:
        rows = {n: results.get((n, path)) for n in names}
        if None in rows.values() or not rows[ref].get("times"):
            continue
        for i, hop in enumerate(rows[ref]["hops"]):
            add(f"| {path} | relay: {hop} | " + " | ".join(
                f"{rows[n]['cpuOne'][rows[n]['hops'][i]]:.0f}" for n in names) + " |")
        add(f"| {path} | end: {rows[ref]['end']} | " + " | ".join(
            f"{rows[n]['cpuOne'][rows[n]['end']]:.0f}" for n in names) + " |")
    if large:
        add("")
        add(f"### Large messages ({large[0]['payload'] // MiB} MiB payloads, cloud path, "
            f"{large[0]['window']} outstanding)")
        add("")
        add("| system | requests | req/s | MiB/s each way | CPU us/req per relay | CPU us/req at the end |")
        add("|---|---|---|---|---|---|")
        for r in large:
            hops = ", ".join(f"{h} {r['cpu'][h]:,.0f}" for h in r["hops"])
            add(f"| {r['system']} | {r['requests']} | {r['rate']:,.0f} | "
                f"{r['rate'] * r['payload'] / MiB:,.0f} | {hops} | {r['cpu'][r['end']]:,.0f} |")
    sizeRuns = []
    if sizes and len(sizes) > 1:
        add("")
        out.extend(sizesReport(sizes, names, args))
        sizeRuns = [r for size, rows in sizes.items() if size != args.payload for r in rows.values()]
    add("")
    out.extend(versusReport(versus, versusNote, args))
    add("")
    out.extend(targetsReport(results, names, versus, args))
    add("")
    add("Added latency per relay hop: " + "; ".join(
        f"{n} {_us(addedLatency(results, n))} us" for n in names) + " ((p50 of the cloud path - "
        "p50 of the direct path) / 2, one request at a time: the cloud path has two relays more).")
    errors = [r for r in list(results.values()) + large + sizeRuns if r["errors"]]
    add("")
    if errors:
        add("Errors answered during the runs: " + "; ".join(
            f"{r['system']} {r['path']} ({r['payload']} bytes): {r['errors']}" for r in errors) + ".")
    else:
        add("Every request of every run was answered with a reply (no errors).")
    return "\n".join(out)


def writeInto(path, block, begin=BEGIN, end=END):
    """
    Replace the marked block of C{path} (or create the file, or add the
    block at its end).
    """
    text = None
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    generated = f"{begin}\n{block}\n{end}"
    if text and begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + generated + tail
    elif text:
        text = text.rstrip("\n") + f"\n\n{generated}\n"
    else:
        text = f"# Benchmarks\n\n{generated}\n"
    with open(path, "w") as f:
        f.write(text)


# A cloud of several nodes (issue 10).

CLOUDS_SERVER = "bench-cloud-server"


def startClouds(children, n):
    """
    Start a cloud of C{n} nodes (each peering with those started before
    it: peers replicate both ways on one connection), a proxy dialling
    every one, and a server.

    @return: (the clouds' control endpoints, the process names on the
        path: clouds, proxy, server).
    """
    local = "tcp://127.0.0.1:*"
    controls = []
    names = []
    for i in range(n):
        name = f"x{n}-cloud{i}"
        args = ["--id", name, "--listen", local, "--pub", local, "--sub", local] + LIMITS
        args += RELAY_OPTIONS
        for peer in controls:
            args += ["--peer", peer]
        controls.append(children.twistd(name, "zmqrelay-cloud", args)["control"])
        names.append(name)
    proxyArgs = ["--id", f"x{n}-proxy", "--listen", local, "--pub", local, "--sub", local] + LIMITS
    proxyArgs += RELAY_OPTIONS
    for control in controls:
        proxyArgs += ["--cloud", control]
    proxy = children.twistd(f"x{n}-proxy", "zmqrelay-proxy", proxyArgs)
    children.twistd(
        f"x{n}-server", "zmqrelay-server",
        ["--id", CLOUDS_SERVER, "--proxy", proxy["control"], "--listen", local, "--pub", local]
        + LIMITS,
    )
    return controls, names + [f"x{n}-proxy", f"x{n}-server"]


def pipelinedMany(clients, window, duration, maxRequests, payload, stall=10.0):
    """
    L{LoadClient.pipelined} over several clients at once: each keeps its
    share of C{window} outstanding.

    @return: (answers, elapsed seconds).
    """
    poller = zmq.Poller()
    for c in clients:
        poller.register(c.sock, zmq.POLLIN)
    share = max(1, window // len(clients))
    outstanding = {c: set() for c in clients}
    bySock = {c.sock: c for c in clients}
    done = sent = 0
    start = time.perf_counter()
    stopAt = start + duration
    sending = True
    while True:
        if sending:
            for c in clients:
                mine = outstanding[c]
                while len(mine) < share and sent < maxRequests:
                    rid = c.nextId
                    c.nextId += 1
                    c.sock.send_multipart(c._frames(rid, payload))
                    mine.add(rid)
                    sent += 1
            if sent >= maxRequests or time.perf_counter() >= stopAt:
                sending = False
        if not any(outstanding.values()):
            break
        ready = dict(poller.poll(stall * 1000))
        if not ready:
            raise BenchError(f"no answer for {stall}s")
        for sock in ready:
            c = bySock[sock]
            while True:
                try:
                    got = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for rid in c._answers(got):
                    if rid in outstanding[c]:
                        outstanding[c].discard(rid)
                        done += 1
    return done, time.perf_counter() - start


def runClouds(context, children, n, args):
    """
    Measure the cloud path through a cloud of C{n} nodes.

    @return: a L{dict}: rate, CPU us/request per process, errors.
    """
    controls, names = startClouds(children, n)
    clients = [LoadClient(context, c, CLOUDS_SERVER, name=f"x{n}-load{i}") for i, c in enumerate(controls)]
    payload = b"x" * args.payload
    try:
        for c in clients:
            c.ready()
        pipelinedMany(clients, args.window, 0.3, max(args.window * 5, 20), payload)
        rates, costs = [], []
        for _ in range(args.rounds):
            pids = {name: children.pid(name) for name in names}
            before = {name: cpuSeconds(pid) for name, pid in pids.items()}
            done, elapsed = pipelinedMany(clients, args.window, args.seconds, args.max_requests, payload)
            after = {name: cpuSeconds(pid) for name, pid in pids.items()}
            rates.append(done / elapsed)
            costs.append({name: (after[name] - before[name]) / done * 1e6 for name in names})
        errors = {}
        for c in clients:
            for code, k in c.errors.items():
                errors[code] = errors.get(code, 0) + k
    finally:
        for c in clients:
            c.close()
    return {
        "clouds": n,
        "rate": median(rates),
        "cpu": {name: median([c[name] for c in costs]) for name in names},
        "names": names,
        "errors": errors,
    }


def cloudsReport(results, info, command, args):
    """
    @return: the Markdown of the several-clouds runs.
    """
    out = []
    add = out.append
    add(f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {info['nproc']} CPUs ({info['cpu']}); "
        f"load average before the run: {info['load']:.1f}, after: {info['loadAfter']:.1f} (the "
        "machine is shared: other work inflates CPU costs and lowers rates).")
    add("")
    add(f"Command: `{command}`: the cloud path (client -> cloud node -> proxy -> server), one "
        f"load client per cloud node, {args.window} outstanding in all, {args.payload}-byte "
        f"payloads, {args.rounds} pipelined runs of {args.seconds:g} s (medians).")
    add("")
    add("| clouds | req/s (all) | CPU us/req of each cloud process | clouds together | proxy | server |")
    add("|---|---|---|---|---|---|")
    for r in results:
        clouds = [name for name in r["names"] if "-cloud" in name]
        each = ", ".join(f"{r['cpu'][name]:.1f}" for name in clouds)
        together = sum(r["cpu"][name] for name in clouds)
        proxy = next(name for name in r["names"] if name.endswith("-proxy"))
        server = next(name for name in r["names"] if name.endswith("-server"))
        add(f"| {r['clouds']} | {r['rate']:,.0f} | {each} | {together:.1f} | "
            f"{r['cpu'][proxy]:.1f} | {r['cpu'][server]:.1f} |")
    add("")
    errors = [r for r in results if r["errors"]]
    if errors:
        add("Errors answered: " + "; ".join(f"{r['clouds']} clouds: {r['errors']}" for r in errors) + ".")
    else:
        add("Every request was answered with a reply (no errors).")
    return "\n".join(out)


def clouds(args, context, children, command):
    """
    The several-clouds part: 1 and 2 cloud nodes.
    """
    loadBefore = os.getloadavg()[0]
    results = []
    for n in (1, 2):
        r = runClouds(context, children, n, args)
        results.append(r)
        print(f"  {n} cloud(s): {r['rate']:,.0f} req/s, cpu us/req "
              + " ".join(f"{k}={v:.1f}" for k, v in r["cpu"].items()), flush=True)
    info = machine()
    info["load"] = loadBefore
    info["loadAfter"] = os.getloadavg()[0]
    text = cloudsReport(results, info, command, args)
    print()
    print(text)
    if args.write:
        writeInto(args.write, text, CLOUDS_BEGIN, CLOUDS_END)
        print(f"\nwritten into {args.write}")


def profile(args, context, children):
    """
    Run the cloud path under cProfile (twistd --profiler=cprofile) and print
    where each node spends its time.
    """
    import pstats

    os.makedirs(args.profile, exist_ok=True)
    system = startZmqrelay(children, args.profile)
    result = runPath(
        context, children, system, "cloud", b"x" * args.payload, args.window,
        args.seconds, args.max_requests, 0, 0,
    )
    print("under cProfile: " + _line(result))
    for name in ("cloud", "proxy", "server"):
        proc = children.procs[name]
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
    for name in ("cloud", "proxy", "server"):
        path = os.path.join(args.profile, name + ".prof")
        print(f"\n===== {name}: {path}")
        pstats.Stats(path).sort_stats("tottime").print_stats(args.profile_lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="FILE", help="write the report into FILE's bench block")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every path and system")
    parser.add_argument("--seconds", type=float, default=2.0, help="pipelined run length")
    parser.add_argument("--max-requests", type=int, default=200000, help="cap per pipelined run")
    parser.add_argument("--window", type=int, default=100, help="requests outstanding")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes")
    parser.add_argument("--latency-count", type=int, default=2000, help="round trips per run")
    parser.add_argument("--latency-seconds", type=float, default=1.0, help="latency run cap")
    parser.add_argument("--large-count", type=int, default=200, help="1 MiB requests (0: skip)")
    parser.add_argument("--large-window", type=int, default=4, help="1 MiB requests outstanding")
    parser.add_argument("--no-raw", action="store_true", help="skip the pyzmq-raw baseline")
    parser.add_argument("--no-libzmq", action="store_true", help="skip the libzmq proxy baseline")
    parser.add_argument("--no-majortomo", action="store_true", help="skip the majortomo comparison")
    parser.add_argument("--sizes", default="10240,102400",
                        help="larger payloads for the cloud path, bytes, comma separated ('': none)")
    parser.add_argument("--quick", action="store_true",
                        help="one short round: --rounds 1 --seconds 1 --latency-seconds 0.5, "
                        "at most 50 1 MiB requests")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the zmqrelay nodes instead")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--clouds-only", action="store_true",
                        help="measure only the cloud path with 1 and 2 cloud nodes")
    parser.add_argument("--no-clouds", action="store_true", help="skip the 1 and 2 cloud nodes runs")
    parser.add_argument("--relay-window", type=int, default=None,
                        help="the relays' --window (default: theirs, 32); 0: no window")
    args = parser.parse_args(argv)
    RELAY_OPTIONS[:] = [] if args.relay_window is None else ["--window", str(args.relay_window)]
    if args.quick:
        args.rounds = 1
        args.seconds = min(args.seconds, 1.0)
        args.latency_seconds = min(args.latency_seconds, 0.5)
        args.large_count = min(args.large_count, 50)
    try:
        extraSizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--sizes: not a list of byte counts: {args.sizes!r}")

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python", "bench/relaybench.py"] + given)
    loadBefore = os.getloadavg()[0]
    context = zmq.Context()
    children = Children("relaybench-")
    started = time.monotonic()
    try:
        if args.profile:
            profile(args, context, children)
            return 0
        if args.clouds_only:
            clouds(args, context, children, command)
            return 0
        systems = [startZmqrelay(children), startBaseline(children)]
        if not args.no_raw:
            systems.append(startBaseline(children, "raw"))
        if not args.no_libzmq:
            systems.append(startBaseline(children, "libzmq"))
        zmqrelay = systems[0]
        broker, versusNote = None, "skipped (--no-majortomo)"
        if not args.no_majortomo:
            broker, versusNote = startMajortomo(children)
            if versusNote:
                print(f"majortomo: {versusNote}", flush=True)
        versusClients = {
            "zmqrelay": (lambda name: LoadClient(context, zmqrelay.paths["proxy"], SERVER_ID,
                                                 name=name),
                         zmqrelay.hops["proxy"] + [zmqrelay.end]),
            "majortomo": (lambda name: MdpClient(context, broker), ["md-broker", "md-worker"]),
        }
        payload = b"x" * args.payload
        runs = {}
        versusRuns = {}
        for n in range(args.rounds):
            print(f"round {n + 1} of {args.rounds} (at {time.monotonic() - started:.0f}s)", flush=True)
            for path in ("direct", "proxy", "cloud"):
                for system in systems:
                    r = runPath(context, children, system, path, payload, args.window,
                                args.seconds, args.max_requests, args.latency_count,
                                args.latency_seconds)
                    runs.setdefault((system.name, path), []).append(r)
                    print("  " + _line(combine([r])), flush=True)
            if broker:
                for name, (makeClient, names) in versusClients.items():
                    r = runVersus(context, children, makeClient, names, args, payload)
                    versusRuns.setdefault(name, []).append(r)
                    print(f"  {name:9} vs     one at a time {r['one']:,.0f} req/s, {CROWD} clients "
                          f"{r['crowd']:,.0f} req/s, {args.window} outstanding {r['window']:,.0f} req/s"
                          + (f"  errors {r['errors']}" if r["errors"] else ""), flush=True)
        results = {key: combine(value) for key, value in runs.items()}
        versus = {k: combineVersus(v) for k, v in versusRuns.items()} or None
        sizes = {args.payload: {s.name: results[(s.name, "cloud")] for s in systems}}
        for size in extraSizes:
            for system in systems:
                r = combine([runPath(context, children, system, "cloud", b"s" * size, args.window,
                                     min(args.seconds, 1.0), args.max_requests, 0, 0)])
                sizes.setdefault(size, {})[system.name] = r
                print(f"  {_bytes(size)}: " + _line(r), flush=True)
        large = []
        if args.large_count:
            for system in systems:
                r = runPath(context, children, system, "cloud", b"L" * MiB,
                            args.large_window, 60.0, args.large_count, 0, 0)
                large.append(combine([r]))
                print("  1 MiB: " + _line(large[-1]), flush=True)
        print(f"  (at {time.monotonic() - started:.0f}s)", flush=True)
        info = machine()
        info["load"] = loadBefore
        text = report(results, large, [s.name for s in systems], info, command, args,
                      sizes, versus, versusNote)
        print()
        print(text)
        if args.write:
            writeInto(args.write, text)
            print(f"\nwritten into {args.write}")
        if not args.no_clouds:
            print("a cloud of 1 and of 2 nodes", flush=True)
            clouds(args, context, children, command)
        print(f"\n(total {time.monotonic() - started:.0f}s)")
        return 0
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        children.stopAll()
        context.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(main())
