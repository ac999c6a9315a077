"""
Tests for L{zmqrelay.tools.top}: what one refresh draws.
"""

from rich.console import Console
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.tools import top


def _snapshot(at, received, errors):
    snap = top.Snapshot("cloud", at)
    snap.nodes["cloud"] = ("cloud", {"requests.received": received, "errors.no-route": errors,
                                     "sessions.client": 3, "sessions.proxy": 1, "inflight": 2,
                                     "refusals.rate": 4, "upstream.links": 0}, None)
    snap.nodes["siteA"] = ("proxy", {"requests.received": 0, "upstream.links": 1, "upstream.up": 0}, None)
    snap.nodes["a1"] = ("server", None, "timeout")
    snap.servers = {"a1": {"services": ["echo", "time"], "via": "siteA"}}
    snap.paths = {"cloud": 3, "lan@siteA": 1}
    return snap


class RenderTests(SynchronousTestCase):
    """
    render() lays out nodes, their routes and rates, and clients by path.
    """

    def draw(self, snap, previous=None):
        console = Console(record=True, width=160, color_system=None)
        console.print(top.render(snap, previous))
        return console.export_text()

    def test_nodesAndPaths(self):
        """
        Every node is a row (servers with their services and proxy), and every path its count.
        """
        text = self.draw(_snapshot(10.0, 100, 1))
        for part in ("attached to cloud", "siteA", "a1", "echo,time", "timeout", "c3 p1",
                     "lan@siteA", "0/1"):
            self.assertIn(part, text)

    def test_rates(self):
        """
        With a previous refresh, request and error rates are per second between the two.
        """
        text = self.draw(_snapshot(12.0, 150, 5), _snapshot(10.0, 100, 1))
        [row] = [line for line in text.splitlines() if "c3 p1" in line]
        self.assertIn("25.0", row)
        self.assertIn("2.0", row)

    def test_options(self):
        """
        top takes the client's connection options and its own, checked.
        """
        from twisted.python import usage

        options = top.TopOptions()
        options.parseOptions(["--cloud", "tcp://c:1", "--interval", "0.5", "--count", "2"])
        self.assertEqual((options["interval"], options["count"]), (0.5, 2))
        self.assertTrue(options.clientConfig().nodeId.startswith("top-"))
        self.assertRaises(usage.UsageError, top.TopOptions().parseOptions,
                          ["--cloud", "tcp://c:1", "--interval", "0"])
