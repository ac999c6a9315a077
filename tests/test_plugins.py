"""
Tests for the twistd plugins and the tap modules' options.
"""

import ast
import sys

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from zope.interface import implementer

from zmqrelay.core.config import NodeConfig
from zmqrelay.interfaces import ICloud, IClient, IProxy, IRequestHandler, IServer
from zmqrelay.tools import tac
from zmqrelay.tools.tap._common import parseEndpoint
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
            "--emulate-versions",
            "--cooldown", "3", "--reject-delay", "7",
        ])
        config = options.nodeConfig()
        self.assertEqual(config.nodeId, "cloud-x")
        self.assertEqual((config.heartbeat, config.liveness), (0.5, 4))
        self.assertEqual(config.maxMessageSize, 2048)
        self.assertEqual(config.rate, 0.0)
        self.assertEqual(config.versions, (1, 2))
        self.assertEqual((config.cooldown, config.rejectDelay), (3.0, 7.0))

    def test_ioThreads(self):
        """
        --io-threads reaches the NodeConfig; by default (0) a node's context
        gets one I/O thread, or four when CURVE secures what it binds; a
        negative count is a usage error.
        """
        config = self.parse(cloudTap, ["--io-threads", "3"]).nodeConfig()
        self.assertEqual((config.ioThreads, config.zmqIoThreads()), (3, 3))
        config = self.parse(cloudTap, []).nodeConfig()
        self.assertEqual((config.ioThreads, config.zmqIoThreads()), (0, 1))

        class Curve:
            registry = object()
            nodeId = None

        self.assertEqual(NodeConfig("c", curve=Curve()).zmqIoThreads(), 4)
        Curve.registry = None
        self.assertEqual(NodeConfig("c", curve=Curve()).zmqIoThreads(), 1)
        self.assertEqual(NodeConfig("c", curve=Curve(), ioThreads=1).zmqIoThreads(), 1)
        self.assertUsageError(cloudTap, ["--io-threads", "-1"])

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

    def test_cloudOrLanOnly(self):
        """
        A proxy needs --cloud, or --lan-only said explicitly, not both; the
        cloud must be an endpoint.
        """
        self.assertIsNone(self.parse(proxyTap, ["--lan-only"])["cloud"])
        self.assertEqual(self.parse(proxyTap, ["-c", "tcp://relay:5555"])["cloud"], "tcp://relay:5555")
        self.assertUsageError(proxyTap, [])
        self.assertUsageError(proxyTap, ["--lan-only", "--cloud", "tcp://relay:5555"])
        self.assertUsageError(proxyTap, ["--cloud", "relay:5555"])
        self.assertUsageError(proxyTap, ["--lan-only", "--listen", "nowhere"])

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
            ["--reply-cache-bytes", "-1"],
            ["--history-bytes", "lots"],
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

    def test_inputHwm(self):
        """
        --input-hwm (default 1000) reaches the config of every role, and a
        .tac file reads it from ZMQRELAY_INPUT_HWM.
        """
        self.assertEqual(self.parse(cloudTap, []).nodeConfig().inputHwm, 1000)
        self.assertEqual(self.parse(cloudTap, []).nodeConfig().outputHwm, 1000)
        self.assertEqual(self.parse(cloudTap, ["--output-hwm", "9"]).nodeConfig().outputHwm, 9)
        options = self.parse(proxyTap, ["--cloud", "tcp://c:1", "--input-hwm", "50"])
        self.assertEqual(options.nodeConfig().inputHwm, 50)
        self.assertUsageError(cloudTap, ["--input-hwm", "0"])
        argv = tac.argumentsFromEnvironment(serverTap.Options, {"ZMQRELAY_INPUT_HWM": "77"})
        self.assertEqual(self.parse(serverTap, argv + ["--proxy", "tcp://p:1"])["input-hwm"], 77)

    def test_heapFrozenInOwnProcess(self):
        """
        A node started as a twistd subcommand or from a .tac file (runAs
        set) leaves the objects that exist once it runs out of the garbage
        collector's full passes; built by a program, it does not touch the
        program's collector.
        """
        import gc

        from zmqrelay.tools.tap._common import twistdService

        class Service:
            def startService(self):
                pass

        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        twistdService(lambda options: Service(), self.parse(cloudTap, [])).startService()
        self.assertEqual(gc.get_freeze_count(), 0)
        options = self.parse(cloudTap, [])
        options.runAs = "zmqrelay-cloud"
        twistdService(lambda options: Service(), options).startService()
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_batch(self):
        """
        --batch (default 64) reaches the config; 0 switches batches off.
        """
        self.assertEqual(self.parse(cloudTap, []).nodeConfig().batch, 64)
        self.assertEqual(self.parse(cloudTap, ["--batch", "0"]).nodeConfig().batch, 0)
        self.assertUsageError(cloudTap, ["--batch", "-1"])

    def test_memoryBoundsReachTheServer(self):
        """
        --reply-cache, --reply-cache-bytes, --history and --history-bytes
        reach the config and bound the server's reply cache and history, and
        a .tac file reads them from ZMQRELAY_REPLY_CACHE_BYTES and
        ZMQRELAY_HISTORY_BYTES.
        """
        service = serverTap.makeService(self.parse(serverTap, [
            "--id", "s", "--proxy", "tcp://p:1", "--reply-cache", "7", "--reply-cache-bytes", "70000",
            "--history", "5", "--history-bytes", "50000",
        ]))
        config = service.config
        self.assertEqual(
            (config.replyCacheSize, config.replyCacheBytes, config.historySize, config.historyBytes),
            (7, 70000, 5, 50000),
        )
        self.assertEqual((service.replies.size, service.replies.maxBytes), (7, 70000))
        self.assertEqual((service.history.size, service.history.maxBytes), (5, 50000))
        defaults = serverTap.makeService(self.parse(serverTap, ["--id", "s", "--proxy", "tcp://p:1"]))
        self.assertEqual((defaults.replies.maxBytes, defaults.history.maxBytes), (16 * 2**20, 16 * 2**20))
        argv = tac.argumentsFromEnvironment(serverTap.Options, {
            "ZMQRELAY_REPLY_CACHE_BYTES": "123", "ZMQRELAY_HISTORY_BYTES": "456",
        })
        options = self.parse(serverTap, argv)
        self.assertEqual((options["reply-cache-bytes"], options["history-bytes"]), (123, 456))

    def test_appModuleNotImportable(self):
        """
        An --app whose module cannot be imported says so, and that twistd does not look in the
        current directory (namedAny alone says only "does not name an object").
        """
        e = self.assertRaises(usage.UsageError, self.parse, serverTap,
                              ["--proxy", "tcp://p:1", "--app", "no_such_module_here.Upper"])
        self.assertIn("cannot import 'no_such_module_here'", str(e))
        self.assertIn("PYTHONPATH", str(e))

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


@implementer(IRequestHandler)
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

    def test_environmentSubscribe(self):
        """
        In a .tac file's environment, C{ZMQRELAY_SUBSCRIBE} is a comma-separated list of prefixes;
        set and empty, it is every topic (C{--subscribe ''}); unset, no subscription.
        """
        cloud = {"ZMQRELAY_CLOUD": "tcp://c:1"}
        for value, prefixes in (("tick.,news.", ["tick.", "news."]), ("", [""]), (None, [])):
            environ = dict(cloud, **({} if value is None else {"ZMQRELAY_SUBSCRIBE": value}))
            options = self.parse(clientTap, tac.argumentsFromEnvironment(clientTap.Options, environ))
            self.assertEqual(options["subscribe"], prefixes, value)

    def test_environmentPlurals(self):
        """
        Every repeatable option has a plural variable, as README.md lists them; flags take 1, yes, true or on.
        """
        self.assertEqual(
            [tac.variable(n) for n in ("server", "service", "subscribe", "app-option", "curve-peer-key")],
            ["ZMQRELAY_SERVERS", "ZMQRELAY_SERVICES", "ZMQRELAY_SUBSCRIBE", "ZMQRELAY_APP_OPTIONS",
             "ZMQRELAY_CURVE_PEER_KEYS"],
        )
        argv = tac.argumentsFromEnvironment(serverTap.Options, {
            "ZMQRELAY_PROXY": "tcp://p:1", "ZMQRELAY_APP_OPTIONS": "colour=blue,size=3", "ZMQRELAY_DISCOVER": "on",
        })
        options = self.parse(serverTap, argv)
        self.assertEqual(options["appOptions"], {"colour": "blue", "size": "3"})
        self.assertTrue(options["discover"])

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


class NotAHandler:
    """
    What a wrong --app makes: no handleRequest.
    """

    def __init__(self, server):
        self.server = server


class CheckedOptionsTests(OptionsTestCase):
    """
    Every option is checked when parsed, and errors name the option and
    the value.
    """

    def assertMessage(self, module, argv, *parts):
        error = self.assertRaises(usage.UsageError, self.parse, module, argv)
        for part in parts:
            self.assertIn(part, str(error))
        self.assertNotIn("\n", str(error))
        return error

    def test_coercionNamesOption(self):
        """
        A bad number names its option and value: --hwm '-1': must be positive.
        """
        self.assertMessage(cloudTap, ["--hwm", "-1"], "--hwm '-1'", "must be positive")
        self.assertMessage(cloudTap, ["--hwm", "lots"], "--hwm 'lots'", "not an integer")
        self.assertMessage(cloudTap, ["--rate", "-5"], "--rate '-5'", "zero or more")
        self.assertMessage(cloudTap, ["--heartbeat", "x"], "--heartbeat 'x'", "not a number")

    def test_unknownProtocolVersion(self):
        """
        --protocol-versions may only list versions this release speaks,
        unless --emulate-versions says a test emulates another release.
        """
        self.assertMessage(cloudTap, ["--protocol-versions", "7"], "--protocol-versions '7'",
                           "speaks only 1")
        options = self.parse(cloudTap, ["--protocol-versions", "1,7", "--emulate-versions"])
        self.assertEqual(options.nodeConfig().versions, (1, 7))
        self.assertEqual(self.parse(cloudTap, ["--protocol-versions", "1"])["protocol-versions"], (1,))

    def test_endpointsFullyParsed(self):
        """
        Endpoints are parsed whole: a host, a numeric port (or * when
        binding); dialling * is refused.
        """
        self.assertMessage(proxyTap, ["--cloud", "tcp://foo"], "--cloud 'tcp://foo'", "no port")
        self.assertMessage(cloudTap, ["--listen", "tcp://127.0.0.1:abc"],
                           "--listen 'tcp://127.0.0.1:abc'", "port 'abc'")
        self.assertMessage(proxyTap, ["--cloud", "tcp://relay:*"], "--cloud", "for binding")
        self.assertMessage(proxyTap, ["--cloud", "tcp://relay:70000"], "--cloud", "1 to 65535")
        self.assertMessage(clientTap, ["--server", "tcp://:5"], "--server 'tcp://:5'")
        self.parse(cloudTap, ["--listen", "tcp://*:*", "--pub", "tcp://[::1]:5556"])

    def test_parseEndpoint(self):
        """
        parseEndpoint accepts what ZeroMQ binds and dials, and says what is
        wrong with the rest.
        """
        for good, bind in [("tcp://127.0.0.1:5555", False), ("tcp://*:*", True),
                           ("tcp://host.example:1", False), ("ipc:///tmp/x", False),
                           ("inproc://name", True), ("tcp://[::1]:80", False)]:
            self.assertEqual(parseEndpoint(good, bind), good)
        for bad, bind in [("tcp://foo", False), ("tcp://h:abc", True), ("tcp://h:0", True),
                          ("tcp://*:1", False), ("udp://h:1", True), ("ipc://", True),
                          ("tcp://h/x:1", False), ("127.0.0.1:5555", True)]:
            self.assertRaises(ValueError, parseEndpoint, bad, bind)

    def test_metricsEndpoint(self):
        """
        --metrics takes a Twisted endpoint string; makeService adds a
        metrics service to the node.
        """
        from zmqrelay.roles.metrics import MetricsService

        self.assertMessage(cloudTap, ["--metrics", "tcp:abc"], "--metrics 'tcp:abc'")
        self.assertMessage(cloudTap, ["--metrics", "nonsense:1"], "--metrics 'nonsense:1'")
        options = self.parse(cloudTap, ["--metrics", "tcp:0:interface=127.0.0.1"])
        cloud = cloudTap.makeService(options)
        [metrics] = [s for s in cloud if isinstance(s, MetricsService)]
        self.assertEqual(metrics.endpoint, "tcp:0:interface=127.0.0.1")
        self.assertEqual([s for s in cloudTap.makeService(self.parse(cloudTap, []))], [])

    def test_appMustBeAHandler(self):
        """
        An --app factory that does not make an IRequestHandler is refused
        when the service is built.
        """
        for app in ("zmqrelay.config.NodeConfig", "tests.test_plugins.NotAHandler"):
            options = self.parse(serverTap, ["--proxy", "tcp://p:1", "--app", app])
            error = self.assertRaises(usage.UsageError, serverTap.makeService, options)
            self.assertIn(f"--app '{app}'", str(error))
            self.assertIn("not an IRequestHandler", str(error))

    def test_appNotCallable(self):
        """
        An --app that names no callable is refused when parsed.
        """
        self.assertMessage(serverTap, ["--app", "zmqrelay.__version__"], "--app 'zmqrelay.__version__'")
