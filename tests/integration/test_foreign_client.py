"""
A "foreign" client, written from C{docs/PROTOCOL.md} alone, against real nodes.

Nothing of zmqrelay is used here but L{zmqrelay.tools.launcher} to start the
C{twistd} nodes: the client below is a raw pyzmq DEALER and SUB and msgpack,
built from the specification (section numbers in comments refer to it).  The
byte-level examples of the specification (section 15) are read out of the
document and sent verbatim, so the document cannot drift from what the nodes
accept.

The pyzmq sockets are polled from the reactor without blocking; every wait
has a deadline, and every node is stopped (then killed) by the test's
cleanup.
"""

import itertools
import os
import re
import time

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial import unittest

from zmqrelay.tools.launcher import ROOT, Topology

LOOPBACK = "tcp://127.0.0.1:*"
SPEC = os.path.join(ROOT, "docs", "PROTOCOL.md")

# Section 3: the signature frame is "ZRLY" and a version byte.
SIGNATURE = b"ZRLY"
VERSION = 1

# Section 9: message types.
HELLO = b"HELLO"
WELCOME = b"WELCOME"
REJECT = b"REJECT"
HB = b"HB"
BYE = b"BYE"
REQ = b"REQ"
REP = b"REP"
ERR = b"ERR"
MSG = b"MSG"
BATCH = b"BATCH"
PRESENCE = b"PRESENCE"

CLOUD_ID = "cloud-f"
PROXY_ID = "proxy-f"
SERVER_ID = "srv-f"


def packHeader(header):
    """
    Section 4: str keys, str text, bin bytes.
    """
    return msgpack.packb(header, use_bin_type=True)


def unpack(data):
    """
    Section 4: str as text, bin as bytes.
    """
    return msgpack.unpackb(data, raw=False)


def signature(version=VERSION):
    return SIGNATURE + bytes([version])


class Message:
    """
    A control message as section 3.1 reads it.
    """

    def __init__(self, version, type, header, payload):
        self.version = version
        self.type = type
        self.header = header
        self.payload = payload

    def __repr__(self):
        return f"<{self.type!r} v{self.version} {self.header!r} {self.payload[:40]!r}>"


def decode(frames):
    """
    Section 3.1 and 16: three or more frames, extra frames ignored, a
    missing payload frame is empty.
    """
    if len(frames) < 3 or len(frames[0]) != 5 or frames[0][:4] != SIGNATURE:
        raise ValueError(f"not a zmqrelay control message: {frames!r}")
    header = unpack(frames[2])
    if not isinstance(header, dict):
        raise ValueError("header is not a map")
    return Message(frames[0][4], frames[1], header, frames[3] if len(frames) > 3 else b"")


def advertised(bound, dialled):
    """
    Section 2: the host we dialled, the port the peer bound.
    """
    if not (bound.startswith("tcp://") and dialled.startswith("tcp://")):
        return bound
    host = dialled[len("tcp://"):].rsplit(":", 1)[0]
    return f"tcp://{host}:{bound.rsplit(':', 1)[1]}"


def exampleFrames(name):
    """
    Read the frames of a worked example (section 15) out of the spec: the
    code block after C{<!-- frames:NAME -->}, C{[n]} starting frame n, hex
    byte pairs, C{;} starting a comment.
    """
    with open(SPEC, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = lines.index(f"<!-- frames:{name} -->")
    if not lines[start + 1].startswith("```"):
        raise ValueError(f"no code block after the {name} marker")
    frames = []
    for line in lines[start + 2:]:
        if line.startswith("```"):
            break
        code = line.split(";", 1)[0]
        marker = re.match(r"\s*\[(\d+)\]", code)
        if marker:
            if int(marker.group(1)) != len(frames):
                raise ValueError(f"frame {marker.group(1)} out of order in {name}")
            frames.append(b"")
            code = code[marker.end():]
        frames[-1] += bytes.fromhex(code)
    return frames


def writeCertificate(directory, name, public, secret=None, nodeId=None, role="client"):
    """
    Section 19.1: a ZPL certificate, C{NAME.key} (public) or, with
    C{secret}, C{NAME.key_secret}.

    @return: its path.
    """
    lines = [
        "#   written by the foreign client from PROTOCOL.md 19.1",
        "metadata",
        f'    id = "{nodeId or name}"',
        f'    role = "{role}"',
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    path = os.path.join(directory, name + (".key_secret" if secret is not None else ".key"))
    with open(path, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    return path


@defer.inlineCallbacks
def nothingFor(seconds, check):
    """
    Call C{check} every 10 ms for C{seconds}; fail if it ever returns
    something other than C{None}.
    """
    deadline = reactor.seconds() + seconds
    while reactor.seconds() < deadline:
        value = check()
        if value is not None:
            raise AssertionError(f"expected silence, got {value!r}")
        yield deferLater(reactor, 0.01, lambda: None)


def poll(check, timeout, what, interval=0.01):
    """
    Call C{check} until it returns something other than C{None}.

    @return: a L{defer.Deferred} firing with that value, or failing with
        L{AssertionError} after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def loop():
        while True:
            value = check()
            if value is not None:
                return value
            if reactor.seconds() >= deadline:
                raise AssertionError(f"{what}: nothing within {timeout}s")
            yield deferLater(reactor, interval, lambda: None)

    return loop()


class ForeignClient:
    """
    A zmqrelay client made of a DEALER, a SUB and the specification.

    @ivar welcome: the WELCOME header, once welcomed.
    @ivar heartbeats: HBs received (they never reach the inbox).
    @ivar inbox: other received messages not yet taken by L{receive}.
    """

    def __init__(self, testCase, context, endpoint, clientId, incarnation="9f2c", curve=None):
        self.context = context
        self.endpoint = endpoint
        self.clientId = clientId
        self.incarnation = incarnation
        # Section 19.2: (server key, our public key, our secret key), or None.
        self.curve = curve
        self.ids = itertools.count(1000)
        self.welcome = None
        self.heartbeats = 0
        self.batches = 0
        self.inbox = []
        self.lastSent = reactor.seconds()
        self.sub = None
        self._beater = None
        self.socket = self._dealer()
        testCase.addCleanup(self.close)

    def _secure(self, sock):
        # Section 19.2: a CURVE client, set before connect.
        if self.curve is not None:
            serverKey, public, secret = self.curve
            sock.setsockopt(zmq.CURVE_SERVERKEY, serverKey)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)

    def _dealer(self):
        # Section 2: one DEALER per session, linger 0.
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        self._secure(sock)
        sock.connect(self.endpoint)
        return sock

    def newSocket(self):
        """
        Section 6.5: a fresh DEALER for a new HELLO after a session ended.
        """
        self.socket.close(0)
        self.socket = self._dealer()
        self.inbox = []

    def close(self):
        self.stopHeartbeat()
        for sock in (self.socket, self.sub):
            if sock is not None:
                sock.close(0)
        self.socket = self.sub = None

    # Sending

    def sendFrames(self, frames):
        self.socket.send_multipart(frames)
        self.lastSent = reactor.seconds()

    def send(self, msgtype, header, payload=b"", version=VERSION):
        """
        Section 3.1: exactly four frames.
        """
        self.sendFrames([signature(version), msgtype, packHeader(header), payload])

    def hello(self, versions=(VERSION,), hb=1000, liveness=3, version=None, role="client", **extra):
        """
        Section 6.1, written with the highest version offered.
        """
        header = {"id": self.clientId, "role": role, "inc": self.incarnation,
                  "versions": list(versions), "hb": hb, "liveness": liveness}
        header.update(extra)
        self.send(HELLO, header, version=max(versions) if version is None else version)

    @defer.inlineCallbacks
    def connect(self, **kw):
        """
        HELLO, then WELCOME (checked per section 6.2) and heartbeats.

        @return: a L{defer.Deferred} firing with the WELCOME header.
        """
        self.hello(**kw)
        answer = yield self.receive(lambda m: m.type in (WELCOME, REJECT), what="WELCOME")
        if answer.type != WELCOME:
            raise AssertionError(f"refused: {answer.header!r}")
        self.welcomed(answer)
        return answer.header

    def welcomed(self, message):
        offered = message.header["version"]
        if offered != VERSION:
            raise AssertionError(f"upstream chose version {offered!r}, we offered {VERSION}")
        self.welcome = message.header
        self.startHeartbeat()

    def request(self, to, payload=b"", ttl=5000, **extra):
        """
        Section 10.1.

        @return: the request id.
        """
        rid = next(self.ids)
        header = {"id": rid, "ttl": ttl}
        if to is not None:
            header["to"] = to
        header.update(extra)
        self.send(REQ, header, payload)
        return rid

    def answer(self, rid, timeout=10.0):
        """
        Section 10.2: the REP or ERR with this id.
        """
        return self.receive(
            lambda m: m.type in (REP, ERR) and m.header.get("id") == rid,
            timeout, f"answer to request {rid}",
        )

    @defer.inlineCallbacks
    def call(self, to, payload=b"", timeout=10.0, **extra):
        """
        Send a request and wait for its answer.
        """
        rid = self.request(to, payload, **extra)
        answer = yield self.answer(rid, timeout)
        return answer

    # Section 7: HB when nothing was sent for hb ms, checked every hb/2.

    def startHeartbeat(self):
        self.stopHeartbeat()
        interval = self.welcome["hb"] / 1000.0
        self._beater = LoopingCall(self._beat, interval)
        self._beater.start(interval / 2.0, now=False)

    def stopHeartbeat(self):
        if self._beater is not None and self._beater.running:
            self._beater.stop()
        self._beater = None

    def _beat(self, interval):
        if reactor.seconds() - self.lastSent >= interval:
            self.send(HB, {})

    # Receiving

    def _drain(self):
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            message = decode(frames)
            if message.type == BATCH:
                # Section 3.3: [type, header, payload] items, in order.
                self.batches += 1
                messages = [Message(message.version, t, h, p) for t, h, p in unpack(message.payload)]
            else:
                messages = [message]
            for message in messages:
                if message.type == HB:
                    self.heartbeats += 1
                else:
                    self.inbox.append(message)

    def receive(self, wanted, timeout=10.0, what="message"):
        """
        @return: a L{defer.Deferred} firing with (and taking from the inbox)
            the first message for which C{wanted(message)} is true.
        """

        def check():
            self._drain()
            for message in self.inbox:
                if wanted(message):
                    self.inbox.remove(message)
                    return message
            return None

        return poll(check, timeout, what)

    # Section 14: notifications.

    def subscribe(self, prefix, curve=True):
        """
        Connect a SUB to the WELCOME's pub endpoint, as advertised() (with
        our CURVE keys unless C{curve} is false).
        """
        if self.sub is None:
            self.sub = self.context.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            if curve:
                self._secure(self.sub)
            self.sub.connect(advertised(self.welcome["pub"], self.endpoint))
        self.sub.setsockopt(zmq.SUBSCRIBE, prefix)

    def notifications(self, count, timeout=15.0):
        """
        @return: a L{defer.Deferred} firing with C{count} notifications as
            (topic, version, header, payload) tuples.
        """
        got = []

        def check():
            while len(got) < count:
                try:
                    frames = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return None
                if len(frames) < 3 or frames[1][:4] != SIGNATURE or len(frames[1]) != 5:
                    raise AssertionError(f"not a notification: {frames!r}")
                got.append((frames[0], frames[1][4], unpack(frames[2]),
                            frames[3] if len(frames) > 3 else b""))
            return got

        return poll(check, timeout, f"{count} notifications")


class ForeignClientTests(unittest.TestCase):
    """
    A client written from the specification talks to real cloud, proxy and
    server processes.
    """

    timeout = 120

    def setUp(self):
        self.context = zmq.Context()
        self.addCleanup(self.context.destroy, 0)
        self.topology = Topology(reactor)
        self.addCleanup(self.topology.stopAll)

    def cloud(self, *extra):
        return self.topology.start("cloud", "zmqrelay-cloud", [
            "--id", CLOUD_ID, "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ] + list(extra))

    @defer.inlineCallbacks
    def system(self, cloudArgs=(), proxyArgs=(), serverArgs=(), prober=None):
        """
        Start a cloud, a proxy and a server running the example app with a
        ticker, and wait until the server answers a ping through the cloud.

        @return: a L{defer.Deferred} firing with (cloud, server) L{NodeProcess}es.
        """
        cloud = yield self.cloud(*cloudArgs)
        proxy = yield self.topology.start("proxy", "zmqrelay-proxy", [
            "--id", PROXY_ID, "--cloud", cloud.endpoints["control"],
            "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ] + list(proxyArgs))
        server = yield self.topology.start("server", "zmqrelay-server", [
            "--id", SERVER_ID, "--proxy", proxy.endpoints["control"],
            "--listen", LOOPBACK, "--pub", LOOPBACK, "--service", "echo", "--tick", "0.2",
        ] + list(serverArgs))
        self.proxyNode = proxy
        if prober is None:
            prober = ForeignClient(self, self.context, cloud.endpoints["control"], "prober", "p1")
        else:
            prober = prober(cloud)
        yield prober.connect()

        @defer.inlineCallbacks
        def pinged():
            # Until the proxy's ROUTES reached the cloud, this is no-route.
            while True:
                answer = yield prober.call(SERVER_ID, sys="ping", timeout=5.0)
                if answer.type == REP:
                    return answer
                yield deferLater(reactor, 0.05, lambda: None)

        answer = yield pinged().addTimeout(20, reactor)
        self.assertEqual(answer.payload, b"pong")
        prober.send(BYE, {"reason": "shutdown"})
        prober.close()
        return cloud, server

    @defer.inlineCallbacks
    def test_helloWelcome(self):
        """
        The HELLO bytes of section 15.1, sent verbatim, are welcomed with every WELCOME field of section 6.3.
        """
        cloud = yield self.cloud()
        frames = exampleFrames("hello")
        self.assertEqual(len(frames), 4)
        self.assertEqual(
            unpack(frames[2]),
            {"id": "c1", "role": "client", "inc": "9f2c", "versions": [1], "hb": 1000, "liveness": 3},
        )
        client = ForeignClient(self, self.context, cloud.endpoints["control"], "c1")
        client.sendFrames(frames)
        answer = yield client.receive(lambda m: m.type in (WELCOME, REJECT))
        self.assertEqual(answer.type, WELCOME, answer.header)
        self.assertEqual(answer.version, 1)
        self.assertEqual(answer.payload, b"")
        h = answer.header
        self.assertEqual(
            (h["id"], h["role"], h["inc"], h["version"], h["you"]),
            (CLOUD_ID, "cloud", cloud.incarnation, 1, "c1"),
        )
        self.assertIn(1, h["versions"])
        self.assertEqual((h["hb"], h["liveness"]), (1000, 3))
        self.assertEqual(h["max"], 4 * 1024 * 1024)
        self.assertEqual(h["inflight"], 256)
        self.assertEqual(advertised(h["pub"], cloud.endpoints["control"]), cloud.endpoints["pub"])
        self.assertEqual(advertised(h["sub"], cloud.endpoints["control"]), cloud.endpoints["sub"])
        client.send(BYE, {"reason": "shutdown"})

    @defer.inlineCallbacks
    def test_requestsThroughTheCloud(self):
        """
        REQs by service name (the bytes of section 15.2) and by server id are answered through cloud and proxy, stamped by the cloud whatever the client claims; an unknown target gets ERR no-route; BYE ends the session and the presence at once.
        """
        cloud, server = yield self.system()
        control = cloud.endpoints["control"]
        client = ForeignClient(self, self.context, control, "c1")
        client.sendFrames(exampleFrames("hello"))
        welcome = yield client.receive(lambda m: m.type == WELCOME)
        client.welcomed(welcome)

        frames = exampleFrames("req")
        self.assertEqual(unpack(frames[2]), {"id": 7, "to": "echo", "ttl": 5000})
        client.sendFrames(frames)
        answer = yield client.answer(7)
        # Section 10.2: the answer names the server that ran it (server, sinc).
        self.assertEqual((answer.type, answer.header["id"], answer.payload), (REP, 7, b"hello"))
        self.assertEqual(answer.header["server"], "srv-f")
        self.assertIsInstance(answer.header["sinc"], str)

        # Section 10.4: the attach node's stamps overwrite the client's claims.
        answer = yield client.call(
            SERVER_ID, b"whoami", client="mallory", cinc="forged", creq=1, path="direct",
            server="elsewhere",
        )
        self.assertEqual(answer.type, REP, answer.header)
        self.assertEqual(answer.payload, f"c1 9f2c cloud {SERVER_ID}".encode())

        # sys requests: the attach node by default, a server by id (10.7).
        answer = yield client.call(None, sys="ping")
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))
        answer = yield client.call(SERVER_ID, sys="ping")
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))

        started = reactor.seconds()
        rid = client.request("nowhere", b"x")
        answer = yield client.answer(rid)
        self.assertEqual(answer.type, ERR)
        self.assertEqual(answer.header["id"], rid)
        self.assertEqual(answer.header["code"], "no-route")
        self.assertIsInstance(answer.header["msg"], str)
        self.assertLess(reactor.seconds() - started, 2.0, "no-route must not wait for the ttl")

        # BYE (section 8): the presence ends at once, not after the liveness window.
        observer = ForeignClient(self, self.context, control, "observer", "o1")
        yield observer.connect()
        answer = yield observer.call(None, sys="presence")
        listed = unpack(answer.payload)
        self.assertEqual(listed["c1"]["inc"], "9f2c")
        self.assertEqual(listed["c1"]["paths"], ["cloud"])
        client.stopHeartbeat()
        client.send(BYE, {"reason": "shutdown"})
        byeSent = reactor.seconds()

        @defer.inlineCallbacks
        def gone():
            while True:
                answer = yield observer.call(None, sys="presence")
                if "c1" not in unpack(answer.payload):
                    return reactor.seconds()
                yield deferLater(reactor, 0.05, lambda: None)

        goneAt = yield gone().addTimeout(5, reactor)
        self.assertLess(goneAt - byeSent, welcome.header["hb"] * welcome.header["liveness"] / 1000.0)
        rid = client.request(SERVER_ID, b"after bye")
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "hello-first"))

    @defer.inlineCallbacks
    def test_notifications(self):
        """
        Subscribing at the cloud's advertised pub endpoint delivers the server's ticks with (server, inc, seq) headers and increasing seq, and sys replay returns the same notifications.
        """
        cloud, server = yield self.system()
        client = ForeignClient(self, self.context, cloud.endpoints["control"], "c1")
        yield client.connect()
        client.subscribe(b"tick.")
        got = yield client.notifications(5)
        topic = f"tick.{SERVER_ID}".encode()
        seqs = []
        for t, version, header, payload in got:
            self.assertEqual((t, version), (topic, 1))
            self.assertEqual((header["server"], header["inc"]), (SERVER_ID, server.incarnation))
            self.assertIsInstance(header["seq"], int)
            seqs.append(header["seq"])
        self.assertEqual(seqs, sorted(set(seqs)), "seq must increase")
        self.assertGreaterEqual(seqs[0], 1)

        # Section 14.4: replay what we saw.
        ask = {"topic": topic, "inc": server.incarnation, "first": seqs[0], "last": seqs[-1]}
        answer = yield client.call(SERVER_ID, packHeader(ask), sys="replay")
        self.assertEqual(answer.type, REP, answer.header)
        replay = unpack(answer.payload)
        self.assertEqual(replay["inc"], server.incarnation)
        items = {seq: payload for seq, payload in replay["items"]}
        self.assertEqual(sorted(items), list(range(seqs[0], seqs[-1] + 1)))
        for _, _, header, payload in got:
            self.assertEqual(items[header["seq"]], payload)

        # Another incarnation's notifications are not the server's to replay.
        ask["inc"] = "not-this-one"
        answer = yield client.call(SERVER_ID, packHeader(ask), sys="replay")
        self.assertEqual(unpack(answer.payload), {"inc": server.incarnation, "items": []})
        # The topic is bin (section 4): as str it is a bad message.
        ask["topic"] = topic.decode()
        answer = yield client.call(SERVER_ID, packHeader(ask), sys="replay")
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "bad-message"))

    @defer.inlineCallbacks
    def test_messageFromServer(self):
        """
        A server's MSG reaches the client through proxy and cloud stamped 'from', and the server sees it delivered only once the client acknowledged it with REP.
        """
        cloud, server = yield self.system()
        client = ForeignClient(self, self.context, cloud.endpoints["control"], "c1")
        yield client.connect()
        rid = client.request(SERVER_ID, b"send:hi")
        message = yield client.receive(lambda m: m.type == MSG, what="MSG")
        self.assertEqual(message.payload, b"hi")
        self.assertEqual((message.header["to"], message.header["from"]), ("c1", SERVER_ID))
        self.assertIsInstance(message.header["id"], int)
        self.assertGreater(message.header["ttl"], 0)
        # Not acknowledged yet: the server is still waiting, so no answer.
        client._drain()
        self.assertEqual([m for m in client.inbox if m.header.get("id") == rid], [])
        client.send(REP, {"id": message.header["id"]})
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.payload), (REP, b"sent"))

    @defer.inlineCallbacks
    def test_directPath(self):
        """
        A server's own ROUTER welcomes a LAN client with its services and pub endpoint, answers it on the 'direct' path and sends it MSGs stamped 'from'.
        """
        server = yield self.topology.start("server", "zmqrelay-server", [
            "--id", SERVER_ID, "--listen", LOOPBACK, "--pub", LOOPBACK, "--service", "echo",
        ])
        control = server.endpoints["control"]
        client = ForeignClient(self, self.context, control, "lan1", "l1")
        welcome = yield client.connect()
        self.assertEqual((welcome["id"], welcome["role"]), (SERVER_ID, "server"))
        self.assertEqual(welcome["services"], ["echo"])
        self.assertEqual(advertised(welcome["pub"], control), server.endpoints["pub"])
        answer = yield client.call(None, b"whoami")
        self.assertEqual(answer.payload, f"lan1 l1 direct {SERVER_ID}".encode())
        rid = client.request(SERVER_ID, b"send:direct hi")
        message = yield client.receive(lambda m: m.type == MSG, what="MSG")
        self.assertEqual(message.payload, b"direct hi")
        self.assertEqual((message.header["to"], message.header["from"]), ("lan1", SERVER_ID))
        client.send(REP, {"id": message.header["id"]})
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.payload), (REP, b"sent"))

    @defer.inlineCallbacks
    def test_heartbeats(self):
        """
        The session's hb and liveness are the larger of both sides'; heartbeats keep an idle session alive both ways, silence ends it with BYE heartbeat-timeout after hb x liveness, and the next request gets ERR hello-first.
        """
        cloud = yield self.cloud("--heartbeat", "0.5")
        client = ForeignClient(self, self.context, cloud.endpoints["control"], "c1")
        welcome = yield client.connect(hb=200, liveness=1)
        self.assertEqual((welcome["hb"], welcome["liveness"]), (500, 3))
        window = welcome["hb"] * welcome["liveness"] / 1000.0

        # Idle but heartbeating for longer than the liveness window.
        yield deferLater(reactor, window + 1.0, lambda: None)
        client._drain()
        self.assertGreaterEqual(client.heartbeats, 2, "the cloud sends HB when idle")
        self.assertEqual([m.type for m in client.inbox], [])
        answer = yield client.call(None, sys="ping")
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))

        # Silence.
        client.stopHeartbeat()
        silentFrom = client.lastSent
        bye = yield client.receive(lambda m: m.type == BYE, window + 8.0, "BYE")
        self.assertEqual(bye.header["reason"], "heartbeat-timeout")
        self.assertGreaterEqual(reactor.seconds() - silentFrom, window - 0.1)
        rid = client.request(None, sys="ping")
        answer = yield client.answer(rid)
        self.assertEqual(answer.type, ERR)
        self.assertEqual((answer.header["code"], answer.header["id"]), ("hello-first", rid))

        # Section 6.5: HELLO again on a fresh socket and carry on.
        client.newSocket()
        yield client.connect()
        answer = yield client.call(None, sys="ping")
        self.assertEqual(answer.payload, b"pong")

    @defer.inlineCallbacks
    def test_versionNegotiation(self):
        """
        A HELLO offering only version 99 gets REJECT naming the supported versions and no session; a HELLO with version byte 99 offering [1, 99] is read and welcomed in version 1; a role the cloud does not accept gets REJECT rejected.
        """
        cloud = yield self.cloud()
        control = cloud.endpoints["control"]
        client = ForeignClient(self, self.context, control, "c99")
        client.hello(versions=[99])
        reject = yield client.receive(lambda m: m.type in (WELCOME, REJECT))
        self.assertEqual(reject.type, REJECT)
        self.assertEqual(reject.header["code"], "version")
        self.assertEqual(reject.header["versions"], [1])
        self.assertIn("99", reject.header["msg"])
        rid = client.request(None, sys="ping")
        answer = yield client.answer(rid)
        self.assertEqual(answer.header["code"], "hello-first")

        future = ForeignClient(self, self.context, control, "c-future")
        future.hello(versions=[1, 99], version=99)
        welcome = yield future.receive(lambda m: m.type in (WELCOME, REJECT))
        self.assertEqual(welcome.type, WELCOME, welcome.header)
        self.assertEqual((welcome.header["version"], welcome.version), (1, 1))

        impostor = ForeignClient(self, self.context, control, "s-impostor")
        impostor.hello(role="server")
        reject = yield impostor.receive(lambda m: m.type in (WELCOME, REJECT))
        self.assertEqual((reject.type, reject.header["code"]), (REJECT, "rejected"))
        self.assertEqual(reject.header["versions"], [1])

    @defer.inlineCallbacks
    def test_tolerantReaderAndLimits(self):
        """
        Unknown header keys, extra frames and a missing payload frame are tolerated; an unknown or unexpected type gets ERR unknown-type, a broken header ERR bad-message, an oversized REQ ERR too-large with its id, a REQ before HELLO ERR hello-first.
        """
        cloud = yield self.cloud("--max-message-size", "65536")
        control = cloud.endpoints["control"]
        stranger = ForeignClient(self, self.context, control, "stranger")
        rid = stranger.request(None, sys="ping")
        answer = yield stranger.answer(rid)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "hello-first"))

        client = ForeignClient(self, self.context, control, "c1")
        welcome = yield client.connect()
        self.assertEqual(welcome["max"], 65536)

        rid = next(client.ids)
        client.sendFrames([
            signature(), REQ,
            packHeader({"id": rid, "sys": "ping", "future-field": {"nested": [1, 2]}}),
            b"", b"extra frame", b"another",
        ])
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))

        rid = next(client.ids)
        client.sendFrames([signature(), REQ, packHeader({"id": rid, "sys": "ping"})])
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))

        rid = next(client.ids)
        client.send(b"FROB", {"id": rid})
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "unknown-type"))
        # The text names the type as text, not as a Python bytes repr.
        self.assertIn("FROB", answer.header["msg"])
        self.assertNotIn("b'", answer.header["msg"])

        rid = next(client.ids)
        client.send(PRESENCE, {"id": rid, "map": "presence"})
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "unknown-type"))

        client.sendFrames([signature(), REQ, b"\xc1 not msgpack", b""])
        answer = yield client.receive(lambda m: m.type == ERR and "id" not in m.header)
        self.assertEqual(answer.header["code"], "bad-message")

        # Over max, but under max + 4096: ZeroMQ itself would drop the
        # connection for a frame over that (section 12).
        rid = client.request(None, b"x" * (65536 + 1000), sys="ping")
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "too-large"))

        # The session survived all of it.
        answer = yield client.call(None, sys="ping")
        self.assertEqual(answer.payload, b"pong")
        client.send(BYE, {"reason": "shutdown"})

    @defer.inlineCallbacks
    def test_curve(self):
        """
        Section 19: with certificates written as 19.1 says, a CURVE client is welcomed, served and hears notifications on a CURVE SUB while a plain SUB hears nothing; no key, an unknown key and a wrong server key get silence; a known key claiming another id or role gets REJECT auth.
        """
        directory = os.path.abspath(self.mktemp())
        authorized = os.path.join(directory, "authorized")
        os.makedirs(authorized)
        keys = {n: zmq.curve_keypair() for n in ("cloud", "proxy", "alice", "bob", "mallory", "prober")}
        cloudSecret = writeCertificate(directory, "cloud", *keys["cloud"], nodeId=CLOUD_ID, role="cloud")
        cloudPublic = writeCertificate(directory, "cloud", keys["cloud"][0], nodeId=CLOUD_ID, role="cloud")
        proxySecret = writeCertificate(directory, "proxy", *keys["proxy"], nodeId=PROXY_ID, role="proxy")
        writeCertificate(authorized, "proxy", keys["proxy"][0], nodeId=PROXY_ID, role="proxy")
        for name in ("alice", "bob", "prober"):
            writeCertificate(authorized, name, keys[name][0])

        def curveOf(name, serverKey=keys["cloud"][0]):
            return (serverKey, keys[name][0], keys[name][1])

        cloud, server = yield self.system(
            cloudArgs=["--curve-secret", cloudSecret, "--curve-authorized", authorized],
            proxyArgs=["--curve-secret", proxySecret, "--curve-server-key", cloudPublic],
            prober=lambda cloud: ForeignClient(
                self, self.context, cloud.endpoints["control"], "prober", "p1", curve=curveOf("prober")),
        )
        control = cloud.endpoints["control"]
        alice = ForeignClient(self, self.context, control, "alice", "a1", curve=curveOf("alice"))
        yield alice.connect()
        answer = yield alice.call(SERVER_ID, b"whoami")
        self.assertEqual(answer.payload, f"alice a1 cloud {SERVER_ID}".encode())
        alice.subscribe(b"tick.")
        got = yield alice.notifications(2)
        self.assertEqual(got[0][2]["server"], SERVER_ID)

        # 19.2: the notification socket is CURVE too; a plain SUB hears nothing.
        plainSub = self.context.socket(zmq.SUB)
        self.addCleanup(plainSub.close, 0)
        plainSub.setsockopt(zmq.LINGER, 0)
        plainSub.connect(advertised(alice.welcome["pub"], control))
        plainSub.setsockopt(zmq.SUBSCRIBE, b"tick.")

        def heard():
            try:
                return plainSub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None

        yield nothingFor(1.5, heard)
        got = yield alice.notifications(2)
        self.assertEqual(len(got), 2)

        # 19.4: refused in the handshake, a peer hears nothing at all.
        def silent(client):
            client.hello()

            def anything():
                client._drain()
                return client.inbox[0] if client.inbox else None

            return nothingFor(2.0, anything)

        yield silent(ForeignClient(self, self.context, control, "carol", "c1"))
        yield silent(ForeignClient(self, self.context, control, "mallory", "m1", curve=curveOf("mallory")))
        yield silent(ForeignClient(
            self, self.context, control, "bob", "b0", curve=curveOf("bob", serverKey=keys["proxy"][0])))

        # 19.3: a known key is one id and one role.
        impostor = ForeignClient(self, self.context, control, "alice", "i1", curve=curveOf("bob"))
        impostor.hello()
        reject = yield impostor.receive(lambda m: m.type in (WELCOME, REJECT))
        self.assertEqual((reject.type, reject.header["code"]), (REJECT, "auth"))
        self.assertIn("bob", reject.header["msg"])
        asProxy = ForeignClient(self, self.context, control, "bob", "b1", curve=curveOf("bob"))
        asProxy.hello(role="proxy")
        reject = yield asProxy.receive(lambda m: m.type in (WELCOME, REJECT))
        self.assertEqual((reject.type, reject.header["code"]), (REJECT, "auth"))

        bob = ForeignClient(self, self.context, control, "bob", "b2", curve=curveOf("bob"))
        yield bob.connect()
        answer = yield bob.call(SERVER_ID, b"whoami")
        self.assertEqual(answer.payload, f"bob b2 cloud {SERVER_ID}".encode())
        answer = yield alice.call(None, sys="ping")
        self.assertEqual(answer.payload, b"pong")

    @defer.inlineCallbacks
    def test_batches(self):
        """
        Section 3.3: a client that announced batch gets its answers in BATCHes (read item by item), one that did not gets none; the WELCOME offers batch, and requests a client sends in a BATCH are answered each; one with more messages than offered is bad-message.
        """
        cloud, server = yield self.system()
        plain = ForeignClient(self, self.context, cloud.endpoints["control"], "plain", "p1")
        batched = ForeignClient(self, self.context, cloud.endpoints["control"], "batched", "b1")
        yield plain.connect()
        welcome = yield batched.connect(batch=16)
        self.assertEqual(welcome["batch"], 64)
        for client in (plain, batched):
            rids = [client.request(SERVER_ID, b"n%d" % i) for i in range(60)]
            for i, rid in enumerate(rids):
                answer = yield client.answer(rid)
                self.assertEqual((answer.type, answer.payload), (REP, b"n%d" % i))
        self.assertEqual(plain.batches, 0)
        self.assertGreater(batched.batches, 0)
        items = [[REQ, {"id": rid, "to": SERVER_ID, "ttl": 5000}, b"b%d" % rid] for rid in (1, 2, 3)]
        batched.send(BATCH, {"n": 3}, msgpack.packb(items, use_bin_type=True))
        for rid in (1, 2, 3):
            answer = yield batched.answer(rid)
            self.assertEqual((answer.type, answer.payload), (REP, b"b%d" % rid))
        items = [[REQ, {"id": 9, "to": SERVER_ID, "ttl": 5000}, b"x"]] * (welcome["batch"] + 1)
        batched.send(BATCH, {"n": len(items)}, msgpack.packb(items, use_bin_type=True))
        answer = yield batched.receive(lambda m: m.type == ERR)
        self.assertEqual(answer.header["code"], "bad-message")

    @defer.inlineCallbacks
    def test_inFlightCountsOnlyRequests(self):
        """
        Section 10.6: MSGs waiting for the client's acknowledgement do not use its in-flight budget; its own requests do, up to WELCOME inflight.
        """
        cloud, server = yield self.system(cloudArgs=["--max-in-flight", "4"])
        client = ForeignClient(self, self.context, cloud.endpoints["control"], "c1")
        welcome = yield client.connect()
        self.assertEqual(welcome["inflight"], 4)
        rids = []
        messages = []
        for batch in range(2):
            # Two requests each make the server send us a MSG we do not
            # acknowledge yet: after the first batch, 2 requests and 2 MSGs.
            rids += [client.request(SERVER_ID, b"send:m%d" % (len(rids) + i,), ttl=30000) for i in range(2)]
            for i in range(2):
                message = yield client.receive(lambda m: m.type in (MSG, ERR), what="MSG")
                self.assertEqual(message.type, MSG, message.header)
                messages.append(message)
        rid = client.request(SERVER_ID, b"one too many")
        answer = yield client.answer(rid)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "over-limit"))
        self.assertEqual(answer.header["retry"], 0.05)
        for message in messages:
            client.send(REP, {"id": message.header["id"]})
        for rid in rids:
            answer = yield client.answer(rid)
            self.assertEqual((answer.type, answer.payload), (REP, b"sent"))
        answer = yield client.call(SERVER_ID, b"room again")
        self.assertEqual(answer.payload, b"room again")

    @defer.inlineCallbacks
    def test_sysAndPresenceThroughRelays(self):
        """
        Section 10.7: through the cloud a sys request may name the cloud, a proxy or a server, each answering itself (an application request to a proxy is no-route); each node's sys presence lists a client on three paths in the documented path format.
        """
        cloud, server = yield self.system()
        control = cloud.endpoints["control"]
        client = ForeignClient(self, self.context, control, "c1")
        yield client.connect()
        for to in (CLOUD_ID, PROXY_ID, SERVER_ID):
            answer = yield client.call(to, sys="ping")
            self.assertEqual((answer.type, answer.payload), (REP, b"pong"), to)
        answer = yield client.call(PROXY_ID, sys="stats")
        self.assertEqual(answer.type, REP, answer.header)
        self.assertIn("forward.forwarded", unpack(answer.payload))
        answer = yield client.call(PROXY_ID, b"not an application")
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "no-route"))
        answer = yield client.call(None, sys=b"ping")
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "bad-message"))

        # The same client (id and incarnation) on the proxy's LAN and on
        # the server directly too.
        lan = ForeignClient(self, self.context, self.proxyNode.endpoints["control"], "c1")
        yield lan.connect()
        direct = ForeignClient(self, self.context, server.endpoints["control"], "c1")
        yield direct.connect()
        expected = {
            CLOUD_ID: ["cloud", f"direct@{SERVER_ID}", f"proxy@{PROXY_ID}"],
            PROXY_ID: ["cloud", f"direct@{SERVER_ID}", "proxy"],
            SERVER_ID: ["cloud", "direct", "proxy"],
        }

        @defer.inlineCallbacks
        def listed():
            while True:
                seen = {}
                for to in expected:
                    answer = yield client.call(to, sys="presence")
                    seen[to] = unpack(answer.payload).get("c1")
                if all(seen[to] is not None and seen[to]["paths"] == paths
                       for to, paths in expected.items()):
                    return seen
                yield deferLater(reactor, 0.1, lambda: None)

        seen = yield listed().addTimeout(15, reactor)
        for to, entry in seen.items():
            self.assertEqual((entry["client"], entry["inc"]), ("c1", "9f2c"))
            self.assertIsInstance(entry["since"], float)
            self.assertLess(abs(entry["since"] - time.time()), 60)
        for c in (client, lan, direct):
            c.send(BYE, {"reason": "shutdown"})

    @defer.inlineCallbacks
    def test_helloMaxAndStrangers(self):
        """
        Section 6.1: a HELLO max is honoured (a larger reply is ERR too-large) and a max of 1024 or less counts as absent (the node's own); section 3.1: an answer to a message without a session is written with the node's highest version.
        """
        server = yield self.topology.start("server", "zmqrelay-server", [
            "--id", SERVER_ID, "--listen", LOOPBACK, "--pub", LOOPBACK, "--service", "echo",
        ])
        control = server.endpoints["control"]
        stranger = ForeignClient(self, self.context, control, "stranger")
        stranger.send(BYE, {"reason": "shutdown"})
        rid = stranger.request(None, b"x")
        answer = yield stranger.answer(rid)
        self.assertEqual((answer.type, answer.version, answer.header["code"]), (ERR, 1, "hello-first"))

        small = ForeignClient(self, self.context, control, "small")
        small.hello(max=4096)
        yield small.receive(lambda m: m.type == WELCOME)
        answer = yield small.call(None, b"y" * 3500)
        self.assertEqual((answer.type, answer.header["code"]), (ERR, "too-large"))
        answer = yield small.call(None, b"y" * 2000)
        self.assertEqual((answer.type, answer.payload), (REP, b"y" * 2000))

        tiny = ForeignClient(self, self.context, control, "tiny")
        tiny.hello(max=1000)
        welcome = yield tiny.receive(lambda m: m.type == WELCOME)
        answer = yield tiny.call(None, b"z" * 100000)
        self.assertEqual((answer.type, len(answer.payload)), (REP, 100000))
        self.assertEqual(welcome.header["max"], 4 * 1024 * 1024)

    @defer.inlineCallbacks
    def test_strikesAndFrames(self):
        """
        Section 12: the refusal that crosses the strike limit is answered over-limit with retry = the cooldown, then the client is disconnected (BYE over-limit, connection cut), a HELLO before the cooldown ends gets REJECT over-limit with retry, and one after it is welcomed; section 3.1: 7 frames from a DEALER are read, 8 are bad-message.
        """
        cloud = yield self.cloud(
            "--heartbeat", "2", "--rate", "1", "--burst", "1", "--strikes", "3", "--cooldown", "2",
        )
        client = ForeignClient(self, self.context, cloud.endpoints["control"], "c1")
        yield client.connect()
        client.stopHeartbeat()
        # The HELLO took the only token: every request below is refused.
        rids = [client.request(None, sys="ping") for _ in range(6)]
        answers = []
        for rid in rids[:4]:
            answer = yield client.answer(rid)
            answers.append(answer)
        crossed = reactor.seconds()
        for answer in answers:
            self.assertEqual((answer.type, answer.header["code"]), (ERR, "over-limit"))
        for answer in answers[:3]:
            self.assertLessEqual(answer.header["retry"], 1.0)
        self.assertEqual(answers[3].header["retry"], 2)
        self.assertEqual(answers[3].header["msg"], "ignored for 2 s after repeated refusals")

        bye = yield client.receive(lambda m: m.type == BYE, what="BYE")
        self.assertEqual(bye.header["reason"], "over-limit")
        # Section 6.5: a fresh DEALER and a HELLO; refused until the cooldown ends.
        client.newSocket()
        client.hello()
        reject = yield client.receive(lambda m: m.type in (WELCOME, REJECT), what="REJECT")
        self.assertEqual((reject.type, reject.header["code"]), (REJECT, "over-limit"))
        self.assertTrue(0 < reject.header["retry"] <= 2.0, reject.header)
        yield deferLater(reactor, max(0.0, crossed + 2.2 - reactor.seconds()), lambda: None)
        client.newSocket()
        yield client.connect()
        # The HELLO took the token of the --burst 1 bucket: the next is 1 s away.
        yield deferLater(reactor, 1.1, lambda: None)
        answer = yield client.call(None, sys="ping")
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))

        other = yield self.topology.start("cloud2", "zmqrelay-cloud", [
            "--id", "cloud-frames", "--listen", LOOPBACK, "--pub", LOOPBACK, "--sub", LOOPBACK,
        ])
        framed = ForeignClient(self, self.context, other.endpoints["control"], "c2")
        yield framed.connect()
        for count, expected in ((7, REP), (8, ERR)):
            rid = next(framed.ids)
            framed.sendFrames([signature(), REQ, packHeader({"id": rid, "sys": "ping"}), b""]
                              + [b"extra"] * (count - 4))
            answer = yield framed.answer(rid)
            self.assertEqual(answer.type, expected, (count, answer.header))
        self.assertEqual(answer.header["code"], "bad-message")

    @defer.inlineCallbacks
    def test_connectionWithoutSessionCut(self):
        """
        Section 6.6: a connection that says no HELLO within the handshake timeout is cut by the node; a welcomed, heartbeating one is not.
        """
        cloud = yield self.cloud("--handshake-timeout", "1")
        control = cloud.endpoints["control"]
        welcomed = ForeignClient(self, self.context, control, "c1")
        yield welcomed.connect()
        mute = self.context.socket(zmq.DEALER)
        self.addCleanup(mute.close, 0)
        mute.setsockopt(zmq.LINGER, 0)
        monitor = mute.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.addCleanup(monitor.close, 0)
        mute.connect(control)
        started = reactor.seconds()
        events = []

        def disconnected():
            while True:
                try:
                    events.append(recv_monitor_message(monitor, zmq.NOBLOCK)["event"])
                except zmq.Again:
                    break
            return True if zmq.EVENT_DISCONNECTED in events else None

        yield poll(disconnected, 6.0, "the node cutting a connection without HELLO")
        self.assertIn(zmq.EVENT_HANDSHAKE_SUCCEEDED, events)
        self.assertGreaterEqual(reactor.seconds() - started, 0.9)
        mute.disable_monitor()
        answer = yield welcomed.call(None, sys="ping")
        self.assertEqual((answer.type, answer.payload), (REP, b"pong"))
