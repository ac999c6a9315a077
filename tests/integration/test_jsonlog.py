"""
JSON logs: C{twistd --logger zmqrelay.tools.jsonlog.logger} writes one JSON
object per event, whose keys carry the event's fields (client, path, peer,
code), as the README shows.
"""

import json
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from zmqrelay.core import errors
from zmqrelay.core.config import NodeConfig
from zmqrelay.roles.client import Client
from zmqrelay.tools.launcher import ROOT, TWISTD_MAIN, NodeProcess
from tests.integration.faulthelpers import freePort
from tests.integration.helpers import childEnvironment


class JsonLogTests(unittest.TestCase):
    """
    Log events are queryable JSON lines with their fields as keys.
    """

    timeout = 60

    def events(self, node):
        found = []
        for line in node.lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
        return found

    @defer.inlineCallbacks
    def test_fieldsAreKeys(self):
        """
        A client's connection logs client and path keys; a refused hello
        logs peer and code keys; every line is one JSON object.
        """
        control = f"tcp://127.0.0.1:{freePort()}"
        node = NodeProcess(reactor, "jsoncloud")
        argv = [sys.executable, "-c", TWISTD_MAIN, "--logger", "zmqrelay.tools.jsonlog.logger",
                "-n", "--pidfile=", "zmqrelay-cloud", "--id", "jsoncloud", "--listen", control,
                "--pub", "tcp://127.0.0.1:*", "--sub", "tcp://127.0.0.1:*"]
        reactor.spawnProcess(node, sys.executable, argv, env=childEnvironment(), path=ROOT)
        self.addCleanup(node.stop)
        yield node.waitFor(r'"log_format": "ready: role=', 20.0)

        good = Client(NodeConfig("json-user", requestTimeout=2.0, attempts=1), cloud=control,
                      reactor=reactor)
        good.startService()
        self.addCleanup(good.stopService)
        yield good.whenConnected(10.0)
        yield node.waitFor(r'"log_format": "client \{client\}', 10.0)

        odd = Client(NodeConfig("json-odd", versions=(9,), requestTimeout=1.0, attempts=1,
                                rejectDelay=5.0), cloud=control, reactor=reactor)
        odd.startService()
        self.addCleanup(odd.stopService)
        yield node.waitFor(r'"log_format": "refused hello from', 10.0)

        events = self.events(node)
        lines = [line for line in node.lines if line.strip()]
        self.assertEqual(len(events), len(lines))
        [connected] = [e for e in events if e.get("client") == "json-user" and "path" in e]
        self.assertEqual(connected["path"], "cloud")
        self.assertEqual(connected["log_namespace"], "zmqrelay.core.presence")
        [refused] = [e for e in events if e.get("log_format", "").startswith("refused hello")]
        self.assertEqual(refused["code"], errors.VersionMismatch.code)
        self.assertIn("peer", refused)
