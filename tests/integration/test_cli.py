"""
Integration tests of the C{zmqrelay} command, run as a child process
against a live distributed topology (see L{helpers.startDistributed}).
"""

import re

from twisted.internet import defer
from twisted.trial import unittest

from tests.integration.helpers import (
    Cluster,
    cloudClient,
    parseJson,
    runCommand,
    startDistributed,
)


class CommandTests(unittest.TestCase):
    """
    C{zmqrelay request|subscribe|presence} print what the system answers.
    """

    timeout = 60

    def setUp(self):
        self.cluster = Cluster(self)
        return startDistributed(self.cluster)

    def zmqrelay(self, *args):
        """
        Run C{zmqrelay ARGS}; fail the test unless it exits with 0.

        @return: a L{defer.Deferred} firing with its standard output.
        """

        def check(result):
            code, out, err = result
            self.assertEqual(code, 0, f"zmqrelay {' '.join(args)}: exit {code}\n{out}\n{err}")
            return out

        return runCommand(self, args).addCallback(check)

    @defer.inlineCallbacks
    def test_requestPrintsTheReply(self):
        """'zmqrelay request' through the cloud prints the server's reply, stamped with its --id."""
        yield cloudClient(self.cluster, "probe", servers=["b1"])
        cloud = self.cluster["cloud"].endpoints["control"]
        out = yield self.zmqrelay("request", "--cloud", cloud, "--id", "cli-req", "b1", "whoami")
        self.assertRegex(out, r"^cli-req [0-9a-f]+ cloud b1\n$")

    @defer.inlineCallbacks
    def test_requestToUnknownTargetFails(self):
        """'zmqrelay request' for an unknown target exits non-zero, naming the no-route error."""
        cloud = self.cluster["cloud"].endpoints["control"]
        code, out, err = yield runCommand(self, ["request", "--cloud", cloud, "nobody", "x"])
        self.assertEqual(code, 1, (out, err))
        self.assertIn("no-route", err)

    @defer.inlineCallbacks
    def test_subscribePrintsNotifications(self):
        """'zmqrelay subscribe -n 3' through the cloud prints three of b1's ticks, then exits."""
        cloud = self.cluster["cloud"].endpoints["control"]
        out = yield self.zmqrelay("subscribe", "--cloud", cloud, "-n", "3", "tick.b1")
        lines = out.splitlines()
        self.assertEqual(len(lines), 3, out)
        seqs = []
        for line in lines:
            match = re.match(r"^tick\.b1 b1#(\d+) (\d+)$", line)
            self.assertIsNotNone(match, line)
            seqs.append(int(match.group(1)))
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 3)))

    @defer.inlineCallbacks
    def test_presenceListsConnectedClients(self):
        """'zmqrelay presence' shows the cloud's clients, and a proxy's replicated view of them."""
        c = self.cluster
        yield c.client("watcher", cloud=c["cloud"])
        yield c["proxyA"].waitFor(r"client watcher \(\S+\) connected via cloud", 10.0)

        out = yield self.zmqrelay(
            "presence", "--cloud", c["cloud"].endpoints["control"], "--id", "cli-presence"
        )
        seen = parseJson(out)
        self.assertEqual(seen["watcher"]["paths"], ["cloud"])
        self.assertEqual(seen["cli-presence"]["paths"], ["cloud"])

        out = yield self.zmqrelay(
            "presence", "--proxy", c["proxyA"].endpoints["control"], "--id", "cli-lan",
            "--node", "proxyA",
        )
        seen = parseJson(out)
        self.assertEqual(seen["watcher"]["paths"], ["cloud"])
        self.assertEqual(seen["cli-lan"]["paths"], ["proxy"])
        self.assertNotIn("cli-presence", seen)


class InterruptTests(unittest.SynchronousTestCase):
    """
    Ctrl-C or SIGTERM, the way to end C{zmqrelay subscribe} and C{zmqrelay top}.
    """

    def test_interruptEndsCleanly(self):
        """
        SIGINT or SIGTERM ends the command with status 0 and nothing on stderr (no traceback of a
        coroutine torn down with the interpreter).
        """
        import signal
        import subprocess
        import time

        from tests.integration.helpers import readLineWithin, zmqrelayCommand

        for command, signum in ((["subscribe"], signal.SIGINT), (["top"], signal.SIGTERM)):
            child = subprocess.Popen(
                zmqrelayCommand() + command + ["--cloud", "tcp://127.0.0.1:1", "--timeout", "30"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            self.addCleanup(child.stderr.close)
            self.addCleanup(child.stdout.close)
            self.addCleanup(lambda child=child: child.poll() is None and child.kill())
            # Long enough for the reactor to run and the handlers to be in place.
            time.sleep(1.5)
            child.send_signal(signum)
            try:
                code = child.wait(15)
            except subprocess.TimeoutExpired:
                self.fail(f"{command} did not end on {signum}")
            err = readLineWithin(child.stderr, 5)
            self.assertEqual((code, err), (0, b""), command)
