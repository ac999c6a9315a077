"""
Fuzz: random and mutated frames at every bound endpoint of running nodes,
while a normal client keeps working.

Real C{twistd} nodes (cloud <- proxy <- server s1, ticking on C{tick.s1}).
Raw pyzmq sockets in this process throw a bounded number of frames at:

  - every control ROUTER (cloud, proxy, server): DEALERs, some silent
    strangers, some that first say a valid HELLO (as client, proxy or
    server) and then send garbage;
  - every notification XPUB (cloud, proxy, server): XSUBs sending
    (un)subscriptions and anything else, SUBs subscribing at random;
  - every notification XSUB (cloud, proxy): XPUBs publishing garbage and
    mutated notifications (once a subscription for everything reached them);
  - every TCP port: plain TCP connections writing random bytes (not even
    ZMTP).

Meanwhile an in-process L{zmqrelay.roles.client.Client} on the cloud makes
requests and receives s1's ticks.  Afterwards: every node is alive and
answers; the client lost no request and no tick; every node counted the
malformed input (C{sys stats}); no node logged a traceback; warnings stayed
at a bounded rate; the ROUTERs answered garbage with errors.

The seed is random per run and printed in every failure message; set
C{ZMQRELAY_FUZZ_SEED} to replay one.
"""

import os
import random
import re
import socket

import msgpack
import zmq
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial import unittest

from zmqrelay.core import protocol
from zmqrelay.roles.client import Client
from zmqrelay.core.config import NodeConfig
from tests.integration.helpers import LOOPBACK, Cluster, Collector, poll, reachable, stats

#: Messages each fuzzing socket sends.
PER_SOCKET = 250
#: Fuzzing sockets send one message each per tick of this many seconds.
TICK = 0.01

_SIG = protocol.SIGNATURE + bytes([protocol.CURRENT_VERSION])
_TYPES = sorted(protocol.KNOWN_TYPES) + [b"NEWTHING", b"", b"hb", b"\xff" * 3]
_IDS = ["fz-1", "fz-2", "fz-srv", "fz-proxy", "", "s1", "x" * 300]
_SERIOUS = re.compile(r"#(warn|error|critical)\]")


class Mutator:
    """
    Makes random and mutated frames from a seeded random generator.
    """

    def __init__(self, rng):
        self.rng = rng

    def value(self, depth=0):
        r = self.rng
        kind = r.randrange(9 if depth < 2 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return r.choice([0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, r.randrange(1000)])
        if kind == 3:
            return r.choice([0.0, -1.5, 1e300, float("inf"), float("nan"), r.random()])
        if kind == 4:
            return r.choice(_IDS + ["client", "server", "proxy", "cloud", "ping", "stats"])
        if kind == 5:
            return r.randbytes(r.randrange(12))
        if kind == 6:
            return "".join(chr(r.randrange(32, 0x2FF)) for _ in range(r.randrange(8)))
        if kind == 7:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {r.choice(["id", "to", "a", "seq"]): self.value(depth + 1) for _ in range(r.randrange(3))}

    def header(self, msgtype):
        r = self.rng
        plausible = {
            "id": r.choice([r.randrange(1, 1000), r.choice(_IDS)]),
            "to": r.choice(_IDS + ["echo"]),
            "ttl": r.choice([1000, 0, -5, 2**40]),
            "sys": r.choice(["ping", "stats", "presence", "replay", "bogus"]),
            "code": r.choice(["bad-message", "hello-first", "over-limit", "weird"]),
            "retry": r.choice([0.1, -1, float("inf"), "x"]),
            "map": r.choice(["presence", "routes", "zzz"]),
            "kind": r.choice(["snapshot", "delta", "other"]),
            "epoch": r.choice(["e1", "e2"]),
            "seq": r.choice([0, 1, 2, 2**62]),
            "client": r.choice(_IDS),
            "cinc": "i",
            "creq": r.randrange(10),
            "path": r.choice(["direct", "proxy", "cloud", "mars"]),
            "server": r.choice(_IDS),
            "from": r.choice(_IDS),
            "services": [r.choice(["echo", "fz-svc"])],
            "versions": r.choice([[1], [2], [0], [], [1, 2]]),
            "hb": r.choice([1000, 0, 2**62]),
            "liveness": r.choice([3, 0, 2**62]),
        }
        keys = r.sample(sorted(plausible), r.randrange(len(plausible) // 2))
        header = {k: (plausible[k] if r.random() < 0.8 else self.value()) for k in keys}
        for _ in range(r.randrange(3)):
            header[r.choice(["future", "x-new", "zz"])] = self.value()
        if msgtype in (protocol.REQUEST, protocol.REPLY, protocol.ERROR, protocol.MESSAGE):
            header.setdefault("id", r.randrange(1, 1000))
        return header

    def payload(self):
        r = self.rng
        choice = r.randrange(4)
        if choice == 0:
            return r.randbytes(r.randrange(40))
        if choice == 1:
            return msgpack.packb(
                [[["fz-1", "cloud"], ["i", 1.0]], [self.value(), self.value()]], use_bin_type=True
            )
        if choice == 2:
            return msgpack.packb([r.choice(["set", "del", "zap"]), self.value(), self.value()],
                                 use_bin_type=True)
        return msgpack.packb(self.value(), use_bin_type=True)

    def mutate(self, frames):
        r = self.rng
        frames = list(frames)
        for _ in range(r.choice([0, 0, 1, 2])):
            how = r.randrange(6)
            if how == 0 and frames:
                del frames[r.randrange(len(frames))]
            elif how == 1:
                frames.insert(r.randrange(len(frames) + 1), r.randbytes(r.randrange(10)))
            elif how == 2 and frames:
                i = r.randrange(len(frames))
                frame = bytearray(frames[i])
                if frame:
                    frame[r.randrange(len(frame))] ^= 1 << r.randrange(8)
                frames[i] = bytes(frame)
            elif how == 3 and frames:
                i = r.randrange(len(frames))
                frames[i] = frames[i][: r.randrange(len(frames[i]) + 1)]
            elif how == 4 and frames:
                frames.insert(r.randrange(len(frames)), frames[r.randrange(len(frames))])
            else:
                frames = frames[: r.randrange(len(frames) + 1)]
        return frames

    def control(self):
        """
        @return: the frames of a control message: garbage, or one of every
            type with a plausible-to-wild header, maybe mutated.
        """
        r = self.rng
        if r.random() < 0.15:
            return [r.randbytes(r.randrange(30)) for _ in range(r.randrange(7))]
        msgtype = r.choice(_TYPES)
        sig = _SIG if r.random() < 0.9 else protocol.SIGNATURE + bytes([r.randrange(256)])
        header = msgpack.packb(self.header(msgtype), use_bin_type=True)
        frames = [sig, msgtype, header, self.payload()]
        if r.random() < 0.1:
            frames.insert(0, b"")  # what a REQ socket would add
        return self.mutate(frames) if r.random() < 0.5 else frames

    def hello(self, role, nodeId):
        return protocol.encode(protocol.HELLO, {
            "id": nodeId, "role": role, "inc": f"inc-{self.rng.randrange(10**6)}",
            "versions": [1], "hb": 1000, "liveness": 3, "services": ["fz-svc"],
        })

    def notification(self):
        r = self.rng
        if r.random() < 0.3:
            return [r.randbytes(r.randrange(20)) for _ in range(r.randrange(6))]
        topic = r.choice([b"fz.topic", b"tick.s1.fz", b"", r.randbytes(5)])
        header = {"server": "fz-srv", "inc": r.choice(["a", "b"]), "seq": r.choice([1, 2, 3, 2**62])}
        if r.random() < 0.4:
            header = self.header(None)
        frames = [topic, _SIG, msgpack.packb(header, use_bin_type=True), r.randbytes(r.randrange(20))]
        return self.mutate(frames) if r.random() < 0.5 else frames

    def subscriberFrames(self):
        r = self.rng
        if r.random() < 0.5:
            return [r.choice([b"\x00", b"\x01"]) + r.choice([b"fz.", b"", r.randbytes(4)])]
        return [r.randbytes(r.randrange(12)) for _ in range(1 + r.randrange(4))]


class Fuzzer:
    """
    One raw socket throwing frames at one endpoint.

    @ivar received: messages it got back.
    @ivar errors: ERR messages among them.
    """

    def __init__(self, context, kind, endpoint, make, count, label):
        self.sock = context.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.setsockopt(zmq.RCVHWM, 1000)
        self.kind = kind
        self.make = make
        self.left = count
        self.label = label
        self.received = 0
        self.errors = 0
        self.sent = 0
        self.sock.connect(endpoint)

    def tick(self):
        if self.left > 0:
            self.left -= 1
            frames = self.make()
            if frames is not None:
                try:
                    if frames:
                        self.sock.send_multipart(frames, zmq.NOBLOCK)
                        self.sent += 1
                except zmq.Again:
                    pass
        self.drain()

    def drain(self):
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.received += 1
            if self.kind == zmq.DEALER and len(frames) > 1 and frames[1] == protocol.ERROR:
                self.errors += 1

    @property
    def done(self):
        return self.left <= 0


def _tcpGarbage(rng, endpoint, count=3):
    """
    Open C{count} plain TCP connections to C{endpoint} and write random
    bytes (sometimes after a plausible ZMTP greeting) on each.
    """
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 16 + b"\x00" + b"\x00" * 31
    for _ in range(count):
        with socket.create_connection((host, int(port)), timeout=2.0) as s:
            data = rng.randbytes(rng.randrange(1, 300))
            if rng.random() < 0.5:
                data = greeting + data
            s.sendall(data)


class FuzzTests(unittest.TestCase):
    """
    Garbage at every endpoint of every role disturbs nobody.
    """

    timeout = 120

    def setUp(self):
        self.seed = int(os.environ.get("ZMQRELAY_FUZZ_SEED") or random.randrange(2**32))
        self.rng = random.Random(self.seed)
        self.cluster = Cluster(self)
        self.context = zmq.Context()
        self.fuzzers = []
        self.addCleanup(self._closeSockets)

    def _closeSockets(self):
        for fuzzer in self.fuzzers:
            fuzzer.sock.close(0)
        self.context.term()

    def why(self, text):
        return f"{text} (seed {self.seed}; replay with ZMQRELAY_FUZZ_SEED={self.seed})"

    def fuzz(self, kind, endpoint, make, label, count=PER_SOCKET):
        fuzzer = Fuzzer(self.context, kind, endpoint, make, count, label)
        self.fuzzers.append(fuzzer)
        return fuzzer

    @defer.inlineCallbacks
    def startNodes(self):
        cloud = yield self.cluster.start("cloud", "zmqrelay-cloud", [
            "--id", "cloud", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ])
        proxy = yield self.cluster.start("proxy", "zmqrelay-proxy", [
            "--id", "proxy", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
            "--cloud", cloud.endpoints["control"],
        ])
        server = yield self.cluster.start("s1", "zmqrelay-server", [
            "--id", "s1", "--listen", LOOPBACK, "--pub", LOOPBACK,
            "--proxy", proxy.endpoints["control"], "--tick", "0.05",
        ])
        return cloud, proxy, server

    @defer.inlineCallbacks
    def client(self, clientId, cloud=None, proxy=None, server=None):
        """
        An in-process client attached to one node (a L{NodeProcess}).
        """
        client = Client(
            NodeConfig(clientId, requestTimeout=3.0, attempts=1),
            cloud=cloud.endpoints["control"] if cloud else None,
            proxy=proxy.endpoints["control"] if proxy else None,
            servers=[server.endpoints["control"]] if server else (),
            reactor=reactor,
        )
        client.startService()
        self.addCleanup(client.stopService)
        yield client.whenConnected(10.0)
        return client

    def controlFuzzers(self, name, endpoint, roles):
        """
        DEALERs at a control ROUTER: two strangers, and one per role that
        says HELLO first (then garbage, and a HELLO again now and then).
        """
        m = Mutator(self.rng)
        self.fuzz(zmq.DEALER, endpoint, m.control, f"{name} stranger")
        self.fuzz(zmq.DEALER, endpoint, m.control, f"{name} stranger 2")
        for i, role in enumerate(roles):
            state = {"n": 0}
            nodeId = f"fz-{name}-{role}-{i}"

            def make(state=state, role=role, nodeId=nodeId):
                state["n"] += 1
                if state["n"] == 1 or self.rng.random() < 0.02:
                    return m.hello(role, nodeId)
                return m.control()

            self.fuzz(zmq.DEALER, endpoint, make, f"{name} as {role}")

    def pubFuzzers(self, name, endpoint):
        """
        At a notification XPUB: an XSUB sending anything, and a SUB
        subscribing at random.
        """
        m = Mutator(self.rng)
        self.fuzz(zmq.XSUB, endpoint, m.subscriberFrames, f"{name} xsub")
        sub = self.fuzz(zmq.SUB, endpoint, lambda: None, f"{name} sub")

        def subscribe(sub=sub):
            prefix = self.rng.choice([b"fz.", b"tick", self.rng.randbytes(3)])
            if self.rng.random() < 0.5:
                sub.sock.setsockopt(zmq.SUBSCRIBE, prefix)
            else:
                sub.sock.setsockopt(zmq.UNSUBSCRIBE, prefix)

        sub.make = lambda: subscribe() or None
        return sub

    @defer.inlineCallbacks
    def subFuzzer(self, name, endpoint, catchAll):
        """
        At a notification XSUB: an XPUB publishing garbage, once the
        subscription for everything (made by C{catchAll}, a SUB on the
        relay's XPUB) has reached it: ZeroMQ filters at the publisher.
        """
        m = Mutator(self.rng)
        fuzzer = self.fuzz(zmq.XPUB, endpoint, m.notification, f"{name} xpub")

        def subscribedToAll():
            while fuzzer.sock.poll(0):
                if fuzzer.sock.recv() == b"\x01":
                    return True
            return False

        catchAll.sock.setsockopt(zmq.SUBSCRIBE, b"")
        yield poll(subscribedToAll, 10.0, 0.02, self.why(f"subscription reaching {name}'s XSUB"))

    @defer.inlineCallbacks
    def test_garbageEverywhere(self):
        """
        Random and mutated frames at every bound socket of cloud, proxy and
        server, and random bytes at every TCP port: nodes stay up, the
        normal client loses nothing, malformed input is counted and
        answered, no traceback, warnings bounded.
        """
        cloud, proxy, server = yield self.startNodes()
        normal = yield self.client("normal", cloud=cloud)
        ticks = Collector()
        normal.subscribe(b"tick.s1", ticks)
        yield reachable(normal, "s1")
        yield poll(lambda: [n for n in ticks.received if n.serverId == "s1"], 10.0, 0.05,
                   "ticks from s1")

        self.controlFuzzers("cloud", cloud.endpoints["control"], ["client", "proxy"])
        self.controlFuzzers("proxy", proxy.endpoints["control"], ["client", "server"])
        self.controlFuzzers("s1", server.endpoints["control"], ["client"])
        catchCloud = self.pubFuzzers("cloud", cloud.endpoints["pub"])
        catchProxy = self.pubFuzzers("proxy", proxy.endpoints["pub"])
        self.pubFuzzers("s1", server.endpoints["pub"])
        yield self.subFuzzer("cloud", cloud.endpoints["sub"], catchCloud)
        yield self.subFuzzer("proxy", proxy.endpoints["sub"], catchProxy)
        for node in (cloud, proxy, server):
            for endpoint in node.endpoints.values():
                _tcpGarbage(self.rng, endpoint)

        # The normal client's traffic, all through the fuzz.
        failures = []
        answered = []

        @defer.inlineCallbacks
        def traffic():
            n = 0
            while not all(f.done for f in self.fuzzers):
                n += 1
                payload = b"normal-%d" % (n,)
                try:
                    reply = yield normal.request("s1", payload)
                except Exception as e:
                    failures.append((n, e))
                else:
                    (answered if reply == payload else failures).append((n, reply))
                yield deferLater(reactor, 0.02, lambda: None)

        loop = LoopingCall(lambda: [f.tick() for f in self.fuzzers])
        loop.clock = reactor
        done = loop.start(TICK)
        self.addCleanup(lambda: loop.running and loop.stop())
        yield traffic()
        loop.stop()
        yield done
        firstTick = max(n.seq for n in ticks.received if n.serverId == "s1")
        # A few more ticks: notifications still flow after the fuzz.
        yield poll(lambda: max(n.seq for n in ticks.received if n.serverId == "s1") >= firstTick + 5,
                   10.0, 0.05, self.why("ticks after the fuzz"))

        self.assertEqual(failures, [], self.why("normal requests failed"))
        self.assertGreater(len(answered), 20)
        seqs = sorted(n.seq for n in ticks.received if n.serverId == "s1")
        self.assertEqual(seqs, list(range(seqs[0], seqs[-1] + 1)), self.why("ticks lost or doubled"))
        # (Forged notifications of a made-up server may well have gaps.)
        self.assertEqual([g for g in ticks.lost if g.serverId == "s1"], [], self.why("gaps reported"))
        self.assertEqual(normal.links[0].counters["lost"], 0, self.why("normal client's link dropped"))

        # Every node alive and counting.
        proxyClient = yield self.client("inspector-proxy", proxy=proxy)
        serverClient = yield self.client("inspector-s1", server=server)
        cloudStats = yield stats(normal)
        proxyStats = yield stats(proxyClient)
        serverStats = yield stats(serverClient)
        for label, counters, keys in [
            ("cloud", cloudStats, ["front.malformed", "front.unknown-type", "notify.malformed"]),
            ("proxy", proxyStats, ["front.malformed", "front.unknown-type", "notify.malformed"]),
            ("s1", serverStats, ["front.malformed", "malformed"]),
        ]:
            for key in keys:
                self.assertGreater(counters.get(key, 0), 0, self.why(f"{label} {key}: {counters}"))
        for fuzzer in self.fuzzers:
            if fuzzer.kind == zmq.DEALER:
                self.assertGreater(fuzzer.errors, 0, self.why(f"{fuzzer.label} got no ERR"))

        for name in ("cloud", "proxy", "s1"):
            node = self.cluster[name]
            self.assertTrue(node.running, name)
            tracebacks = [l for l in node.lines if "Traceback" in l or "Unhandled" in l]
            self.assertEqual(tracebacks, [], self.why(f"{name} logged a traceback"))
            serious = [l for l in node.lines if _SERIOUS.search(l)]
            self.assertLess(len(serious), 120, self.why(f"{name} logged {len(serious)} warnings"))
