"""
Tests for BATCH (PROTOCOL.md 3.3): several messages for one peer in one
ZeroMQ message, in L{zmqrelay.core.protocol}, L{zmqrelay.edge.front},
L{zmqrelay.edge.link} and L{zmqrelay.roles.forwarder}.
"""

import msgpack
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.config import NodeConfig
from zmqrelay.edge.front import Front
from zmqrelay.edge.link import UpstreamLink
from zmqrelay.roles.forwarder import Forwarder

from tests.fakes import FakeSocketFactory, FrontOwner, LinkOwner, helloFrames, welcomeFrames


def unbatch(frames):
    """
    @return: the messages of sent C{frames} (a BATCH's items, or the one
        message), without a routing frame.
    """
    message = protocol.decode(frames)
    if message.type == protocol.BATCH:
        return protocol.decodeBatch(message, 10 ** 6)
    return [message]


class CodecTests(SynchronousTestCase):
    """
    encodeBatch and decodeBatch.
    """

    def test_roundTrip(self):
        """
        Items come back in order, as Messages with the batch's version.
        """
        items = [(protocol.REQUEST, {"id": 1, "to": "s"}, b"a"), (protocol.REPLY, {"id": 2}, b"")]
        frames = protocol.encodeBatch(items)
        self.assertEqual(frames[:2], [b"ZRLY\x01", protocol.BATCH])
        self.assertEqual(msgpack.unpackb(frames[2]), {"n": 2})
        messages = protocol.decodeBatch(protocol.decode(frames), 2)
        self.assertEqual(
            [(m.version, m.type, m.header, m.payload) for m in messages],
            [(1, protocol.REQUEST, {"id": 1, "to": "s"}, b"a"), (1, protocol.REPLY, {"id": 2}, b"")],
        )

    def test_malformed(self):
        """
        A payload that is not a list of [bin, map, bin] items of batchable
        types, or has too many, is bad-message.
        """
        pack = msgpack.Packer(use_bin_type=True).pack
        for payload in [
            b"\xc1", pack({"a": 1}), pack([[b"REQ", {}]]), pack([[b"REQ", [], b""]]),
            pack([["REQ", {}, b""]]), pack([[b"REQ", {}, "text"]]), pack([[b"HELLO", {}, b""]]),
            pack([[b"BATCH", {}, b""]]), pack([[b"REQ", {}, b""]] * 3),
        ]:
            message = protocol.Message(1, protocol.BATCH, {"n": 1}, payload)
            error = self.assertRaises(protocol.ProtocolError, protocol.decodeBatch, message, 2)
            self.assertEqual(error.code, protocol.E_BAD_MESSAGE)

    def test_batches(self):
        """
        Groups keep the order, hold at most C{most} items and C{room} bytes
        (payload + allowance each), and a payload of BATCH_LARGE or more
        goes alone.
        """
        def item(n, size=0):
            return (protocol.REPLY, {"id": n}, b"x" * size)

        allowance = protocol.BATCH_ITEM_ALLOWANCE
        items = [item(0), item(1), item(2), item(3, protocol.BATCH_LARGE), item(4), item(5, 1000),
                 item(6, 1000), item(7)]
        groups = list(protocol.batches(items, 2, 2 * allowance + 1500))
        self.assertEqual([[i[1]["id"] for i in g] for g in groups],
                         [[0, 1], [2], [3], [4, 5], [6, 7]])
        self.assertEqual(list(protocol.batches([], 2, 100)), [])

    def test_batchLimit(self):
        """
        A peer takes batches only if it announced an int batch of 2 or more.
        """
        for value, expected in [(None, 0), (1, 0), (True, 0), ("8", 0), (2, 2), (64, 64)]:
            self.assertEqual(protocol.batchLimit({"batch": value}), expected)


class FrontBatchTests(SynchronousTestCase):
    """
    A Front's outbox toward peers that take batches, and batches it reads.
    """

    def setUp(self):
        self.clock = Clock()
        self.config = NodeConfig("front-node", incarnation="front-inc", batch=4)
        self.owner = FrontOwner()
        self.factory = FakeSocketFactory()
        self.front = Front(self.owner, self.config, self.clock, self.factory, "tcp://127.0.0.1:*")
        self.front.start()
        self.socket = self.factory.sockets[0]
        self.addCleanup(self.stopFront)

    def stopFront(self):
        self.front.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def session(self, routingId=b"p1", nodeId="p1", role=protocol.PROXY, batch=8):
        extra = {"batch": batch} if batch else {}
        self.socket.receive([routingId] + helloFrames(nodeId, role=role, **extra))
        session = self.front.sessions[routingId]
        self.socket.clear()
        return session

    def sent(self, routingId=b"p1"):
        return [f[1:] for f in self.socket.sent if f[0] == routingId]

    def test_welcomeAnnounces(self):
        """
        WELCOME says batch to every peer (relays, servers, clients).
        """
        self.socket.receive([b"p1"] + helloFrames("p1", role=protocol.PROXY))
        self.socket.receive([b"c1"] + helloFrames("c1", role=protocol.CLIENT))
        welcomes = {r: m.header for r, m in self.socket.ofType(protocol.WELCOME, routed=True)}
        self.assertEqual((welcomes[b"p1"]["batch"], welcomes[b"c1"]["batch"]), (4, 4))

    def test_oneTurnOneBatch(self):
        """
        What is sent to a peer that takes batches in one reactor turn leaves
        at the end of it as one BATCH, in order; a lone message goes plain.
        """
        session = self.session()
        self.assertTrue(self.front.sendTo(session, protocol.REPLY, {"id": 1}, b"a"))
        self.assertTrue(self.front.sendTo(session, protocol.ERROR, {"id": 2, "code": "x"}))
        self.assertEqual(self.socket.sent, [])
        self.clock.advance(0)
        [frames] = self.sent()
        self.assertEqual(frames[1], protocol.BATCH)
        self.assertEqual([(m.type, m.header["id"]) for m in unbatch(frames)],
                         [(protocol.REPLY, 1), (protocol.ERROR, 2)])
        self.assertEqual(self.front.counters["batched-out"], 2)
        self.assertEqual(self.front.errors, {"x": 1})
        self.front.sendTo(session, protocol.REPLY, {"id": 3}, b"c")
        self.clock.advance(0)
        self.assertEqual(self.sent()[-1][:2], [b"ZRLY\x01", protocol.REPLY])

    def test_peersWithoutBatchGetPlainMessages(self):
        """
        A peer that announced no batch gets each message at once, alone.
        """
        session = self.session(batch=None)
        self.front.sendTo(session, protocol.REPLY, {"id": 1}, b"a")
        self.front.sendTo(session, protocol.REPLY, {"id": 2}, b"b")
        self.assertEqual([f[1] for f in self.sent()], [protocol.REPLY, protocol.REPLY])
        self.assertIsNone(self.front._flushTimer)

    def test_splitByCountAndSize(self):
        """
        A batch holds at most the peer's batch, and stays within its max.
        """
        session = self.session(batch=3)
        for rid in range(7):
            self.front.sendTo(session, protocol.REPLY, {"id": rid}, b"")
        big = b"x" * (session.maxSize - protocol.HEADROOM - 100)
        self.front.sendTo(session, protocol.REPLY, {"id": 7}, big)
        self.front.sendTo(session, protocol.REPLY, {"id": 8}, b"")
        self.clock.advance(0)
        shapes = [[m.header["id"] for m in unbatch(f)] for f in self.sent()]
        self.assertEqual(shapes, [[0, 1, 2], [3, 4, 5], [6], [7], [8]])

    def test_orderKeptBeforeUnbatched(self):
        """
        What waits in the outbox goes out before a WELCOME (never batched).
        """
        session = self.session()
        self.front.sendTo(session, protocol.REPLY, {"id": 1})
        self.front.sendTo(session, protocol.REPLY, {"id": 2})
        self.front.sendTo(session, protocol.WELCOME, {"id": "again"})
        types = [f[1] for f in self.sent()]
        self.assertEqual(types, [protocol.BATCH, protocol.WELCOME])
        self.clock.advance(0)
        self.assertEqual(len(self.sent()), 2)

    def test_failedBatchUndelivered(self):
        """
        A batch the socket refuses is reported message by message to the
        owner's undelivered().
        """
        session = self.session()
        self.front.sendTo(session, protocol.REQUEST, {"id": 10}, b"a")
        self.front.sendTo(session, protocol.REQUEST, {"id": 11}, b"b")
        self.socket.sendResult = False
        self.clock.advance(0)
        self.assertEqual([(s, t, h["id"]) for s, t, h in self.owner.undeliveredMessages],
                         [(session, protocol.REQUEST, 10), (session, protocol.REQUEST, 11)])
        self.assertEqual(self.front.counters["undelivered"], 2)

    def test_stopFlushes(self):
        """
        Stopping sends what waits, with the BYE.
        """
        session = self.session()
        self.front.sendTo(session, protocol.REPLY, {"id": 1})
        self.front.stop()
        [frames] = self.sent()
        self.assertEqual([m.type for m in unbatch(frames)], [protocol.REPLY, protocol.BYE])

    def test_batchReadInOrder(self):
        """
        A BATCH from a relay reaches the owner as its messages, in order.
        """
        session = self.session(b"s1", "s1", role=protocol.SERVER)
        items = [(protocol.REPLY, {"id": 1}, b"a"), (protocol.HEARTBEAT, {}, b""),
                 (protocol.REPLY, {"id": 2}, b"b")]
        self.socket.receive([b"s1"] + protocol.encodeBatch(items))
        self.assertEqual([(s, m.type, m.header["id"]) for s, m in self.owner.received],
                         [(session, protocol.REPLY, 1), (session, protocol.REPLY, 2)])
        self.assertEqual(self.front.counters["batched-in"], 3)

    def test_byeInBatchEndsIt(self):
        """
        Nothing after a BYE in a batch is read.
        """
        self.session(b"s1", "s1", role=protocol.SERVER)
        items = [(protocol.BYE, {"reason": "shutdown"}, b""), (protocol.REPLY, {"id": 1}, b"")]
        self.socket.receive([b"s1"] + protocol.encodeBatch(items))
        self.assertEqual(self.owner.received, [])
        self.assertNotIn(b"s1", self.front.sessions)

    def test_clientBatchCountsEveryMessage(self):
        """
        A client's BATCH counts against its rate limit once, and once more
        for each of its messages: those over the limit are refused one by
        one (ERR over-limit with their id), the others go on.
        """
        self.front.stop()
        self.factory = FakeSocketFactory()
        self.owner = FrontOwner()
        config = NodeConfig("front-node", incarnation="front-inc", batch=8, rate=1, burst=4,
                            strikes=50)
        self.front = Front(self.owner, config, self.clock, self.factory, "tcp://127.0.0.1:*")
        self.front.start()
        self.socket = self.factory.sockets[0]
        session = self.session(b"c1", "c1", role=protocol.CLIENT)
        items = [(protocol.REQUEST, {"id": rid, "to": "s"}, b"") for rid in range(1, 6)]
        self.socket.receive([b"c1"] + protocol.encodeBatch(items))
        # The hello took one token and the batch one: two requests fit.
        self.assertEqual([m.header["id"] for s, m in self.owner.received], [1, 2])
        self.clock.advance(0)
        refused = [m.header["id"] for f in self.sent(b"c1") for m in unbatch(f)
                   if m.type == protocol.ERROR and m.header["code"] == protocol.E_OVER_LIMIT]
        self.assertEqual(refused, [3, 4, 5])
        self.assertTrue(session.alive)

    def test_clientBatchStruckOut(self):
        """
        A refusal inside a batch that crosses the strike limit ends the
        session (BYE over-limit); nothing after it is read.
        """
        self.front.stop()
        self.factory = FakeSocketFactory()
        self.owner = FrontOwner()
        config = NodeConfig("front-node", incarnation="front-inc", batch=8, rate=1, burst=3,
                            strikes=1)
        self.front = Front(self.owner, config, self.clock, self.factory, "tcp://127.0.0.1:*")
        self.front.start()
        self.socket = self.factory.sockets[0]
        self.session(b"c1", "c1", role=protocol.CLIENT)
        items = [(protocol.REQUEST, {"id": rid, "to": "s"}, b"") for rid in range(1, 6)]
        self.socket.receive([b"c1"] + protocol.encodeBatch(items))
        self.assertEqual([m.header["id"] for s, m in self.owner.received], [1])
        self.assertNotIn(b"c1", self.front.sessions)
        self.clock.advance(0)
        types = [m.type for f in self.sent(b"c1") for m in unbatch(f)]
        self.assertEqual(types[-1], protocol.BYE)

    def test_strangerBatchHelloFirst(self):
        """
        A BATCH without a session is answered hello-first.
        """
        self.socket.receive([b"x1"] + protocol.encodeBatch([(protocol.REQUEST, {"id": 1}, b"")] * 2))
        [error] = [m for r, m in self.socket.ofType(protocol.ERROR, routed=True) if r == b"x1"]
        self.assertEqual(error.header["code"], protocol.E_HELLO_FIRST)


class LinkBatchTests(SynchronousTestCase):
    """
    An UpstreamLink toward an upstream that takes batches.
    """

    def setUp(self):
        self.clock = Clock()
        self.config = NodeConfig("me", incarnation="my-inc", batch=4)
        self.owner = LinkOwner(role=protocol.PROXY)
        self.factory = FakeSocketFactory()
        self.link = UpstreamLink(self.owner, self.config, self.clock, self.factory, "inproc://up")
        self.addCleanup(self.stopLink)

    def stopLink(self):
        self.link.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def connect(self, **welcome):
        self.link.start()
        socket = self.factory.sockets[-1]
        socket.receive(welcomeFrames(**welcome))
        socket.clear()
        return socket

    def test_helloAnnounces(self):
        """
        HELLO says how many messages we take in one BATCH.
        """
        self.link.start()
        [hello] = self.factory.sockets[-1].messages()
        self.assertEqual(hello.header["batch"], 4)

    def test_batchedUpstream(self):
        """
        Messages of one turn go up as one BATCH if the WELCOME said batch.
        """
        socket = self.connect(batch=16)
        self.link.send(protocol.REPLY, {"id": 1}, b"a")
        self.link.send(protocol.REPLY, {"id": 2}, b"b")
        self.assertEqual(socket.sent, [])
        self.clock.advance(0)
        [frames] = socket.sent
        self.assertEqual([m.header["id"] for m in unbatch(frames)], [1, 2])

    def test_plainWithoutBatch(self):
        """
        An upstream that said no batch gets each message at once.
        """
        socket = self.connect()
        self.link.send(protocol.REPLY, {"id": 1}, b"a")
        self.assertEqual(len(socket.sent), 1)

    def test_failedBatchUndelivered(self):
        """
        A refused batch is reported message by message to the owner.
        """
        socket = self.connect(batch=16)
        self.link.send(protocol.MESSAGE, {"id": 5}, b"a")
        self.link.send(protocol.MESSAGE, {"id": 6}, b"b")
        socket.sendResult = False
        self.clock.advance(0)
        self.assertEqual([h["id"] for _, _, h in self.owner.undeliveredMessages], [5, 6])

    def test_lostSessionDropsOutbox(self):
        """
        What waits when the session ends is dropped (the owner fails what it
        forwarded there as the link goes down), and no timer is left.
        """
        socket = self.connect(batch=16)
        self.link.send(protocol.REPLY, {"id": 1}, b"a")
        self.link.send(protocol.REPLY, {"id": 2}, b"b")
        socket.receive(protocol.encode(protocol.BYE, {"reason": "shutdown"}))
        self.assertEqual(socket.sent, [])
        self.assertEqual(self.link.counters["undelivered"], 2)
        self.assertEqual([d[1] for d in self.owner.downs], ["bye"])

    def test_batchRead(self):
        """
        A BATCH from upstream reaches the owner as its messages, in order.
        """
        socket = self.connect()
        items = [(protocol.REQUEST, {"id": 1}, b"a"), (protocol.REQUEST, {"id": 2}, b"b")]
        socket.receive(protocol.encodeBatch(items))
        self.assertEqual([m.header["id"] for _, m in self.owner.received], [1, 2])
        self.assertEqual(self.link.counters["batched-in"], 2)

    def test_batchOverOurLimit(self):
        """
        A BATCH of more than we announced is malformed: counted, not read.
        """
        socket = self.connect()
        socket.receive(protocol.encodeBatch([(protocol.REQUEST, {"id": 1}, b"")] * 5))
        self.assertEqual(self.owner.received, [])
        self.assertEqual(self.link.counters["malformed"], 1)


class ForwarderUndeliveredTests(SynchronousTestCase):
    """
    Forwarder.undelivered: a forwarded request that went in a refused batch.
    """

    class Peer:
        def __init__(self, nodeId, role):
            self.nodeId = nodeId
            self.role = role
            self.maxSize = 1 << 20
            self.gone = False
            self.sent = []

        def send(self, msgtype, header, payload=b""):
            self.sent.append((msgtype, header, payload))
            return True

    def test_originAnswered(self):
        """
        The origin gets ERR over-limit (queue full) or no-route (target
        gone); the window slot and in-flight entry are freed.
        """
        clock = Clock()
        forwarder = Forwarder(clock, NodeConfig("relay", incarnation="r"))
        client = self.Peer("c1", protocol.CLIENT)
        server = self.Peer("s1", protocol.SERVER)
        for gone, code in [(False, protocol.E_OVER_LIMIT), (True, protocol.E_NO_ROUTE)]:
            server.gone = gone
            message = protocol.Message(1, protocol.REQUEST, {"id": 7, "to": "s1", "ttl": 1000}, b"x")
            forwarder.forward(client, message, server)
            msgtype, header, _ = server.sent[-1]
            forwarder.undelivered(server, msgtype, header)
            error = client.sent[-1]
            self.assertEqual((error[0], error[1]["id"], error[1]["code"]), (protocol.ERROR, 7, code))
            self.assertEqual(len(forwarder.inflight), 0)
            self.assertEqual(forwarder._outstanding, {})
        forwarder.undelivered(server, protocol.REPLY, {"id": 1})
        self.assertEqual(len(client.sent), 2)
