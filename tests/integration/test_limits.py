"""
Limits and self-defence of real C{twistd} nodes, set by plugin options.

  - max message size: an application check (ERR too-large, naming the
    request) and ZeroMQ's C{MAXMSGSIZE} (the connection is dropped), the
    limit advertised in WELCOME;
  - the token bucket per client: ERR over-limit with a retry-after, then a
    cooldown during which the abuser is ignored, then service again;
  - max requests in flight per client: ERR over-limit;
  - a flood: one raw client sending as fast as it can (the C{flood} command
    of C{bench/floodbench.py}, a separate process) while other clients keep
    their traffic: they lose nothing, their latency stays bounded, and no
    node misses heartbeats.
"""

import json
import os
import sys
import time

import msgpack
import zmq
from twisted.internet import defer, protocol as twprotocol, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from zmqrelay.core import errors, protocol
from zmqrelay.edge._zmq import SocketFactory
from zmqrelay.roles.client import Client
from zmqrelay.core.config import NodeConfig
from zmqrelay.tools.launcher import ROOT
from zmqrelay.tools.tap.cloud import Options as CloudOptions
from tests.integration.helpers import (
    LOOPBACK,
    Cluster,
    RawPeer,
    childEnvironment,
    poll,
    reachable,
    stats,
)

FLOODBENCH = os.path.join(ROOT, "bench", "floodbench.py")

#: Log lines that mean some hop missed heartbeats, or presence flapped.
_TROUBLE = ("heartbeat-timeout", "lost: heartbeat", "disconnected via")


def _sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


def _percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100.0))]


class _Flooder(twprotocol.ProcessProtocol):
    """
    The flooder process: says when it starts flooding, and its summary.
    """

    def __init__(self):
        self.output = b""
        self.started = defer.Deferred()
        self.ended = defer.Deferred()
        self.summary = None

    def outReceived(self, data):
        self.output += data
        if b"flooding\n" in self.output and not self.started.called:
            self.started.callback(None)

    def errReceived(self, data):
        self.output += data

    def processEnded(self, reason):
        for line in self.output.decode("utf-8", "replace").splitlines():
            if line.startswith("{"):
                self.summary = json.loads(line)
        if not self.started.called:
            self.started.errback(RuntimeError(f"flooder ended: {self.output[-2000:]!r}"))
        self.ended.callback(self.summary)


class LimitTests(unittest.TestCase):
    """
    Every limit is a plugin option, enforced, and answered with an error.
    """

    timeout = 90

    def setUp(self):
        self.cluster = Cluster(self)

    def cloud(self, *options):
        return self.cluster.start("cloud", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ] + list(options))

    @defer.inlineCallbacks
    def site(self, cloudOptions=(), nodeOptions=()):
        """
        cloud <- proxy <- server s1, each with C{nodeOptions}.
        """
        cloud = yield self.cloud(*(list(cloudOptions) + list(nodeOptions)))
        proxy = yield self.cluster.start("proxy", "zmqrelay-proxy", [
            "--id", "proxy", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", cloud.endpoints["control"],
        ] + list(nodeOptions))
        yield self.cluster.start("s1", "zmqrelay-server", [
            "--id", "s1", "--listen", LOOPBACK, "--pub", LOOPBACK,
            "--proxy", proxy.endpoints["control"],
        ] + list(nodeOptions))
        return cloud

    @defer.inlineCallbacks
    def client(self, clientId, cloud, **kw):
        kw.setdefault("requestTimeout", 3.0)
        kw.setdefault("attempts", 1)
        client = Client(
            NodeConfig(clientId, **kw), cloud=cloud.endpoints["control"], reactor=reactor
        )
        client.startService()
        self.addCleanup(client.stopService)
        yield client.whenConnected(10.0)
        return client

    @defer.inlineCallbacks
    def test_maxMessageSize(self):
        """
        --max-message-size is advertised in WELCOME, and a zmqrelay client
        refuses at once to send more; a message over it from a peer that
        sends anyway (but with every frame under ZeroMQ's MAXMSGSIZE) gets
        ERR too-large with its request id; a frame over MAXMSGSIZE never
        reaches the application: ZeroMQ drops the connection, so the sender's
        session is gone (hello-first on its next message) and nothing is
        counted.
        """
        cloud = yield self.cloud("--max-message-size", "20000")
        client = yield self.client("sizer", cloud)
        self.assertEqual(client.links[0].welcome["max"], 20000)
        error = yield self.assertFailure(
            client.request("", b"x" * 21000, sys="ping"), errors.TooLarge
        )
        self.assertIn("more than cloud accepts", error.message)

        peer = RawPeer(cloud.endpoints["control"], self)
        yield peer.hello("raw-sizer")
        peer.send(protocol.REQUEST, {"id": 7, "sys": "ping"}, b"y" * 20500)
        answer = yield peer.receive(lambda m: m.type in (protocol.ERROR, protocol.REPLY))
        self.assertEqual((answer.header["code"], answer.header["id"]), (protocol.E_TOO_LARGE, 7))
        before = yield stats(client)
        self.assertEqual(before["front.too-large"], 1)

        # One frame over MAXMSGSIZE (max + 4096): the socket itself refuses.
        peer.send(protocol.REQUEST, {"id": 8, "sys": "ping"}, b"z" * 30000)
        n = [100]

        def ping():
            n[0] += 1
            peer.send(protocol.REQUEST, {"id": n[0], "sys": "ping"})
            return peer.receive(
                lambda m: m.type == protocol.ERROR and m.header.get("code") == protocol.E_HELLO_FIRST,
                timeout=0.3,
            ).addErrback(lambda f: None)

        yield poll(ping, 10.0, 0.05, "the dropped connection to come back without a session")
        after = yield stats(client)
        self.assertEqual(after["front.too-large"], 1)
        # The cloud is fine.
        self.assertEqual((yield client.request("", b"", sys="ping")), b"pong")

    @defer.inlineCallbacks
    def test_replyLargerThanTheClientAccepts(self):
        """
        A reply larger than the asking client announced it accepts comes back
        as ERR too-large from the last hop, instead of a message whose size
        would make the client's socket drop its connection; the client's
        session survives and its next request is answered.
        """
        cloud = yield self.site()
        client = yield self.client("small", cloud, maxMessageSize=50000)
        yield reachable(client, "s1")
        error = yield self.assertFailure(
            client.request("s1", b"x" * 60000, attempts=1), errors.TooLarge
        )
        self.assertIn("more than you accept", error.message)
        self.assertEqual((yield client.request("s1", b"ok")), b"ok")
        self.assertEqual(client.links[0].counters["lost"], 0)

    @defer.inlineCallbacks
    def test_presenceLargerThanAMessage(self):
        """
        With every node's --max-message-size small, a presence map larger than
        one message reaches the proxy and the server in parts (PROTOCOL.md
        13.2) instead of a message whose size would make their sockets drop
        the connection, again after every reconnect: the server knows every
        client, both relays count the split snapshots, and no link was lost.
        """
        small = ["--max-message-size", "8192"]
        cloud = yield self.cloud(*small)
        context = zmq.Context()
        dealers = []

        def close():
            for dealer in dealers:
                dealer.close(0)
            context.term()

        self.addCleanup(close)
        ids = [f"client-{i:03d}-" + "x" * 100 for i in range(200)]
        for clientId in ids:
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(cloud.endpoints["control"])
            # A heartbeat of 20 s: these clients stay attached for the whole
            # test without sending another message.
            dealer.send_multipart(protocol.encode(protocol.HELLO, {
                "id": clientId, "role": protocol.CLIENT, "inc": "raw-inc",
                "versions": [1], "hb": 20000, "liveness": 3,
            }))
            dealers.append(dealer)
        asker = yield self.client("asker", cloud)

        def knows(client):
            return lambda: client.request("", b"", sys="presence").addCallback(
                lambda answer: set(ids) <= set(msgpack.unpackb(answer)))

        yield poll(knows(asker), 10.0, 0.1, "every client attached to the cloud")
        # The proxy and the server come after: each gets the map in one
        # snapshot, about 200 x 130 bytes, so in four or more parts of 7 KiB.
        proxy = yield self.cluster.start("proxy", "zmqrelay-proxy", [
            "--id", "proxy", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", cloud.endpoints["control"],
        ] + small)
        yield self.cluster.start("s1", "zmqrelay-server", [
            "--id", "s1", "--listen", LOOPBACK, "--pub", LOOPBACK, "--proxy", proxy.endpoints["control"],
        ] + small)
        direct = yield self.cluster.client("direct", server=self.cluster["s1"], timeout=5.0)
        yield poll(knows(direct), 15.0, 0.2, "every client in the server's presence")
        atCloud = yield stats(asker)
        self.assertGreaterEqual(atCloud["snapshots.split"], 1)
        self.assertEqual(atCloud["snapshots.unsent"], 0)
        proxyStats = yield stats((yield self.cluster.client("local", proxy=proxy)))
        self.assertGreaterEqual(proxyStats["snapshots.split"], 1)
        self.assertEqual(proxyStats["snapshots.unsent"], 0)
        # The proxy never lost its cloud (its link would count it).
        self.assertEqual(proxyStats["cloud.lost"], 0)

    @defer.inlineCallbacks
    def test_rateLimitRetryAfterThenCooldown(self):
        """
        With --rate 20 --burst 5 --strikes 3 --cooldown 2, a client sending a
        burst of 30 gets about 4 answers (its HELLO took one token of the
        burst), then 3 over-limit errors with a retry-after, then a fourth
        that says it is ignored for the cooldown (retry 2 s), then BYE
        over-limit: it is disconnected until the cooldown ends, when a new
        HELLO is welcomed and it is served again; meanwhile another client is
        served as usual.
        """
        cloud = yield self.cloud(
            "--rate", "20", "--burst", "5", "--strikes", "3", "--cooldown", "2",
        )
        bystander = yield self.client("bystander", cloud)
        peer = RawPeer(cloud.endpoints["control"], self)
        yield peer.hello("abuser")
        for i in range(30):
            peer.send(protocol.REQUEST, {"id": i, "sys": "ping"})
        struck = time.monotonic()
        answers = []
        byes = []
        # Everything is answered by the BYE that ends it (no fixed wait: a
        # loaded machine may take a while).
        deadline = time.monotonic() + 10.0
        while not byes and time.monotonic() < deadline:
            yield _sleep(0.05)
            while peer.socket.poll(0):
                message = protocol.decode(peer.socket.recv_multipart())
                if message.type in (protocol.REPLY, protocol.ERROR):
                    answers.append(message)
                elif message.type == protocol.BYE:
                    byes.append(message.header.get("reason"))
        pongs = [m for m in answers if m.type == protocol.REPLY]
        refusals = [
            m for m in answers
            if m.type == protocol.ERROR and m.header["code"] != protocol.E_HELLO_FIRST
        ]
        self.assertTrue(4 <= len(pongs) <= 8, len(pongs))
        self.assertEqual([m.header["code"] for m in refusals], [protocol.E_OVER_LIMIT] * 4)
        for m in refusals:
            self.assertGreater(m.header["retry"], 0)
        self.assertEqual(refusals[-1].header["retry"], 2.0)
        self.assertIn("ignored for 2 s", refusals[-1].header["msg"])
        # Disconnected: BYE over-limit; the connection is cut, so nothing it
        # still sends is served, while the bystander is.
        self.assertEqual(byes, ["over-limit"])
        self.assertEqual((yield bystander.request("", b"", sys="ping")), b"pong")
        counters = yield stats(bystander)
        self.assertEqual(counters["front.refused"], 4)

        def welcomed():
            peer.send(protocol.HELLO, {
                "id": "abuser", "role": protocol.CLIENT, "inc": "raw-inc", "versions": [1],
            })
            return peer.receive(
                lambda m: m.type in (protocol.WELCOME, protocol.REJECT), timeout=0.3
            ).addCallbacks(lambda m: m.type == protocol.WELCOME, lambda f: None)

        yield poll(welcomed, 10.0, 0.2, "a welcome after the cooldown")
        waited = time.monotonic() - struck
        self.assertTrue(1.5 <= waited <= 5.0, waited)
        peer.send(protocol.REQUEST, {"id": 1000, "sys": "ping"})
        yield peer.receive(lambda m: m.type == protocol.REPLY and m.header["id"] == 1000)

    @defer.inlineCallbacks
    def test_maxInFlight(self):
        """
        With --max-in-flight 3 at the cloud, six slow requests at once from a
        client that does not keep within the C{inflight} the cloud announced
        (our own client does: see the next test): three are answered, three
        fail at once with over-limit and a retry-after.
        """
        cloud = yield self.site(cloudOptions=["--max-in-flight", "3"])
        client = yield self.client("eager", cloud, requestTimeout=5.0)
        yield reachable(client, "s1")
        [link] = client.links
        self.assertEqual(link.inflight, 3)
        # As a client written without regard for it would.
        link.inflight = None
        started = reactor.seconds()
        results = yield defer.DeferredList(
            [client.request("s1", b"sleep:1") for _ in range(6)], consumeErrors=True
        )
        elapsed = reactor.seconds() - started
        answered = [r for ok, r in results if ok]
        refused = [r.value for ok, r in results if not ok]
        self.assertEqual(answered, [b"sleep:1"] * 3)
        self.assertEqual(len(refused), 3)
        for error in refused:
            self.assertIsInstance(error, errors.OverLimit)
            self.assertIsNotNone(error.retryAfter)
            self.assertIn("in flight", error.message)
        self.assertLess(elapsed, 4.0)

    @defer.inlineCallbacks
    def test_clientKeepsWithinInflight(self):
        """
        The same six slow requests from our client, which keeps within the
        cloud's C{inflight} (3, from WELCOME; PROTOCOL.md 10.6): three go at
        once and three when those are answered; all six are answered, none
        refused, and the cloud counts no refusal (so no strike).
        """
        cloud = yield self.site(cloudOptions=["--max-in-flight", "3"])
        client = yield self.client("patient", cloud, requestTimeout=5.0)
        yield reachable(client, "s1")
        before = yield stats(client)
        started = reactor.seconds()
        results = yield defer.DeferredList(
            [client.request("s1", b"sleep:1") for _ in range(6)], consumeErrors=True
        )
        elapsed = reactor.seconds() - started
        self.assertEqual([r for ok, r in results], [b"sleep:1"] * 6, results)
        self.assertEqual(client.counters["waited-for-room"], 3)
        self.assertGreater(elapsed, 1.9)
        after = yield stats(client)
        self.assertEqual(after.get("front.refused", 0), before.get("front.refused", 0))

    @defer.inlineCallbacks
    def test_floodSparesOthers(self):
        """
        One client floods the cloud as fast as it can while three clients
        keep sending requests: none of theirs is lost, their p99 latency
        stays under a second, the flooder is refused and then ignored, and no
        node logs a heartbeat timeout or a presence flap.  (The rate limit is
        set below what a loaded CI machine's cloud can read, so that the
        refusals are certain; docs/FLOOD.md measures the default limits.)
        """
        cloud = yield self.site(
            nodeOptions=["--heartbeat", "0.5", "--rate", "2000", "--burst", "200"]
        )
        normal = []
        for i in range(3):
            client = yield self.client(f"normal-{i}", cloud, heartbeat=0.5, requestTimeout=2.0)
            normal.append(client)
        for client in normal:
            yield reachable(client, "s1")

        flooder = _Flooder()
        argv = [
            sys.executable, FLOODBENCH, "flood", cloud.endpoints["control"],
            "--target", "s1", "--seconds", "4", "--count", "400000",
        ]
        transport = reactor.spawnProcess(
            flooder, sys.executable, argv, env=childEnvironment(), path=ROOT
        )

        def killFlooder():
            if flooder.summary is None and not flooder.ended.called:
                transport.signalProcess("KILL")
                return flooder.ended

        self.addCleanup(killFlooder)
        yield flooder.started

        latencies = []
        failures = []

        @defer.inlineCallbacks
        def traffic(client, seconds):
            end = reactor.seconds() + seconds
            n = 0
            while reactor.seconds() < end:
                n += 1
                payload = f"{client.nodeId}-{n}".encode()
                started = reactor.seconds()
                try:
                    reply = yield client.request("s1", payload)
                except Exception as e:
                    failures.append((client.nodeId, n, e))
                else:
                    if reply != payload:
                        failures.append((client.nodeId, n, reply))
                    latencies.append(reactor.seconds() - started)
                yield _sleep(0.02)

        yield defer.gatherResults([traffic(c, 3.5) for c in normal])
        summary = yield flooder.ended
        self.assertEqual(failures, [])
        self.assertGreater(len(latencies), 3 * 20)
        self.assertLess(_percentile(latencies, 99), 1.0)

        self.assertIsNotNone(summary, flooder.output[-2000:])
        self.assertGreater(summary["sent"], 5000)
        counters = yield stats(normal[0])
        self.assertGreater(counters["front.refused"], 0)
        # Struck out: disconnected, its connection cut, its further
        # connections ignored and cut as strangers.
        self.assertGreater(counters["front.cut-abusive"], 0)
        self.assertGreater(summary["errors"].get(protocol.E_OVER_LIMIT, 0), 0)

        for name in ("cloud", "proxy", "s1"):
            node = self.cluster[name]
            self.assertTrue(node.running, name)
            trouble = [
                l for l in node.lines if any(t in l for t in _TROUBLE) and "flooder" not in l
            ]
            self.assertEqual(trouble, [], name)
        for client in normal:
            self.assertEqual(client.links[0].counters["lost"], 0)
            self.assertTrue(client.links[0].alive)


class SocketLimitTests(unittest.TestCase):
    """
    The plugin options become the options of every real socket.
    """

    def test_optionsReachEverySocket(self):
        """
        --hwm and --max-message-size set SNDHWM, RCVHWM and MAXMSGSIZE
        (limit plus 4 KiB of headroom for the header) on every kind of
        socket; a ROUTER refuses a send to an unknown peer (ROUTER_MANDATORY)
        instead of dropping it silently.
        """
        options = CloudOptions()
        options.parseOptions(["--hwm", "123", "--max-message-size", "5000", "--id", "c"])
        config = options.nodeConfig()
        factory = SocketFactory(reactor, config.socketOptions())
        self.addCleanup(factory.shutdown)
        for kind in ("router", "dealer", "xpub", "xsub", "sub"):
            sock = factory.socket(kind, lambda frames: None)
            self.assertEqual(sock.socket.getsockopt(zmq.SNDHWM), 123, kind)
            self.assertEqual(sock.socket.getsockopt(zmq.RCVHWM), 123, kind)
            self.assertEqual(sock.socket.getsockopt(zmq.MAXMSGSIZE), 5000 + 4096, kind)
            if kind == "router":
                sock.bind("tcp://127.0.0.1:*")
                self.assertFalse(sock.send([b"nobody", b"x"]))
                self.assertEqual(sock.dropped, 1)
            sock.close()
