"""
Tests for the C{zmqrelay} command line (L{zmqrelay.tools.cli}): what the
README's table of commands promises about arguments, options and exit status.
"""

import io
import sys

from twisted.python import usage
from twisted.trial import unittest

from zmqrelay.tools import cli


class CommandLineTests(unittest.TestCase):
    """
    Parsing and the exit status of a bad command line.
    """

    def parse(self, argv):
        options = cli.Options()
        options.parseOptions(argv)
        return options.subCommand, options.subOptions

    def test_badOptionExitsWithTwo(self):
        """An unknown option exits with status 2 and says which command to ask for help."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        exit = self.assertRaises(SystemExit, cli.main, ["request", "--bogus"], io.StringIO())
        self.assertEqual(exit.code, 2)
        self.assertIn("zmqrelay request: error:", err.getvalue())
        self.assertIn("--bogus", err.getvalue())
        self.assertIn("zmqrelay request --help", err.getvalue())

    def test_noCommandExitsWithTwo(self):
        """No command at all is a usage error too."""
        self.patch(sys, "stderr", io.StringIO())
        exit = self.assertRaises(SystemExit, cli.main, [], io.StringIO())
        self.assertEqual(exit.code, 2)

    def test_request(self):
        """request takes TARGET PAYLOAD after the connect options."""
        command, opts = self.parse(["request", "--cloud", "tcp://127.0.0.1:5555", "echo", "hello"])
        self.assertEqual(command, "request")
        self.assertEqual((opts["target"], opts["payload"]), ("echo", "hello"))
        self.assertEqual(opts["clouds"], ["tcp://127.0.0.1:5555"])

    def test_subscribeOptions(self):
        """subscribe takes prefixes, --count and --duration; no prefix is every topic."""
        _, opts = self.parse(["subscribe", "--cloud", "tcp://127.0.0.1:5555", "--count", "3",
                              "--duration", "2.5", "tick.", "news."])
        self.assertEqual(opts["prefixes"], ["tick.", "news."])
        self.assertEqual((opts["count"], opts["duration"]), (3, 2.5))
        _, opts = self.parse(["subscribe", "--cloud", "tcp://127.0.0.1:5555"])
        self.assertEqual(opts["prefixes"], [""])
        self.assertEqual((opts["count"], opts["duration"]), (0, 0.0))

    def test_subscribeNegativeRefused(self):
        """A negative --count or --duration is a usage error."""
        for extra in (["--count", "-1"], ["--duration", "-1"]):
            self.assertRaises(usage.UsageError, self.parse,
                              ["subscribe", "--cloud", "tcp://127.0.0.1:5555"] + extra)

    def test_presenceAndStatsNode(self):
        """presence and stats ask --node, by default the node attached to."""
        for command in ("presence", "stats"):
            _, opts = self.parse([command, "--cloud", "tcp://127.0.0.1:5555", "--node", "a1"])
            self.assertEqual(opts["node"], "a1")
            _, opts = self.parse([command, "--cloud", "tcp://127.0.0.1:5555"])
            self.assertIsNone(opts["node"])

    def test_topOptions(self):
        """top takes --interval (1 s by default) and --count (0: until interrupted)."""
        _, opts = self.parse(["top", "--cloud", "tcp://127.0.0.1:5555"])
        self.assertEqual((opts["interval"], opts["count"]), (1.0, 0))
        _, opts = self.parse(["top", "--cloud", "tcp://127.0.0.1:5555", "--interval", "0.5",
                              "--count", "2"])
        self.assertEqual((opts["interval"], opts["count"]), (0.5, 2))

    def test_everyConnectOptionReachesTheClient(self):
        """
        Every command builds its client from all its connect options: each
        --cloud, --cloud-links, --proxy, --server, --discover and the
        deadlines (as C{twistd zmqrelay-client} does).
        """
        from zmqrelay.tools.tap import client as clientTap

        argv = ["--cloud", "tcp://127.0.0.1:5555", "--cloud", "tcp://127.0.0.1:5565", "--cloud-links", "2",
                "--proxy", "tcp://127.0.0.1:5556", "--server", "tcp://127.0.0.1:5557", "--discover",
                "--timeout", "7", "--attempts", "2"]
        commands = [self.parse([command] + argv + extra)[1]
                    for command, extra in (("request", ["echo", "hi"]), ("subscribe", []), ("presence", []),
                                           ("stats", []), ("top", []))]
        tap = clientTap.Options()
        tap.parseOptions(argv)
        for opts in commands + [tap]:
            client = opts.makeClient()
            self.assertEqual(client.cloudAddresses, ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:5565"])
            self.assertEqual(client.cloudLinks, 2)
            self.assertEqual(client.addresses, ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:5565",
                                                "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557"])
            self.assertIsNotNone(client.discovered)
            self.assertEqual((client.config.requestTimeout, client.config.attempts), (7.0, 2))

    def test_cloudLinksOneOrTwo(self):
        """--cloud-links is 1 or 2, as README.md says; anything else is a usage error."""
        for links in ("0", "3", "x"):
            self.assertRaises(usage.UsageError, self.parse,
                              ["stats", "--cloud", "tcp://127.0.0.1:5555", "--cloud-links", links])

    def test_commandsServeNoMetrics(self):
        """
        A command ends when its work is done: --metrics is refused with a
        clear error, not accepted and ignored.
        """
        for command, extra in (("request", ["echo", "hi"]), ("subscribe", []), ("stats", []), ("top", [])):
            e = self.assertRaises(usage.UsageError, self.parse,
                                  [command, "--cloud", "tcp://127.0.0.1:5555", "--metrics", "tcp:9100"] + extra)
            self.assertIn("--metrics", str(e))

    def test_optionsAfterArguments(self):
        """
        Options may follow a command's arguments (getopt alone would take them for more arguments);
        C{--} ends the options.
        """
        _, opts = self.parse(["subscribe", "--cloud", "tcp://127.0.0.1:5555", "tick.", "--count", "3", "news."])
        self.assertEqual((opts["prefixes"], opts["count"]), (["tick.", "news."], 3))
        _, opts = self.parse(["request", "echo", "hello", "--cloud", "tcp://127.0.0.1:5555", "--timeout", "2"])
        self.assertEqual((opts["target"], opts["payload"], opts["timeout"]), ("echo", "hello", 2.0))
        _, opts = self.parse(["top", "--cloud", "tcp://127.0.0.1:5555", "--count", "2", "--interval=0.5"])
        self.assertEqual((opts["count"], opts["interval"]), (2, 0.5))
        _, opts = self.parse(["subscribe", "--cloud", "tcp://127.0.0.1:5555", "--", "--odd"])
        self.assertEqual(opts["prefixes"], ["--odd"])

    def test_keygenBadRoleExitsWithTwo(self):
        """A role that is not one of the four is a usage error: status 2, nothing written."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        exit = self.assertRaises(SystemExit, cli.main, ["keygen", "alice", "--role", "bogus", "--dir",
                                                        self.mktemp()], io.StringIO())
        self.assertEqual(exit.code, 2)
        self.assertIn("--role 'bogus'", err.getvalue())

    def test_keygenOptions(self):
        """keygen takes NAME, --dir (.), --role (client), --id (default NAME) and --force."""
        _, opts = self.parse(["keygen", "alice"])
        self.assertEqual((opts["name"], opts["dir"], opts["role"], opts["force"]),
                         ("alice", ".", "client", False))
        _, opts = self.parse(["keygen", "edge", "--dir", "k", "--role", "server", "--id", "s1",
                              "--force"])
        self.assertEqual((opts["name"], opts["dir"], opts["role"], opts["id"], opts["force"]),
                         ("edge", "k", "server", "s1", True))


def _optionNames(options):
    """
    @return: the long names of every option an L{usage.Options} instance
        takes (parameters, flags and C{opt_} methods), but C{--help} and
        C{--version}, which Twisted gives every command.
    """
    names = set()
    for cls in type(options).__mro__:
        for table in ("optParameters", "optFlags"):
            names.update(entry[0] for entry in cls.__dict__.get(table, []))
    names.update(m[4:].replace("_", "-") for m in dir(options) if m.startswith("opt_"))
    # opt_c is the short form of --cloud.
    return {n for n in names if len(n) > 1} - {"help", "version"}


class DocumentedTests(unittest.SynchronousTestCase):
    """
    Every option of every twistd plugin and every C{zmqrelay} command is in
    the README, which independent checks are written against.
    """

    def setUp(self):
        from zmqrelay.tools.launcher import ROOT

        with open(f"{ROOT}/README.md", encoding="utf-8") as f:
            self.readme = f.read()

    def assertDocumented(self, what, names):
        missing = sorted(n for n in names if f"`--{n}" not in self.readme and f"--{n}`" not in self.readme
                         and f"--{n} " not in self.readme)
        self.assertEqual(missing, [], f"{what}: options missing from README.md")

    def test_pluginOptions(self):
        """Every option of the four twistd plugins."""
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        import twisted.plugins

        makers = [p for p in getPlugins(IServiceMaker, twisted.plugins) if p.tapname.startswith("zmqrelay-")]
        self.assertEqual(len(makers), 4)
        for maker in makers:
            self.assertIn(f"zmqrelay-{maker.tapname.split('-', 1)[1]}", self.readme)
            self.assertDocumented(maker.tapname, _optionNames(maker.options()))

    def test_commandOptions(self):
        """Every command of C{zmqrelay} and its options."""
        for name, _, options, _ in cli.Options.subCommands:
            self.assertIn(f"zmqrelay {name}", self.readme)
            self.assertDocumented(f"zmqrelay {name}", _optionNames(options()))
