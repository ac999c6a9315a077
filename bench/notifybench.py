"""
Notifications through proxy and cloud to four subscribers, against libzmq's
own XSUB/XPUB proxies in the same run (issue 13, part 3).

    .venv/bin/python bench/notifybench.py [--write docs/BENCHMARKS.md]

Two systems, each measured at every offered rate (default 20k, 60k and
100k notifications/s of 64-byte payloads, 3 s each):

    zmqrelay:  server -> proxy -> cloud -> 4 SUBs   (twistd -n zmqrelay-* processes;
               the server runs bench/publisher.py, which calls server.publish)
    libzmq:    PUB -> proxy -> cloud -> 4 SUBs      (this file's "publisher" and two
               "relay" processes: zmq.proxy(XSUB, XPUB), nothing else)

The subscribers are raw pyzmq SUB sockets, one per process (this file's
"subscriber"), subscribed to the benchmark's topic (PROTOCOL.md 14.2: a
subscriber needs no session, only the cloud's pub endpoint).  They count
what they receive per run and the gaps in the sequence numbers
(PROTOCOL.md 14.1), which both publishers send.  They queue without bound
on their side (C{RCVHWM} 0) and, unless C{--read-while-publishing}, read
nothing until the publisher is done (libzmq's I/O thread still takes every
notification off TCP as it comes), so a loss is a relay's or a publisher's,
not a slow reader's, and their Python work takes no CPU from the processes
measured while they publish.  CPU is read from
C{/proc/<pid>/stat} (all threads) over each run, drain included.  Every
process it starts is ended by pid, also on a failure or Ctrl-C.
"""

import argparse
import itertools
import json
import os
import platform
import signal
import sys
import threading
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from children import BenchError, Children  # noqa: E402

from zmqrelay.core import protocol  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOPIC = b"bench.notify"
SUBSCRIBERS = 4
SERVER_ID = "notify-server"

#: How long a subscriber waits for more after the last notification it read
#: before it reports a run (s): what has not come by then is lost.
IDLE = 0.5

#: The targets of issue 13, part 3.
TARGET_CPU_US = 3.0
TARGET_RATE = 100000

#: The baseline relays' queues, as zmqrelay's defaults: 10,000 toward the
#: next relay, 10,000 per subscriber (C{--sub-hwm}) and a kernel send buffer
#: of 256 KiB per subscriber (L{zmqrelay.roles.notifyrelay.SUBSCRIBER_SNDBUF}).
HWM = 10000
SUB_HWM = 10000
SUB_SNDBUF = 256 * 1024

#: Seconds between two batches of publishes: each publishes what is due by
#: then (at 100k/s, 100 notifications per batch).
TICK = 0.001

_sessions = itertools.count(1)


def cpuSeconds(pid):
    """
    @return: user + system CPU seconds of process C{pid}, all its threads.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# The processes this file runs as.

def _dieWithParent():
    """
    Have the kernel SIGKILL this process when the benchmark that started it
    dies, even by SIGKILL (Linux; elsewhere the benchmark's own clean-up by
    pid is all there is).
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def subscriber(args):
    """
    One subscriber: a SUB socket on C{args.endpoint}; a DEALER to the
    benchmark's control socket, which says C{start} (count afresh) and
    C{stop <expected>} (report once that many came, or nothing came for
    L{IDLE} seconds).  With C{args.hold}, it reads nothing between the two:
    libzmq's I/O thread takes the notifications off TCP into a queue without
    bound, and Python counts them once the publisher is done.
    """
    ctx = zmq.Context()
    data = ctx.socket(zmq.SUB)
    data.setsockopt(zmq.LINGER, 0)
    data.setsockopt(zmq.RCVHWM, 0)
    data.setsockopt(zmq.RCVBUF, 4 * 1024 * 1024)
    data.setsockopt(zmq.SUBSCRIBE, TOPIC)
    data.connect(args.endpoint)
    control = ctx.socket(zmq.DEALER)
    control.setsockopt(zmq.LINGER, 0)
    control.setsockopt(zmq.IDENTITY, args.name.encode())
    control.connect(args.control)
    # Only this thread reads at a low priority; libzmq's I/O thread, which
    # takes the notifications off TCP, keeps the normal one.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
    control.send(b"hello")
    poller = zmq.Poller()
    poller.register(data, zmq.POLLIN)
    poller.register(control, zmq.POLLIN)
    unpack = msgpack.unpackb
    received = gaps = older = bad = 0
    first = last = None
    expected = None
    holding = False
    lastData = time.monotonic()
    while True:
        timeout = 50 if expected is not None else 1000
        events = dict(poller.poll(timeout))
        if data in events:
            for _ in range(2000):
                try:
                    frames = data.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += 1
                try:
                    seq = unpack(frames[2])["seq"]
                except Exception:
                    bad += 1
                    continue
                if last is None:
                    first = last = seq
                elif seq == last + 1:
                    last = seq
                elif seq > last:
                    gaps += seq - last - 1
                    last = seq
                else:
                    older += 1
            lastData = time.monotonic()
        if control in events:
            command = control.recv().split()
            if command[0] == b"start":
                received = gaps = older = bad = 0
                first = last = None
                expected = None
                if args.hold and not holding:
                    poller.unregister(data)
                    holding = True
                control.send(b"started")
            elif command[0] == b"stop":
                expected = int(command[1])
                lastData = max(lastData, time.monotonic())
                if holding:
                    poller.register(data, zmq.POLLIN)
                    holding = False
            elif command[0] == b"quit":
                break
        if expected is not None and (
            received >= expected or time.monotonic() - lastData > args.idle
        ):
            control.send(json.dumps({
                "received": received, "gaps": gaps, "older": older, "bad": bad,
                "first": first, "last": last,
            }).encode())
            expected = None
    data.close(0)
    control.close(0)
    ctx.term()


def relay(args):
    """
    A baseline relay: C{zmq.proxy} between a bound XSUB and an XPUB, bound
    for subscribers (C{--upstream} not given) or dialling the next relay's
    XSUB.  Nothing else: no checks, no counters.
    """
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xsub.setsockopt(zmq.LINGER, 0)
    xsub.setsockopt(zmq.RCVHWM, HWM)
    subPort = xsub.bind_to_random_port("tcp://127.0.0.1")
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    if args.upstream:
        xpub.setsockopt(zmq.SNDHWM, HWM)
        xpub.connect(args.upstream)
        pub = "-"
    else:
        xpub.setsockopt(zmq.SNDHWM, SUB_HWM)
        xpub.setsockopt(zmq.SNDBUF, SUB_SNDBUF)
        pub = f"tcp://127.0.0.1:{xpub.bind_to_random_port('tcp://127.0.0.1')}"
    print(f"ready: baseline {args.name} sub=tcp://127.0.0.1:{subPort} pub={pub}", flush=True)
    zmq.proxy(xsub, xpub)


def publisher(args):
    """
    The baseline publisher: a raw pyzmq PUB dialling the baseline proxy,
    sending the same notification frames as a server (header with C{seq}),
    paced as L{bench.publisher} paces C{server.publish}.  A REP socket takes
    C{run <rate> <seconds>} and answers with a JSON summary.  The PUB never
    drops (C{XPUB_NODROP}): a full queue fails the send, counted C{refused},
    as C{server.publish} raises L{OverLimit}.
    """
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.connect(args.upstream)
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    print(f"ready: baseline publisher control=tcp://127.0.0.1:{port}", flush=True)
    payload = b"n" * args.size
    inc = os.urandom(8).hex()
    seq = 0
    more = zmq.SNDMORE | zmq.NOBLOCK
    last = zmq.NOBLOCK
    encode = protocol.encodeNotification
    while True:
        command = rep.recv().split()
        rate, seconds = float(command[1]), float(command[2])
        total = int(rate * seconds)
        offered = refused = 0
        first = seq + 1
        started = time.monotonic()
        send = pub.send
        while True:
            elapsed = time.monotonic() - started
            due = min(total, int(rate * elapsed) + 1)
            while offered < due:
                offered += 1
                seq += 1
                frames = encode(TOPIC, {"server": "baseline", "inc": inc, "seq": seq}, payload)
                try:
                    send(frames[0], more)
                except zmq.Again:
                    refused += 1
                    break
                send(frames[1], more)
                send(frames[2], more)
                send(frames[3], last)
            if offered >= total or elapsed >= seconds:
                break
            time.sleep(args.tick)
        rep.send(json.dumps({
            "rate": rate, "offered": offered, "refused": refused,
            "seconds": time.monotonic() - started, "first": first, "last": seq,
        }).encode())


# The driver.

class Asker:
    """
    A raw client session on a server's control endpoint: HELLO, then
    requests, heartbeating while it waits (a run takes longer than a
    session stays alive without heartbeats).
    """

    #: Long enough for a server whose reactor is busy publishing: the run
    #: must not end in BYE heartbeat-timeout.
    HB = 5.0

    def __init__(self, context, endpoint, timeout=10.0):
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.rid = 0
        self.sock.send_multipart(protocol.encode(protocol.HELLO, {
            "id": f"notifybench-{os.getpid()}-{next(_sessions)}", "role": protocol.CLIENT,
            "inc": os.urandom(8).hex(), "versions": list(protocol.SUPPORTED_VERSIONS),
            "hb": int(self.HB * 1000), "liveness": 5,
        }))
        try:
            self._await(lambda m: m.type == protocol.WELCOME, timeout, "WELCOME")
        except BaseException:
            self.sock.close(0)
            raise

    def _await(self, match, timeout, what):
        deadline = time.monotonic() + timeout
        beat = time.monotonic() + self.HB / 2
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                message = protocol.decode(self.sock.recv_multipart())
                if match(message):
                    return message
                if message.type in (protocol.REJECT, protocol.BYE):
                    raise BenchError(f"server said {protocol.typeName(message.type)}: {message.header}")
            if time.monotonic() >= beat:
                self.sock.send_multipart(protocol.encode(protocol.HEARTBEAT, {}))
                beat = time.monotonic() + self.HB / 2
        raise BenchError(f"no {what} within {timeout}s")

    def request(self, payload, timeout, sys=None, to=SERVER_ID):
        """
        @param to: whom it is for (C{""}: the node itself, for a C{sys} request).
        @return: the reply payload.
        """
        self.rid += 1
        rid = self.rid
        header = {"id": rid, "to": to, "ttl": int(timeout * 1000)}
        if sys:
            header["sys"] = sys
        self.sock.send_multipart(protocol.encode(protocol.REQUEST, header, payload))
        message = self._await(
            lambda m: m.type in (protocol.REPLY, protocol.ERROR) and m.header.get("id") == rid,
            timeout, f"answer to {payload[:20]!r}",
        )
        if message.type == protocol.ERROR:
            raise BenchError(f"request {payload!r} failed: {message.header}")
        return message.payload

    def close(self):
        self.sock.close(0)


def nodeStats(context, endpoint, timeout=5.0):
    """
    @return: a node's counters (C{sys stats}), or C{{}} if it did not answer.
    """
    asker = None
    try:
        asker = Asker(context, endpoint, timeout)
        return msgpack.unpackb(asker.request(b"", timeout, sys="stats", to=""), raw=False)
    except BenchError:
        return {}
    finally:
        if asker is not None:
            asker.close()


class Subscribers:
    """
    The subscriber processes of one system, steered over one ROUTER.
    """

    def __init__(self, children, context, endpoint, count, prefix, hold=True):
        self.control = context.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        port = self.control.bind_to_random_port("tcp://127.0.0.1")
        self.names = [f"{prefix}-sub{i}".encode() for i in range(count)]
        for name in self.names:
            children.spawn(name.decode(), [
                sys.executable, os.path.abspath(__file__), "subscriber", endpoint,
                "--control", f"tcp://127.0.0.1:{port}", "--name", name.decode(),
            ] + (["--hold"] if hold else []))
        self._collect(b"hello", 30.0, lambda name: f"{name} did not start")

    def _collect(self, expect, timeout, why):
        """
        @return: name -> the message each subscriber sent back.
        """
        answers = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(self.names):
            left = deadline - time.monotonic()
            if left <= 0 or not self.control.poll(left * 1000):
                missing = [n.decode() for n in self.names if n not in answers]
                raise BenchError(why(", ".join(missing)))
            name, message = self.control.recv_multipart()
            if expect is None or message == expect:
                answers[name] = message
        return answers

    def _tell(self, command):
        for name in self.names:
            self.control.send_multipart([name, command])

    def start(self):
        self._tell(b"start")
        self._collect(b"started", 10.0, lambda names: f"{names} did not answer start")

    def stop(self, expected, timeout):
        """
        @return: each subscriber's figures, once it has C{expected}
            notifications or has waited L{IDLE} for more.
        """
        self._tell(b"stop %d" % expected)
        answers = self._collect(None, timeout, lambda names: f"{names} still draining after {timeout}s")
        return [json.loads(answers[name]) for name in self.names]

    def close(self):
        self._tell(b"quit")
        self.control.close(0)


class System:
    """
    One chain measured: its processes, its subscribers, and how to make its
    publisher publish.

    @ivar name: C{"zmqrelay"} or C{"libzmq"}.
    @ivar pids: process name -> pid, whose CPU is measured over each run.
    @ivar publisherName: which of them publishes.
    """

    publisherName = None

    def __init__(self, context):
        self.context = context
        self.children = Children(f"notify-{self.name}-")
        self.subs = None
        self.pids = {}

    def start(self, args):
        """
        Start the chain and its subscribers.
        """
        raise NotImplementedError()

    def publish(self, rate, seconds):
        """
        @return: the publisher's summary of one run (JSON object).
        """
        raise NotImplementedError()

    def counters(self):
        """
        @return: relay name -> its notification counters, where it has any.
        """
        return {}

    def stop(self):
        """
        Close our sockets and end every process by pid.
        """
        try:
            if self.subs is not None:
                self.subs.close()
        finally:
            self.children.stopAll()


class Zmqrelay(System):
    """
    server -> proxy -> cloud, real twistd nodes; the server runs
    L{bench.publisher}.
    """

    name = "zmqrelay"
    publisherName = "server"

    def start(self, args):
        local = "tcp://127.0.0.1:*"
        children = self.children
        self.cloud = children.twistd("cloud", "zmqrelay-cloud", [
            "--id", "notify-cloud", "--listen", local, "--pub", local, "--sub", local])
        self.proxy = children.twistd("proxy", "zmqrelay-proxy", [
            "--id", "notify-proxy", "--cloud", self.cloud["control"], "--listen", local,
            "--pub", local, "--sub", local])
        self.server = children.twistd("server", "zmqrelay-server", [
            "--id", SERVER_ID, "--proxy", self.proxy["control"], "--listen", local, "--pub", "",
            "--app", "bench.publisher.publisher", "--app-option", f"topic={TOPIC.decode()}",
            "--app-option", f"size={args.size}", "--app-option", f"tick={args.tick}"])
        self.pids = {name: children.pid(name) for name in ("proxy", "cloud", "server")}
        self.subs = Subscribers(children, self.context, self.cloud["pub"], SUBSCRIBERS, "zr",
                                not args.read_while_publishing)
        self.asker = Asker(self.context, self.server["control"])

    def publish(self, rate, seconds):
        return json.loads(self.asker.request(b"run %d %g" % (rate, seconds), seconds * 3 + 15))

    def counters(self):
        result = {}
        for name, node in (("proxy", self.proxy), ("cloud", self.cloud)):
            stats = nodeStats(self.context, node["control"])
            result[name] = {k[len("notify."):]: v for k, v in stats.items()
                            if k.startswith("notify.") and isinstance(v, int)}
        return result

    def stop(self):
        asker = getattr(self, "asker", None)
        if asker is not None:
            asker.close()
        System.stop(self)


class Libzmq(System):
    """
    PUB -> proxy -> cloud, where each relay is C{zmq.proxy(XSUB, XPUB)}.
    """

    name = "libzmq"
    publisherName = "publisher"

    def start(self, args):
        children = self.children
        me = [sys.executable, os.path.abspath(__file__)]
        cloud = children.start("cloud", me + ["relay", "--name", "cloud"])
        proxy = children.start("proxy", me + ["relay", "--name", "proxy", "--upstream", cloud["sub"]])
        pub = children.start("publisher", me + [
            "publisher", "--upstream", proxy["sub"], "--size", str(args.size),
            "--tick", str(args.tick)])
        self.pids = {name: children.pid(name) for name in ("proxy", "cloud", "publisher")}
        self.subs = Subscribers(children, self.context, cloud["pub"], SUBSCRIBERS, "zmq",
                                not args.read_while_publishing)
        self.req = self.context.socket(zmq.REQ)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.connect(pub["control"])

    def publish(self, rate, seconds):
        self.req.send(b"run %d %g" % (rate, seconds))
        if not self.req.poll((seconds * 3 + 15) * 1000):
            raise BenchError(f"the baseline publisher did not finish a run:\n"
                             f"{self.children.tail('publisher')}")
        return json.loads(self.req.recv())

    def stop(self):
        req = getattr(self, "req", None)
        if req is not None:
            req.close(0)
        System.stop(self)


def measureRun(system, rate, seconds):
    """
    One run: the subscribers count afresh, the publisher publishes C{rate}/s
    for C{seconds}, the subscribers drain; CPU of every process over it all.
    """
    subs, pids = system.subs, system.pids
    before = system.counters()
    subs.start()
    cpu0 = {name: cpuSeconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    summary = system.publish(rate, seconds)
    counts = subs.stop(summary["offered"] - summary["refused"], 30.0 + seconds * 5)
    cpu1 = {name: cpuSeconds(pid) for name, pid in pids.items()}
    summary["wall"] = time.monotonic() - t0
    summary["cpu"] = {name: cpu1[name] - cpu0[name] for name in pids}
    summary["subscribers"] = counts
    after = system.counters()
    summary["relays"] = {
        name: {k: v - before.get(name, {}).get(k, 0) for k, v in counters.items()}
        for name, counters in after.items()
    }
    return summary


def warmUp(system, seconds=30.0):
    """
    Publish slowly until every subscriber hears something: the
    subscriptions have reached the publisher through both relays.
    """
    subs = system.subs
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        subs.start()
        summary = system.publish(2000, 0.2)
        counts = subs.stop(summary["offered"], 10.0)
        if all(c["received"] for c in counts):
            return
    raise BenchError(f"{system.name}: subscribers heard nothing after {seconds}s of warm-up")


def runAll(args, context):
    """
    Start both chains, then run every rate on each in turn (interleaved, so
    that other work on the machine hits both alike).

    @return: system name -> its runs, in the order of C{args.rates}.
    """
    systems = [Zmqrelay(context), Libzmq(context)]
    runs = {system.name: [] for system in systems}
    try:
        for system in systems:
            system.start(args)
            warmUp(system)
        for rate in args.rates:
            for system in systems:
                run = measureRun(system, rate, args.seconds)
                runs[system.name].append(run)
                print(f"{system.name} {rate}/s: {_brief(run)}", flush=True)
        return runs
    finally:
        for system in systems:
            system.stop()


# Figures and the report.

def figures(run, publisherName):
    """
    @return: the derived figures of one run.
    """
    offered, refused = run["offered"], run["refused"]
    sent = offered - refused
    received = [c["received"] for c in run["subscribers"]]
    perRelay = {name: run["cpu"][name] * 1e6 / max(sent, 1) for name in ("proxy", "cloud")}
    return {
        "rate": run["rate"],
        "offered": offered,
        "refused": refused,
        "sent": sent,
        "sentRate": sent / max(run["seconds"], 1e-9),
        "seconds": run["seconds"],
        "received": received,
        "lostPercent": max(100.0 * (offered - r) / max(offered, 1) for r in received),
        "gaps": max(c["gaps"] for c in run["subscribers"]),
        "lossless": all(r == offered for r in received),
        "relayUs": perRelay,
        "publisherUs": run["cpu"][publisherName] * 1e6 / max(offered, 1),
        "relays": run.get("relays", {}),
    }


def _brief(run):
    received = [c["received"] for c in run["subscribers"]]
    cpu = ", ".join(f"{n} {s:.2f}s" for n, s in run["cpu"].items())
    return (f"offered {run['offered']} in {run['seconds']:.2f}s, refused {run['refused']}, "
            f"received {received}, gaps {[c['gaps'] for c in run['subscribers']]}, CPU {cpu}, "
            f"relays {run['relays'] or '-'}")


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
    }


def _n(value):
    return f"{value:,.0f}"


def _received(f):
    low, high = min(f["received"]), max(f["received"])
    text = _n(low) if low == high else f"{_n(low)}-{_n(high)}"
    if f["lossless"]:
        return f"{text} (all)"
    return f"{text} ({f['lostPercent']:.1f} % lost)"


def targets(zr, lz):
    """
    @return: rows (target, zmqrelay, libzmq, verdict) at the highest rate
        run; a target set at a higher rate than that is not measured.
    """
    z, b = zr[-1], lz[-1]
    rate = _n(z["rate"])
    reached = z["rate"] >= TARGET_RATE

    def verdict(ok, needsRate=True):
        if needsRate and not reached:
            return f"not measured (target at {_n(TARGET_RATE)}/s)"
        return "met" if ok else "**not met**"

    def publishes(f):
        return f["refused"] == 0 and f["sentRate"] >= 0.98 * f["rate"]

    return [
        (f"<= {TARGET_CPU_US:g} us CPU per notification per relay (at {rate}/s)",
         f"proxy {z['relayUs']['proxy']:.1f}, cloud {z['relayUs']['cloud']:.1f}",
         f"proxy {b['relayUs']['proxy']:.1f}, cloud {b['relayUs']['cloud']:.1f}",
         verdict(max(z["relayUs"].values()) <= TARGET_CPU_US, needsRate=False)),
        (f"lossless at {rate}/s to {SUBSCRIBERS} subscribers",
         _received(z), _received(b), verdict(z["lossless"])),
        (f"the server publishes {rate}/s (>= 98 % of the offered rate, none refused)",
         f"{_n(z['sentRate'])}/s, {_n(z['refused'])} OverLimit",
         f"{_n(b['sentRate'])}/s, {_n(b['refused'])} EAGAIN",
         verdict(publishes(z))),
    ]


def report(result, args):
    """
    @return: the Markdown block for docs/BENCHMARKS.md.
    """
    m = result["machine"]
    zr, lz = result["zmqrelay"], result["libzmq"]
    lines = [
        f"Measured {result['when']} on {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; "
        f"Python {m['python']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, Twisted {m['twisted']}. "
        f"Load average before the run: {result['loadBefore']:.1f}, after: {result['loadAfter']:.1f} "
        "(other work on the machine inflates CPU costs and causes losses).",
        "",
        f"Command: `python bench/notifybench.py {result['command']}`: {args.size}-byte payloads on "
        f"one topic, {SUBSCRIBERS} subscribers on the cloud's pub endpoint, {args.seconds:g} s per rate.",
        "",
        "| offered/s | system | published/s | refused | delivered per subscriber | gaps (max) "
        "| CPU us/notification: proxy | cloud | publisher |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for z, b in zip(zr, lz):
        for name, f, refusal in (("zmqrelay", z, "OverLimit"), ("libzmq proxy", b, "EAGAIN")):
            lines.append(
                f"| {_n(f['rate'])} | {name} | {_n(f['sentRate'])} | {_n(f['refused'])} {refusal} | "
                f"{_received(f)} | {_n(f['gaps'])} | {f['relayUs']['proxy']:.1f} | "
                f"{f['relayUs']['cloud']:.1f} | {f['publisherUs']:.1f} |"
            )
    lines += [
        "",
        "The publisher column is the server (`server.publish`) for zmqrelay, a raw pyzmq PUB "
        "for libzmq. Where zmqrelay's notifications went, from the relays' own counters "
        "(`sys stats`, `notify.*`, over each run):",
        "",
        "| offered/s | server sent | proxy read | proxy sent up | proxy dropped | cloud read "
        "| cloud to subscribers | cloud dropped | fewest received by a subscriber |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def c(counters, key):
        return _n(counters[key]) if key in counters else "-"

    for z in zr:
        proxy, cloud = z["relays"].get("proxy", {}), z["relays"].get("cloud", {})
        lines.append(
            f"| {_n(z['rate'])} | {_n(z['sent'])} | {c(proxy, 'notifications')} | "
            f"{c(proxy, 'upstream')} | {c(proxy, 'dropped')} | {c(cloud, 'notifications')} | "
            f"{c(cloud, 'delivered')} | {c(cloud, 'dropped')} | {_n(min(z['received']))} |"
        )
    lines += [
        "",
        "| target | zmqrelay | libzmq proxy | |",
        "|---|---|---|---|",
    ]
    for target, z, b, ok in targets(zr, lz):
        lines.append(f"| {target} | {z} | {b} | {ok} |")
    return "\n".join(lines)


def write(path, block):
    """
    Put C{block} between the notify markers of C{path}.

    @raise BenchError: if it has none.
    """
    begin, end = "<!-- notify:begin -->", "<!-- notify:end -->"
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise BenchError(f"{path} has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{block}\n{end}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("subscriber")
    p.add_argument("endpoint")
    p.add_argument("--control", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--idle", type=float, default=IDLE)
    p.add_argument("--hold", action="store_true")
    p = sub.add_parser("relay")
    p.add_argument("--name", required=True)
    p.add_argument("--upstream")
    p = sub.add_parser("publisher")
    p.add_argument("--upstream", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--tick", type=float, default=0.005)
    parser.add_argument("--rates", default="20000,60000,100000",
                        help="offered notifications/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per rate")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--tick", type=float, default=TICK,
                        help="seconds between two batches of the publishers")
    parser.add_argument("--read-while-publishing", action="store_true",
                        help="subscribers read as notifications come (at a low priority) instead "
                        "of holding them in libzmq until the publisher is done")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--write", help="write the report into this file's notify block")
    args = parser.parse_args(argv)
    if args.command is not None:
        _dieWithParent()
    if args.command == "subscriber":
        return subscriber(args)
    if args.command == "relay":
        return relay(args)
    if args.command == "publisher":
        return publisher(args)
    args.rates = [int(float(r)) for r in args.rates.split(",")]

    def terminated(signum, frame):
        # Unwind, so that every process started is ended by pid.
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    given = list(sys.argv[1:] if argv is None else argv)
    if "--json" in given:
        # Where this run kept its figures is no part of how to reproduce it.
        at = given.index("--json")
        del given[at:at + 2]
    command = " ".join(given)
    loadBefore = os.getloadavg()[0]
    context = zmq.Context()
    try:
        runs = runAll(args, context)
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process started was ended", file=sys.stderr)
        return 130
    finally:
        # Sockets a failure left open are closed here, unsent messages dropped.
        context.destroy(linger=0)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "machine": machine(),
        "loadBefore": loadBefore,
        "loadAfter": os.getloadavg()[0],
        "zmqrelay": [figures(run, "server") for run in runs["zmqrelay"]],
        "libzmq": [figures(run, "publisher") for run in runs["libzmq"]],
        "runs": runs,
    }
    result["targets"] = [
        {"target": t, "zmqrelay": z, "libzmq": b, "verdict": ok}
        for t, z, b, ok in targets(result["zmqrelay"], result["libzmq"])
    ]
    block = report(result, args)
    print(block)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.write:
        write(args.write, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
