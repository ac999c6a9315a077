"""
Tests for L{zmqrelay.interfaces}: the internal interfaces (front and link
owners, sockets and their factory) are provided by the real parts and by
the fakes the unit tests use in their place, so a fake cannot drift from
what it stands in for.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from zmqrelay.roles.client import Client
from zmqrelay.roles.cloud import Cloud
from zmqrelay.core.config import NodeConfig
from zmqrelay.interfaces import IFrontOwner, ILinkOwner, ISocket, ISocketFactory
from zmqrelay.roles.proxy import Proxy
from zmqrelay.roles.server import Server

from tests.fakes import FakeSocketFactory, FrontOwner, LinkOwner, RecordingHandler

ANY = "tcp://127.0.0.1:*"


class OwnerTests(SynchronousTestCase):
    """
    Every role that owns a front or a link provides its owner interface, and
    so do the test owners.
    """

    def setUp(self):
        self.clock = Clock()
        self.factory = FakeSocketFactory()

    def role(self, cls, nodeId, *args, **kw):
        return cls(NodeConfig(nodeId), *args, reactor=self.clock, socketFactory=self.factory, **kw)

    def test_frontOwners(self):
        """
        The cloud, a proxy and a server provide IFrontOwner; so does the fake owner.
        """
        for owner in (
            self.role(Cloud, "cloud", ANY, ANY, ANY),
            self.role(Proxy, "proxy1", ANY, ANY, ANY, "inproc://cloud"),
            self.role(Server, "s1", RecordingHandler(), ("echo",), listen=ANY),
            FrontOwner(),
        ):
            self.assertTrue(verifyObject(IFrontOwner, owner))

    def test_linkOwners(self):
        """
        A proxy, a server and a client provide ILinkOwner; so does the fake owner.
        """
        for owner in (
            self.role(Proxy, "proxy1", ANY, ANY, ANY, "inproc://cloud"),
            self.role(Server, "s1", RecordingHandler(), ("echo",), proxy="inproc://proxy"),
            self.role(Client, "c1", cloud="inproc://cloud"),
            LinkOwner(),
        ):
            self.assertTrue(verifyObject(ILinkOwner, owner))


class FakeSocketTests(SynchronousTestCase):
    """
    The fake socket factory and its sockets provide the socket interfaces.
    """

    def test_factory(self):
        """
        FakeSocketFactory provides ISocketFactory.
        """
        self.assertTrue(verifyObject(ISocketFactory, FakeSocketFactory()))

    def test_sockets(self):
        """
        Every kind of fake socket provides ISocket, and remembers whether User-Ids were asked for.
        """
        factory = FakeSocketFactory()
        for kind in ("router", "dealer", "xpub", "xsub", "sub"):
            sock = factory.socket(kind, lambda frames: None, None, userIds=kind == "router")
            self.assertTrue(verifyObject(ISocket, sock))
            self.assertEqual(sock.userIds, kind == "router")


class RealSocketTests(SynchronousTestCase):
    """
    The ZeroMQ adapter's factory and sockets provide the socket interfaces.
    """

    def test_classes(self):
        """
        SocketFactory and ZmqSocket declare and implement ISocketFactory and ISocket.
        """
        from zmqrelay.edge._zmq import SocketFactory, ZmqSocket

        self.assertTrue(verifyClass(ISocketFactory, SocketFactory))
        self.assertTrue(verifyClass(ISocket, ZmqSocket))

    def test_objects(self):
        """
        A real factory, and a real socket of each kind it makes, provide the interfaces.
        """
        from zmqrelay.edge._zmq import SocketFactory

        from tests.test_zmq import FakeReactor

        factory = SocketFactory(FakeReactor())
        self.addCleanup(factory.shutdown)
        self.assertTrue(verifyObject(ISocketFactory, factory))
        for kind in ("router", "dealer", "xpub", "xsub", "sub"):
            sock = factory.socket(kind, lambda frames: None)
            self.addCleanup(sock.close)
            self.assertTrue(verifyObject(ISocket, sock))
