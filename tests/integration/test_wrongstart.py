"""
Wrong starts, tried as a new user would: each ends at once with one line
naming the option and the value (or the endpoint and the reason), not a
traceback, and no node starts claiming to be ready.
"""

import socket
import sys

from twisted.internet import defer
from twisted.trial import unittest

from tests.integration.helpers import TWISTD, runCommand, runProcess


def _busyPort(testCase):
    """
    @return: a loopback TCP port held by a listening socket until cleanup.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    testCase.addCleanup(sock.close)
    return sock.getsockname()[1]


class WrongStartTests(unittest.TestCase):
    """
    Each wrong start of issue 12: exit status and the one-line message.
    """

    timeout = 60

    #: Loopback endpoints given before each test's own arguments (which
    #: override them): a node whose wrong option were no longer refused would
    #: bind only to loopback, never to every interface.
    LOOPBACK = {
        plugin: [arg for name in names for arg in (f"--{name}", "tcp://127.0.0.1:*")]
        for plugin, names in (("zmqrelay-cloud", ("listen", "pub", "sub")),
                              ("zmqrelay-proxy", ("listen", "pub", "sub")),
                              ("zmqrelay-server", ("listen", "pub")))
    }

    def twistd(self, plugin, args):
        argv = [sys.executable] + TWISTD + [plugin] + self.LOOPBACK.get(plugin, []) + list(args)
        return runProcess(self, argv, timeout=30.0)

    def assertOneLine(self, result, status, *parts):
        code, out, err = result
        self.assertEqual(code, status, (out, err))
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, err)
        for part in parts:
            self.assertIn(part, lines[0])
        self.assertNotIn("Traceback", out + err)
        self.assertNotIn("ready: role=", out)
        return lines[0]

    def assertLoggedOneLine(self, result, status, *parts):
        """
        A failure at start, once twistd's log has begun (it takes stderr):
        the log's last line says it, and nothing follows or traces back.
        """
        code, out, err = result
        self.assertEqual(code, status, (out, err))
        self.assertNotIn("Traceback", out + err)
        self.assertNotIn("ready: role=", out)
        last = [line for line in out.splitlines() if line.strip()][-1]
        for part in parts:
            self.assertIn(part, last)
        return last

    @defer.inlineCallbacks
    def test_cloudEndpointWithoutPort(self):
        """--cloud tcp://foo: status 2, naming --cloud and the value."""
        result = yield self.twistd("zmqrelay-proxy", ["--cloud", "tcp://foo"])
        self.assertOneLine(result, 2, "twistd zmqrelay-proxy: error:", "--cloud 'tcp://foo'", "no port")

    @defer.inlineCallbacks
    def test_listenPortNotANumber(self):
        """--listen tcp://127.0.0.1:abc: status 2, naming --listen, the value and the port."""
        result = yield self.twistd("zmqrelay-cloud", ["--listen", "tcp://127.0.0.1:abc"])
        self.assertOneLine(result, 2, "--listen 'tcp://127.0.0.1:abc'", "port 'abc'")

    @defer.inlineCallbacks
    def test_busyPort(self):
        """A busy port: status 1, one line naming the endpoint and the reason."""
        port = _busyPort(self)
        endpoint = f"tcp://127.0.0.1:{port}"
        result = yield self.twistd("zmqrelay-cloud", [
            "--listen", endpoint, "--pub", "tcp://127.0.0.1:*", "--sub", "tcp://127.0.0.1:*",
        ])
        self.assertLoggedOneLine(result, 1, "cannot start", "Address already in use", endpoint)

    @defer.inlineCallbacks
    def test_busyMetricsPort(self):
        """A busy --metrics port: status 1, one line naming --metrics and the reason."""
        port = _busyPort(self)
        result = yield self.twistd("zmqrelay-cloud", [
            "--listen", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*", "--sub", "tcp://127.0.0.1:*",
            "--metrics", f"tcp:{port}:interface=127.0.0.1",
        ])
        self.assertLoggedOneLine(result, 1, "cannot start", f"--metrics tcp:{port}", "in use")

    @defer.inlineCallbacks
    def test_appNotAHandler(self):
        """--app zmqrelay.config.NodeConfig: status 2, not an IRequestHandler."""
        result = yield self.twistd("zmqrelay-server", [
            "--proxy", "tcp://127.0.0.1:1", "--listen", "", "--app", "zmqrelay.config.NodeConfig",
        ])
        self.assertOneLine(result, 2, "--app 'zmqrelay.config.NodeConfig'", "not an IRequestHandler")

    @defer.inlineCallbacks
    def test_unknownProtocolVersion(self):
        """--protocol-versions 7: status 2, naming what this release speaks."""
        result = yield self.twistd("zmqrelay-cloud", ["--protocol-versions", "7"])
        self.assertOneLine(result, 2, "--protocol-versions '7'", "speaks only 1")

    @defer.inlineCallbacks
    def test_negativeHwm(self):
        """--hwm -1: status 2, naming --hwm and the value."""
        result = yield self.twistd("zmqrelay-cloud", ["--hwm", "-1"])
        self.assertOneLine(result, 2, "--hwm '-1'", "must be positive")

    @defer.inlineCallbacks
    def test_proxyWithoutCloud(self):
        """A proxy without --cloud: status 2, asking for --cloud or --lan-only."""
        result = yield self.twistd("zmqrelay-proxy", [])
        self.assertOneLine(result, 2, "--cloud", "--lan-only")

    @defer.inlineCallbacks
    def test_requestNegativeTimeout(self):
        """zmqrelay request --timeout -1: status 2, naming --timeout and the value."""
        result = yield runCommand(self, [
            "request", "--cloud", "tcp://127.0.0.1:1", "--timeout", "-1", "echo", "hi",
        ])
        self.assertOneLine(result, 2, "zmqrelay request: error:", "--timeout '-1'", "must be positive")
