"""
Tests for L{zmqrelay._zmq}: real ZeroMQ sockets (inproc), a fake reactor.
"""

import zmq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay._zmq import SocketFactory, SocketOptions


class FakeReactor(Clock):
    """
    A Clock that also takes readers, as the adapter registers its sockets.
    """

    def __init__(self):
        Clock.__init__(self)
        self.readers = set()

    def addReader(self, reader):
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)


class AdapterTests(SynchronousTestCase):
    """
    The socket adapter over real inproc sockets.
    """

    def setUp(self):
        self.reactor = FakeReactor()
        self.factory = SocketFactory(
            self.reactor, SocketOptions(hwm=50, maxMessageSize=1000, heartbeat=0.5, readBudget=10)
        )
        self.addCleanup(self.factory.shutdown)
        self.received = []

    def pair(self, kind="router"):
        server = self.factory.socket(kind, self.received.append)
        endpoint = server.bind("inproc://adapter-test")
        peer = zmq.Socket(self.factory.context, zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 0)
        self.addCleanup(peer.close)
        peer.connect(endpoint)
        return server, peer

    def test_socketOptionsApplied(self):
        """
        High-water marks, MAXMSGSIZE, ZMTP heartbeats and ROUTER_MANDATORY are
        set on the socket.
        """
        router, _ = self.pair()
        sock = router.socket
        self.assertEqual(sock.getsockopt(zmq.SNDHWM), 50)
        self.assertEqual(sock.getsockopt(zmq.RCVHWM), 50)
        self.assertEqual(sock.getsockopt(zmq.MAXMSGSIZE), 1000)
        self.assertEqual(sock.getsockopt(zmq.HEARTBEAT_IVL), 500)
        self.assertEqual(sock.getsockopt(zmq.HEARTBEAT_TIMEOUT), 1500)
        self.assertEqual(sock.getsockopt(zmq.LINGER), 0)

    def test_readBudgetYields(self):
        """
        A read takes at most readBudget messages, then schedules itself
        again on the reactor instead of draining the flood in one turn.
        """
        router, peer = self.pair()
        for i in range(25):
            peer.send_multipart([b"m", b"%d" % i])
        router.doRead()
        self.assertEqual(len(self.received), 10)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        # Each later turn is another bounded read (Clock runs the chain of
        # zero-delay calls in one advance).
        self.reactor.advance(0)
        self.assertEqual(len(self.received), 25)
        self.assertEqual([f[1:] for f in self.received[:2]], [[b"m", b"0"], [b"m", b"1"]])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unroutableSendIsFalse(self):
        """
        Sending to a routing id no connection has is a counted False, never
        an exception (ROUTER_MANDATORY).
        """
        router, _ = self.pair()
        self.assertFalse(router.send([b"nobody", b"x"]))
        self.assertEqual(router.dropped, 1)
        self.assertTrue(router.unroutable)

    def test_fullQueueSendIsFalse(self):
        """
        At the high-water mark a send is a counted False, never an exception.
        """
        dealer = self.factory.socket("dealer", self.received.append)
        dealer.connect("inproc://nobody-reads-this")
        sock = zmq.Socket(self.factory.context, zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1)
        self.addCleanup(sock.close)
        sock.bind("inproc://nobody-reads-this")
        results = [dealer.send([b"x" * 10]) for _ in range(500)]
        self.assertIn(False, results)
        self.assertEqual(dealer.dropped, results.count(False))

    def test_closeTwice(self):
        """
        Closing twice is harmless, and the factory shuts down once however
        often asked.
        """
        router, peer = self.pair()
        router.close()
        router.close()
        self.assertFalse(router.send([b"a", b"b"]))
        peer.close()
        self.factory.shutdown()
        self.factory.shutdown()
