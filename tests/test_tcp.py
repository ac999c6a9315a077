"""
Tests for L{zmqrelay.edge.tcp}: what the kernel says of a TCP connection,
and cutting one, over real loopback connections.
"""

import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.edge.tcp import cutConnection, peerAddress, tcpBacklog


class TcpTests(SynchronousTestCase):
    """
    A loopback connection whose receiving end reads nothing unless told.
    """

    def setUp(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        self.reader = socket.socket()
        self.addCleanup(self.reader.close)
        self.reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.reader.connect(listener.getsockname())
        self.writer, _ = listener.accept()
        self.addCleanup(self.writer.close)
        self.writer.setblocking(False)

    def fill(self):
        """
        Write until the kernel takes no more.

        @return: the bytes written.
        """
        written = 0
        try:
            while True:
                written += self.writer.send(b"x" * 65536)
        except BlockingIOError:
            pass
        return written

    def settled(self, written):
        """
        Wait (briefly) until everything written is acknowledged or
        counted as unsent.
        """
        for _ in range(100):
            acked, notsent = tcpBacklog(self.writer.fileno())
            if acked + notsent == written:
                break
            time.sleep(0.01)
        return acked, notsent

    def test_backlog(self):
        """
        C{tcpBacklog} gives what the peer acknowledged and what waits
        unsent: all of it acknowledged once the peer has read it.
        """
        written = self.fill()
        acked, notsent = self.settled(written)
        self.assertEqual(acked + notsent, written)
        self.assertGreater(notsent, 64 * 1024)
        self.reader.setblocking(False)
        got = 0
        deadline = time.monotonic() + 5
        while got < written and time.monotonic() < deadline:
            try:
                got += len(self.reader.recv(1 << 20))
            except BlockingIOError:
                time.sleep(0.001)
        self.assertEqual(got, written)
        self.assertEqual(self.settled(written), (written, 0))

    def test_backlogNotTcp(self):
        """
        A descriptor that is not a TCP socket gives C{None}, and is not
        closed.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertIsNone(tcpBacklog(a.fileno()))
        self.assertIsNone(tcpBacklog(-1))
        a.send(b"still open")
        self.assertEqual(b.recv(100), b"still open")

    def test_cutResets(self):
        """
        A cut with C{reset} drops what the kernel holds: once the owner
        closes the descriptor, the peer sees the connection reset, and
        nothing lingers.
        """
        self.fill()
        address = peerAddress(self.writer.fileno())
        self.assertTrue(cutConnection(self.writer.fileno(), address, reset=True))
        self.writer.close()
        self.reader.settimeout(5)
        with self.assertRaises(ConnectionResetError):
            while self.reader.recv(1 << 20):
                pass

    def test_cutLingers(self):
        """
        A plain cut ends the connection in order: the peer reads what was
        sent, then the end.
        """
        self.writer.send(b"last words")
        address = peerAddress(self.writer.fileno())
        self.assertTrue(cutConnection(self.writer.fileno(), address))
        self.writer.close()
        self.reader.settimeout(5)
        self.assertEqual(self.reader.recv(100), b"last words")
        self.assertEqual(self.reader.recv(100), b"")

    def test_cutOtherPeer(self):
        """
        A descriptor that holds another peer's connection is left alone.
        """
        self.assertFalse(cutConnection(self.writer.fileno(), ("127.0.0.1", 1), reset=True))
        self.writer.send(b"open")
        self.assertEqual(self.reader.recv(100), b"open")

    def test_peerAddress(self):
        """
        C{peerAddress} names the peer, and leaves the descriptor open (it is
        ZeroMQ's); a descriptor that is not a connected socket gives
        C{None}.
        """
        self.assertEqual(peerAddress(self.writer.fileno()), self.reader.getsockname())
        self.writer.send(b"still open")
        self.assertEqual(self.reader.recv(100), b"still open")
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertEqual(peerAddress(a.fileno()), "")
        a.send(b"open too")
        self.assertEqual(b.recv(100), b"open too")
        self.assertIsNone(peerAddress(-1))
        listener = socket.socket()
        self.addCleanup(listener.close)
        self.assertIsNone(peerAddress(listener.fileno()))
