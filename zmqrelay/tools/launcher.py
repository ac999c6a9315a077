"""
Start and stop real C{twistd} nodes as child processes.

Used by the demo, the integration and fault tests and the benchmark.  A
node is ready when it logs its C{ready:} line (see L{zmqrelay.roles.node.Node}),
never after a fixed sleep; every wait has a timeout; L{Topology.stopAll}
ends every child it started, by pid, escalating to SIGKILL; and on Linux a
child is SIGKILLed by the kernel if its parent dies first.
"""

import os
import re
import signal
import sys

from twisted.internet import defer, protocol
from twisted.logger import Logger

log = Logger()

READY = re.compile(r"ready: role=(\S+) id=(\S+) inc=(\S+)(.*)$")

#: The project root, so children find C{zmqrelay} and its plugins even
#: without an install.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


#: The child's program: twistd, after asking Linux to SIGKILL it when its
#: parent dies, so that not even a SIGKILLed test runner leaves nodes behind.
TWISTD_MAIN = (
    "import ctypes, signal\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))\n"
    "except Exception:\n"
    "    pass\n"
    "from twisted.scripts.twistd import run\n"
    "run()\n"
)


class NodeProcess(protocol.ProcessProtocol):
    """
    One C{twistd -n} child.

    @ivar name: a label for logs.
    @ivar endpoints: what the node reported in its ready line.
    @ivar lines: its recent output lines.
    @ivar incarnation: its incarnation, from the ready line.
    """

    maxLines = 5000

    def __init__(self, reactor, name, echo=None):
        self.reactor = reactor
        self.name = name
        self.echo = echo
        self.endpoints = {}
        self.incarnation = None
        self.lines = []
        self.ended = defer.Deferred()
        self.exitStatus = None
        self._buffer = b""
        self._watchers = []

    @property
    def pid(self):
        return self.transport.pid if self.transport is not None else None

    @property
    def running(self):
        return self.exitStatus is None and self.transport is not None and self.transport.pid is not None

    def outReceived(self, data):
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if len(self.lines) > self.maxLines:
                del self.lines[: self.maxLines // 2]
            if self.echo is not None:
                self.echo(self, line)
            match = READY.search(line)
            if match:
                self.incarnation = match.group(3)
                self.endpoints = dict(
                    kv.split("=", 1) for kv in match.group(4).split() if "=" in kv
                )
            for watcher in list(self._watchers):
                pattern, d = watcher
                found = pattern.search(line)
                if found:
                    self._watchers.remove(watcher)
                    d.callback(found)

    errReceived = outReceived

    def processEnded(self, reason):
        self.exitStatus = reason.value.exitCode if hasattr(reason.value, "exitCode") else -1
        watchers, self._watchers = self._watchers, []
        for pattern, d in watchers:
            d.errback(RuntimeError(f"{self.name} exited before printing {pattern.pattern!r}"))
        self.ended.callback(self.exitStatus)

    def waitFor(self, pattern, timeout=15.0, fromNow=False):
        """
        Wait for an output line matching C{pattern}.

        @param fromNow: ignore lines already printed.
        @return: a L{Deferred} firing with the match; fails with
            L{defer.TimeoutError} after C{timeout} seconds.
        """
        regex = re.compile(pattern)
        if not fromNow:
            for line in self.lines:
                found = regex.search(line)
                if found:
                    return defer.succeed(found)
        if self.exitStatus is not None:
            return defer.fail(RuntimeError(f"{self.name} has exited"))

        def cancel(d):
            self._watchers[:] = [w for w in self._watchers if w[1] is not d]

        d = defer.Deferred(cancel)
        self._watchers.append((regex, d))
        return d.addTimeout(timeout, self.reactor)

    def signal(self, signum):
        """
        Send C{signum} to the child, if it is still running.
        """
        if self.running:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout=10.0):
        """
        SIGTERM, then SIGKILL if it has not ended within C{timeout}.

        @return: a L{Deferred} firing when it has ended.  Cancelling it
            stops the wait only: the SIGKILL still comes at C{timeout}, and
            other waiters on the child are not touched.
        """
        if self.exitStatus is not None:
            return defer.succeed(self.exitStatus)
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        killer = self.reactor.callLater(timeout, self.signal, signal.SIGKILL)
        done = defer.Deferred()

        def ended(result):
            if killer.active():
                killer.cancel()
            if not done.called:
                done.callback(result)
            return result

        self.ended.addBoth(ended)
        return done


class Topology:
    """
    The nodes one test (or the demo) started.
    """

    def __init__(self, reactor, echo=None, python=None):
        self.reactor = reactor
        self.echo = echo
        self.python = python or sys.executable
        self.nodes = {}

    def start(self, name, plugin, args, readyTimeout=20.0):
        """
        Start C{twistd -n <plugin> <args>} and wait for its ready line.

        @param name: a label, unique within this topology.
        @param plugin: C{'zmqrelay-cloud'}, C{'zmqrelay-proxy'}, ...
        @return: a L{Deferred} firing with the L{NodeProcess}.
        """
        node = NodeProcess(self.reactor, name, self.echo)
        self.nodes[name] = node
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        argv = [
            self.python, "-c", TWISTD_MAIN,
            "-n", "--pidfile=", "--logfile=-", plugin,
        ] + list(args)
        self.reactor.spawnProcess(node, self.python, argv, env=env, path=ROOT)
        d = node.waitFor(r"ready: role=", readyTimeout)
        return d.addCallback(lambda _: node)

    def stop(self, name, timeout=10.0):
        """
        Stop one node.
        """
        return self.nodes[name].stop(timeout)

    def kill(self, name):
        """
        SIGKILL one node.

        @return: a L{Deferred} firing when it has ended.
        """
        node = self.nodes[name]
        node.signal(signal.SIGKILL)
        return node.ended

    def stopAll(self, timeout=10.0):
        """
        Stop every node still running.

        @return: a L{Deferred} firing when all have ended.
        """
        return defer.DeferredList(
            [node.stop(timeout) for node in self.nodes.values()], consumeErrors=True
        )
