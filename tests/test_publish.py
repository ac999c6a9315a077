"""
Tests for L{zmqrelay.roles.server.Server.publish}: a publisher that outruns
the hop toward its proxy (or a direct subscriber) learns it, and the drop is
counted; over fake sockets, and over real ones at the high-water mark.
"""

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

    def __init__(self, welcome):
        self.welcome = welcome
        self.sent = []

    def send(self, *message):
        self.sent.append(message)
        return True
