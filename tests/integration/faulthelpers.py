"""
The fault-injection rig: a whole topology of real C{twistd} nodes on fixed
loopback ports (so a node restarts on the same endpoints), steady request and
notification traffic from an in-process client, and the checks every fault
ends with.

Shared by C{tests/integration/test_faults.py} and C{bench/recovery.py}.

The topology::

    driver (in-process) --[chaos hop]--> cloud <--[chaos hop]-- proxyA <-- s1
    c2 (twistd client) ------------------> cloud                   ^
    lan (in-process) ----------------------------------------------+

The driver sends a request to s1 every 50 ms; s1 publishes on C{tick.s1}
every 50 ms; driver and lan subscribe to C{tick.}; c2 sends a request every
200 ms.  A chaos hop (C{chaoshop.py}) is optional, on one of the two places.

The server runs L{RunLogApp}: the example app, plus one line appended to a
file for every handler run, so the suite can prove that no request id ran
twice, across server restarts too (a SIGKILLed process keeps what it wrote).
"""

import os
import random
import re
import signal
import socket
import sys
import time
from collections import Counter, OrderedDict, defaultdict

import msgpack
from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import errors
from zmqrelay.tools.examples import ExampleApp
from zmqrelay.interfaces import INotificationReceiver
from zmqrelay.tools.launcher import ROOT, TWISTD_MAIN, NodeProcess, Topology
from tests.integration.helpers import poll

log = Logger()

#: Heartbeat settings of every node in the rig: a peer is gone after
#: C{HEARTBEAT * LIVENESS} seconds of silence.
HEARTBEAT = 0.2
LIVENESS = 3
WINDOW = HEARTBEAT * LIVENESS

#: The bound the issue sets for seeing a killed or frozen client as gone.
DETECT_BOUND = WINDOW + HEARTBEAT

#: What we allow on top of a bound for our own measurement: the polling
#: interval of the observer and scheduling on a loaded two-core machine.
MEASURE_SLACK = 0.2

#: Options every node gets.
FAST = ["--heartbeat", str(HEARTBEAT), "--liveness", str(LIVENESS), "--reconnect-max", "1"]

#: Environment variables telling L{runLogApp} where to write and how often
#: to tick.
RUNLOG_ENV = "ZMQRELAY_FAULT_RUNLOG"
TICK_ENV = "ZMQRELAY_FAULT_TICK"
#: ... and how long each echo takes (seconds; 0: answer at once).
DELAY_ENV = "ZMQRELAY_FAULT_DELAY"

#: The chaos hop script.
CHAOSHOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaoshop.py")

_CHATTER_OUTCOME = re.compile(r"(?:reply (\d+) from|request (\d+) to \S+ failed)")

_PRESENCE_LINE = re.compile(
    r"client (\S+) \((\S+)\) (connected|disconnected) via (\S+)(?:: (\S+))?"
)


def _ephemeralRange():
    """
    @return: C{(low, high)}, the ports the kernel gives to outgoing
        connections (and to C{bind(0)}).
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


#: Ports L{freePort} gave out in this process: free when it looked, but the
#: node that was to bind one may not have yet, or may be down for a restart
#: test and come back on it.  Never given twice: two nodes on one random
#: port fail with "Address already in use".  Only the last L{_GIVEN_MAX}
#: are remembered (a worker's stripe holds about 1,600 ports; a whole suite
#: takes a few hundred), so a long run does not run out.
_given = OrderedDict()
_GIVEN_MAX = 1000

#: Trial workers (C{trial -j N}) take ports in disjoint stripes, so two
#: workers never pick the same port between a check and a bind.
_STRIPES = 8

#: Draws ports; one for the process.
_rng = random.Random()


def freePort():
    """
    @return: a loopback TCP port that was free a moment ago.  Restart tests
        need a node to come back on the same endpoint, so they cannot bind
        C{*} and read back what ZeroMQ picked.

    The port is taken below the kernel's ephemeral range when there is room:
    a port from that range (what C{bind(0)} returns) can be given to some
    other test's outgoing connection before the node binds it (seen as
    "Address already in use" with two trial workers).  It is in this trial
    worker's stripe, and none of the last ports given out is given again.
    """
    low, _ = _ephemeralRange()
    first = 20000 if low > 21000 else None
    if first is not None:
        stripe = _workerStripe()
        for _attempt in range(200):
            port = _rng.randrange(first, low)
            if stripe is not None:
                port -= (port - stripe) % _STRIPES
                if port < first:
                    port += _STRIPES
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given[port] = None
            while len(_given) > _GIVEN_MAX:
                _given.popitem(last=False)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workerStripe():
    """
    @return: this trial worker's stripe of ports (its number, modulo
        L{_STRIPES}: a C{trial -j} worker runs in C{_trial_temp/<number>}),
        or C{None} outside such a worker.
    """
    name = os.path.basename(os.getcwd())
    return int(name) % _STRIPES if name.isdigit() else None


def loopback():
    """
    @return: a C{tcp://127.0.0.1:<port>} endpoint on a free port.
    """
    return f"tcp://127.0.0.1:{freePort()}"


def sleep(reactor, seconds):
    """
    @return: a L{defer.Deferred} firing after C{seconds}.
    """
    return deferLater(reactor, seconds, lambda: None)


async def until(reactor, check, timeout, what, interval=0.05):
    """
    Call C{check} until it returns (or fires with) a true value (see
    L{tests.integration.helpers.poll}).

    @return: the reactor time at which C{check} first held.
    @raise AssertionError: naming C{what} after C{timeout} seconds.
    """
    await poll(check, timeout, interval, what)
    return reactor.seconds()


async def together(*coroutines):
    """
    Run coroutines concurrently.

    @return: their results, in order.
    @raise Exception: the first failure, unwrapped.
    """
    try:
        return await defer.gatherResults(
            [defer.ensureDeferred(c) for c in coroutines], consumeErrors=True
        )
    except defer.FirstError as e:
        e.subFailure.raiseException()


# The server application.


class RunLogApp(ExampleApp):
    """
    The example app, writing C{"<client> <incarnation> <request id> <time>"}
    to a file for every handler run, before it answers; an echo answers
    after C{delay} seconds.
    """

    def __init__(self, server, path, tick, delay=0.0):
        ExampleApp.__init__(self, server, tick)
        self.delay = delay
        # Unbuffered: each line is one write(2), and survives a SIGKILL.
        self._log = open(path, "ab", buffering=0)

    def handleRequest(self, request):
        self._log.write(
            f"{request.clientId} {request.clientIncarnation} {request.requestId} "
            f"{time.time():.4f}\n".encode()
        )
        result = ExampleApp.handleRequest(self, request)
        if self.delay > 0 and isinstance(result, bytes):
            return deferLater(self.server.reactor, self.delay, lambda: result)
        return result

    def stopService(self):
        self._log.close()
        return ExampleApp.stopService(self)


def runLogApp(server):
    """
    The C{--app} factory of the rig's servers: a L{RunLogApp} logging to
    C{$ZMQRELAY_FAULT_RUNLOG/runs-<server id>.log}, ticking every
    C{$ZMQRELAY_FAULT_TICK} seconds, echoing after C{$ZMQRELAY_FAULT_DELAY}.
    """
    directory = os.environ[RUNLOG_ENV]
    tick = float(os.environ.get(TICK_ENV, "0.05"))
    delay = float(os.environ.get(DELAY_ENV, "0"))
    return RunLogApp(server, os.path.join(directory, f"runs-{server.nodeId}.log"), tick, delay)


def readRuns(path):
    """
    @return: the handler runs the log at C{path} holds, as a L{list} of
        C{("<client> <incarnation> <request id>", time.time() of the run)}.
    """
    if not os.path.exists(path):
        return []
    runs = []
    with open(path, "rb") as f:
        for line in f:
            fields = line.decode().split()
            if len(fields) >= 3:
                when = float(fields[3]) if len(fields) > 3 else 0.0
                runs.append((" ".join(fields[:3]), when))
    return runs


def repeatedRuns(path):
    """
    @return: a L{dict} of C{(client, incarnation, request id)} to the number
        of handler runs, for every key that ran more than once.
    """
    counts = Counter(key for key, _ in readRuns(path))
    return {key: n for key, n in counts.items() if n > 1}


def handlerRuns(path):
    """
    @return: how many handler runs the log at C{path} holds.
    """
    return len(readRuns(path))


# Traffic.


class RequestRecord:
    """
    One request the driver issued, and what became of it.

    @ivar outcomes: how many times its Deferred fired (must end as 1).
    """

    __slots__ = ("n", "payload", "issued", "settled", "outcomes", "reply", "error")

    def __init__(self, n, payload, issued):
        self.n = n
        self.payload = payload
        self.issued = issued
        self.settled = None
        self.outcomes = 0
        self.reply = None
        self.error = None

    @property
    def succeeded(self):
        return self.outcomes == 1 and self.error is None and self.reply == self.payload


@implementer(INotificationReceiver)
class Subscriber:
    """
    Every notification one in-process client receives on a prefix.

    @ivar notifications: (server, incarnation, topic, seq, replayed, time).
    @ivar lost: the L{zmqrelay.core.sequence.Gap}s reported lost.
    """

    def __init__(self, reactor, client, prefix):
        self.reactor = reactor
        self.client = client
        self.prefix = prefix
        self.notifications = []
        self.lost = []

    def start(self):
        """
        Subscribe.
        """
        self.client.subscribe(self.prefix, self)

    def lastNotificationAfter(self, when):
        """
        @return: C{True} if a live (not replayed) notification arrived after
            C{when}.
        """
        return any(t > when and not replayed for _, _, _, _, replayed, t in self.notifications)

    def notificationReceived(self, notification):
        self.notifications.append(
            (
                notification.serverId,
                notification.incarnation,
                notification.topic,
                notification.seq,
                notification.replayed,
                self.reactor.seconds(),
            )
        )

    def notificationsLost(self, gap):
        self.lost.append(gap)


class Driver(Subscriber):
    """
    Steady traffic from one in-process client: a request every C{every}
    seconds to C{target} (each with C{timeout} per attempt and C{attempts}
    attempts), and every notification received on the subscribed prefix.

    @ivar records: the L{RequestRecord}s, in order.
    """

    def __init__(self, reactor, client, target, prefix, every=0.05, timeout=1.0, attempts=3,
                 deadline=None):
        """
        @param deadline: the longest a request may take (default: C{timeout}
            x C{attempts}, a loose bound: C{timeout} is the whole budget).
        """
        Subscriber.__init__(self, reactor, client, prefix)
        self.target = target
        self._deadline = deadline
        self.every = every
        self.timeout = timeout
        self.attempts = attempts
        self.records = []
        self._loop = None

    @property
    def deadline(self):
        """
        The longest a request may take to get its outcome: every attempt
        used up in full.
        """
        if self._deadline is not None:
            return self._deadline
        return self.timeout * self.attempts

    def start(self):
        """
        Subscribe and start issuing requests.
        """
        Subscriber.start(self)
        self._loop = LoopingCall(self._issue)
        self._loop.clock = self.reactor
        self._loop.start(self.every, now=True)

    def stop(self):
        """
        Stop issuing requests.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _issue(self):
        n = len(self.records) + 1
        record = RequestRecord(n, b"r:%d" % (n,), self.reactor.seconds())
        self.records.append(record)
        d = self.client.request(self.target, record.payload, self.timeout, self.attempts)
        d.addCallbacks(self._replied, self._failed, (record,), None, (record,))

    def _replied(self, reply, record):
        record.outcomes += 1
        record.settled = self.reactor.seconds()
        record.reply = reply

    def _failed(self, failure, record):
        record.outcomes += 1
        record.settled = self.reactor.seconds()
        record.error = failure.value

    def pending(self):
        """
        @return: the records without an outcome yet.
        """
        return [r for r in self.records if r.outcomes == 0]

    def firstSuccessAfter(self, when):
        """
        @return: the time of the first correct reply to a request issued at or
            after C{when}, or C{None}.
        """
        times = [r.settled for r in self.records if r.issued >= when and r.succeeded]
        return min(times) if times else None


def outcomeProblems(driver, slack=MEASURE_SLACK, pendingOK=False):
    """
    Every request issued got exactly one outcome: the right reply, or a
    typed L{errors.RelayError} within its deadline.

    @param pendingOK: skip requests without an outcome yet, unless their
        deadline has passed.
    @return: a L{list} of problems (empty if none).
    """
    problems = []
    now = driver.reactor.seconds()
    for r in driver.records:
        if r.outcomes == 0 and pendingOK and now - r.issued <= driver.deadline + slack:
            continue
        if r.outcomes != 1:
            problems.append(f"request {r.n}: {r.outcomes} outcomes")
            continue
        if r.settled - r.issued > driver.deadline + slack:
            problems.append(
                f"request {r.n}: outcome after {r.settled - r.issued:.2f}s "
                f"(deadline {driver.deadline}s)"
            )
        if r.error is not None:
            if not isinstance(r.error, errors.RelayError):
                problems.append(f"request {r.n}: untyped failure {r.error!r}")
        elif r.reply != r.payload:
            problems.append(f"request {r.n}: wrong reply {r.reply!r} for {r.payload!r}")
    return problems


def notificationProblems(subscriber):
    """
    Every notification of a server incarnation, from the first one the
    subscriber saw to the last, arrived exactly once (live or replayed), and
    no loss was reported.

    @return: a L{list} of problems (empty if none).
    """
    problems = []
    streams = defaultdict(list)
    name = subscriber.client.nodeId
    for server, inc, topic, seq, _, _ in subscriber.notifications:
        streams[(server, inc, topic)].append(seq)
    for (server, inc, topic), seqs in streams.items():
        counts = Counter(seqs)
        twice = sorted(s for s, n in counts.items() if n > 1)
        if twice:
            problems.append(f"{name}: {server}/{inc} {topic!r}: delivered twice: {twice[:10]}")
        missing = sorted(set(range(min(seqs), max(seqs) + 1)) - set(seqs))
        if missing:
            problems.append(
                f"{name}: {server}/{inc} {topic!r}: never delivered: {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''} ({len(missing)} in all)"
            )
    for gap in subscriber.lost:
        problems.append(f"{name}: reported lost: {gap!r}")
    return problems


def presenceEventProblems(lines):
    """
    The presence events one node process logged are consistent: per client
    id, connected and disconnected alternate, and a disconnection names the
    incarnation that connected.

    @param lines: the output lines of one node process.
    @return: a L{list} of problems (empty if none).
    """
    problems = []
    state = {}
    for line in lines:
        match = _PRESENCE_LINE.search(line)
        if match is None:
            continue
        client, inc, what = match.group(1), match.group(2), match.group(3)
        current = state.get(client)
        if what == "connected":
            if current is not None:
                problems.append(f"{client}: connected ({inc}) while {current} was connected")
            state[client] = inc
        else:
            if current != inc:
                problems.append(f"{client}: disconnected ({inc}) while {current} was connected")
            state.pop(client, None)
    return problems


def chatterProblems(lines):
    """
    The requests a C{twistd zmqrelay-client} process logged got one outcome
    each (its log has a reply or a failure line per request number).

    @param lines: the output lines of one client process.
    @return: a L{list} of problems (empty if none).
    """
    outcomes = Counter()
    for line in lines:
        match = _CHATTER_OUTCOME.search(line)
        if match is not None:
            outcomes[int(match.group(1) or match.group(2))] += 1
    return [f"request {n}: {count} outcomes" for n, count in sorted(outcomes.items()) if count > 1]


def decodePresence(payload):
    """
    @return: a C{sys presence} answer as C{{client id: (incarnation, paths)}}.
    """
    view = msgpack.unpackb(payload, raw=False)
    return {cid: (p["inc"], tuple(p["paths"])) for cid, p in view.items()}


# The topology.


class FaultTopology(Topology):
    """
    A L{Topology} whose children get extra environment variables.
    """

    def __init__(self, reactor, env, echo=None):
        Topology.__init__(self, reactor, echo)
        self.env = env
        self.started = []

    def start(self, name, plugin, args, readyTimeout=20.0):
        node = NodeProcess(self.reactor, name, self.echo)
        self.nodes[name] = node
        self.started.append(node)
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        argv = [
            self.python, "-c", TWISTD_MAIN,
            "-n", "--pidfile=", "--logfile=-", plugin,
        ] + list(args)
        self.reactor.spawnProcess(node, self.python, argv, env=env, path=ROOT)

        def failed(failure):
            tail = "\n    ".join(node.lines[-15:])
            raise AssertionError(f"{name} did not start: {failure.value!r}; its output:\n    {tail}")

        return node.waitFor(r"ready: role=", readyTimeout).addCallbacks(lambda _: node, failed)


class ChaosHop(NodeProcess):
    """
    The chaos hop process (C{chaoshop.py}), ready when it prints its
    endpoints.
    """

    def stats(self):
        """
        @return: the counters of its last C{stats:} line.
        """
        for line in reversed(self.lines):
            if line.startswith("stats:"):
                return dict(
                    (k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:])
                )
        return {}


class FaultRig:
    """
    Cloud, proxy, server and a client process on fixed loopback ports, plus
    in-process clients: the traffic L{Driver} (through the cloud, optionally
    through a chaos hop) and C{lan} (attached to the proxy, to read its
    presence).

    Node names (for L{fault}) are the roles: C{cloud}, C{proxy}, C{server},
    C{client}.

    @ivar ids: role to node id.
    """

    ids = {"cloud": "cloud", "proxy": "proxyA", "server": "s1", "client": "c2"}

    #: Options every node gets.
    fast = FAST

    def __init__(self, reactor, workdir, tick=0.05, chaos=None, chaosAt="driver",
                 clientProcess=True):
        """
        @param chaos: C{None}, or C{(drop, duplicate, seed)} to put a chaos
            hop in front of the cloud.
        @param chaosAt: who goes through the hop: C{'driver'} (its requests
            and notifications) or C{'proxy'} (the proxy's link to the cloud).
        """
        self.reactor = reactor
        # Absolute: the children run in the project root, not in our cwd.
        self.workdir = workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
        self.tick = tick
        self.chaos = chaos
        self.chaosAt = chaosAt if chaos is not None else None
        self.clientProcess = clientProcess
        self.topology = FaultTopology(
            reactor, {RUNLOG_ENV: workdir, TICK_ENV: str(tick)}, echo=self._echo
        )
        self.ep = {
            k: loopback()
            for k in ("cloud", "cloudPub", "cloudSub", "proxy", "proxyPub", "proxySub",
                      "server", "serverPub", "hop", "hopPub")
        }
        ep, ids = self.ep, dict(FaultRig.ids, **self.ids)
        proxyCloud = ep["hop"] if self.chaosAt == "proxy" else ep["cloud"]
        self.specs = {
            "cloud": ("zmqrelay-cloud", [
                "--id", ids["cloud"], "--listen", ep["cloud"], "--pub", ep["cloudPub"],
                "--sub", ep["cloudSub"],
            ]),
            "proxy": ("zmqrelay-proxy", [
                "--id", ids["proxy"], "--cloud", proxyCloud, "--listen", ep["proxy"],
                "--pub", ep["proxyPub"], "--sub", ep["proxySub"],
            ]),
            "server": ("zmqrelay-server", [
                "--id", ids["server"], "--proxy", ep["proxy"], "--listen", ep["server"],
                "--pub", ep["serverPub"], "--app", "tests.integration.faulthelpers.runLogApp",
            ]),
            "client": ("zmqrelay-client", [
                "--id", ids["client"], "--cloud", ep["cloud"], "--target", ids["server"],
                "--payload", "c2", "--every", "0.2", "--timeout", "1", "--attempts", "3",
                "--subscribe", "tick.",
            ]),
        }
        self.frozen = set()
        self.lastViews = None
        self.hop = None
        self.driver = None
        self.lan = None
        self.listener = None
        self.subscribers = []
        self._clients = []
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self._killAll)

    def _echo(self, node, line):
        log.debug("{node}| {line}", node=node.name, line=line)

    @property
    def runLog(self):
        """
        The handler-run log of the server.
        """
        return os.path.join(self.workdir, f"runs-{self.ids['server']}.log")

    def node(self, role):
        """
        @return: the current L{NodeProcess} of a role.
        """
        return self.topology.nodes[role]

    def start(self, role):
        """
        Start (or restart) one node on its endpoints.

        @return: a L{defer.Deferred} firing with its L{NodeProcess} once ready.
        """
        plugin, args = self.specs[role]
        return self.topology.start(role, plugin, args + self.fast)

    async def startAll(self):
        """
        Start every node and the in-process clients, start the traffic, and
        wait until replies and notifications flow and presence is right.
        """
        from zmqrelay.roles.client import Client
        from zmqrelay.core.config import NodeConfig

        await self.start("cloud")
        if self.chaos is not None:
            await self._startHop()
        await self.start("proxy")
        await self.start("server")
        if self.clientProcess:
            await self.start("client")
        cloud = self.ep["hop"] if self.chaosAt == "driver" else self.ep["cloud"]
        config = dict(heartbeat=HEARTBEAT, liveness=LIVENESS, reconnectMax=1.0)
        # The driver's requests make 3 attempts; its replays (which use the
        # configured default) 5, so that a lossy hop rarely defeats them.
        driverClient = Client(
            NodeConfig("driver", requestTimeout=1.0, attempts=5, **config),
            cloud=cloud, reactor=self.reactor,
        )
        self.lan = Client(
            NodeConfig("lan", requestTimeout=1.0, attempts=5, **config),
            proxy=self.ep["proxy"], reactor=self.reactor,
        )
        for client in (driverClient, self.lan):
            self._clients.append(client)
            client.startService()
        self.driver = Driver(self.reactor, driverClient, self.ids["server"], b"tick.")
        self.listener = Subscriber(self.reactor, self.lan, b"tick.")
        self.subscribers = [self.driver, self.listener]
        self.listener.start()
        self.driver.start()
        started = self.reactor.seconds()
        await until(
            self.reactor, lambda: self.driver.firstSuccessAfter(started), 15.0,
            "first reply through cloud, proxy and server",
        )
        for subscriber in self.subscribers:
            await until(
                self.reactor, lambda: subscriber.lastNotificationAfter(started), 15.0,
                f"first notification to {subscriber.client.nodeId}",
            )
        await self.waitConverged(15.0)

    async def _startHop(self):
        drop, dup, seed = self.chaos
        hop = self.hop = ChaosHop(self.reactor, "hop", self._echo)
        argv = [
            sys.executable, CHAOSHOP, "--upstream", self.ep["cloud"],
            "--upstream-pub", self.ep["cloudPub"], "--listen", self.ep["hop"],
            "--pub", self.ep["hopPub"], "--drop", str(drop), "--dup", str(dup),
            "--seed", str(seed),
        ]
        self.topology.started.append(hop)
        self.topology.nodes["hop"] = hop
        self.reactor.spawnProcess(hop, sys.executable, argv, env=dict(os.environ), path=ROOT)
        await hop.waitFor(r"ready: chaoshop", 15.0)

    async def heal(self):
        """
        Make the chaos hop forward everything once from now on.
        """
        self.hop.signal(signal.SIGUSR1)
        await self.hop.waitFor(r"^healed", 5.0)

    # Faults

    def kill9(self, role):
        """
        SIGKILL a node.

        @return: a L{defer.Deferred} firing once it has ended.
        """
        node = self.node(role)
        node.signal(signal.SIGKILL)
        node.signal(signal.SIGCONT)
        self.frozen.discard(role)
        return node.ended

    def freeze(self, role):
        """
        SIGSTOP a node.
        """
        self.frozen.add(role)
        self.node(role).signal(signal.SIGSTOP)

    def thaw(self, role):
        """
        SIGCONT a node.
        """
        self.node(role).signal(signal.SIGCONT)
        self.frozen.discard(role)

    def stopClean(self, role):
        """
        SIGTERM a node: it says goodbye and stops.

        @return: a L{defer.Deferred} firing once it has ended.
        """
        return self.node(role).stop(10.0)

    # Presence

    def alive(self):
        """
        @return: the set of roles whose process runs and is not frozen.
        """
        return {r for r, n in self.topology.nodes.items() if n.running} - self.frozen

    def expectedViews(self):
        """
        The truth: what each node's presence view must converge to, given
        which processes are up.

        @return: a L{dict} of role to C{{client id: (incarnation, paths)}}.
        """
        up = self.alive()
        cloudClients = {}
        if "cloud" in up:
            cloudClients["driver"] = self.driver.client.incarnation
            if "client" in up:
                cloudClients[self.ids["client"]] = self.node("client").incarnation
        cloudView = {cid: (inc, ("cloud",)) for cid, inc in cloudClients.items()}
        views = {"cloud": dict(cloudView)}
        proxyView = dict(cloudView)
        if "proxy" in up:
            proxyView["lan"] = (self.lan.incarnation, ("proxy",))
            views["proxy"] = proxyView
            views["server"] = dict(proxyView)
            # The proxy reports its LAN client up: the cloud knows every client.
            views["cloud"]["lan"] = (self.lan.incarnation, (f"proxy@{self.ids['proxy']}",))
        else:
            views["server"] = {}
        return {role: view for role, view in views.items() if role in up}

    async def views(self, roles=("cloud", "proxy", "server")):
        """
        Ask every live node of C{roles} for its presence view.

        @return: a L{dict} of role to view, C{None} for a node that did not
            answer.
        """
        up = self.alive().intersection(roles)
        asks = {}
        if "cloud" in up:
            asks["cloud"] = (self.driver.client, "")
        if "proxy" in up:
            asks["proxy"] = (self.lan, "")
        if "server" in up:
            # Through the proxy: the driver's path may be the one down.
            asks["server"] = (self.lan, self.ids["server"])
        result = {}
        for role, (client, target) in asks.items():
            if not any(link.alive for link in client.links):
                # Do not wait for a path: the poll would lose its resolution.
                result[role] = None
                continue
            try:
                payload = await client.request(target, b"", timeout=0.5, attempts=1, sys="presence")
            except errors.RelayError:
                result[role] = None
            else:
                result[role] = decodePresence(payload)
        return result

    async def converged(self):
        """
        @return: C{True} if every live node's presence view is the truth.
        """
        views = await self.views()
        expected = self.expectedViews()
        self.lastViews = (views, expected)
        return all(views.get(role) == view for role, view in expected.items())

    async def waitConverged(self, timeout):
        """
        Wait until L{converged}.

        @return: the time it happened.
        """
        try:
            return await until(self.reactor, self.converged, timeout, "presence convergence", 0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; last (views, expected): {self.lastViews!r}")

    async def serverStats(self):
        """
        @return: the server's counters (asked through the proxy).
        """
        payload = await self.lan.request(self.ids["server"], b"", sys="stats")
        return msgpack.unpackb(payload, raw=False)

    async def clientSeenGone(self, role="cloud"):
        """
        @return: C{True} once C{role}'s view no longer has the client
            process's id.
        """
        views = await self.views([role])
        view = views.get(role)
        return view is not None and self.ids["client"] not in view

    # Checks and shutdown

    async def resumed(self, since, timeout=10.0):
        """
        Wait until traffic flows again after C{since}: a correct reply to a
        request issued after it, and a live notification after it (so the
        subscriptions made it back up every hop).

        @return: the time of that first reply.
        """
        driver = self.driver
        await until(
            self.reactor, lambda: driver.firstSuccessAfter(since), timeout,
            "a correct reply to a request issued after recovery",
        )
        for subscriber in self.subscribers:
            await until(
                self.reactor, lambda: subscriber.lastNotificationAfter(since), timeout,
                f"a notification to {subscriber.client.nodeId} after recovery",
            )
        return driver.firstSuccessAfter(since)

    async def streamsWhole(self, timeout=5.0):
        """
        Wait (boundedly) until gaps in the notification streams are replayed.

        @return: C{True} if no hole is left.
        """
        try:
            await until(
                self.reactor,
                lambda: not any(notificationProblems(s) for s in self.subscribers),
                timeout, "notification streams whole",
            )
        except AssertionError:
            return False
        return True

    async def drain(self):
        """
        Stop issuing requests and wait for every outcome (each within its
        deadline, so this is bounded).
        """
        self.driver.stop()
        await until(
            self.reactor, lambda: not self.driver.pending(), self.driver.deadline + 2.0,
            "every request's outcome",
        )

    def problems(self, pendingOK=False):
        """
        @param pendingOK: do not count requests still within their deadline.
        @return: every broken guarantee seen so far, as text.
        """
        problems = outcomeProblems(self.driver, pendingOK=pendingOK)
        for subscriber in self.subscribers:
            problems += notificationProblems(subscriber)
        for key, n in repeatedRuns(self.runLog).items():
            problems.append(f"handler ran {n} times for {key}")
        # Every correct reply came from one handler run: fewer runs logged
        # would mean the run log (and so the check above) sees nothing.
        replies = sum(1 for r in self.driver.records if r.succeeded)
        if handlerRuns(self.runLog) < replies:
            problems.append(f"{handlerRuns(self.runLog)} handler runs logged for {replies} replies")
        for node in self.topology.started:
            if node.name == "client":
                problems.extend(
                    f"client process ({node.incarnation}): {p}" for p in chatterProblems(node.lines)
                )
            if node.name in ("cloud", "proxy", "server"):
                problems.extend(
                    f"{node.name} ({node.incarnation}): {p}"
                    for p in presenceEventProblems(node.lines)
                )
        return problems

    def writeLogs(self):
        """
        Keep every node's output in the work directory.
        """
        counts = Counter()
        for node in self.topology.started:
            counts[node.name] += 1
            path = os.path.join(self.workdir, f"{node.name}-{counts[node.name]}.log")
            with open(path, "w") as f:
                f.write("\n".join(node.lines) + "\n")

    async def shutdown(self):
        """
        Stop the in-process clients, then every child (SIGCONT first, then
        SIGTERM, SIGKILL after a few seconds).
        """
        if self.driver is not None:
            self.driver.stop()
        for client in self._clients:
            if client.running:
                await client.stopService()
        self._clients = []
        for node in self.topology.started:
            node.signal(signal.SIGCONT)
        await self.topology.stopAll(3.0)
        self.writeLogs()
        try:
            self.reactor.removeSystemEventTrigger(self._trigger)
        except ValueError:
            pass

    def _killAll(self):
        for node in self.topology.started:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGKILL)


# Faults, as the suite and the benchmark run them.

KILL = "kill -9 + restart"
FREEZE = "SIGSTOP + SIGCONT"
STOP = "clean stop + restart"
FAULTS = (KILL, FREEZE, STOP)

#: How long a node stays frozen: well past the liveness window.
FROZEN_FOR = 2 * WINDOW


class FaultResult:
    """
    What one fault did, in seconds from the fault.

    @ivar role: the role hit.
    @ivar kind: one of L{FAULTS}.
    @ivar at: the reactor time of the fault; every other time is relative
        to it.
    @ivar ended: when the process had exited (kill and stop faults).
    @ivar detected: when the client was seen gone by the cloud (client
        faults), or when a request for the server first failed with no route
        (server faults); else C{None}.
    @ivar noRouteAnswer: how long that failing request took.
    @ivar restarting: when the restart was started, or SIGCONT sent.
    @ivar recovered: when the node was back (restart ready, or SIGCONT).
    @ivar firstReply: when the first correct reply to a request issued
        after the recovery came.
    @ivar converged: when every presence view was the truth again.
    """

    def __init__(self, role, kind):
        self.role = role
        self.kind = kind
        self.at = None
        self.ended = None
        self.restarting = None
        self.detected = None
        self.noRouteAnswer = None
        self.recovered = None
        self.firstReply = None
        self.converged = None

    def __repr__(self):
        fields = ("ended", "detected", "noRouteAnswer", "recovered", "firstReply", "converged")
        text = " ".join(
            f"{f}={getattr(self, f):.3f}" for f in fields if getattr(self, f) is not None
        )
        return f"<{self.role} {self.kind}: {text}>"


async def _noRouteProbe(rig):
    """
    @return: the seconds a request for the (gone) server took to fail with
        no route, or C{None} if it did not fail that way.
    """
    client = rig.driver.client
    start = rig.reactor.seconds()
    try:
        # failFast: the relays' answer, not the wait a known target gets.
        await client.request(rig.ids["server"], b"probe", timeout=1.0, attempts=3, failFast=True)
    except errors.NoRoute:
        return rig.reactor.seconds() - start
    except errors.RelayError:
        return None
    return None


async def injectFault(rig, role, kind, down=0.0):
    """
    Hit C{role} with one fault, bring it back, and wait until traffic flows
    and presence converged again.

    @param down: keep the node down at least this long (seconds from the
        fault), to see how the others behave meanwhile.
    @return: a L{FaultResult}.
    """
    reactor = rig.reactor
    result = FaultResult(role, kind)
    t0 = result.at = reactor.seconds()
    if kind == KILL:
        await rig.kill9(role)
        result.ended = reactor.seconds() - t0
    elif kind == FREEZE:
        rig.freeze(role)
    else:
        await rig.stopClean(role)
        result.ended = reactor.seconds() - t0
    if role == "client":
        seen = await until(reactor, rig.clientSeenGone, 5.0, "client seen gone by the cloud", 0.02)
        result.detected = seen - t0
    elif role == "server":
        probes = []

        async def probe():
            took = await _noRouteProbe(rig)
            probes.append(took)
            return took is not None

        seen = await until(reactor, probe, 5.0, "a request for the gone server failing with no route")
        result.detected = seen - t0
        # Now that the relays know, a new request must fail at once.
        result.noRouteAnswer = await _noRouteProbe(rig)
    left = t0 + down - reactor.seconds()
    if left > 0:
        await sleep(reactor, left)
    if kind == FREEZE:
        left = t0 + FROZEN_FOR - reactor.seconds()
        if left > 0:
            await sleep(reactor, left)
        result.restarting = reactor.seconds() - t0
        rig.thaw(role)
    else:
        result.restarting = reactor.seconds() - t0
        await rig.start(role)
    back = reactor.seconds()
    result.recovered = back - t0
    first, converged = await together(rig.resumed(back), rig.waitConverged(10.0))
    result.firstReply = first - t0
    result.converged = converged - t0
    await rig.streamsWhole()
    return result


async def restartAtOnce(rig):
    """
    SIGKILL the client process and start it again (same id) before anyone
    could notice it was gone.

    @return: a L{FaultResult}: C{recovered} when the new process was ready,
        C{converged} when every view showed the new incarnation (and only it).
    """
    reactor = rig.reactor
    result = FaultResult("client", "kill -9 + immediate restart")
    t0 = reactor.seconds()
    await rig.kill9("client")
    await rig.start("client")
    result.recovered = reactor.seconds() - t0
    result.converged = await rig.waitConverged(10.0) - t0
    return result


# The exactly-once matrix (issue 9): every role x every fault, with a
# service offered by two servers, on the cloud path and on direct links.

#: Heartbeat settings of the matrix: a peer is gone after 0.9 s of silence.
MATRIX_HEARTBEAT = 0.3
MATRIX_WINDOW = MATRIX_HEARTBEAT * LIVENESS
MATRIX_FAST = [
    "--heartbeat", str(MATRIX_HEARTBEAT), "--liveness", str(LIVENESS), "--reconnect-max", "1",
]

#: The application's whole budget per request (and its attempts cap).
BUDGET = 3.0
ATTEMPTS = 3

#: How long each echo handler takes.
HANDLER_DELAY = 0.1

#: How long a node stays frozen in the matrix: twice the liveness window,
#: less than the budget.
MATRIX_FROZEN_FOR = 2 * MATRIX_WINDOW

#: The roles the matrix hits.
MATRIX_ROLES = ("cloud", "proxy", "a1", "client")


class MatrixRig(FaultRig):
    """
    Cloud, proxy C{proxyA}, servers C{a1} and C{a2} behind it (both offering
    C{echo}, each echo taking L{HANDLER_DELAY}) and a client process C{c2}
    asking C{echo} through the cloud; in process, a L{Driver} on the cloud
    path (C{driver}) and one with direct links to both servers
    (C{direct}), each asking C{echo} every C{every} seconds with the whole
    L{BUDGET}.

    Node names (for L{matrixFault}) are C{cloud}, C{proxy}, C{a1}, C{a2},
    C{client}.
    """

    ids = {"cloud": "cloud", "proxy": "proxyA", "a1": "a1", "a2": "a2", "client": "c2"}

    fast = MATRIX_FAST

    def __init__(self, reactor, workdir, every=0.05):
        FaultRig.__init__(self, reactor, workdir, tick=0.0)
        self.every = every
        self.topology.env[DELAY_ENV] = str(HANDLER_DELAY)
        ep, ids = self.ep, self.ids
        for name in ("a1", "a2"):
            ep[name], ep[name + "Pub"] = loopback(), loopback()
        self.specs = {
            "cloud": self.specs["cloud"],
            "proxy": self.specs["proxy"],
            "client": ("zmqrelay-client", [
                "--id", ids["client"], "--cloud", ep["cloud"], "--target", "echo",
                "--payload", "c2", "--every", "0.2", "--timeout", str(BUDGET),
                "--attempts", str(ATTEMPTS),
            ]),
        }
        for name in ("a1", "a2"):
            self.specs[name] = ("zmqrelay-server", [
                "--id", ids[name], "--proxy", ep["proxy"], "--listen", ep[name],
                "--pub", ep[name + "Pub"], "--service", "echo",
                "--app", "tests.integration.faulthelpers.runLogApp",
            ])
        self.direct = None
        self.drivers = []

    async def shutdown(self):
        """
        Stop the direct driver too, then everything L{FaultRig.shutdown} stops.
        """
        if self.direct is not None:
            self.direct.stop()
        await FaultRig.shutdown(self)

    async def startAll(self):
        """
        Start every node and both drivers, and wait until both get replies.
        """
        from zmqrelay.roles.client import Client
        from zmqrelay.core.config import NodeConfig

        for role in ("cloud", "proxy", "a1", "a2", "client"):
            await self.start(role)
        config = dict(
            heartbeat=MATRIX_HEARTBEAT, liveness=LIVENESS, reconnectMax=1.0,
            requestTimeout=BUDGET, attempts=ATTEMPTS,
        )
        cloudClient = Client(NodeConfig("driver", **config), cloud=self.ep["cloud"], reactor=self.reactor)
        directClient = Client(
            NodeConfig("direct", **config), servers=[self.ep["a1"], self.ep["a2"]], reactor=self.reactor,
        )
        for client in (cloudClient, directClient):
            self._clients.append(client)
            client.startService()
        kw = dict(every=self.every, timeout=BUDGET, attempts=ATTEMPTS, deadline=BUDGET)
        self.driver = Driver(self.reactor, cloudClient, "echo", b"tick.", **kw)
        self.direct = Driver(self.reactor, directClient, "echo", b"tick.", **kw)
        self.drivers = [self.driver, self.direct]
        started = self.reactor.seconds()
        for driver in self.drivers:
            driver.start()
        for driver in self.drivers:
            await until(
                self.reactor, lambda: driver.firstSuccessAfter(started), 15.0,
                f"first echo reply to {driver.client.nodeId}",
            )

    def runs(self):
        """
        @return: C{{"<client> <incarnation> <request id>": [(server id,
            time.time() of the run), ...]}} over both servers' run logs.
        """
        runs = defaultdict(list)
        for name in ("a1", "a2"):
            path = os.path.join(self.workdir, f"runs-{self.ids[name]}.log")
            for key, when in readRuns(path):
                runs[key].append((self.ids[name], when))
        return runs

    def clientFailures(self):
        """
        @return: how many of its requests the client process C{c2} (every
            incarnation of it) saw fail.
        """
        return sum(
            1 for node in self.topology.started if node.name == "client"
            for line in node.lines if _CHATTER_OUTCOME.search(line) and " failed" in line
        )

    async def settled(self, before, timeout=BUDGET + 2.0):
        """
        Wait until every request issued before C{before} has its outcome.
        """
        await until(
            self.reactor,
            lambda: not any(r.issued < before for d in self.drivers for r in d.pending()),
            timeout, "every outcome of the requests issued before",
        )

    async def drain(self):
        """
        Stop both drivers and wait for every outcome.
        """
        for driver in self.drivers:
            driver.stop()
        await self.settled(self.reactor.seconds() + 1.0)

    def problems(self, pendingOK=False):
        """
        @return: broken outcome guarantees of both drivers (one outcome, the
            right reply or a typed error, within the budget) and of C{c2}.
        """
        problems = []
        for driver in self.drivers:
            problems += [
                f"{driver.client.nodeId}: {p}" for p in outcomeProblems(driver, pendingOK=pendingOK)
            ]
        for node in self.topology.started:
            if node.name == "client":
                problems.extend(
                    f"client process ({node.incarnation}): {p}" for p in chatterProblems(node.lines)
                )
        return problems


class MatrixCell:
    """
    What one fault of the matrix did.

    @ivar role: the node hit.
    @ivar kind: one of L{FAULTS}.
    @ivar at: reactor time of the fault.
    @ivar back: seconds from the fault until the node was back (restart
        ready, or SIGCONT sent).
    @ivar firstReply: seconds from the fault until both drivers had a correct
        reply to a request issued after C{back}.
    @ivar requests: requests the drivers issued in this cell.
    @ivar failures: C{(driver, request number, error)} of every request
        that failed (what the application saw).
    @ivar clientFailures: failures the client process C{c2} logged.
    @ivar doubleRuns: C{{key: runs}} of requests whose handler ran more than
        once, not explained by the documented case.
    @ivar documented: the same, for requests a server took and was then
        killed or frozen past liveness with (see docs/RECOVERY.md).
    @ivar worst: the longest a request of the cell waited for its outcome.
    @ivar problems: broken outcome guarantees.
    """

    def __init__(self, role, kind):
        self.role = role
        self.kind = kind
        self.at = None
        self.back = None
        self.firstReply = None
        self.requests = 0
        self.failures = []
        self.clientFailures = 0
        self.doubleRuns = {}
        self.documented = {}
        self.worst = None
        self.problems = []

    def __repr__(self):
        return (
            f"<{self.role} {self.kind}: requests={self.requests} failures={len(self.failures)}"
            f"+{self.clientFailures} double={len(self.doubleRuns)} documented={len(self.documented)}"
            f" back={self.back:.2f} firstReply={self.firstReply:.2f} worst={self.worst:.2f}>"
        )


def _documentedDouble(rig, cell, runs, frozenUntil):
    """
    @return: C{True} if a repeated run is the documented case: one of them
        ran on the server hit, killed or frozen past liveness, before it was
        declared gone (or after SIGCONT, from what it had queued).
    """
    if cell.role not in ("a1", "a2") or cell.kind == STOP:
        return False
    server = rig.ids[cell.role]
    wall = time.time() - rig.reactor.seconds()
    start = cell.at + wall - 1.0
    end = (frozenUntil if frozenUntil is not None else cell.at) + wall + 1.0
    return any(s == server and start <= t <= end for s, t in runs)


async def matrixFault(rig, role, kind, cellStart, down=0.0):
    """
    Hit C{role} of a L{MatrixRig} with one fault, bring it back, wait until
    both drivers get replies again and every request issued so far has its
    outcome, and count what the application saw.

    @param cellStart: reactor time from which requests count for this cell
        (everything issued earlier has settled).
    @param down: after kill -9, restart only this long after the fault.
    @return: a L{MatrixCell}.
    """
    reactor = rig.reactor
    cell = MatrixCell(role, kind)
    seenFailures = rig.clientFailures()
    runsBefore = set(k for k, v in rig.runs().items() if len(v) > 1)
    t0 = cell.at = reactor.seconds()
    frozenUntil = None
    if kind == KILL:
        await rig.kill9(role)
        left = t0 + down - reactor.seconds()
        if left > 0:
            await sleep(reactor, left)
        await rig.start(role)
    elif kind == FREEZE:
        rig.freeze(role)
        await sleep(reactor, MATRIX_FROZEN_FOR)
        rig.thaw(role)
        frozenUntil = reactor.seconds()
    else:
        await rig.stopClean(role)
        await rig.start(role)
    back = reactor.seconds()
    cell.back = back - t0
    for driver in rig.drivers:
        await until(
            reactor, lambda: driver.firstSuccessAfter(back), 10.0,
            f"{driver.client.nodeId}: a reply after {role} {kind}",
        )
    cell.firstReply = max(d.firstSuccessAfter(back) for d in rig.drivers) - t0
    end = reactor.seconds()
    await rig.settled(end)
    records = [(d, r) for d in rig.drivers for r in d.records if cellStart <= r.issued < end]
    cell.requests = len(records)
    cell.failures = [(d.client.nodeId, r.n, r.error) for d, r in records if r.error is not None]
    cell.worst = max((r.settled - r.issued for _, r in records), default=0.0)
    if role != "client":
        cell.clientFailures = rig.clientFailures() - seenFailures
    for key, runs in rig.runs().items():
        if len(runs) > 1 and key not in runsBefore:
            if _documentedDouble(rig, cell, runs, frozenUntil):
                cell.documented[key] = runs
            else:
                cell.doubleRuns[key] = runs
    cell.problems = rig.problems(pendingOK=True)
    cell.end = end
    return cell


async def runMatrixRole(rig, role, progress=None):
    """
    Run the three faults on C{role}, one after the other, in one running
    L{MatrixRig}.  A killed server stays down longer than the budget (the
    other server must take its requests); any other killed node is
    restarted at once.

    @return: the L{MatrixCell}s.
    """
    cells = []
    down = BUDGET + 1.0 if role in ("a1", "a2") else 0.0
    start = rig.reactor.seconds()
    await sleep(rig.reactor, 0.5)
    for kind in FAULTS:
        cell = await matrixFault(rig, role, kind, start, down)
        cells.append(cell)
        if progress is not None:
            progress(cell)
        start = cell.end
        await sleep(rig.reactor, 0.5)
    return cells
