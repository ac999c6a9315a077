"""
Integration tests of CURVE security: a real C{twistd} cloud with CURVE on,
a proxy dialling it with its key, a server on the (plain) site hop, and
in-process clients with good, missing, unknown and borrowed keys.

Topology of every test::

    cloud (CURVE: ROUTER, XPUB, XSUB) <-CURVE- proxyA <-plain- a1 (echo)

The wire test puts a recording TCP forwarder between a client and a cloud
and looks for a request payload and the client's id in what it carried.
"""

import os
import re

from twisted.internet import defer
from twisted.protocols import portforward
from twisted.trial import unittest

from zmqrelay.core import errors, protocol
from zmqrelay.roles.client import Client
from zmqrelay.core.config import NodeConfig
from zmqrelay.edge.link import CONNECTED
from zmqrelay.edge.security import CurveConfig, readCertificate, writeCertificates
from tests.integration.helpers import (
    LOOPBACK,
    Cluster,
    Collector,
    poll,
    publishUntilSeen,
    reachable,
    stats,
)

#: What the wire test sends and then looks for in the captured bytes.
SECRET = b"TOP-SECRET-PAYLOAD-5f0c1d9e"
WIRE_ID = "eavesdropped-client-4b7e"


class _TapClient(portforward.ProxyClient):
    """
    The forwarder's side toward the cloud: records what the cloud sends.
    """

    def dataReceived(self, data):
        self.wiretap.captured.extend(data)
        portforward.ProxyClient.dataReceived(self, data)

    def connectionLost(self, reason):
        portforward.ProxyClient.connectionLost(self, reason)
        self.closed.callback(None)


class _TapClientFactory(portforward.ProxyClientFactory):
    protocol = _TapClient
    noisy = False

    def buildProtocol(self, addr):
        proto = portforward.ProxyClientFactory.buildProtocol(self, addr)
        self.server.factory.wiretap.track(proto)
        return proto


class _TapServer(portforward.ProxyServer):
    """
    The forwarder's side toward the client: records what the client sends.
    """

    clientProtocolFactory = _TapClientFactory
    noisy = False

    def connectionMade(self):
        self.factory.wiretap.track(self)
        portforward.ProxyServer.connectionMade(self)

    def dataReceived(self, data):
        self.factory.wiretap.captured.extend(data)
        portforward.ProxyServer.dataReceived(self, data)

    def connectionLost(self, reason):
        portforward.ProxyServer.connectionLost(self, reason)
        self.closed.callback(None)


class Wiretap:
    """
    A TCP forwarder on loopback that keeps every byte it forwards, both ways.

    @ivar captured: the bytes seen so far.
    """

    def __init__(self, testCase, target, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        host, port = target[len("tcp://"):].rsplit(":", 1)
        self.factory = portforward.ProxyFactory(host, int(port))
        self.factory.protocol = _TapServer
        self.factory.noisy = False
        self.factory.wiretap = self
        self.captured = bytearray()
        self.connections = []
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        testCase.addCleanup(self.stop)

    @property
    def endpoint(self):
        """
        The ZeroMQ endpoint to dial instead of the target.
        """
        return f"tcp://127.0.0.1:{self.port.getHost().port}"

    def track(self, proto):
        proto.wiretap = self
        proto.closed = defer.Deferred()
        self.connections.append(proto)

    def stop(self):
        """
        Stop listening and cut every connection.

        @return: a L{defer.Deferred} firing when all are closed.
        """
        waits = [defer.maybeDeferred(self.port.stopListening)]
        for proto in self.connections:
            if not proto.closed.called:
                if proto.transport is not None:
                    proto.transport.abortConnection()
                waits.append(proto.closed)
        return defer.DeferredList(waits, consumeErrors=True)


class CurveTestCase(unittest.TestCase):
    """
    Keys for every node of a test, made with L{writeCertificates}.
    """

    timeout = 60

    def makeKeys(self, nodes):
        """
        Make a keypair per node.

        @param nodes: (name, role) pairs.
        @return: a L{dict} of name to (public path, secret path).
        """
        directory = os.path.abspath(self.mktemp())
        return {name: writeCertificates(directory, name, role=role) for name, role in nodes}

    def authorize(self, *names):
        """
        @return: a new directory holding the public certificates of C{names}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in names:
            public = self.keys[name][0]
            os.link(public, os.path.join(directory, os.path.basename(public)))
        return directory


class CurveTests(CurveTestCase):
    """
    A cloud with CURVE serves the keys it knows, as who they are, and no one
    else.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.keys = self.makeKeys([
            ("cloud", "cloud"), ("proxyA", "proxy"), ("alice", "client"),
            ("bob", "client"), (WIRE_ID, "client"), ("mallory", "client"),
        ])
        authorized = self.authorize("proxyA", "alice", "bob", WIRE_ID)
        self.cluster = Cluster(self)
        self.cloud = yield self.cluster.start("cloud", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--curve-secret", self.keys["cloud"][1], "--curve-authorized", authorized,
        ])
        self.cloudEndpoint = self.cloud.endpoints["control"]
        proxy = yield self.cluster.start("proxyA", "zmqrelay-proxy", [
            "--id", "proxyA", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", self.cloudEndpoint,
            "--curve-secret", self.keys["proxyA"][1], "--curve-server-key", self.keys["cloud"][0],
        ])
        yield self.cluster.server("a1", proxy, ["echo"])

    def client(self, clientId, key=None, cloud=None, serverKey=True, helloTimeout=None):
        """
        Start an in-process client of the cloud (or of C{cloud}).

        @param key: the name of the keypair to use, or C{None} for no CURVE.
        @return: the started L{Client} (not waited for).
        """
        cloud = cloud or self.cloudEndpoint
        curve = None
        if key is not None:
            curve = CurveConfig.fromFiles(self.keys[key][1], {cloud: self.keys["cloud"][0]})
        config = NodeConfig(
            clientId, curve=curve, requestTimeout=3.0, attempts=1,
            helloTimeout=helloTimeout, rejectDelay=0.5,
        )
        client = Client(config, cloud=cloud, reactor=self.cluster.reactor)
        client.startService()
        self.addCleanup(client.stopService)
        return client

    @defer.inlineCallbacks
    def alice(self):
        """
        The good client: alice with alice's key, once she reaches a1.
        """
        alice = self.client("alice", "alice")
        yield alice.whenConnected(10.0)
        yield reachable(alice, "a1")
        return alice

    @defer.inlineCallbacks
    def assertStillServed(self, alice):
        """
        Alice still gets answers, on the session she opened first.
        """
        reply = yield alice.request("a1", b"still here?")
        self.assertEqual(reply, b"still here?")
        who = yield alice.request("a1", b"whoami")
        self.assertEqual(who.split()[:3], [b"alice", alice.incarnation.encode(), b"cloud"])

    @defer.inlineCallbacks
    def test_goodClientRequestsAndNotifications(self):
        """A client with its own key gets replies and notifications, through a CURVE cloud and proxy."""
        alice = yield self.alice()
        reply = yield alice.request("echo", b"over curve")
        self.assertEqual(reply, b"over curve")
        collector = Collector()
        alice.subscribe(b"news", collector)
        seen = yield publishUntilSeen(alice, "a1", b"news", collector)
        self.assertEqual(seen.serverId, "a1")
        counters = yield stats(alice)
        # alice's control and sub, proxyA's control and publish connections.
        self.assertGreaterEqual(counters["zap.allowed"], 4)
        self.assertEqual(counters["front.auth"], 0)

    @defer.inlineCallbacks
    def test_clientWithoutKeyRefused(self):
        """A client with no CURVE key never gets a session; the good client keeps working."""
        alice = yield self.alice()
        carol = self.client("carol", None, helloTimeout=0.5)
        yield poll(lambda: carol.links[0].counters["connects"] >= 2, 10.0, what="carol's first hello timing out")
        self.assertNotEqual(carol.links[0].state, CONNECTED)
        self.assertEqual(carol.links[0].welcome, None)
        yield self.assertFailure(carol.request("a1", b"hello?", timeout=0.5), errors.NotConnected)
        yield self.assertStillServed(alice)

    @defer.inlineCallbacks
    def test_unknownKeyRefusedByZap(self):
        """A client whose key the cloud does not know is refused by ZAP; the good client keeps working."""
        alice = yield self.alice()
        mallory = self.client("mallory", "mallory", helloTimeout=0.5)
        key = readCertificate(self.keys["mallory"][0])[0].decode("ascii")
        yield self.cloud.waitFor(r"refused connection from .*unknown key \(key " + re.escape(key), 10.0)
        counters = yield stats(alice)
        self.assertGreaterEqual(counters["zap.denied"], 1)
        self.assertEqual(mallory.links[0].welcome, None)
        self.assertNotEqual(mallory.links[0].state, CONNECTED)
        yield self.assertStillServed(alice)

    @defer.inlineCallbacks
    def test_idBoundToAnotherKeyRefused(self):
        """Bob's key claiming alice's id is rejected with 'auth'; the real alice keeps her session."""
        alice = yield self.alice()
        impostor = self.client("alice", "bob")
        link = impostor.links[0]
        yield poll(lambda: link.lastError is not None, 10.0, what="the impostor being refused")
        self.assertIsInstance(link.lastError, errors.AuthenticationFailed)
        self.assertIn("bound to id 'bob'", link.lastError.message)
        yield self.cloud.waitFor(r"refused hello from .*auth: this key is bound to id 'bob', not 'alice'")
        counters = yield stats(alice)
        self.assertGreaterEqual(counters["front.auth"], 1)
        yield self.assertStillServed(alice)
        # Bob's own id with bob's key is fine.
        bob = self.client("bob", "bob")
        yield bob.whenConnected(10.0)
        reply = yield bob.request("a1", b"whoami")
        self.assertEqual(reply.split()[0], b"bob")

    @defer.inlineCallbacks
    def test_clientKeyCannotRegisterAsProxy(self):
        """A proxy started with a client's key and id is refused by the cloud; routes and the client are untouched."""
        alice = yield self.alice()
        fake = yield self.cluster.start("fakeproxy", "zmqrelay-proxy", [
            "--id", "alice", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", self.cloudEndpoint, "--reject-delay", "0.5",
            "--curve-secret", self.keys["alice"][1], "--curve-server-key", self.keys["cloud"][0],
        ])
        yield fake.waitFor(r"refused by upstream: auth: this key is for a client, not a proxy", 10.0)
        yield self.cloud.waitFor(r"refused hello from .*this key is for a client, not a proxy")
        yield self.assertStillServed(alice)

    @defer.inlineCallbacks
    def test_wireIsNotPlaintext(self):
        """Through CURVE the captured bytes hold neither the payload nor the client id; without CURVE both show."""
        secure = Wiretap(self, self.cloudEndpoint)
        client = self.client(WIRE_ID, WIRE_ID, cloud=secure.endpoint)
        yield client.whenConnected(10.0)
        yield reachable(client, "a1")
        reply = yield client.request("a1", SECRET)
        self.assertEqual(reply, SECRET)
        pong = yield client.request("", SECRET, sys="ping")
        self.assertEqual(pong, b"pong")
        captured = bytes(secure.captured)
        # The capture did see this conversation: the ZMTP greeting names
        # the mechanism, and the traffic is far larger than a greeting.
        self.assertIn(b"CURVE", captured)
        self.assertGreater(len(captured), 3 * len(SECRET))
        self.assertNotIn(SECRET, captured)
        self.assertNotIn(WIRE_ID.encode(), captured)
        self.assertNotIn(protocol.SIGNATURE, captured)

        # The same through a cloud without CURVE: the control case.
        plainCloud = yield self.cluster.start("plaincloud", "zmqrelay-cloud", [
            "--id", "plaincloud", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ])
        plain = Wiretap(self, plainCloud.endpoints["control"])
        plainClient = self.client(WIRE_ID, None, cloud=plain.endpoint)
        yield plainClient.whenConnected(10.0)
        pong = yield plainClient.request("", SECRET, sys="ping")
        self.assertEqual(pong, b"pong")
        captured = bytes(plain.captured)
        self.assertIn(b"NULL", captured)
        self.assertIn(SECRET, captured)
        self.assertIn(WIRE_ID.encode(), captured)


class SecureSiteTests(CurveTestCase):
    """
    CURVE on the site hop too: the proxy accepts only the servers it knows,
    each under its own id.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.keys = self.makeKeys([
            ("cloud", "cloud"), ("proxyA", "proxy"), ("a1", "server"), ("alice", "client"),
            ("lanclient", "client"),
        ])
        self.cluster = Cluster(self)
        cloud = yield self.cluster.start("cloud", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--curve-secret", self.keys["cloud"][1],
            "--curve-authorized", self.authorize("proxyA", "alice"),
        ])
        self.cloudEndpoint = cloud.endpoints["control"]
        self.proxy = yield self.cluster.start("proxyA", "zmqrelay-proxy", [
            "--id", "proxyA", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", self.cloudEndpoint,
            "--curve-secret", self.keys["proxyA"][1], "--curve-server-key", self.keys["cloud"][0],
            "--curve-authorized", self.authorize("a1", "lanclient"),
        ])
        yield self.secureServer("a1", "a1")

    def secureServer(self, name, key):
        """
        Start a server dialling the proxy with the keypair C{key}.
        """
        return self.cluster.start(name, "zmqrelay-server", [
            "--id", name, "--listen", LOOPBACK, "--pub", LOOPBACK,
            "--proxy", self.proxy.endpoints["control"], "--service", "echo", "--reject-delay", "0.5",
            "--curve-secret", self.keys[key][1], "--curve-server-key", self.keys["proxyA"][0],
        ])

    @defer.inlineCallbacks
    def test_secureSiteCarriesRequestsAndNotifications(self):
        """A cloud client reaches a1 and hears its notifications over two CURVE hops."""
        curve = CurveConfig.fromFiles(self.keys["alice"][1], {self.cloudEndpoint: self.keys["cloud"][0]})
        alice = Client(
            NodeConfig("alice", curve=curve, requestTimeout=3.0, attempts=1),
            cloud=self.cloudEndpoint, reactor=self.cluster.reactor,
        )
        alice.startService()
        self.addCleanup(alice.stopService)
        yield reachable(alice, "a1")
        reply = yield alice.request("echo", b"two hops")
        self.assertEqual(reply, b"two hops")
        collector = Collector()
        alice.subscribe(b"site", collector)
        seen = yield publishUntilSeen(alice, "a1", b"site", collector)
        self.assertEqual(seen.serverId, "a1")

    @defer.inlineCallbacks
    def test_clientKeyCannotRegisterAsServer(self):
        """A server started with a LAN client's key is refused by the proxy; a1 keeps serving."""
        rogue = yield self.secureServer("lanclient", "lanclient")
        yield rogue.waitFor(r"refused by upstream: auth: this key is for a client, not a server", 10.0)
        yield self.proxy.waitFor(r"refused hello from .*this key is for a client, not a server")
        lan = Client(
            NodeConfig(
                "lanclient",
                curve=CurveConfig.fromFiles(
                    self.keys["lanclient"][1],
                    {self.proxy.endpoints["control"]: self.keys["proxyA"][0]},
                ),
                requestTimeout=3.0, attempts=1,
            ),
            proxy=self.proxy.endpoints["control"], reactor=self.cluster.reactor,
        )
        lan.startService()
        self.addCleanup(lan.stopService)
        yield reachable(lan, "a1")
        with self.assertRaises(errors.NoRoute):
            yield lan.request("lanclient", b"whoami")
