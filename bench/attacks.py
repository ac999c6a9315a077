"""
The attacks of issue 7 ("no peer can crash, deafen or bloat a node"), each
one a function that is bounded in count and time and returns its figures.

An attack aims at a L{Site}: real C{twistd -n} nodes (by default cloud <-
proxy <- server, started here with L{bench.children.Children}, or by the
integration tests with their own helpers), known by pid and endpoints.  The
attackers are raw pyzmq sockets and plain TCP sockets in this process, plus
C{floodbench.py flood} processes for the floods.  For every attack this
measures, for every node:

  - RSS (C{VmRSS} of C{/proc/PID/status}) before, at its peak (sampled every
    50 ms in a thread) and C{settle} seconds after the attack ended;
  - open file descriptors (C{/proc/PID/fd}) the same way;
  - CPU (C{utime + stime} of C{/proc/PID/stat}) of the attacked node, and
    per message it refused or ignored (the deltas of its C{sys stats}
    counters);
  - whether it is alive and answers a C{sys ping} afterwards.

The attacks (see each function):

  1. L{abort}: DEALERs flood without reading, then close with linger 0;
  2. L{deaf}: HELLOs sent while other peers flood: time to WELCOME;
  3. L{multipart}: messages of many large frames, and large messages
     before any HELLO;
  4. L{subscriptions}: a SUB fills the relay's prefix table; a normal
     subscriber on a new prefix must be served once the flooder leaves;
  5. L{slow}: a SUB that never reads while a server publishes a lot;
  6. L{silent}: DEALERs and raw TCP connections that never say anything;
  7. L{floods}: floods from one id over one and several sockets, from many
     ids and from strangers, while well-behaved clients send requests;
  8. L{curve}: against a node with CURVE on (its own site,
     L{startCurveSite}), a process that keeps dialling with keys the node
     does not know, with no CURVE and with a wrong server key, while
     clients with authorized keys send requests.

Usage::

    python bench/attacks.py                              # every attack, print the report
    python bench/attacks.py --only abort,silent          # some of them
    python bench/attacks.py --write docs/FLOOD.md        # and update their sections
    python bench/attacks.py run ATTACK --site JSON [--param NAME=VALUE ...]

With C{--write}, each attack's section of the file (between its
C{attack:NAME:begin} and C{attack:NAME:end} markers) is replaced, so the
attacks can be re-measured one at a time.  C{run} runs one attack against
nodes somebody else started (the integration tests do) and prints its
figures as one JSON line; C{--site} maps node names to
C{{"pid": ..., "control": ..., "pub": ..., "sub": ...}} and may name the
server with C{"server-id"}; a node with CURVE on also carries C{"curve"}:
C{{"server": <its public key>, "keys": {<client id>: [<public>, <secret>]}}}
(Z85), the keys its probes and well-behaved clients dial with.
"""

import argparse
import json
import os
import platform
import resource
import signal
import socket
import sys
import threading
import time

import msgpack
import zmq
import zmq.auth

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from zmqrelay.core import protocol# noqa: E402
from children import BenchError, Children  # noqa: E402
import floodbench  # noqa: E402
from floodbench import NormalClient, drive, summarize  # noqa: E402

MiB = 1024 * 1024
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SIG = protocol._SIG[protocol.CURRENT_VERSION]

#: The goals of issue 7, as this harness checks them.
CPU_GOAL_US = 3.0
P99_GOAL_ONE_ID = 3.0
P99_GOAL_MANY_IDS = 5.0
#: What "back near its start" means for RSS: within this much of it.
RSS_NEAR_START_KIB = 32 * 1024


# ---------------------------------------------------------------------------
# What /proc says about a node


def rssKiB(pid):
    """
    @return: the resident set size of C{pid} in KiB, or C{None} if it is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fdCount(pid):
    """
    @return: how many file descriptors C{pid} has open, or C{None}.
    """
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpuSeconds(pid):
    """
    @return: user + system CPU seconds C{pid} used so far, or C{None}.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may hold spaces: fields start after its ')'.
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def isAlive(pid):
    """
    @return: C{True} if C{pid} runs (is neither gone nor a zombie).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] not in ("Z", "X")


class Watch:
    """
    Samples RSS and file descriptors of some processes in a thread.

    @ivar peakRss: pid to the largest RSS seen (KiB).
    @ivar peakFds: pid to the most descriptors seen.
    @ivar series: pid to a list of (seconds since start, RSS KiB, fds).
    """

    def __init__(self, pids, interval=0.05):
        self.pids = list(pids)
        self.interval = interval
        self.peakRss = {pid: rssKiB(pid) or 0 for pid in self.pids}
        self.peakFds = {pid: fdCount(pid) or 0 for pid in self.pids}
        self.series = {pid: [] for pid in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def _run(self):
        while not self._stop.is_set():
            now = round(time.monotonic() - self._start, 2)
            for pid in self.pids:
                rss, fds = rssKiB(pid), fdCount(pid)
                if rss is not None:
                    self.peakRss[pid] = max(self.peakRss[pid], rss)
                if fds is not None:
                    self.peakFds[pid] = max(self.peakFds[pid], fds)
                self.series[pid].append((now, rss, fds))
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)


# ---------------------------------------------------------------------------
# The nodes attacked


class Site:
    """
    The nodes an attack aims at.

    @ivar nodes: node name to a L{dict} with C{pid} and the endpoints the
        node reported (C{control}, C{pub}, C{sub}).
    @ivar serverId: the id of the server requests go to.
    """

    def __init__(self, nodes, serverId="s1"):
        self.nodes = nodes
        self.serverId = serverId

    @classmethod
    def fromJson(cls, text):
        data = json.loads(text)
        serverId = data.pop("server-id", "s1")
        return cls(data, serverId)

    def pid(self, name):
        return self.nodes[name]["pid"]

    def endpoint(self, name, kind="control"):
        return self.nodes[name][kind]

    def curve(self, name):
        """
        @return: the CURVE keys a probe of node C{name} dials with (see
            L{secure}), or C{None} if that node speaks plain ZMTP.
        """
        return self.nodes[name].get("curve")


def startSite(children, relayOptions=(), nodeOptions=(), serverId="attack-server",
              cloudOptions=(), proxyOptions=()):
    """
    Start cloud <- proxy <- server as C{twistd -n} children, every one with
    C{nodeOptions}, the cloud and the proxy also with C{relayOptions} (and
    each with its own C{cloudOptions} or C{proxyOptions}).

    @return: a L{Site}.
    """
    loop = "tcp://127.0.0.1:*"
    common = list(nodeOptions)
    cloud = children.twistd("cloud", "zmqrelay-cloud", [
        "--id", "attack-cloud", "--listen", loop, "--pub", loop, "--sub", loop,
    ] + common + list(relayOptions) + list(cloudOptions))
    proxy = children.twistd("proxy", "zmqrelay-proxy", [
        "--id", "attack-proxy", "--listen", loop, "--pub", loop, "--sub", loop,
        "--cloud", cloud["control"],
    ] + common + list(relayOptions) + list(proxyOptions))
    server = children.twistd("server", "zmqrelay-server", [
        "--id", serverId, "--listen", loop, "--pub", loop, "--proxy", proxy["control"],
    ] + common)
    nodes = {}
    for name, endpoints in (("cloud", cloud), ("proxy", proxy), ("server", server)):
        nodes[name] = dict(endpoints, pid=children.pid(name))
    return Site(nodes, serverId)


#: Well-behaved clients a CURVE site has keys for (C{normal-0} ...), beside
#: the probe's.
CURVE_CLIENTS = 8


def _z85Keys(publicPath, secretPath=None):
    """
    @return: the Z85 text of a certificate's public key (and of its secret
        one, from C{secretPath}), as L{secure} takes them.
    """
    public, _ = zmq.auth.load_certificate(publicPath)
    if secretPath is None:
        return public.decode("ascii")
    _, secret = zmq.auth.load_certificate(secretPath)
    return public.decode("ascii"), secret.decode("ascii")


def startCurveSite(children, nodeOptions=(), serverId="attack-server"):
    """
    Start the site of the L{curve} attack: a cloud with CURVE on (its
    control, pub and sub sockets secured, only the proxy's key and one
    probe's key authorized), a proxy that dials it with CURVE, and a server
    on the proxy's plain site hop.

    @return: a L{Site} whose cloud carries the probe's keys (L{Site.curve}).
    """
    from zmqrelay.edge.security import writeCertificates

    keys = os.path.join(children.logDir, "keys")
    authorized = os.path.join(children.logDir, "authorized")
    os.makedirs(authorized)
    clients = ["probe"] + [f"normal-{i}" for i in range(CURVE_CLIENTS)]
    made = {}
    nodes = [("cloud", "attack-cloud", "cloud"), ("proxy", "attack-proxy", "proxy")]
    for name, nodeId, role in nodes + [(c, c, "client") for c in clients]:
        made[name] = writeCertificates(keys, name, nodeId=nodeId, role=role)
    for name in ["proxy"] + clients:
        public = made[name][0]
        os.link(public, os.path.join(authorized, os.path.basename(public)))
    site = startSite(
        children, (), nodeOptions, serverId,
        cloudOptions=["--curve-secret", made["cloud"][1], "--curve-authorized", authorized],
        proxyOptions=["--curve-secret", made["proxy"][1], "--curve-server-key", made["cloud"][0]],
    )
    site.nodes["cloud"]["curve"] = {
        "server": _z85Keys(made["cloud"][0]),
        "keys": {name: list(_z85Keys(*made[name])) for name in clients},
    }
    return site


# ---------------------------------------------------------------------------
# Probes: well-behaved peers


_probes = [0]


def _probeId(what):
    _probes[0] += 1
    return f"probe-{what}-{os.getpid()}-{_probes[0]}"


def secure(sock, curve, name="probe"):
    """
    Make C{sock} dial with CURVE, if C{curve} is given: a L{dict} of
    C{server} (the node's public key) and C{keys} (client id to its
    C{[public, secret]} keypair: a node with CURVE binds each key to one
    id), Z85 text as C{zmq.auth} certificates hold them.

    @param name: the id whose keypair to use.
    """
    if curve:
        public, secret = curve["keys"][name]
        sock.curve_publickey = public.encode("ascii")
        sock.curve_secretkey = secret.encode("ascii")
        sock.curve_serverkey = curve["server"].encode("ascii")


def ask(endpoint, target="", sys=None, payload=b"", timeout=3.0, context=None, curve=None):
    """
    Say HELLO on a fresh DEALER and make one request.

    @param curve: dial with these CURVE keys (see L{secure}), as the
        client C{probe} (the id its key is bound to).
    @return: the reply payload.
    @raise BenchError: no WELCOME or no answer within C{timeout}.
    """
    own = context is None
    context = context or zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        secure(sock, curve)
        sock.connect(endpoint)
        floodbench._hello(sock, "probe" if curve else _probeId("ask"), timeout)
        rid = 1
        header = {"id": rid, "to": target, "ttl": int(timeout * 1000)}
        if sys:
            header["sys"] = sys
        sock.send_multipart(protocol.encode(protocol.REQUEST, header, payload))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sock.poll(50):
                message = protocol.decode(sock.recv_multipart())
                if message.header.get("id") != rid:
                    continue
                if message.type == protocol.REPLY:
                    return message.payload
                if message.type == protocol.ERROR:
                    raise BenchError(f"{target} {sys}: {message.header}")
        raise BenchError(f"no answer from {endpoint} ({sys}) within {timeout}s")
    finally:
        sock.close(0)
        if own:
            context.term()


def nodeStats(site, name="cloud", timeout=3.0):
    """
    @return: the counters of node C{name} (C{sys stats}), or C{None}.
    """
    try:
        return msgpack.unpackb(
            ask(site.endpoint(name), "", "stats", timeout=timeout, curve=site.curve(name)), raw=False)
    except BenchError:
        return None


def answering(site, timeout=3.0):
    """
    @return: node name to C{True} if it answered a C{sys ping} on its
        control endpoint (a probe says HELLO as a client first).
    """
    result = {}
    for name in site.nodes:
        if "control" not in site.nodes[name]:
            continue
        try:
            result[name] = ask(
                site.endpoint(name), "", "ping", timeout=timeout, curve=site.curve(name)) == b"pong"
        except BenchError:
            result[name] = False
    return result


def waitForRoute(site, timeout=20.0):
    """
    Wait until the cloud routes requests to the server.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            ask(site.endpoint("cloud"), site.serverId, None, b"ready", timeout=1.0,
                curve=site.curve("cloud"))
            return
        except BenchError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


#: The counters of a Front that count a message refused or ignored, each
#: such message in exactly one of them (C{refused-messages}, C{auth} and
#: C{discarded} count again what these count; C{requests}, C{batched-in} and
#: the others count traffic, and C{cut-*} connections).
REFUSALS = (
    "ignored-strangers", "ignored", "refused", "rejected", "malformed", "too-large",
    "unknown-type", "wrong-key", "stale",
)


def refusedOrIgnored(before, after, node="front"):
    """
    @return: how many messages the node refused or ignored between two
        C{sys stats} answers (the L{REFUSALS} counters of C{node}).
    """
    if not before or not after:
        return None
    return sum(
        after.get(f"{node}.{name}", 0) - before.get(f"{node}.{name}", 0) for name in REFUSALS
    )


class Measured:
    """
    The figures every attack reports, measured around its body::

        with Measured(site, "abort", settle) as m:
            ... attack ...
            m.figures["sent"] = ...

    @ivar figures: the L{dict} returned by the attack.
    """

    def __init__(self, site, attack, settle=5.0, target="cloud", stats=True):
        self.site = site
        self.settle = settle
        self.target = target
        self.stats = stats
        self.figures = {"attack": attack, "target": target, "settle": settle}

    def __enter__(self):
        pids = [n["pid"] for n in self.site.nodes.values()]
        self.statsBefore = nodeStats(self.site, self.target) if self.stats else None
        self.before = {
            name: {"rss": rssKiB(n["pid"]), "fds": fdCount(n["pid"]), "cpu": cpuSeconds(n["pid"])}
            for name, n in self.site.nodes.items()
        }
        self.watch = Watch(pids).start()
        self.started = time.monotonic()
        return self

    def attackEnded(self):
        """
        Mark the end of the attack proper (the settling time starts).
        """
        if "attackSeconds" not in self.figures:
            self.figures["attackSeconds"] = round(time.monotonic() - self.started, 3)
            self._ended = {
                name: {"cpu": cpuSeconds(n["pid"])} for name, n in self.site.nodes.items()
            }

    def __exit__(self, *exc):
        self.attackEnded()
        if exc[0] is None and self.settle:
            time.sleep(self.settle)
        self.watch.stop()
        nodes = {}
        for name, n in self.site.nodes.items():
            pid = n["pid"]
            before = self.before[name]
            cpuEnd = self._ended[name]["cpu"]
            nodes[name] = {
                "rssBefore": before["rss"],
                "rssPeak": self.watch.peakRss[pid],
                "rssAfter": rssKiB(pid),
                "fdsBefore": before["fds"],
                "fdsPeak": self.watch.peakFds[pid],
                "fdsAfter": fdCount(pid),
                "cpu": None if cpuEnd is None or before["cpu"] is None
                else round(cpuEnd - before["cpu"], 3),
                "alive": isAlive(pid),
            }
        self.figures["nodes"] = nodes
        self.figures["fdSeries"] = [
            (t, fds) for t, _, fds in self.watch.series[self.site.pid(self.target)][::5]
        ]
        if exc[0] is not None:
            return False
        self.figures["answering"] = answering(self.site)
        if self.stats:
            after = nodeStats(self.site, self.target)
            self.figures["stats"] = after
            refused = refusedOrIgnored(self.statsBefore, after)
            self.figures["refusedOrIgnored"] = refused
            received = None
            if after and self.statsBefore:
                received = after.get("front.received", 0) - self.statsBefore.get("front.received", 0)
            self.figures["received"] = received
            cpu = nodes[self.target]["cpu"]
            if received and cpu is not None:
                self.figures["cpuPerReceivedUs"] = round(cpu / received * 1e6, 2)
                # Only where refusing or ignoring is nearly all the node did
                # is its CPU the cost of refusing.
                if refused and refused >= 0.9 * received:
                    self.figures["cpuPerRefusedUs"] = round(cpu / refused * 1e6, 2)
        return False


def _raiseFdLimit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _request(rid, target, payload=b"", sys=None):
    header = {"id": rid, "to": target, "ttl": 5000}
    if sys:
        header["sys"] = sys
    return [_SIG, protocol.REQUEST, msgpack.packb(header, use_bin_type=True), payload]


def _dealer(context, endpoint, **options):
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(endpoint)
    return sock


# ---------------------------------------------------------------------------
# 1. Remote abort


def abort(site, seconds=3.0, sockets=4, rounds=2, target="cloud", settle=5.0, hello="both"):
    """
    Defect 1: C{sockets} DEALERs send REQs to the server as fast as they
    can for C{seconds} without reading anything, then close with linger 0;
    C{rounds} times.  libzmq 4.3.5 with ZMTP heartbeats aborted the node
    (C{Assertion failed: !_io_error}).

    @param hello: C{True}: each DEALER says HELLO first (a client, so the
        node forwards its requests: it reads more slowly and its input
        stays paused at the high-water mark longer; this reproduced the
        abort on the code before the fix, in 1 to 2 rounds of 3 s);
        C{False}: no HELLO; C{"both"}: alternate, without first.

    @return: figures, with C{rounds}: per round what was sent and whether
        the node was alive half a second after the close.
    """
    endpoint = site.endpoint(target)
    pid = site.pid(target)
    with Measured(site, "abort", settle, target) as m:
        results = []
        for r in range(rounds):
            context = zmq.Context()
            socks = []
            sent = 0
            try:
                for i in range(sockets):
                    sock = _dealer(context, endpoint, SNDHWM=100000)
                    if hello is True or (hello == "both" and r % 2 == 1):
                        floodbench._hello(sock, f"abort-{r}-{i}")
                    socks.append(sock)
                pack = msgpack.Packer(use_bin_type=True).pack
                deadline = time.monotonic() + seconds
                n = 0
                while time.monotonic() < deadline:
                    for _ in range(256):
                        n += 1
                        try:
                            socks[n % sockets].send_multipart(
                                [_SIG, protocol.REQUEST,
                                 pack({"id": n, "to": site.serverId, "ttl": 5000}), b"x" * 16],
                                zmq.NOBLOCK,
                            )
                            sent += 1
                        except zmq.Again:
                            pass
            finally:
                for sock in socks:
                    sock.close(0)
                context.term()
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and isAlive(pid):
                time.sleep(0.05)
            results.append({
                "sent": sent, "alive": isAlive(pid),
                "hello": hello is True or (hello == "both" and r % 2 == 1),
            })
            if not isAlive(pid):
                break
        m.figures["rounds"] = results
        m.figures["survived"] = all(r["alive"] for r in results) and len(results) == rounds
    return m.figures


# ---------------------------------------------------------------------------
# 2. A node goes deaf


def deaf(site, seconds=4.0, flooders=4, probes=10, timeout=3.0, target="cloud", settle=5.0,
         size=4096):
    """
    Defect 2: C{flooders} DEALERs say HELLO and then send requests to the
    server as fast as they can without ever reading (receive HWM 1, a tiny
    receive buffer: the node's sends to them fail once their queues are
    full), while every C{seconds/probes} a new DEALER says HELLO and waits
    up to C{timeout} for WELCOME.

    @return: figures, with C{welcome}: the probes' times to WELCOME
        (seconds), and C{unanswered}: probes that got none in time.
    """
    endpoint = site.endpoint(target)
    with Measured(site, "deaf", settle, target) as m:
        context = zmq.Context()
        socks = []
        times = []
        unanswered = 0
        sent = 0
        try:
            for i in range(flooders):
                sock = _dealer(context, endpoint, RCVHWM=1, RCVBUF=4096, SNDHWM=100000)
                floodbench._hello(sock, f"deaf-flooder-{i}")
                socks.append(sock)
            pack = msgpack.Packer(use_bin_type=True).pack
            payload = b"d" * size
            start = time.monotonic()
            end = start + seconds
            nextProbe = start + seconds / (probes + 1)
            probe = None
            n = 0
            while True:
                now = time.monotonic()
                if probe is None and now >= nextProbe and len(times) + unanswered < probes:
                    probe = _dealer(context, endpoint)
                    probe.send_multipart(protocol.encode(protocol.HELLO, {
                        "id": _probeId("deaf"), "role": protocol.CLIENT,
                        "inc": os.urandom(8).hex(),
                        "versions": list(protocol.SUPPORTED_VERSIONS), "hb": 1000, "liveness": 3,
                    }))
                    probeSent = now
                if probe is not None:
                    got = False
                    while probe.poll(0):
                        if protocol.decode(probe.recv_multipart()).type == protocol.WELCOME:
                            got = True
                    if got or now - probeSent > timeout:
                        if got:
                            times.append(round(now - probeSent, 4))
                        else:
                            unanswered += 1
                        probe.close(0)
                        probe = None
                        nextProbe = now + seconds / (probes + 1)
                if probe is None and (now >= end or len(times) + unanswered >= probes):
                    break
                if now < end:
                    for _ in range(64):
                        n += 1
                        try:
                            socks[n % flooders].send_multipart(
                                [_SIG, protocol.REQUEST,
                                 pack({"id": n, "to": site.serverId, "ttl": 5000}), payload],
                                zmq.NOBLOCK,
                            )
                            sent += 1
                        except zmq.Again:
                            pass
                else:
                    time.sleep(0.001)
        finally:
            for sock in socks:
                sock.close(0)
            if probe is not None:
                probe.close(0)
            context.term()
        m.figures.update(
            sent=sent, welcome=times, unanswered=unanswered,
            welcomeMax=max(times) if times else None,
            welcomeP50=sorted(times)[len(times) // 2] if times else None,
        )
    return m.figures


# ---------------------------------------------------------------------------
# 3. Memory from multipart messages


def multipart(site, messages=4, frames=25, frameSize=4 * MiB, preHelloMiB=400,
              preHelloSize=4 * MiB, target="cloud", settle=5.0, timeout=30.0):
    """
    Defect 3: a client (after HELLO) sends C{messages} REQs of C{frames}
    frames of C{frameSize} bytes each (every frame under ZeroMQ's
    C{MAXMSGSIZE}, the message far over the limit); then a peer that never
    says HELLO sends C{preHelloMiB} MiB as REQs of C{preHelloSize} bytes.

    @return: figures, with what was sent and the answers (ERR codes) the
        senders got back.
    """
    endpoint = site.endpoint(target)
    with Measured(site, "multipart", settle, target) as m:
        context = zmq.Context()
        answers = {}

        def drain(sock):
            while sock.poll(0):
                msg = sock.recv_multipart()
                if len(msg) >= 3 and msg[1] == protocol.ERROR:
                    code = msgpack.unpackb(msg[2], raw=False).get("code")
                    answers[code] = answers.get(code, 0) + 1

        try:
            sock = _dealer(context, endpoint, SNDTIMEO=int(timeout * 1000))
            floodbench._hello(sock, _probeId("multipart"))
            frame = b"m" * frameSize
            head = _request(1, site.serverId)[:3]
            sentBig = 0
            deadline = time.monotonic() + timeout
            for i in range(messages):
                if time.monotonic() > deadline:
                    break
                sock.send_multipart(head + [frame] * (frames - 3) if frames > 3 else head)
                sentBig += 1
                drain(sock)
            stranger = _dealer(context, endpoint, SNDTIMEO=int(timeout * 1000))
            payload = b"p" * preHelloSize
            sentPre = 0
            count = preHelloMiB * MiB // preHelloSize
            for i in range(count):
                if time.monotonic() > deadline:
                    break
                stranger.send_multipart(_request(i + 1, site.serverId, payload))
                sentPre += 1
                drain(stranger)
            # Until every byte reached the node (or it dropped us).
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                drain(sock)
                drain(stranger)
                time.sleep(0.05)
            sock.close(0)
            stranger.close(0)
        finally:
            context.term()
        m.figures.update(
            bigMessages=sentBig, bigMessageMiB=round(frames * frameSize / MiB, 1),
            preHelloMessages=sentPre, preHelloMiB=round(sentPre * preHelloSize / MiB, 1),
            answers=answers,
        )
    return m.figures


# ---------------------------------------------------------------------------
# 4. Subscriptions starved


def _subscriber(context, endpoint, prefixes, **options):
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    for prefix in prefixes:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


def _publishUntilSeen(site, publisher, sub, topic, timeout):
    """
    Have the server publish probes on C{topic} (through a direct client,
    C{publisher}) until C{sub} receives one.

    @return: seconds it took, or C{None}.
    """
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < timeout:
        n += 1
        publisher.send(time.perf_counter(), site.serverId, b"publish:" + topic + b":probe-%d" % n)
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            publisher.read(time.perf_counter())
            if sub.poll(20):
                frames = sub.recv_multipart()
                if frames[0].startswith(topic):
                    return round(time.monotonic() - start, 3)
        publisher.expire(time.perf_counter())
    return None


def subscriptions(site, prefixes=100000, relay="cloud", timeout=15.0, settle=5.0,
                  topic=b"attack.subscriber"):
    """
    Defect 4: one SUB subscribes C{prefixes} distinct prefixes at the
    relay's XPUB (at least its table's size); then a normal subscriber
    subscribes C{topic}; then the flooder leaves.  The normal subscriber
    must receive what the server publishes on C{topic} within C{timeout}.

    @return: figures, with C{delivered} and C{secondsAfterFlooderLeft}.
    """
    pub = site.endpoint(relay, "pub")
    with Measured(site, "subscriptions", settle, relay) as m:
        context = zmq.Context()
        publisher = NormalClient(context, site.endpoint("server"), _probeId("publisher"))
        try:
            flooder = _subscriber(
                context, pub, [b"flood.%d" % i for i in range(prefixes)], SNDHWM=0
            )
            # Until the relay has seen them all (or stopped counting).
            deadline = time.monotonic() + timeout
            seen = last = -1
            while time.monotonic() < deadline:
                counters = nodeStats(site, relay) or {}
                seen = counters.get("notify.subscriptions", 0) + counters.get(
                    "notify.refused-subscriptions", 0)
                if seen >= prefixes or (seen == last and seen > 0):
                    break
                last = seen
                time.sleep(0.5)
            m.figures["subscriptionsSeen"] = seen
            normal = _subscriber(context, pub, [topic])
            time.sleep(0.5)
            before = nodeStats(site, relay) or {}
            m.figures["refusedWhileFull"] = before.get("notify.refused-subscriptions")
            flooder.close(0)
            m.figures["secondsAfterFlooderLeft"] = _publishUntilSeen(
                site, publisher, normal, topic, timeout
            )
            m.figures["delivered"] = m.figures["secondsAfterFlooderLeft"] is not None
            normal.close(0)
        finally:
            publisher.close()
            context.term()
    return m.figures


# ---------------------------------------------------------------------------
# 5. Slow subscribers


def slow(site, megabytes=200, size=MiB, relay="cloud", settle=5.0, timeout=60.0,
         topic=b"attack.slow"):
    """
    Defect 5: a SUB on the relay's XPUB subscribes C{topic} and never reads
    (receive HWM 1, a tiny receive buffer), while the server publishes
    C{megabytes} MiB on it in notifications of C{size} bytes (asked by a
    direct client).  A normal subscriber of the same topic reads everything.
    The slow subscriber leaves at the end.

    @return: figures, with what was published and what the normal
        subscriber received.
    """
    pub = site.endpoint(relay, "pub")
    with Measured(site, "slow", settle, relay) as m:
        context = zmq.Context()
        publisher = NormalClient(context, site.endpoint("server"), _probeId("publisher"))
        received = [0]
        try:
            slowSub = _subscriber(context, pub, [topic], RCVHWM=1, RCVBUF=4096)
            normal = _subscriber(context, pub, [topic], RCVHWM=100000)

            def drainNormal():
                while normal.poll(0):
                    normal.recv_multipart()
                    received[0] += 1

            # Until the subscriptions reached the server.
            if _publishUntilSeen(site, publisher, normal, topic, 15.0) is None:
                raise BenchError("the subscription never reached the server")
            drainNormal()
            received[0] = 0
            text = b"s" * size
            count = megabytes * MiB // size
            published = 0
            deadline = time.monotonic() + timeout
            for i in range(count):
                if time.monotonic() > deadline:
                    break
                publisher.send(time.perf_counter(), site.serverId, b"publish:" + topic + b":" + text)
                while publisher.pending is not None and time.monotonic() < deadline:
                    if publisher.sock.poll(5):
                        publisher.read(time.perf_counter())
                    publisher.expire(time.perf_counter())
                    drainNormal()
                published += 1
            end = time.monotonic() + 3.0
            while time.monotonic() < end and received[0] < published:
                drainNormal()
                time.sleep(0.01)
            m.figures["publishedMiB"] = round(published * size / MiB, 1)
            m.figures["published"] = published
            m.figures["publisherLost"] = publisher.lost
            m.figures["normalReceived"] = received[0]
            m.figures["peakBeforeLeaving"] = {
                name: m.watch.peakRss[n["pid"]] for name, n in site.nodes.items()
            }
            slowSub.close(0)
            normal.close(0)
        finally:
            publisher.close()
            context.term()
    return m.figures


# ---------------------------------------------------------------------------
# 6. Silent connections


def silent(site, dealers=500, tcp=500, hold=8.0, target="cloud", settle=5.0, maxPending=10000):
    """
    Defect 6: C{dealers} DEALERs connect and never say HELLO (ZeroMQ
    reconnects them whenever the node drops them), and C{tcp} raw TCP
    connections never say anything (not even ZMTP), for C{hold} seconds;
    meanwhile a probe must still get its WELCOME.  Then they all close.

    @param maxPending: the node's C{--max-pending} (only reported).
    @return: figures, with the node's descriptors over time (C{fdSeries},
        0.25 s apart), at the end of the hold (C{fdsEndOfHold}), and how
        many raw TCP connections the node closed (C{tcpClosedByNode}).
    """
    endpoint = site.endpoint(target)
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    pid = site.pid(target)
    _raiseFdLimit(3 * (dealers + tcp) + 256)
    with Measured(site, "silent", settle, target) as m:
        context = zmq.Context()
        context.set(zmq.MAX_SOCKETS, dealers + 64)
        socks = []
        raws = []
        try:
            for i in range(dealers):
                socks.append(_dealer(context, endpoint))
            for i in range(tcp):
                try:
                    raws.append(socket.create_connection((host, int(port)), timeout=2.0))
                except OSError:
                    break
            m.figures["tcpOpened"] = len(raws)
            m.figures["maxPending"] = maxPending
            time.sleep(min(1.0, hold))
            m.figures["fdsWhileHeld"] = fdCount(pid)
            try:
                ask(endpoint, "", "ping", timeout=3.0)
                m.figures["probeWelcomed"] = True
            except BenchError:
                m.figures["probeWelcomed"] = False
            end = time.monotonic() + max(0.0, hold - 1.0)
            while time.monotonic() < end:
                time.sleep(0.1)
            m.figures["fdsEndOfHold"] = fdCount(pid)
            closed = 0
            for raw in raws:
                raw.setblocking(False)
                try:
                    if raw.recv(1) == b"":
                        closed += 1
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            m.figures["tcpClosedByNode"] = closed
        finally:
            for raw in raws:
                raw.close()
            for sock in socks:
                sock.close(0)
            context.term()
        m.attackEnded()
    return m.figures


# ---------------------------------------------------------------------------
# 7. Floods against well-behaved clients


#: The floods: name, sockets, HELLO mode (see L{floodbench.flood}).
FLOODS = (
    ("one id, 1 socket", 1, "same"),
    ("one id, 4 sockets", 4, "same"),
    ("4 ids", 4, "each"),
    ("strangers, 4 sockets", 4, "none"),
)


#: The run of L{floods} that measures the machine, not the nodes.
FLOOR = "floor: the same flood into a bare reader beside the nodes"


def floods(site, seconds=5.0, clients=4, interval=0.02, size=16, variants=None, settle=5.0,
           children=None, count=2000000, floor=False):
    """
    Defect 7: a quiet run of C{clients} well-behaved clients (each one
    request at a time every C{interval} seconds, to the server through the
    cloud), then one run per flood of L{FLOODS} (a C{floodbench.py flood}
    process).

    With C{floor}, one more run (L{FLOOR}): the flooder of "one id, 1
    socket" floods a bare pyzmq ROUTER that reads and drops everything (as
    C{bench/readfloor.py} does), in a process of its own beside the nodes,
    while the clients go on through the nodes, which see nothing of the
    flood.  What their p99 does then is what two busy processes cost the
    others on this machine's cores, whatever the nodes do: the floor under
    the p99 goals.

    @return: figures, with C{runs}: per run the clients' answered, lost,
        p50 and p99 (and p99 over the quiet p99), the flooder's summary,
        and the cloud's CPU per message it refused or ignored.
    """
    variants = FLOODS if variants is None else [v for v in FLOODS if v[0] in variants]
    own = children is None
    children = children or Children("attacks-")
    cloudPid = site.pid("cloud")
    with Measured(site, "floods", settle, "cloud") as m:
        context = zmq.Context()
        normal = []
        runs = {}
        try:
            waitForRoute(site)
            for i in range(clients):
                normal.append(NormalClient(context, site.endpoint("cloud"), f"normal-{i}"))
            drive(normal, site.serverId, 1.0, interval)
            cpu0 = cpuSeconds(cloudPid)
            drive(normal, site.serverId, seconds, interval)
            quiet = summarize(normal)
            quiet["cpuPerSecond"] = (cpuSeconds(cloudPid) - cpu0) / seconds
            runs["quiet"] = quiet
            for k, (name, sockets, ids) in enumerate(variants):
                flooderName = f"flooder-{k}"
                children.spawn(flooderName, [
                    sys.executable, floodbench.__file__, "flood", site.endpoint("cloud"),
                    "--target", site.serverId, "--seconds", str(seconds + 1.0),
                    "--count", str(count), "--size", str(size), "--sockets", str(sockets),
                    "--ids", ids, "--id", f"flooder-{k}",
                ])
                children.waitFor(flooderName, r"^flooding")
                before = nodeStats(site, "cloud")
                cpu0 = cpuSeconds(cloudPid)
                drive(normal, site.serverId, seconds, interval)
                run = summarize(normal)
                children.wait(flooderName, seconds + 30.0)
                cpu = cpuSeconds(cloudPid) - cpu0
                after = nodeStats(site, "cloud")
                run["flooder"] = json.loads(children.lines(flooderName)[-1])
                run["refusedOrIgnored"] = refused = refusedOrIgnored(before, after)
                run["received"] = (after or {}).get("front.received", 0) - (before or {}).get(
                    "front.received", 0)
                run["cpu"] = round(cpu, 3)
                if refused:
                    # What the flood cost beyond a quiet run of the same length.
                    extra = max(0.0, cpu - quiet["cpuPerSecond"] * seconds)
                    run["cpuPerRefusedUs"] = round(extra / refused * 1e6, 2)
                if run["received"]:
                    run["cpuPerReceivedUs"] = round(cpu / run["received"] * 1e6, 2)
                run["p99Ratio"] = round(run["p99"] / quiet["p99"], 2) if quiet["p99"] else None
                run["goal"] = P99_GOAL_ONE_ID if ids == "same" else P99_GOAL_MANY_IDS
                runs[name] = run
            if floor:
                ready = children.start("floor-reader", [
                    sys.executable, os.path.join(HERE, "readfloor.py"), "reader",
                    "--seconds", str(seconds + 5.0),
                ])
                children.spawn("floor-flooder", [
                    sys.executable, floodbench.__file__, "flood", ready["endpoint"],
                    "--target", site.serverId, "--seconds", str(seconds + 1.0),
                    "--count", str(count), "--size", str(size), "--sockets", "1",
                    "--ids", "none", "--id", "floor",
                ])
                children.waitFor("floor-flooder", r"^flooding")
                drive(normal, site.serverId, seconds, interval)
                run = summarize(normal)
                children.wait("floor-flooder", seconds + 30.0)
                children.procs["floor-reader"].terminate()
                children.procs["floor-reader"].wait(10)
                run["flooder"] = json.loads(children.lines("floor-flooder")[-1])
                run["p99Ratio"] = round(run["p99"] / quiet["p99"], 2) if quiet["p99"] else None
                runs[FLOOR] = run
        finally:
            _release(normal, context, children if own else None)
        m.figures["runs"] = runs
    return m.figures


# ---------------------------------------------------------------------------
# 8. CURVE: keys the node does not know


def curve(site, seconds=5.0, unknown=100, nokey=25, wrongServer=25, periodMs=100,
          backlog=100, clients=4, interval=0.02, target="cloud", settle=5.0, children=None,
          floor=False):
    """
    Issue 7's CURVE goal, "unknown keys cost nothing past the handshake",
    against a node with CURVE on (L{startCurveSite}).  For C{seconds}, a
    separate process (L{churn}) keeps dialling it with

      - C{unknown} DEALERs with CURVE keypairs of their own, which it has
        never heard of (its ZAP handler says 400),
      - C{nokey} DEALERs with no CURVE at all (the ZMTP mechanisms do not
        match),
      - C{wrongServer} DEALERs with a keypair of their own and a server key
        that is not the node's (it cannot open their HELLO box),

    each with a HELLO and REQs queued, and replaces all of them with new
    sockets every C{periodMs} ms: libzmq does not redial after a refused
    handshake, so an attacker that wants the node to keep paying for
    handshakes must make new connections, and does.  Meanwhile C{clients}
    well-behaved clients, each with an authorized key of its own, send one
    request at a time every C{interval} seconds through the cloud to the
    server, before (a quiet run of the same length) and during the attack.

    With C{floor}, one more run: the same churn aims at a bare pyzmq
    ROUTER with CURVE on in a process of its own (L{curveFloor}), while the
    clients go on through the nodes, which see nothing of it: what the
    handshakes and the attacking process cost everyone else on this
    machine's cores, whatever the nodes do.

    @return: figures, with C{quiet} and C{attacked} (the clients' answered,
        lost, p50, p99; C{floor} likewise, with C{floor}), C{churn} (what
        the attacking process did, with C{answers}: messages any attacker
        socket received, which would mean it got past the handshake),
        C{zapDenied} (handshakes the ZAP handler refused),
        C{cpuPerHandshakeUs} and C{fdsDuringAttack}.
    """
    endpoint = site.endpoint(target)
    keys = site.curve(target)
    pid = site.pid(target)
    if not keys:
        raise BenchError(f"{target} has no CURVE keys in the site: start it with startCurveSite")
    if clients > len(keys["keys"]) - 1:
        raise BenchError(f"the site has keys for {len(keys['keys']) - 1} clients, not {clients}")
    own = children is None
    children = children or Children("attacks-")

    def churnArgv(aim, key):
        return [
            # "--server-key=KEY", not "KEY": a Z85 key may begin with "-".
            sys.executable, os.path.abspath(__file__), "churn", aim, f"--server-key={key}",
            "--target", site.serverId, "--seconds", str(seconds + 0.5),
            "--unknown", str(unknown), "--nokey", str(nokey),
            "--wrong-server", str(wrongServer), "--period-ms", str(periodMs),
            "--backlog", str(backlog),
        ]

    context = zmq.Context()
    normal = []
    try:
        for i in range(clients):
            name = f"normal-{i}"
            normal.append(NormalClient(
                context, endpoint, name, curve=lambda sock, name=name: secure(sock, keys, name)))
        drive(normal, site.serverId, 1.0, interval)
        cpu0 = cpuSeconds(pid)
        drive(normal, site.serverId, seconds, interval)
        quiet = summarize(normal)
        quietCpuPerSecond = (cpuSeconds(pid) - cpu0) / seconds
        floorRun = None
        if floor:
            ready = children.start("curve-floor", [
                sys.executable, os.path.abspath(__file__), "curvefloor"])
            children.spawn("floor-churn", churnArgv(ready["endpoint"], ready["key"]))
            children.waitFor("floor-churn", r"^churning")
            time.sleep(0.25)
            drive(normal, site.serverId, seconds, interval)
            floorRun = summarize(normal)
            children.wait("floor-churn", seconds + 30.0)
            floorRun["churn"] = json.loads(children.lines("floor-churn")[-1])
            children.procs["curve-floor"].terminate()
            children.procs["curve-floor"].wait(10)
        with Measured(site, "curve", settle, target) as m:
            zapBefore = (m.statsBefore or {}).get("zap.denied", 0)
            cpu0 = cpuSeconds(pid)
            children.spawn("churn", churnArgv(endpoint, keys["server"]))
            children.waitFor("churn", r"^churning")
            time.sleep(0.25)
            m.figures["fdsDuringAttack"] = fdCount(pid)
            drive(normal, site.serverId, seconds, interval)
            m.figures["attacked"] = summarize(normal)
            children.wait("churn", seconds + 30.0)
            cpu = cpuSeconds(pid) - cpu0
            m.attackEnded()
            during = nodeStats(site, target)
            m.figures["churn"] = json.loads(children.lines("churn")[-1])
            m.figures["zapDenied"] = (during or {}).get("zap.denied", 0) - zapBefore
            m.figures["cpu"] = round(cpu, 3)
            handshakes = m.figures["churn"]["handshakes"]
            if handshakes:
                extra = max(0.0, cpu - quietCpuPerSecond * m.figures["attackSeconds"])
                m.figures["cpuPerHandshakeUs"] = round(extra / handshakes * 1e6, 1)
            m.figures["attackers"] = {"unknown": unknown, "nokey": nokey,
                                      "wrongServer": wrongServer, "periodMs": periodMs}
        m.figures["quiet"] = quiet
        if floorRun is not None:
            m.figures["floor"] = floorRun
        for name in ("attacked", "floor"):
            if name in m.figures:
                run = m.figures[name]
                run["p99Ratio"] = round(run["p99"] / quiet["p99"], 2) if quiet["p99"] else None
    finally:
        _release(normal, context, children if own else None)
    return m.figures


def _release(clients, context, children=None):
    """
    End a run with well-behaved clients: close them, end their context and,
    if the run started its own processes, those too.
    """
    for client in clients:
        client.close()
    context.term()
    if children is not None:
        children.stopAll()


def churn(endpoint, serverKey, target, seconds, unknown, nokey, wrongServer, periodMs, backlog,
          out=sys.stdout):
    """
    The attacking process of L{curve}: every C{periodMs} ms, close every
    socket (linger 0) and dial C{endpoint} anew with C{unknown} +
    C{nokey} + C{wrongServer} fresh DEALERs (see L{curve}), each with a
    HELLO and C{backlog} - 1 REQs queued, until C{seconds} have passed.

    Prints C{churning} once it starts and, at the end, one JSON line:
    C{rounds}, C{handshakes} (connections dialled), C{answers} (messages
    any of its sockets received) and C{seconds}.
    """
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, 2 * (unknown + nokey + wrongServer) + 64)
    server = serverKey.encode("ascii")
    hello = protocol.encode(protocol.HELLO, {
        "id": "churn", "role": protocol.CLIENT, "inc": os.urandom(8).hex(),
        "versions": list(protocol.SUPPORTED_VERSIONS), "hb": 1000, "liveness": 3,
    })
    requests = [
        protocol.encode(protocol.REQUEST, {"id": n, "to": target, "ttl": 30000}, b"attack")
        for n in range(1, backlog)
    ]
    rounds = handshakes = answers = 0
    socks = []
    print("churning", flush=True, file=out)
    started = time.monotonic()
    end = started + seconds
    try:
        while time.monotonic() < end:
            for sock in socks:
                answers += _drain(sock)
                sock.close(0)
            socks = []
            for kind, count in (("unknown", unknown), ("nokey", nokey), ("wrong", wrongServer)):
                for _ in range(count):
                    sock = context.socket(zmq.DEALER)
                    socks.append(sock)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.SNDHWM, backlog + 1)
                    if kind != "nokey":
                        public, secret = zmq.curve_keypair()
                        sock.curve_publickey = public
                        sock.curve_secretkey = secret
                        sock.curve_serverkey = server if kind == "unknown" else zmq.curve_keypair()[0]
                    sock.connect(endpoint)
                    for frames in [hello] + requests:
                        try:
                            sock.send_multipart(frames, zmq.NOBLOCK)
                        except zmq.Again:
                            break
                    handshakes += 1
            rounds += 1
            time.sleep(max(0.0, min(periodMs / 1000.0, end - time.monotonic())))
    finally:
        for sock in socks:
            answers += _drain(sock)
            sock.close(0)
        context.term()
    print(json.dumps({
        "rounds": rounds, "handshakes": handshakes, "answers": answers,
        "seconds": round(time.monotonic() - started, 3),
    }), flush=True, file=out)


def curveFloor(bind="tcp://127.0.0.1:*"):
    """
    The floor under the L{curve} attack: a bare pyzmq ROUTER with CURVE on
    and a ZAP handler (a thread, no Twisted) that refuses every key, in a
    process of its own.  It never reads a message (none can get through),
    so what the attack costs it is the handshakes alone, in libzmq.

    Prints C{ready: baseline curvefloor endpoint=... key=...} (its public
    key, Z85) and runs until killed.
    """
    context = zmq.Context()
    zap = context.socket(zmq.ROUTER)
    zap.bind("inproc://zeromq.zap.01")

    def refuseAll():
        while True:
            try:
                frames = zap.recv_multipart()
            except zmq.ZMQError:
                return
            # routing id, empty, version, request id, ...: answer 400.
            zap.send_multipart(frames[:2] + [b"1.0", frames[3], b"400", b"unknown key", b"", b""])

    threading.Thread(target=refuseAll, daemon=True).start()
    public, secret = zmq.curve_keypair()
    sock = context.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.zap_domain = b"floor"
    sock.bind(bind)
    print("ready: baseline curvefloor endpoint="
          + sock.getsockopt(zmq.LAST_ENDPOINT).decode() + " key=" + public.decode("ascii"),
          flush=True)
    while True:
        time.sleep(3600)


def _drain(sock):
    """
    @return: how many messages C{sock} had received (reading them all).
    """
    n = 0
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return n
        n += 1


ATTACKS = {
    "abort": abort,
    "deaf": deaf,
    "multipart": multipart,
    "subscriptions": subscriptions,
    "slow": slow,
    "silent": silent,
    "floods": floods,
    "curve": curve,
}


# ---------------------------------------------------------------------------
# The report


#: Per attack: the options its nodes get in the benchmark (beyond the
#: defaults), and its parameters there.
BENCH = {
    "abort": ([], {"seconds": 3.0, "rounds": 3}),
    "deaf": ([], {"seconds": 6.0, "probes": 12}),
    "multipart": ([], {"messages": 4, "preHelloMiB": 400}),
    "subscriptions": ([], {"prefixes": 100010}),
    "slow": ([], {"megabytes": 200}),
    "silent": ([], {"dealers": 500, "tcp": 500, "hold": 10.0}),
    "floods": ([], {"seconds": 5.0, "floor": True}),
    "curve": ([], {"seconds": 5.0, "unknown": 100, "nokey": 25, "wrongServer": 25, "floor": True}),
}

#: RSS growth (KiB) over its start a node may show at its peak, per attack:
#: the documented bound (docs/FLOOD.md says why each is what it is).
RSS_PEAK_BOUND_KIB = {
    "abort": 64 * 1024,
    "deaf": 64 * 1024,
    "multipart": 160 * 1024,
    "subscriptions": 96 * 1024,
    "slow": 96 * 1024,
    "silent": 64 * 1024,
    "floods": 64 * 1024,
    "curve": 64 * 1024,
}


def _mib(kib):
    return "-" if kib is None else f"{kib / 1024:.0f}"


def _met(ok):
    return "met" if ok else "**not met**"


def goals(figures):
    """
    @return: (goal, measured, met) rows for one attack's figures.
    """
    attack = figures["attack"]
    rows = []
    nodes = figures["nodes"]
    alive = all(n["alive"] for n in nodes.values())
    answering = figures.get("answering", {})
    rows.append((
        "every node alive and answering a sys ping afterwards",
        ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in answering.items()) or
        ("alive" if alive else "DEAD"),
        alive and bool(answering) and all(answering.values()),
    ))
    bound = RSS_PEAK_BOUND_KIB[attack]
    worst = max(
        ((n["rssPeak"] or 0) - (n["rssBefore"] or 0), name) for name, n in nodes.items()
    )
    rows.append((
        f"RSS peak within start + {bound // 1024} MiB (every node)",
        f"largest growth {worst[0] / 1024:.0f} MiB ({worst[1]})",
        worst[0] <= bound,
    ))
    back = max(
        ((n["rssAfter"] or 0) - (n["rssBefore"] or 0), name) for name, n in nodes.items()
    )
    rows.append((
        f"RSS back within {RSS_NEAR_START_KIB // 1024} MiB of its start {figures['settle']:g} s after",
        f"largest {back[0] / 1024:+.0f} MiB ({back[1]})",
        back[0] <= RSS_NEAR_START_KIB and alive,
    ))
    cpu = figures.get("cpuPerRefusedUs")
    if attack == "abort":
        rows.append(("no abort, every round", " ".join(
            "alive" if r["alive"] else "ABORTED" for r in figures["rounds"]), figures["survived"]))
    elif attack == "deaf":
        rows.append((
            "every HELLO welcomed (within 3 s)",
            f"{len(figures['welcome'])} welcomed, {figures['unanswered']} not; "
            f"p50 {figures['welcomeP50']} s, max {figures['welcomeMax']} s",
            figures["unanswered"] == 0,
        ))
    elif attack == "subscriptions":
        rows.append((
            "a refused subscriber is served once the flooder left",
            f"after {figures['secondsAfterFlooderLeft']} s" if figures["delivered"] else "never",
            figures["delivered"],
        ))
    elif attack == "slow":
        rows.append((
            "the reading subscriber gets every notification",
            f"{figures['normalReceived']} of {figures['published']}",
            figures["normalReceived"] == figures["published"],
        ))
    elif attack == "silent":
        pending = figures.get("maxPending", 10000)
        fds = figures.get("fdsEndOfHold")
        base = nodes[figures["target"]]["fdsBefore"] or 0
        rows.append((
            f"silent peers cost at most --max-pending ({pending}, +10% +10 for those being cut) "
            "descriptors after the handshake timeout",
            f"{fds} descriptors at the end of the hold ({base} before; "
            f"{figures.get('tcpClosedByNode')} of {figures.get('tcpOpened')} raw TCP closed by the node)",
            fds is not None and fds - base <= pending + pending // 10 + 10,
        ))
        rows.append(("a probe welcomed meanwhile", "yes" if figures.get("probeWelcomed") else "no",
                     bool(figures.get("probeWelcomed"))))
    elif attack == "floods":
        for name, run in figures["runs"].items():
            if name in ("quiet", FLOOR):
                continue
            rows.append((
                f"{name}: nothing lost, p99 <= {run['goal']:g}x quiet",
                f"lost {run['lost']}, p99 {run['p99'] * 1000:.1f} ms = {run['p99Ratio']}x",
                run["lost"] == 0 and run["p99Ratio"] is not None and run["p99Ratio"] <= run["goal"],
            ))
            if run.get("cpuPerRefusedUs") is not None:
                rows.append((
                    f"{name}: <= {CPU_GOAL_US:g} us CPU per refused or ignored message",
                    f"{run['cpuPerRefusedUs']} us ({run['refusedOrIgnored']} refused/ignored)",
                    run["cpuPerRefusedUs"] <= CPU_GOAL_US,
                ))
        cpu = None
    elif attack == "curve":
        answers = figures["churn"]["answers"]
        refused = figures.get("refusedOrIgnored")
        rows.append((
            "no attacker gets past the handshake: none of their messages read, none answered",
            f"{refused} refused or ignored by the node, {answers} answers to the attackers "
            f"({figures['churn']['handshakes']} connections; {figures.get('zapDenied')} "
            "refused by ZAP)",
            answers == 0 and refused == 0,
        ))
        node = nodes[figures["target"]]
        attackers = sum(v for k, v in figures["attackers"].items() if k != "periodMs")
        during = figures.get("fdsDuringAttack")
        base = node["fdsBefore"] or 0
        rows.append((
            "descriptors: at most one per attacking socket during the attack, back to the start after",
            f"{base} before, {during} during ({attackers} attackers), {node['fdsAfter']} after",
            during is not None and during - base <= attackers
            and node["fdsAfter"] is not None and node["fdsAfter"] - base <= 2,
        ))
        run = figures["attacked"]
        rows.append((
            f"clients with an authorized key: nothing lost, p99 <= {P99_GOAL_MANY_IDS:g}x quiet",
            f"lost {run['lost']}, p99 {run['p99'] * 1000:.1f} ms = {run['p99Ratio']}x",
            run["lost"] == 0 and run["p99Ratio"] is not None and run["p99Ratio"] <= P99_GOAL_MANY_IDS,
        ))
    if cpu is not None and attack == "abort":
        rows.append((
            f"<= {CPU_GOAL_US:g} us CPU per refused or ignored message",
            f"{cpu} us ({figures['refusedOrIgnored']} refused/ignored)",
            cpu <= CPU_GOAL_US,
        ))
    return rows


def report(figures, params, options):
    """
    @return: the Markdown section of one attack.
    """
    attack = figures["attack"]
    lines = [
        f"Parameters: `{json.dumps(params)}`; node options: "
        f"`{' '.join(options) or 'defaults'}`; attack {figures['attackSeconds']:g} s, "
        f"then {figures['settle']:g} s to settle.",
        "",
        "| node | RSS before | peak | after (MiB) | FDs before | peak | after | CPU s | alive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, n in figures["nodes"].items():
        lines.append(
            f"| {name} | {_mib(n['rssBefore'])} | {_mib(n['rssPeak'])} | {_mib(n['rssAfter'])} | "
            f"{n['fdsBefore']} | {n['fdsPeak']} | {n['fdsAfter']} | {n['cpu']} | "
            f"{'yes' if n['alive'] else 'NO'} |"
        )
    if attack == "floods":
        lines += [
            "",
            "| run | answered | lost | p50 | p99 | p99 / quiet | flooder sent | cloud refused or ignored | CPU us each |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, run in figures["runs"].items():
            flooder = run.get("flooder", {})
            lines.append(
                f"| {name} | {run['answered']} | {run['lost']} | {run['p50'] * 1000:.1f} ms | "
                f"{run['p99'] * 1000:.1f} ms | {run.get('p99Ratio', '-') or '-'} | "
                f"{flooder.get('sent', '-')} | {run.get('refusedOrIgnored', '-')} | "
                f"{run.get('cpuPerRefusedUs', '-')} |"
            )
    elif attack == "curve":
        a = figures["attackers"]
        lines += [
            "",
            "| run | answered | lost | p50 | p99 | p99 / quiet |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in ("quiet", "attacked", "floor"):
            if name not in figures:
                continue
            run = figures[name]
            lines.append(
                f"| {name} | {run['answered']} | {run['lost']} | {run['p50'] * 1000:.1f} ms | "
                f"{run['p99'] * 1000:.1f} ms | {run.get('p99Ratio', '-') or '-'} |"
            )
        c = figures["churn"]
        lines += ["", (
            f"Attackers, replaced by new ones every {a['periodMs']:g} ms: {a['unknown']} DEALERs with "
            f"keys of their own, {a['nokey']} with no CURVE, {a['wrongServer']} with a wrong server "
            f"key, each with a HELLO and REQs queued: {c['handshakes']} connections in "
            f"{c['seconds']:g} s. The ZAP handler refused {figures['zapDenied']}; the cloud spent "
            f"{figures['cpu']} s of CPU over the attack, {figures.get('cpuPerHandshakeUs', '-')} us "
            "per connection beyond its quiet load."
        )]
    elif attack == "silent":
        series = " ".join(f"{t:g}s:{fds}" for t, fds in figures["fdSeries"][::2])
        lines += ["", f"Cloud descriptors over time: {series}."]
    elif attack == "multipart":
        lines += ["", (
            f"Sent {figures['bigMessages']} messages of {figures['bigMessageMiB']:g} MiB, then "
            f"{figures['preHelloMiB']:g} MiB in {figures['preHelloMessages']} messages before any "
            f"HELLO; answers: {figures['answers'] or 'none'}."
        )]
    elif attack == "slow":
        lines += ["", (
            f"Published {figures['publishedMiB']:g} MiB in {figures['published']} notifications; "
            f"RSS peak while the slow subscriber was there: "
            + ", ".join(f"{k} {_mib(v)} MiB" for k, v in figures["peakBeforeLeaving"].items()) + "."
        )]
    interesting = {
        k: v for k, v in (figures.get("stats") or {}).items()
        if k.startswith(("front.", "notify.", "zap.")) and v
    }
    if interesting:
        lines += ["", "Counters of the attacked node afterwards: " + ", ".join(
            f"`{k}` {v}" for k, v in sorted(interesting.items())) + "."]
    if figures.get("trouble"):
        lines += ["", "Node output: " + "; ".join(f"`{t}`" for t in figures["trouble"]) + "."]
    lines += ["", "| goal | measured | |", "|---|---|---|"]
    for goal, measured, ok in goals(figures):
        lines.append(f"| {goal} | {measured} | {_met(ok)} |")
    return "\n".join(lines)


def replaceBetween(path, begin, end, block):
    """
    Put C{block} between the markers C{begin} and C{end} of the file at
    C{path}, if it has them.

    @return: C{True} if it had them (and was rewritten).
    """
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{block}\n{end}{tail}")
    return True


def writeInto(path, attack, block):
    """
    Replace the section of C{attack} in C{path} (between its markers); add
    it before the C{attacks:end} marker if it has none yet.
    """
    begin, end = f"<!-- attack:{attack}:begin -->", f"<!-- attack:{attack}:end -->"
    if replaceBetween(path, begin, end, block):
        return
    with open(path) as f:
        text = f.read()
    if "<!-- attacks:end -->" in text:
        head, tail = text.split("<!-- attacks:end -->", 1)
        text = f"{head}{begin}\n{block}\n{end}\n\n<!-- attacks:end -->{tail}"
    else:
        raise BenchError(f"{path} has neither {begin} nor an <!-- attacks:end --> marker")
    with open(path, "w") as f:
        f.write(text)


def _coerce(value):
    try:
        return json.loads(value)
    except ValueError:
        return value


def runOne(name, extraOptions=(), params=None, relayOptions=()):
    """
    Start a fresh site, run one attack with its benchmark parameters, stop
    the site.

    @return: (figures, parameters, node options).
    """
    options, defaults = BENCH[name]
    options = list(options) + list(extraOptions)
    params = dict(defaults, **(params or {}))
    children = Children(f"attack-{name}-")
    try:
        if name == "curve":
            site = startCurveSite(children, options)
        else:
            site = startSite(children, relayOptions, options)
        waitForRoute(site)
        if name in ("floods", "curve"):
            params["children"] = children
        figures = ATTACKS[name](site, **params)
        params.pop("children", None)
        figures["trouble"] = [
            f"{node}: {line.strip()}" for node in site.nodes for line in children.lines(node)
            if "Assertion" in line or "Traceback" in line or "Unhandled" in line
        ][:10]
        return figures, params, options + [f"(relays: {' '.join(relayOptions)})"] * bool(relayOptions)
    finally:
        children.stopAll()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "churn":
        parser = argparse.ArgumentParser(prog="attacks.py churn")
        parser.add_argument("endpoint")
        parser.add_argument("--server-key", required=True, help="the node's public key, Z85")
        parser.add_argument("--target", default="s1")
        parser.add_argument("--seconds", type=float, default=5.0)
        parser.add_argument("--unknown", type=int, default=100)
        parser.add_argument("--nokey", type=int, default=25)
        parser.add_argument("--wrong-server", type=int, default=25)
        parser.add_argument("--period-ms", type=float, default=100.0)
        parser.add_argument("--backlog", type=int, default=100)
        a = parser.parse_args(argv[1:])
        churn(a.endpoint, a.server_key, a.target, a.seconds, a.unknown, a.nokey,
              a.wrong_server, a.period_ms, a.backlog)
        return
    if argv and argv[0] == "curvefloor":
        curveFloor()
        return
    if argv and argv[0] == "run":
        parser = argparse.ArgumentParser(prog="attacks.py run")
        parser.add_argument("attack", choices=sorted(ATTACKS))
        parser.add_argument("--site", required=True, help="JSON: name -> {pid, control, pub, sub}")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
        a = parser.parse_args(argv[1:])
        params = {}
        for p in a.param:
            key, _, value = p.partition("=")
            params[key] = _coerce(value)
        figures = ATTACKS[a.attack](Site.fromJson(a.site), **params)
        print(json.dumps(figures), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(ATTACKS),
                        help="comma-separated attacks (default: all)")
    parser.add_argument("--node-options", default="", help="extra options for every node")
    parser.add_argument("--relay-options", default="",
                        help="extra options for the cloud and the proxy, e.g. '--max-subscriptions 500'")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the attacks run")
    parser.add_argument("--write", metavar="PATH")
    parser.add_argument("--json", metavar="PATH", help="also dump the raw figures there")
    args = parser.parse_args(argv)

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    params = {}
    for p in args.param:
        key, _, value = p.partition("=")
        params[key] = _coerce(value)
    raw = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in ATTACKS:
            raise SystemExit(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
        load = os.getloadavg()[0]
        wanted = {k: v for k, v in params.items()
                  if k in ATTACKS[name].__code__.co_varnames}
        figures, used, options = runOne(
            name, args.node_options.split(), wanted, args.relay_options.split())
        raw[name] = figures
        command = "python bench/attacks.py --only " + name + "".join(
            f" --param {k}={json.dumps(v)}" for k, v in wanted.items()) + (
            f" --node-options '{args.node_options}'" if args.node_options else "") + (
            f" --relay-options '{args.relay_options}'" if args.relay_options else "")
        block = (
            f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}; "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"libzmq {zmq.zmq_version()}, pyzmq {zmq.__version__}; load average "
            f"{max(load, os.getloadavg()[0]):.1f}.\n\n" + report(figures, used, options)
        )
        print(f"## {name}\n\n{block}\n", flush=True)
        if args.write:
            writeInto(args.write, name, block)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
