"""
Tests for the twistd plugins and the tap modules' options.
"""

import ast
import sys

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.interfaces import ICloud, IClient, IProxy, IServer
from zmqrelay.tools.tap import client as clientTap
from zmqrelay.tools.tap import cloud as cloudTap
from zmqrelay.tools.tap import proxy as proxyTap
from zmqrelay.tools.tap import server as serverTap

TAPNAMES = ["zmqrelay-client", "zmqrelay-cloud", "zmqrelay-proxy", "zmqrelay-server"]


def _makers():
    return {m.tapname: m for m in getPlugins(IServiceMaker) if m.tapname.startswith("zmqrelay-")}


class PluginDiscoveryTests(SynchronousTestCase):
    """
    twistd finds every role, and the plugin file stays declarations only.
    """

    def test_tapnames(self):
        """
        Every zmqrelay-* tapname is among getPlugins(IServiceMaker).
        """
        self.assertEqual(sorted(_makers()), TAPNAMES)

    def test_makersPointAtTapModules(self):
        """
        Each plugin's Options and makeService come from its tap module.
        """
        modules = {"zmqrelay-cloud": cloudTap, "zmqrelay-proxy": proxyTap,
                   "zmqrelay-server": serverTap, "zmqrelay-client": clientTap}
        for tapname, maker in _makers().items():
            self.assertIs(maker.options, modules[tapname].Options)
            self.assertTrue(maker.description)

    def test_pluginFileImportsNothingHeavy(self):
        """
        The plugin file imports neither the reactor, nor txzmq/zmq, nor zmqrelay.
        """
        _makers()
        module = sys.modules["twisted.plugins.zmqrelay_plugins"]
        with open(module.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.append(node.module or "")
                imported.extend(f"{node.module}.{alias.name}" for alias in node.names)
        self.assertTrue(imported, "no imports found: is this the right file?")
        for name in imported:
            for banned in ("twisted.internet", "txzmq", "zmq", "zmqrelay"):
                self.assertFalse(
                    name == banned or name.startswith(banned + "."),
                    f"plugin file imports {name}",
                )


class OptionsTestCase(SynchronousTestCase):
    """
    Helpers for parsing options.
    """

    def parse(self, module, argv):
        options = module.Options()
        options.parseOptions(argv)
        return options

    def assertUsageError(self, module, argv):
        self.assertRaises(usage.UsageError, self.parse, module, argv)


class CommonOptionsTests(OptionsTestCase):
    """
    Options every role shares.
    """

    def test_usageText(self):
        """
        Each role's usage text lists its own and the shared options.
        """
        for module, own in [(cloudTap, "--sub"), (proxyTap, "--cloud"),
                            (serverTap, "--service"), (clientTap, "--subscribe")]:
            text = module.Options().getUsage()
            for name in (own, "--heartbeat", "--liveness", "--rate", "--protocol-versions"):
                self.assertIn(name, text)

    def test_sharedOptionsToConfig(self):
        """
        Shared options parse and reach the NodeConfig.
        """
        options = self.parse(cloudTap, [
            "--id", "cloud-x", "--heartbeat", "0.5", "--liveness", "4",
            "--max-message-size", "2048", "--rate", "0", "--protocol-versions", "2,1",
            "--cooldown", "3", "--reject-delay", "7",
        ])
        config = options.nodeConfig()
        self.assertEqual(config.nodeId, "cloud-x")
        self.assertEqual((config.heartbeat, config.liveness), (0.5, 4))
        self.assertEqual(config.maxMessageSize, 2048)
        self.assertEqual(config.rate, 0.0)
        self.assertEqual(config.versions, (1, 2))
        self.assertEqual((config.cooldown, config.rejectDelay), (3.0, 7.0))

    def test_defaultId(self):
        """
        Without --id, the node id names the role.
        """
        self.assertTrue(self.parse(cloudTap, []).nodeConfig().nodeId.startswith("cloud-"))

    def test_badNumbers(self):
        """
        Negative, zero or non-numeric values are usage errors.
        """
        for argv in (
            ["--heartbeat", "-1"],
            ["--heartbeat", "0"],
            ["--liveness", "-3"],
            ["--rate", "-5"],
            ["--byte-rate", "-1"],
            ["--hwm", "lots"],
            ["--max-message-size", "0"],
            ["--protocol-versions", "0"],
            ["--protocol-versions", "300"],
            ["--protocol-versions", ","],
            ["--id", ""],
            ["--id", "x" * 257],
        ):
            self.assertUsageError(cloudTap, argv)


class CloudOptionsTests(OptionsTestCase):
    """
    C{twistd zmqrelay-cloud} options.
    """

    def test_endpoints(self):
        """
        The three endpoints parse; a non-ZeroMQ endpoint is refused.
        """
        options = self.parse(cloudTap, ["--listen", "tcp://127.0.0.1:*", "--pub", "ipc:///tmp/p",
                                        "--sub", "inproc://s"])
        self.assertEqual(options["listen"], "tcp://127.0.0.1:*")
        for name in ("--listen", "--pub", "--sub"):
            self.assertUsageError(cloudTap, [name, "127.0.0.1:5555"])
            self.assertUsageError(cloudTap, [name, "http://x"])

    def test_makeService(self):
        """
        makeService() builds a Cloud, not yet running, without opening sockets.
        """
        service = cloudTap.makeService(self.parse(cloudTap, ["--id", "c"]))
        self.assertTrue(ICloud.providedBy(service))
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)
        self.assertIsNone(service._socketFactory)


class ProxyOptionsTests(OptionsTestCase):
    """
    C{twistd zmqrelay-proxy} options.
    """

    def test_cloudOptional(self):
        """
        The cloud endpoint is optional (a LAN-only site) but must be an endpoint if given.
        """
        self.assertIsNone(self.parse(proxyTap, [])["cloud"])
        self.assertEqual(self.parse(proxyTap, ["-c", "tcp://relay:5555"])["cloud"], "tcp://relay:5555")
        self.assertUsageError(proxyTap, ["--cloud", "relay:5555"])
        self.assertUsageError(proxyTap, ["--listen", "nowhere"])

    def test_makeService(self):
        """
        makeService() builds a Proxy, not yet running.
        """
        service = proxyTap.makeService(self.parse(proxyTap, ["--id", "p", "--cloud", "tcp://relay:5555"]))
        self.assertTrue(IProxy.providedBy(service))
        self.assertEqual(service.cloudAddress, "tcp://relay:5555")
        self.assertFalse(service.running)


class ServerOptionsTests(OptionsTestCase):
    """
    C{twistd zmqrelay-server} options.
    """

    def test_services(self):
        """
        --service repeats; --proxy and the app are read.
        """
        options = self.parse(serverTap, ["--proxy", "tcp://p:5565", "--service", "a", "--service", "b"])
        self.assertEqual(options["services"], ["a", "b"])
        self.assertTrue(callable(options["appFactory"]))

    def test_needsProxyOrListen(self):
        """
        A server with neither --proxy nor --listen is refused.
        """
        self.assertUsageError(serverTap, ["--listen", ""])
        self.parse(serverTap, ["--listen", "", "--proxy", "tcp://p:1"])
        self.parse(serverTap, [])

    def test_badInput(self):
        """
        Bad endpoints, numbers and app names are usage errors.
        """
        for argv in (
            ["--proxy", "p:5565"],
            ["--listen", "5575"],
            ["--pub", "somewhere"],
            ["--tick", "-1"],
            ["--reply-cache", "-1"],
            ["--history", "-1"],
            ["--app", "no.such.module.factory"],
        ):
            self.assertUsageError(serverTap, argv)

    def test_makeService(self):
        """
        makeService() builds a Server with the example app as its handler.
        """
        service = serverTap.makeService(
            self.parse(serverTap, ["--id", "s", "--proxy", "tcp://p:1", "--service", "echo"])
        )
        self.assertTrue(IServer.providedBy(service))
        self.assertEqual(service.serviceNames, ("echo",))
        self.assertIsNotNone(service.handler)
        self.assertFalse(service.running)

    def test_appOptions(self):
        """
        --app-option KEY=VALUE reaches the --app factory as keyword
        arguments, and --tick is the example app's tick option; a malformed
        one is a usage error.
        """
        service = serverTap.makeService(self.parse(serverTap, [
            "--id", "s", "--proxy", "tcp://p:1", "--app", "tests.test_plugins.recordingApp",
            "--app-option", "colour=blue", "--app-option", "size=3",
        ]))
        self.assertEqual(service.handler.options, {"colour": "blue", "size": "3"})
        self.assertIs(service.handler.server, service)
        example = serverTap.makeService(
            self.parse(serverTap, ["--id", "s", "--proxy", "tcp://p:1", "--tick", "0.5"])
        )
        self.assertEqual(example.handler.tick, 0.5)
        self.assertUsageError(serverTap, ["--proxy", "tcp://p:1", "--app-option", "nothing"])


class _RecordingApp:
    def __init__(self, server, options):
        self.server = server
        self.options = options

    def handleRequest(self, request):
        return b""


def recordingApp(server, **options):
    """
    An --app factory for L{ServerOptionsTests.test_appOptions}.
    """
    return _RecordingApp(server, options)


class ClientOptionsTests(OptionsTestCase):
    """
    C{twistd zmqrelay-client} options.
    """

    def test_paths(self):
        """
        --cloud, --proxy and repeated --server give the client its paths.
        """
        options = self.parse(clientTap, ["--cloud", "tcp://c:1", "--server", "tcp://s:1",
                                         "--server", "ipc:///tmp/s2", "--subscribe", "tick"])
        self.assertEqual(options["servers"], ["tcp://s:1", "ipc:///tmp/s2"])
        self.assertEqual(options["subscribe"], ["tick"])

    def test_needsAnEndpoint(self):
        """
        A client with no endpoint at all is refused.
        """
        self.assertUsageError(clientTap, [])
        self.assertUsageError(clientTap, ["--target", "echo"])

    def test_badInput(self):
        """
        Bad endpoints and numbers are usage errors.
        """
        for argv in (
            ["--cloud", "c:1"],
            ["--proxy", "p"],
            ["--server", "s:1"],
            ["--cloud", "tcp://c:1", "--every", "0"],
            ["--cloud", "tcp://c:1", "--timeout", "-1"],
            ["--cloud", "tcp://c:1", "--attempts", "0"],
            ["--cloud", "tcp://c:1", "--count", "-1"],
        ):
            self.assertUsageError(clientTap, argv)

    def test_makeService(self):
        """
        makeService() builds a Client with the timeout and attempts asked for.
        """
        service = clientTap.makeService(self.parse(clientTap, [
            "--id", "c", "--cloud", "tcp://c:1", "--timeout", "2", "--attempts", "5"]))
        self.assertTrue(IClient.providedBy(service))
        self.assertEqual((service.config.requestTimeout, service.config.attempts), (2.0, 5))
        self.assertEqual(service.addresses, ["tcp://c:1"])
        self.assertFalse(service.running)
