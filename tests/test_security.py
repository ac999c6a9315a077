"""
Tests for L{zmqrelay.edge.security}: certificates, the key registry, the ZAP
decisions, and how the L{Front}, the L{UpstreamLink}, the tap options and
C{zmqrelay keygen} use them.  Fakes and a L{Clock}; no socket is opened.
"""

import io
import os
import stat
import sys

import zmq
import zmq.auth
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zmq.utils import z85

from zmqrelay.core import protocol
from zmqrelay.edge import security
from zmqrelay.tools import cli
from zmqrelay.core.config import NodeConfig
from zmqrelay.core.errors import AuthenticationFailed
from zmqrelay.edge.front import Front
from zmqrelay.edge.link import UpstreamLink
from zmqrelay.edge.security import (
    CONTROL,
    PUBLISH,
    SUBSCRIBE,
    ZAP_ENDPOINT,
    CurveConfig,
    KeyRegistry,
    ZapHandler,
    readCertificate,
    writeCertificates,
    zapReply,
)
from zmqrelay.tools.tap import client as clientTap
from zmqrelay.tools.tap import cloud as cloudTap
from zmqrelay.tools.tap import proxy as proxyTap

from tests.fakes import FakeSocketFactory, FrontOwner, LinkOwner, helloFrames


def keypair():
    """
    @return: a new (public, secret) pair, Z85.
    """
    return zmq.curve_keypair()


def zapRequest(key, domain=CONTROL, mechanism=b"CURVE", version=b"1.0", requestId=b"7"):
    """
    @return: a ZAP request as our ROUTER receives it, for the binary C{key}.
    """
    frames = [b"\x00zap", b"", version, requestId, domain, b"127.0.0.1", b"", mechanism]
    if key is not None:
        frames.append(key)
    return frames


class UserIdSocketFactory(FakeSocketFactory):
    """
    A fake factory that also takes C{userIds}, as the real one does, and
    remembers it on the socket.
    """

    def socket(self, kind, onMessage, options=None, userIds=False):
        sock = FakeSocketFactory.socket(self, kind, onMessage, options)
        sock.userIds = userIds
        return sock


class MarkedConfig(NodeConfig):
    """
    A L{NodeConfig} whose socket options are a plain record, so nothing here
    imports the txzmq adapter (and with it the global reactor).
    """

    def socketOptions(self, curve=None):
        return ("options", curve)


class CertificateTests(SynchronousTestCase):
    """
    Certificates written by C{zmqrelay keygen} and read back.
    """

    def test_writeCertificatesBindsIdAndRoleInBothFiles(self):
        """The public and the secret file both carry the id and role; only the secret file has the secret key."""
        directory = self.mktemp()
        public, secret = writeCertificates(directory, "site-a", "proxy-a", protocol.PROXY)
        self.assertEqual(public, os.path.join(directory, "site-a.key"))
        self.assertEqual(secret, os.path.join(directory, "site-a.key_secret"))
        pub1, sec1, meta1 = readCertificate(public)
        pub2, sec2, meta2 = readCertificate(secret)
        self.assertEqual(pub1, pub2)
        self.assertIsNone(sec1)
        self.assertEqual(len(sec2), 40)
        self.assertEqual(meta1, {"id": "proxy-a", "role": "proxy"})
        self.assertEqual(meta2, {"id": "proxy-a", "role": "proxy"})
        # The pair is a real CURVE pair: the secret key yields the public one.
        self.assertEqual(zmq.curve_public(sec2), pub1)

    def test_hashInsideAValue(self):
        """
        Only a line that starts with C{#} is a comment (PROTOCOL.md 19.1): a C{#} inside a value is
        part of it.
        """
        directory = self.mktemp()
        public, _ = writeCertificates(directory, "a", "a", protocol.CLIENT)
        with open(public) as f:
            text = f.read()
        with open(public, "w") as f:
            f.write("#   a comment\n" + text.replace('id = "a"', 'id = "a#b"\n    # an indented comment'))
        self.assertEqual(readCertificate(public)[2], {"id": "a#b", "role": "client"})

    def test_secretFileIsPrivate(self):
        """The secret certificate is readable by its owner only."""
        _, secret = writeCertificates(self.mktemp(), "alice")
        self.assertEqual(stat.S_IMODE(os.stat(secret).st_mode), 0o600)

    def test_noOverwriteWithoutForce(self):
        """An existing keypair is never replaced unless asked to."""
        directory = self.mktemp()
        public, _ = writeCertificates(directory, "alice")
        before = readCertificate(public)[0]
        self.assertRaises(FileExistsError, writeCertificates, directory, "alice")
        self.assertEqual(readCertificate(public)[0], before)
        writeCertificates(directory, "alice", force=True)
        self.assertNotEqual(readCertificate(public)[0], before)

    def test_badRoleOrNameRefused(self):
        """Unknown roles and names that are paths are refused before anything is written."""
        directory = self.mktemp()
        self.assertRaises(ValueError, writeCertificates, directory, "a", role="admin")
        self.assertRaises(ValueError, writeCertificates, directory, "../a")
        self.assertFalse(os.path.exists(os.path.join(directory, "a.key")))

    def test_keypairNeedsTheSecretFile(self):
        """Loading a node's own keypair from a public certificate fails clearly."""
        public, _ = writeCertificates(self.mktemp(), "alice")
        error = self.assertRaises(ValueError, security.loadKeypair, public)
        self.assertIn("no secret key", str(error))

    def test_keygenCommand(self):
        """'zmqrelay keygen' writes the pair with the role and id given, options before or after NAME."""
        directory = self.mktemp()
        out = io.StringIO()
        exit = self.assertRaises(
            SystemExit, cli.main, ["keygen", "edge", "--dir", directory, "--role", "server", "--id", "s1"], out
        )
        self.assertEqual(exit.code, 0)
        self.assertIn("edge.key_secret", out.getvalue())
        _, _, metadata = readCertificate(os.path.join(directory, "edge.key"))
        self.assertEqual(metadata, {"id": "s1", "role": "server"})
        errors = io.StringIO()
        self.patch(sys, "stderr", errors)
        exit = self.assertRaises(SystemExit, cli.main, ["keygen", "--dir", directory, "edge"], io.StringIO())
        self.assertEqual(exit.code, 1)
        self.assertIn("exists", errors.getvalue())


class RegistryTests(SynchronousTestCase):
    """
    L{KeyRegistry}: which key may use which id and role.
    """

    def setUp(self):
        self.directory = self.mktemp()
        keys = self.mktemp()
        os.makedirs(self.directory)
        for name, role in [("alice", "client"), ("bob", "client"), ("proxyA", "proxy")]:
            public, _ = writeCertificates(keys, name, role=role)
            os.rename(public, os.path.join(self.directory, name + ".key"))
        self.registry = KeyRegistry.fromPath(self.directory)

    def key(self, nodeId):
        return z85.decode(self.registry.byId(nodeId).publicKey)

    def test_loadsEveryPublicCertificateOfADirectory(self):
        """Every *.key file of the directory is authorized for the id and role in its metadata."""
        self.assertEqual(
            [(i.nodeId, i.role) for i in self.registry.identities()],
            [("alice", "client"), ("bob", "client"), ("proxyA", "proxy")],
        )
        self.assertEqual(self.registry.identify(self.key("bob")).nodeId, "bob")
        self.assertIsNone(self.registry.identify(z85.decode(keypair()[0])))

    def test_plainPyzmqCertificateIsAClientNamedByItsFile(self):
        """A certificate without metadata stands for the client named like its file."""
        directory = self.mktemp()
        os.makedirs(directory)
        zmq.auth.create_certificates(directory, "carol")
        os.remove(os.path.join(directory, "carol.key_secret"))
        identity = KeyRegistry.fromPath(directory).byId("carol")
        self.assertEqual(identity.role, protocol.CLIENT)

    def test_oneKeyOneId(self):
        """The same key twice, or two keys for one id, is a configuration error."""
        public = keypair()[0]
        registry = KeyRegistry()
        registry.add(public, "alice", "client")
        self.assertRaises(ValueError, registry.add, public, "alice2", "client")
        self.assertRaises(ValueError, registry.add, keypair()[0], "alice", "client")
        self.assertRaises(ValueError, registry.add, keypair()[0], "x", "superuser")
        self.assertRaises(ValueError, registry.add, b"short", "y", "client")

    def test_emptyDirectoryRefused(self):
        """A directory with no public certificate is an error, not a node that refuses everyone silently."""
        directory = self.mktemp()
        os.makedirs(directory)
        self.assertRaises(ValueError, KeyRegistry.fromPath, directory)

    def test_helloWithItsOwnIdAndRolePasses(self):
        """A key may say hello with the id and role bound to it."""
        self.registry.checkHello("alice", "alice", "client")
        self.registry.checkHello("proxyA", "proxyA", "proxy")

    def test_helloClaimingAnotherIdRefused(self):
        """Bob's key cannot claim to be alice."""
        error = self.assertRaises(AuthenticationFailed, self.registry.checkHello, "bob", "alice", "client")
        self.assertEqual(error.code, protocol.E_AUTH)
        self.assertIn("bound to id 'bob'", error.message)

    def test_clientKeyCannotClaimAnotherRole(self):
        """A client's key cannot register as a proxy or a server, even with its own id."""
        for role in (protocol.PROXY, protocol.SERVER):
            self.assertRaises(AuthenticationFailed, self.registry.checkHello, "alice", "alice", role)

    def test_unauthenticatedConnectionRefused(self):
        """A connection with no (or an unknown) User-Id is refused at hello."""
        self.assertRaises(AuthenticationFailed, self.registry.checkHello, None, "alice", "client")
        self.assertRaises(AuthenticationFailed, self.registry.checkHello, "mallory", "mallory", "client")


class ZapReplyTests(SynchronousTestCase):
    """
    L{zapReply}: the answer to one ZAP request.
    """

    def setUp(self):
        self.registry = KeyRegistry()
        self.alice = keypair()[0]
        self.proxy = keypair()[0]
        self.registry.add(self.alice, "alice", protocol.CLIENT)
        self.registry.add(self.proxy, "proxyA", protocol.PROXY)

    def test_knownKeyGetsItsNodeIdAsUserId(self):
        """A known key is allowed, with User-Id = the node id bound to it, in a well-formed reply."""
        reply, identity, reason = zapReply(zapRequest(z85.decode(self.alice)), self.registry)
        self.assertEqual(reply, [b"\x00zap", b"", b"1.0", b"7", b"200", b"OK", b"alice", b""])
        self.assertEqual(identity.nodeId, "alice")
        self.assertIsNone(reason)

    def test_unknownKeyRefused(self):
        """An unknown key gets 400 and no User-Id."""
        reply, identity, reason = zapReply(zapRequest(z85.decode(keypair()[0])), self.registry)
        self.assertEqual(reply[4], b"400")
        self.assertEqual(reply[6], b"")
        self.assertIsNone(identity)
        self.assertEqual(reason, "unknown key")

    def test_onlyProxiesAndServersMayPublish(self):
        """A client key may subscribe but not connect to a publish (XSUB) socket; a proxy key may."""
        alice = z85.decode(self.alice)
        self.assertEqual(zapReply(zapRequest(alice, SUBSCRIBE), self.registry)[0][4], b"200")
        self.assertEqual(zapReply(zapRequest(alice, PUBLISH), self.registry)[0][4], b"400")
        proxy = z85.decode(self.proxy)
        self.assertEqual(zapReply(zapRequest(proxy, PUBLISH), self.registry)[0][4], b"200")

    def test_onlyCurveAndKnownDomains(self):
        """NULL or PLAIN mechanisms and unknown domains are refused."""
        alice = z85.decode(self.alice)
        self.assertEqual(zapReply(zapRequest(None, mechanism=b"NULL"), self.registry)[0][4], b"400")
        self.assertEqual(zapReply(zapRequest(alice, mechanism=b"PLAIN"), self.registry)[0][4], b"400")
        self.assertEqual(zapReply(zapRequest(alice, b"other"), self.registry)[0][4], b"400")

    def test_badVersionAndMalformed(self):
        """A request of another ZAP version gets 500; one too short to answer gets nothing."""
        reply, _, _ = zapReply(zapRequest(z85.decode(self.alice), version=b"2.0"), self.registry)
        self.assertEqual(reply[4], b"500")
        self.assertEqual(zapReply([b"x", b"", b"1.0"], self.registry), (None, None, "malformed ZAP request"))


class ZapHandlerTests(SynchronousTestCase):
    """
    L{ZapHandler}: the socket side, with a fake ROUTER.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()
        self.registry = KeyRegistry()
        self.alice = keypair()[0]
        self.registry.add(self.alice, "alice", protocol.CLIENT)
        self.handler = ZapHandler(self.clock, self.factory, self.registry)
        self.handler.start()
        self.socket = self.factory.sockets[0]

    def test_bindsTheZapEndpoint(self):
        """The handler is a ROUTER bound where libzmq sends ZAP requests."""
        self.assertEqual(self.socket.kind, "router")
        self.assertEqual(self.socket.bound, [ZAP_ENDPOINT])

    def test_answersAndCounts(self):
        """Each request is answered on the socket; allowed and denied are counted."""
        self.socket.receive(zapRequest(z85.decode(self.alice)))
        for _ in range(50):
            self.socket.receive(zapRequest(z85.decode(keypair()[0])))
        self.socket.receive([b"junk"])
        self.assertEqual(len(self.socket.sent), 51)
        self.assertEqual(self.socket.sent[0][4], b"200")
        self.assertEqual({f[4] for f in self.socket.sent[1:]}, {b"400"})
        self.assertEqual(self.handler.counters, {"allowed": 1, "denied": 50, "malformed": 1})

    def test_deniedLoggedAtABoundedRate(self):
        """A flood of refused connections logs a bounded number of lines."""
        logged = []
        from twisted.logger import globalLogPublisher

        def observer(event):
            if event.get("log_namespace") == "zmqrelay.edge.security" and "reason" in event:
                logged.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        for _ in range(100):
            self.socket.receive(zapRequest(z85.decode(keypair()[0])))
        self.assertEqual(self.handler.counters["denied"], 100)
        self.assertLessEqual(len(logged), 10)
        self.assertGreater(len(logged), 0)

    def test_stopCloses(self):
        """Stopping closes the socket; later requests are dropped."""
        self.handler.stop()
        self.assertTrue(self.socket.closed)
        self.handler._onRequest(zapRequest(z85.decode(self.alice)))
        self.assertEqual(self.socket.sent, [])


class CurveConfigTests(SynchronousTestCase):
    """
    L{CurveConfig} and the helpers that give each socket its security.
    """

    def setUp(self):
        self.public, self.secret = keypair()
        self.serverKey = keypair()[0]
        self.registry = KeyRegistry()

    def test_bindsPlainWithoutRegistry(self):
        """With no registry a node binds plain sockets, and its fronts check nothing."""
        config = MarkedConfig("n", curve=CurveConfig(self.public, self.secret))
        self.assertIsNone(security.boundOptions(config, CONTROL))
        self.assertIsNone(security.authority(config))

    def test_bindsCurveServerWithRegistry(self):
        """With a registry, a bound socket is a CURVE server in the given ZAP domain."""
        config = MarkedConfig("n", curve=CurveConfig(self.public, self.secret, registry=self.registry))
        self.assertEqual(
            security.boundOptions(config, PUBLISH),
            ("options", {"server": True, "public": self.public, "secret": self.secret, "domain": PUBLISH}),
        )
        self.assertIs(security.authority(config), self.registry)

    def test_dialsCurveOnlyWhereTheServerKeyIsKnown(self):
        """An endpoint with a known server key is dialled with CURVE, any other plain."""
        curve = CurveConfig(self.public, self.secret, {"tcp://cloud:1": self.serverKey})
        config = MarkedConfig("n", curve=curve)
        self.assertEqual(
            security.dialOptions(config, "tcp://cloud:1"),
            ("options", {"serverkey": self.serverKey, "public": self.public, "secret": self.secret}),
        )
        self.assertIsNone(security.dialOptions(config, "tcp://lan:2"))

    def test_noCurveTouchesNothing(self):
        """Without CURVE settings nothing changes: no options, no calls on the socket."""
        config = MarkedConfig("n")
        self.assertIsNone(security.boundOptions(config, CONTROL))
        self.assertIsNone(security.dialOptions(config, "tcp://cloud:1"))
        security.secureDial(object(), config, "tcp://cloud:1")

    def test_secureDialSetsTheHopsSecurity(self):
        """Before a notification socket dials, it takes the security of the hop it belongs to."""
        calls = []

        class Sock:
            def useCurve(self, curve):
                calls.append(curve)

        curve = CurveConfig(self.public, self.secret, {"tcp://cloud:1": self.serverKey})
        config = MarkedConfig("n", curve=curve)
        security.secureDial(Sock(), config, "tcp://cloud:1")
        security.secureDial(Sock(), config, "tcp://lan:2")
        self.assertEqual(calls, [curve.dialSocket("tcp://cloud:1"), None])

    def test_linkDialsWithTheEndpointsKey(self):
        """An upstream link to an endpoint with a known server key opens a CURVE client DEALER."""
        curve = CurveConfig(self.public, self.secret, {"tcp://cloud:1": self.serverKey})
        config = MarkedConfig("alice", curve=curve)
        factory = FakeSocketFactory()
        clock = Clock()
        secure = UpstreamLink(LinkOwner(), config, clock, factory, "tcp://cloud:1")
        plain = UpstreamLink(LinkOwner(), config, clock, factory, "tcp://lan:2")
        secure.start()
        plain.start()
        self.addCleanup(secure.stop)
        self.addCleanup(plain.stop)
        self.assertEqual(factory.sockets[0].options, ("options", curve.dialSocket("tcp://cloud:1")))
        self.assertIsNone(factory.sockets[1].options)


class FrontAuthenticationTests(SynchronousTestCase):
    """
    A L{Front} with CURVE: each HELLO must claim the id and role bound to
    the key its connection was authenticated with.
    """

    def setUp(self):
        self.clock = Clock()
        self.registry = KeyRegistry()
        for nodeId, role in [("alice", "client"), ("bob", "client"), ("proxyA", "proxy")]:
            self.registry.add(keypair()[0], nodeId, role)
        public, secret = keypair()
        self.config = MarkedConfig(
            "cloud", incarnation="cloud-inc", curve=CurveConfig(public, secret, registry=self.registry)
        )
        self.owner = FrontOwner()
        self.factory = UserIdSocketFactory()
        self.front = Front(self.owner, self.config, self.clock, self.factory, "tcp://127.0.0.1:*")
        self.front.start()
        self.socket = self.factory.sockets[0]
        self.addCleanup(self.stop)

    def stop(self):
        self.front.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def receive(self, routingId, frames, userId):
        self.socket.onMessage([routingId] + list(frames), userId)

    def sent(self, routingId, msgtype):
        return [m for r, m in self.socket.messages(routed=True) if r == routingId and m.type == msgtype]

    def test_frontBindsACurveServerAndAsksForUserIds(self):
        """The front's ROUTER is a CURVE server in the control domain and gets each message's User-Id."""
        self.assertTrue(self.socket.userIds)
        self.assertEqual(self.socket.options[1]["domain"], CONTROL)
        self.assertTrue(self.socket.options[1]["server"])

    def test_helloWithBoundIdWelcomed(self):
        """Alice's key saying hello as alice is welcomed and her session remembers the key's id."""
        self.receive(b"r1", helloFrames("alice"), "alice")
        self.assertEqual(len(self.sent(b"r1", protocol.WELCOME)), 1)
        self.assertEqual(self.front.sessions[b"r1"].userId, "alice")

    def test_helloClaimingAnotherIdRejected(self):
        """Bob's key claiming alice's id is rejected with code 'auth'; the role never hears of it."""
        self.receive(b"r2", helloFrames("alice"), "bob")
        [reject] = self.sent(b"r2", protocol.REJECT)
        self.assertEqual(reject.header["code"], protocol.E_AUTH)
        self.assertEqual(self.front.sessions, {})
        self.assertEqual(self.owner.hellos, [])
        self.assertEqual(self.front.counters["auth"], 1)

    def test_clientKeyCannotRegisterAsProxy(self):
        """A client's key saying hello as a proxy (with its own id) is rejected."""
        self.receive(b"r3", helloFrames("alice", role=protocol.PROXY), "alice")
        [reject] = self.sent(b"r3", protocol.REJECT)
        self.assertEqual(reject.header["code"], protocol.E_AUTH)
        self.assertEqual(self.owner.joined, [])

    def test_unauthenticatedHelloRejected(self):
        """A HELLO without a User-Id (no CURVE) is rejected."""
        self.receive(b"r4", helloFrames("alice"), None)
        self.assertEqual(self.sent(b"r4", protocol.REJECT)[0].header["code"], protocol.E_AUTH)

    def test_impostorDoesNotDisturbTheRealPeer(self):
        """After a refused impostor, alice's session is untouched and her messages still reach the role."""
        self.receive(b"r1", helloFrames("alice"), "alice")
        self.receive(b"r2", helloFrames("alice", incarnation="evil"), "bob")
        request = protocol.encode(protocol.REQUEST, {"id": 1, "to": "s1"}, b"x")
        self.receive(b"r1", request, "alice")
        self.assertEqual([s.nodeId for s in self.owner.joined], ["alice"])
        self.assertEqual(self.front.byNode["alice"].incarnation, "inc-1")
        self.assertEqual(len(self.owner.received), 1)

    def test_otherKeyOnASessionsRoutingIdIsNotThatSession(self):
        """A message from another key on the routing id of alice's session is not taken as hers."""
        self.receive(b"r1", helloFrames("alice"), "alice")
        request = protocol.encode(protocol.REQUEST, {"id": 1, "to": "s1"}, b"x")
        self.receive(b"r1", request, "bob")
        self.assertEqual(self.owner.received, [])
        self.assertEqual(self.front.counters["wrong-key"], 1)
        self.assertEqual(self.sent(b"r1", protocol.ERROR)[-1].header["code"], protocol.E_HELLO_FIRST)


class PlainFrontTests(SynchronousTestCase):
    """
    A L{Front} without CURVE is as it was.
    """

    def test_plainFrontChecksNothing(self):
        """Without CURVE the front asks for no User-Ids and welcomes any id."""
        clock = Clock()
        factory = UserIdSocketFactory()
        front = Front(FrontOwner(), MarkedConfig("cloud"), clock, factory, "tcp://127.0.0.1:*")
        front.start()
        self.addCleanup(front.stop)
        sock = factory.sockets[0]
        self.assertFalse(sock.userIds)
        self.assertIsNone(sock.options)
        sock.receive([b"r1"] + helloFrames("anyone"))
        self.assertEqual(protocol.decode(sock.sent[0][1:]).type, protocol.WELCOME)


class TapOptionTests(SynchronousTestCase):
    """
    The C{--curve-*} options of the twistd plugins.
    """

    def setUp(self):
        self.keys = self.mktemp()
        self.authorized = self.mktemp()
        os.makedirs(self.authorized)
        self.cloudPublic, self.cloudSecret = writeCertificates(self.keys, "cloud", role="cloud")
        self.alicePublic, self.aliceSecret = writeCertificates(self.keys, "alice")
        self.proxyPublic, self.proxySecret = writeCertificates(self.keys, "site", "proxyA", "proxy")
        for path in (self.alicePublic, self.proxyPublic):
            os.link(path, os.path.join(self.authorized, os.path.basename(path)))

    def parse(self, module, args):
        options = module.Options()
        options.parseOptions(args)
        return options

    def test_cloudWithKeys(self):
        """A cloud with its secret and an authorized directory gets a registry of those keys."""
        options = self.parse(
            cloudTap, ["--curve-secret", self.cloudSecret, "--curve-authorized", self.authorized]
        )
        config = options.nodeConfig()
        self.assertEqual(
            [(i.nodeId, i.role) for i in config.curve.registry.identities()],
            [("alice", "client"), ("proxyA", "proxy")],
        )

    def test_idDefaultsToTheCertificates(self):
        """Without --id a node uses the id of its own certificate; --id still wins."""
        args = ["--cloud", "tcp://127.0.0.1:5555", "--curve-secret", self.aliceSecret,
                "--curve-server-key", self.cloudPublic]
        config = self.parse(clientTap, args).nodeConfig()
        self.assertEqual(config.nodeId, "alice")
        self.assertEqual(
            config.curve.serverKeys, {"tcp://127.0.0.1:5555": readCertificate(self.cloudPublic)[0]}
        )
        self.assertEqual(self.parse(clientTap, args + ["--id", "x"]).nodeConfig().nodeId, "x")

    def test_peerKeyForOtherPaths(self):
        """--curve-peer-key secures one more dialled endpoint."""
        args = ["--proxy", "tcp://127.0.0.1:6", "--curve-secret", self.aliceSecret,
                "--curve-peer-key", "tcp://127.0.0.1:6=" + self.proxyPublic]
        config = self.parse(clientTap, args).nodeConfig()
        self.assertEqual(list(config.curve.serverKeys), ["tcp://127.0.0.1:6"])

    def test_inconsistentOptionsRefused(self):
        """Options that would leave a hop open or cannot work are usage errors."""
        cloud = "tcp://127.0.0.1:5555"
        bad = [
            (cloudTap, ["--curve-authorized", self.authorized]),
            (cloudTap, ["--curve-secret", self.cloudSecret]),
            (cloudTap, ["--curve-secret", self.cloudSecret, "--curve-authorized", self.authorized,
                        "--curve-server-key", self.cloudPublic]),
            (clientTap, ["--cloud", cloud, "--curve-secret", self.aliceSecret,
                         "--curve-authorized", self.authorized]),
            (clientTap, ["--proxy", cloud, "--curve-secret", self.aliceSecret,
                         "--curve-server-key", self.cloudPublic]),
            (clientTap, ["--cloud", cloud, "--curve-secret", self.alicePublic,
                         "--curve-server-key", self.cloudPublic]),
            (proxyTap, ["--cloud", cloud, "--curve-secret", self.proxySecret,
                        "--curve-authorized", self.authorized]),
            (clientTap, ["--cloud", cloud, "--curve-peer-key", "nonsense"]),
        ]
        for module, args in bad:
            self.assertRaises(usage.UsageError, self.parse, module, args)

    def test_noCurveOptionsNoCurve(self):
        """Without --curve-* options a node has no CURVE settings at all."""
        config = self.parse(clientTap, ["--cloud", "tcp://127.0.0.1:5555"]).nodeConfig()
        self.assertIsNone(config.curve)


class CommandOptionTests(SynchronousTestCase):
    """
    The C{--curve-*} options of the C{zmqrelay} command's connect commands.
    """

    def setUp(self):
        keys = self.mktemp()
        self.cloudPublic, _ = writeCertificates(keys, "cloud", role="cloud")
        _, self.aliceSecret = writeCertificates(keys, "alice")

    def test_requestWithCurve(self):
        """'zmqrelay request' with a secret and the cloud's key dials the cloud with CURVE."""
        options = cli.Options()
        options.parseOptions([
            "request", "--cloud", "tcp://127.0.0.1:5555", "--curve-secret", self.aliceSecret,
            "--curve-server-key", self.cloudPublic, "a1", "hello",
        ])
        curve = options.subOptions["curve"]
        self.assertEqual(curve.nodeId, "alice")
        self.assertEqual(list(curve.serverKeys), ["tcp://127.0.0.1:5555"])
        self.assertIsNone(curve.registry)

    def test_halfCurveRefused(self):
        """A secret without the server's key (or the reverse) is a usage error."""
        for extra in (["--curve-secret", self.aliceSecret], ["--curve-server-key", self.cloudPublic]):
            options = cli.Options()
            self.assertRaises(
                usage.UsageError, options.parseOptions,
                ["request", "--cloud", "tcp://127.0.0.1:5555"] + extra + ["a1", "hello"],
            )

    def test_noCurve(self):
        """Without the options the command speaks plain, as before."""
        options = cli.Options()
        options.parseOptions(["stats", "--cloud", "tcp://127.0.0.1:5555"])
        self.assertIsNone(options.subOptions["curve"])
