"""
Tests for L{zmqrelay.roles.server.Server.publish}: a publisher that outruns
the hop toward its proxy (or a direct subscriber) learns it, and the drop is
counted; over fake sockets, and over real ones at the high-water mark.
"""

import time

import zmq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import FakeSocketFactory, RecordingHandler
from tests.test_zmq import FakeReactor
from zmqrelay.core import errors, protocol
from zmqrelay.core.config import NodeConfig, SocketOptions
from zmqrelay.edge._zmq import SocketFactory
from zmqrelay.roles.server import Server


class FakePublishTests(SynchronousTestCase):
    """
    Over fake sockets: what publish does when its XPUB refuses a send.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()
        self.server = Server(
            NodeConfig("s1", incarnation="i1"), RecordingHandler(), ("echo",),
            listen=None, pub="inproc://pub", reactor=self.clock, socketFactory=self.factory,
        )
        self.server.startService()
        self.addCleanup(self.server.stopService)
        [self.xpub] = self.factory.ofKind("xpub")
        self.raw = self.xpub.socket
        # A direct subscriber (publish skips the direct XPUB without one).
        self.xpub.receive([b"\x01t"])

    def answers(self, *results):
        results = list(results)
        self.nodrop = []

        def send(frames):
            self.nodrop.append(self.raw.options[zmq.XPUB_NODROP])
            if results.pop(0):
                self.xpub.sent.append(frames)
                return True
            return False

        self.xpub.send = send

    def test_noDropBeforeBind(self):
        """
        The server's XPUB has XPUB_NODROP on, so a full queue fails the send.
        """
        self.assertEqual(self.raw.options[zmq.XPUB_NODROP], 1)

    def test_queued(self):
        """
        A notification every queue has room for returns its sequence number.
        """
        self.answers(True)
        self.assertEqual(self.server.publish(b"t", b"x"), 1)
        self.assertEqual(self.server.counters.get("publish-dropped", 0), 0)

    def test_slowDirectSubscriber(self):
        """
        A notification a direct subscriber's full queue refused is sent
        again dropping for the full ones only (XPUB_NODROP off, then on
        again), counted slow-dropped; publish does not raise.
        """
        self.answers(False, True)
        self.assertEqual(self.server.publish(b"t", b"x"), 1)
        self.assertEqual(self.nodrop, [1, 0])
        self.assertEqual(self.raw.options[zmq.XPUB_NODROP], 1)
        self.assertEqual(len(self.xpub.sent), 1)
        self.assertEqual(self.server.counters["slow-dropped"], 1)

    def test_noDirectSubscriberNoSend(self):
        """
        The direct XPUB is sent to only while direct subscribers hold a
        prefix (ZeroMQ's first subscription and last unsubscription count).
        """
        self.xpub.receive([b"\x01u"])
        self.xpub.receive([b"\x00t"])
        self.server.publish(b"t", b"1")
        self.xpub.receive([b"\x00u"])
        self.server.publish(b"t", b"2")
        self.xpub.receive([b"\x00u"])
        self.server.publish(b"t", b"3")
        self.xpub.receive([b"\x01v"])
        self.server.publish(b"t", b"4")
        self.assertEqual([f[3] for f in self.xpub.sent], [b"1", b"4"])


class FakeSlowDirectSubscriberTests(SynchronousTestCase):
    """
    Over fake sockets: the server watches its direct subscribers' connections
    (its XPUB's monitor) and cuts one it holds more than C{--sub-bytes} for.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()
        self.server = Server(
            NodeConfig("s1", incarnation="i1", subBytes=64 * 1024), RecordingHandler(), ("echo",),
            listen=None, pub="inproc://pub", reactor=self.clock, socketFactory=self.factory,
        )
        self.server.startService()
        self.addCleanup(self.server.stopService)
        [self.xpub] = self.factory.ofKind("xpub")
        self.xpub.receive([b"\x01t"])

    def test_cut(self):
        """
        A direct subscriber that acknowledges nothing while more than the
        limit is published is cut and counted; one that keeps up is not.
        """
        self.xpub.backlogs = {7: (0, 0), 8: (0, 0)}
        self.xpub.onEvent("accepted", 7, ("127.0.0.1", 7))
        self.xpub.onEvent("accepted", 8, ("127.0.0.1", 8))
        for n in range(40):
            self.server.publish(b"t", b"x" * 4096)
            self.xpub.backlogs[7] = (0, 256 * 1024)
            self.xpub.backlogs[8] = (self.xpub.backlogs[8][0] + 4200, 0)
            self.clock.advance(0.1)
        self.assertEqual(self.xpub.cuts, [(7, ("127.0.0.1", 7))])
        self.assertEqual(self.xpub.resets, [True])
        self.assertEqual(self.server.counters["slow-cut"], 1)
        self.assertEqual(len(self.server.slow), 1)
        self.xpub.onEvent("closed", 8, None)
        self.assertEqual(len(self.server.slow), 0)

    def test_off(self):
        """
        C{subBytes} 0 watches nothing.
        """
        server = Server(
            NodeConfig("s2", subBytes=0), RecordingHandler(), ("echo",),
            listen=None, pub="inproc://pub2", reactor=self.clock, socketFactory=self.factory,
        )
        server.startService()
        self.addCleanup(server.stopService)
        self.assertIsNone(server.slow)
        self.assertIsNone(self.factory.ofKind("xpub")[-1].onEvent)

    def test_stop(self):
        """
        Stopping the server stops the watch (no timer left).
        """
        self.server.stopService()
        self.assertIsNone(self.server.slow)
        self.assertEqual(self.clock.getDelayedCalls(), [])


#: What the real slow-subscriber test publishes (1 KiB notifications), and
#: the byte bound it cuts at: a quarter of it, so that the subscriber that
#: reads is not cut for a moment's lag on a loaded machine (1 MiB of
#: notifications is published in a few milliseconds), while the one that
#: never reads passes the bound by far.
PUBLISHED = 4096
SLOW_BYTES = 1024 * 1024


class RealSlowDirectSubscriberTests(SynchronousTestCase):
    """
    Over real TCP connections: a direct subscriber that never reads is cut
    once the server holds more than C{--sub-bytes} for it; one that reads
    gets everything.
    """

    def test_cut(self):
        reactor = FakeReactor()
        factory = SocketFactory(reactor, SocketOptions(hwm=100000))
        self.addCleanup(factory.shutdown)
        server = Server(
            NodeConfig("s1", incarnation="i1", subBytes=SLOW_BYTES, hwm=100000),
            RecordingHandler(), ("echo",),
            listen=None, pub="tcp://127.0.0.1:*", reactor=reactor, socketFactory=factory,
        )
        server.startService()
        self.addCleanup(server.stopService)
        endpoint = server._endpoints["pub"]
        # The subscribers' own context, as other processes would have: in the
        # server's, one I/O thread both writes to them and reads for them,
        # and on a loaded machine the one that reads fell behind enough to be
        # cut as slow itself.
        context = zmq.Context()
        self.addCleanup(context.term)
        subs = []
        for rcvbuf in (-1, 4096):
            sub = zmq.Socket(context, zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 100000 if rcvbuf < 0 else 1)
            sub.setsockopt(zmq.RCVBUF, rcvbuf)
            sub.connect(endpoint)
            sub.setsockopt(zmq.SUBSCRIBE, b"t")
            self.addCleanup(sub.close)
            subs.append(sub)
        fast, slow = subs
        deadline = time.monotonic() + 2
        while (len(server.slow) < 2 or server._directPrefixes < 1) and time.monotonic() < deadline:
            server.xpub.socket.poll(10)
            server.xpub.doRead()
            server.xpub._monitor.doRead()
        self.assertEqual(len(server.slow), 2)
        got = []
        for n in range(PUBLISHED):
            server.publish(b"t", b"x" * 1024)
            if n % 32 == 31:
                while fast.poll(0):
                    got.append(fast.recv_multipart())
                server.slow.check()
        # The watch goes on ticking once publishing stops (as its timer does):
        # on a loaded machine libzmq's I/O thread may still be writing what
        # was published, so the slow subscriber's kernel buffer fills later.
        deadline = time.monotonic() + 5
        while (len(got) < PUBLISHED or not server.counters["slow-cut"]) and time.monotonic() < deadline:
            while fast.poll(10):
                got.append(fast.recv_multipart())
            server.slow.check()
        self.assertEqual([protocol.decodeNotification(f)[1].header["seq"] for f in got],
                         list(range(1, PUBLISHED + 1)))
        self.assertEqual(server.counters["slow-cut"], 1)
        self.assertEqual(server.counters.get("slow-dropped", 0), 0)


class RealPublishTests(SynchronousTestCase):
    """
    Over real sockets: a publisher whose proxy does not read is told so
    once the queue toward it is full, and never before.
    """

    def test_outrunningTheHop(self):
        """
        With a high-water mark of 10 toward a proxy that never reads, the
        first notifications are queued, then each publish raises OverLimit
        (carrying its sequence number, kept in the history), each counted;
        the proxy gets the first ones in order.
        """
        reactor = FakeReactor()
        factory = SocketFactory(reactor, SocketOptions(hwm=10))
        self.addCleanup(factory.shutdown)
        proxy = zmq.Socket(factory.context, zmq.XSUB)
        proxy.setsockopt(zmq.LINGER, 0)
        proxy.setsockopt(zmq.RCVHWM, 10)
        self.addCleanup(proxy.close)
        proxy.bind("inproc://publish-test")
        server = Server(
            NodeConfig("s1", incarnation="i1"), RecordingHandler(), ("echo",),
            listen=None, pub=None, reactor=reactor, socketFactory=factory,
        )
        server.startService()
        self.addCleanup(server.stopService)
        link = FakeLink({"sub": "inproc://publish-test"})
        server.linkUp(link)
        proxy.send(b"\x01t")
        server.upPub.doRead()
        seqs = []
        refused = []
        for n in range(200):
            try:
                seqs.append(server.publish(b"t", b"%d" % n))
            except errors.OverLimit as e:
                refused.append(e.seq)
        self.assertTrue(10 <= len(seqs) <= 40, len(seqs))
        self.assertEqual(seqs + refused, list(range(1, 201)))
        self.assertEqual(server.counters["publish-dropped"], len(refused))
        self.assertEqual(server.history.replay(b"t", refused[0], refused[0]),
                         [(refused[0], b"%d" % (refused[0] - 1))])
        got = [protocol.decodeNotification(proxy.recv_multipart())[1].header["seq"]
               for _ in range(len(seqs))]
        self.assertEqual(got, seqs)


class FakeLink:
    """
    Just enough of an L{zmqrelay.edge.link.UpstreamLink} for linkUp.
    """

    endpoint = "inproc://proxy-control"
    alive = True
    maxSize = 4 * 1024 * 1024
    takesParts = True

    def __init__(self, welcome):
        self.welcome = welcome
        self.sent = []

    def send(self, *message):
        self.sent.append(message)
        return True
