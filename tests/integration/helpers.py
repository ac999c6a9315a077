"""
Shared setup of the integration tests: real C{twistd -n} nodes on loopback,
in-process clients, raw ZeroMQ peers and the C{zmqrelay} command.

Why one topology per test and not per class: trial's janitor removes every
selectable left in the reactor after each test method (and SIGKILLs the
processes among them), so child processes cannot outlive a test method.
Nodes start in about 0.2 s each and in parallel per layer, so a fresh
topology per test costs about a second and keeps tests independent.

Every child is stopped by the test's cleanup (SIGTERM, then SIGKILL); a
C{before shutdown} reactor trigger and an C{atexit} hook are the safety nets
for runs that die half-way.
"""

import atexit
import json
import os
import signal
import sys
import threading

import msgpack
import zmq
from twisted.internet import defer, protocol as twprotocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import protocol
from zmqrelay.roles.client import Client
from zmqrelay.core.config import NodeConfig
from zmqrelay.interfaces import INotificationReceiver
from zmqrelay.tools.launcher import ROOT, TWISTD_MAIN, NodeProcess, Topology

log = Logger()

#: Every endpoint a test node binds: loopback, a port the kernel picks.
LOOPBACK = "tcp://127.0.0.1:*"

#: The C{twistd} command line, as L{Topology} builds it.
TWISTD = ["-c", TWISTD_MAIN, "-n", "--pidfile=", "--logfile=-"]

_children = []


def _track(node):
    """
    Remember a child for L{_killLeftovers}, forgetting those that ended.
    """
    _children[:] = [n for n in _children if n.exitStatus is None]
    _children.append(node)


def _killLeftovers():
    """
    Last resort at interpreter exit: SIGKILL children still running.
    """
    for node in _children:
        if node.running:
            try:
                os.kill(node.pid, signal.SIGKILL)
            except OSError:
                pass


atexit.register(_killLeftovers)


def childEnvironment(extra=None):
    """
    @return: the environment of a child process: ours, with the project root
        importable, unbuffered output and C{extra} added.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def poll(check, timeout=10.0, interval=0.05, what="condition"):
    """
    Call C{check} until it returns (or fires with) a true value.

    @param check: a callable returning a value or a L{defer.Deferred}; a
        failure counts as false and is remembered.
    @return: a L{defer.Deferred} firing with that true value, or failing
        with L{AssertionError} naming C{what} (and the last error) after
        C{timeout} seconds.
    """
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def loop():
        last = None
        while True:
            try:
                value = yield defer.maybeDeferred(check)
            except Exception as e:
                value, last = None, e
            if value:
                return value
            if reactor.seconds() >= deadline:
                raise AssertionError(f"{what} not reached within {timeout}s (last error: {last!r})")
            yield deferLater(reactor, interval, lambda: None)

    return loop()


def decodeStats(payload):
    """
    @return: the counters a C{sys stats} request answered.
    """
    return msgpack.unpackb(payload, raw=False)


@implementer(INotificationReceiver)
class Collector:
    """
    A notification receiver that keeps what it got.

    @ivar received: the L{zmqrelay.core.sequence.Notification}s, in order.
    @ivar lost: the gaps reported.
    """

    def __init__(self):
        self.received = []
        self.lost = []

    def notificationReceived(self, notification):
        self.received.append(notification)

    def notificationsLost(self, gap):
        self.lost.append(gap)

    def payloads(self, topic=None):
        """
        @return: the payloads received (on C{topic} only, if given).
        """
        return [n.payload for n in self.received if topic is None or n.topic == topic]

    def waitFor(self, topic, payload=None, timeout=10.0):
        """
        @return: a L{defer.Deferred} firing with the first notification on
            C{topic} (with C{payload}, if given).
        """

        def find():
            for n in self.received:
                if n.topic == topic and (payload is None or n.payload == payload):
                    return n
            return None

        return poll(find, timeout, 0.02, f"notification {topic!r} {payload!r}")


class Cluster:
    """
    The twistd nodes and the in-process clients of one test.

    @ivar topology: the L{Topology} of the nodes.
    """

    def __init__(self, testCase, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.testCase = testCase
        self.topology = Topology(reactor, echo=self._echo)
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self.topology.stopAll)
        testCase.addCleanup(self.stop)

    def _echo(self, node, line):
        # Node output goes to trial's log (_trial_temp/test.log).
        log.info("{node}| {line}", node=node.name, line=line)

    def stop(self):
        """
        Stop every node; SIGKILL what does not stop within 10 s.
        """
        try:
            self.reactor.removeSystemEventTrigger(self._trigger)
        except ValueError:
            pass
        return self.topology.stopAll()

    def __getitem__(self, name):
        return self.topology.nodes[name]

    def start(self, name, plugin, args):
        """
        Start one node and wait for its ready line.

        @return: a L{defer.Deferred} firing with its L{NodeProcess}.
        """
        d = self.topology.start(name, plugin, args)
        _track(self.topology.nodes[name])
        return d

    def cloud(self, name="cloud"):
        """
        Start a cloud called C{name}.
        """
        return self.start(name, "zmqrelay-cloud", [
            "--id", name, "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ])

    def proxy(self, name, cloud=None):
        """
        Start a proxy called C{name}, connected to C{cloud} (a L{NodeProcess}),
        or LAN-only if C{cloud} is C{None}.
        """
        args = ["--id", name, "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK]
        if cloud is not None:
            args += ["--cloud", cloud.endpoints["control"]]
        else:
            args += ["--lan-only"]
        return self.start(name, "zmqrelay-proxy", args)

    def server(self, name, proxy=None, services=(), tick=0.0):
        """
        Start a server running the example app, with its own endpoints and
        connected to C{proxy} (a L{NodeProcess}) if given.
        """
        args = ["--id", name, "--listen", LOOPBACK, "--pub", LOOPBACK]
        if proxy is not None:
            args += ["--proxy", proxy.endpoints["control"]]
        for service in services:
            args += ["--service", service]
        if tick:
            args += ["--tick", str(tick)]
        return self.start(name, "zmqrelay-server", args)

    def startTac(self, name, tac, env):
        """
        Start C{twistd -ny tac/<tac>} with C{env} added to the environment.

        @return: a L{defer.Deferred} firing with its L{NodeProcess} once it
            logged its ready line.
        """
        node = NodeProcess(self.reactor, name, self._echo)
        self.topology.nodes[name] = node
        _track(node)
        path = os.path.join(ROOT, "tac", tac)
        argv = [sys.executable] + TWISTD + ["-y", path]
        self.reactor.spawnProcess(node, sys.executable, argv, env=childEnvironment(env), path=ROOT)
        return node.waitFor(r"ready: role=", 20.0).addCallback(lambda _: node)

    @defer.inlineCallbacks
    def client(self, clientId, cloud=None, proxy=None, server=None, timeout=3.0, attempts=1):
        """
        Start an in-process client attached to the given nodes (each a
        L{NodeProcess} or C{None}); it is stopped by the test's cleanup.

        @return: a L{defer.Deferred} firing with the L{Client} once a path is up.
        """
        client = Client(
            NodeConfig(clientId, requestTimeout=timeout, attempts=attempts),
            cloud=cloud.endpoints["control"] if cloud is not None else None,
            proxy=proxy.endpoints["control"] if proxy is not None else None,
            servers=[server.endpoints["control"]] if server is not None else [],
            reactor=self.reactor,
        )
        client.startService()
        self.testCase.addCleanup(client.stopService)
        yield client.whenConnected(10.0)
        return client


def reachable(client, target, timeout=10.0):
    """
    Wait until C{client} gets an answer from server C{target} (a C{sys ping}):
    its route has reached every hop on the client's path.
    """
    return poll(
        lambda: client.request(target, b"", timeout=0.5, attempts=1, sys="ping"),
        timeout, 0.05, f"{client.nodeId} reaching {target}",
    )


def stats(client, node=""):
    """
    @return: a L{defer.Deferred} firing with the counters of C{node} (the
        node the client is attached to by default).
    """
    return client.request(node, b"", sys="stats").addCallback(decodeStats)


@defer.inlineCallbacks
def publishUntilSeen(publisher, serverId, topic, collector, timeout=10.0):
    """
    Have C{serverId} publish probes on C{topic} until C{collector} receives
    one: subscriptions travel upstream asynchronously, so the first probes may
    be filtered out at the server before the subscription reaches it.

    @return: a L{defer.Deferred} firing with the probe notification seen.
    """
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    n = 0
    while True:
        n += 1
        probe = b"probe-%d" % (n,)
        yield publisher.request(serverId, b"publish:" + topic + b":" + probe)
        try:
            seen = yield collector.waitFor(topic, probe, timeout=0.3)
        except AssertionError:
            if reactor.seconds() >= deadline:
                raise AssertionError(f"no probe on {topic!r} from {serverId} within {timeout}s")
            continue
        return seen


class RawPeer:
    """
    A hand-driven DEALER, to send what a well-behaved L{Client} never would.
    """

    def __init__(self, endpoint, testCase, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        testCase.addCleanup(self.close)

    def close(self):
        self.socket.close(0)
        self.context.term()

    def send(self, msgtype, header, payload=b""):
        self.socket.send_multipart(protocol.encode(msgtype, header, payload))

    def receive(self, wanted, timeout=5.0):
        """
        @return: a L{defer.Deferred} firing with the first received
            L{protocol.Message} for which C{wanted(message)} is true; others
            (heartbeats, presence) are skipped.
        """

        def check():
            while self.socket.poll(0, zmq.POLLIN):
                message = protocol.decode(self.socket.recv_multipart())
                if wanted(message):
                    return message
            return None

        return poll(check, timeout, 0.01, "raw peer answer")

    @defer.inlineCallbacks
    def hello(self, nodeId, incarnation="raw-inc"):
        """
        Say HELLO as a client.

        @return: a L{defer.Deferred} firing with the WELCOME message.
        """
        self.send(protocol.HELLO, {
            "id": nodeId, "role": protocol.CLIENT, "inc": incarnation,
            "versions": list(protocol.SUPPORTED_VERSIONS), "hb": 1000, "liveness": 3,
        })
        welcome = yield self.receive(lambda m: m.type in (protocol.WELCOME, protocol.REJECT))
        if welcome.type != protocol.WELCOME:
            raise AssertionError(f"hello refused: {welcome.header!r}")
        return welcome


class _Output(twprotocol.ProcessProtocol):
    def __init__(self):
        self.out = []
        self.err = []
        self.ended = defer.Deferred()
        self.result = None
        self._waiters = []

    def whenEnded(self):
        """
        @return: a new L{defer.Deferred} firing once the process has ended.
        """
        if self.result is not None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        code = getattr(reason.value, "exitCode", None)
        self.result = (code, b"".join(self.out).decode(), b"".join(self.err).decode())
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
        self.ended.callback(self.result)


def zmqrelayCommand():
    """
    @return: the argv prefix that runs the C{zmqrelay} command: the installed
        console script next to our interpreter, or C{cli.main} if there is none.
    """
    script = os.path.join(os.path.dirname(sys.executable), "zmqrelay")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from zmqrelay.tools.cli import main; main()"]


def runCommand(testCase, args, timeout=20.0, reactor=None):
    """
    Run C{zmqrelay ARGS} as a child process.

    @return: a L{defer.Deferred} firing with (exit code, stdout, stderr);
        the child is SIGKILLed after C{timeout} seconds (the Deferred then
        fails) and by the test's cleanup if still running.
    """
    return runProcess(testCase, zmqrelayCommand() + list(args), timeout, reactor)


def runProcess(testCase, argv, timeout=20.0, reactor=None):
    """
    Run C{argv} as a child process, as L{runCommand} runs C{zmqrelay}.

    @return: a L{defer.Deferred} firing with (exit code, stdout, stderr).
    """
    if reactor is None:
        from twisted.internet import reactor
    proto = _Output()
    transport = reactor.spawnProcess(proto, argv[0], argv, env=childEnvironment(), path=ROOT)

    def kill():
        if proto.result is None and transport.pid is not None:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass

    def cleanup():
        kill()
        return proto.whenEnded()

    testCase.addCleanup(cleanup)
    killer = reactor.callLater(timeout, kill)

    def ended(result):
        if killer.active():
            killer.cancel()
        else:
            raise AssertionError(f"{' '.join(argv)} still running after {timeout}s: {result!r}")
        return result

    return proto.ended.addCallback(ended)


def readLineWithin(stream, timeout):
    """
    Read one line of a child's output, waiting at most C{timeout} seconds
    (a plain C{readline} waits for ever on a child that prints nothing).

    @return: the line (empty at the end of the stream), or C{None} if none
        came in time (the reading thread ends once the test's cleanup kills
        the child and its output closes).
    """
    got = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else None


def loadBench(name):
    """
    Import one benchmark script as a module.

    @param name: the script's name in C{bench/}, without C{.py}.
    @return: the module (the bench directory is not a package: its scripts
        import their neighbours by path, as when run as scripts).
    """
    import importlib.util

    bench = os.path.join(ROOT, "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(name, os.path.join(bench, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runBench(testCase, script, args, timeout):
    """
    Run C{bench/<script>} with C{args} to its end, from a synchronous test.

    On a timeout or a failing test it is sent SIGTERM first (a benchmark then
    ends every process it started), then killed.

    @return: its output (stdout and stderr).
    """
    import subprocess

    bench = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bench", script)] + list(args),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    def stop():
        if bench.poll() is None:
            bench.send_signal(signal.SIGTERM)
            try:
                bench.wait(20)
            except subprocess.TimeoutExpired:
                bench.kill()
                bench.wait()

    testCase.addCleanup(stop)
    try:
        output, _ = bench.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop()
        testCase.fail(f"{script} still running after {timeout} s")
    testCase.assertEqual(bench.returncode, 0, output)
    return output


def parseJson(text):
    """
    @return: the JSON document a C{zmqrelay presence|stats} printed.
    """
    return json.loads(text)


@defer.inlineCallbacks
def startDistributed(cluster, tick=0.1):
    """
    Start the distributed topology: a cloud, proxies C{proxyA} and
    C{proxyB}, servers C{a1} and C{a2} (site A, both offering C{echo}) and
    C{b1} (site B, publishing C{tick.b1} every C{tick} seconds).

    @return: a L{defer.Deferred} firing with the L{Cluster} once every node
        printed its ready line.
    """
    cloud = yield cluster.cloud()
    proxyA, proxyB = yield defer.gatherResults(
        [cluster.proxy("proxyA", cloud), cluster.proxy("proxyB", cloud)], consumeErrors=True
    )
    yield defer.gatherResults(
        [
            cluster.server("a1", proxyA, ["echo"]),
            cluster.server("a2", proxyA, ["echo"]),
            cluster.server("b1", proxyB, tick=tick),
        ],
        consumeErrors=True,
    )
    return cluster


@defer.inlineCallbacks
def cloudClient(cluster, clientId, servers=("a1", "a2", "b1"), **kw):
    """
    Start a client attached only to the cloud, and wait until it reaches
    each of C{servers}.
    """
    client = yield cluster.client(clientId, cloud=cluster["cloud"], **kw)
    for serverId in servers:
        yield reachable(client, serverId)
    return client
