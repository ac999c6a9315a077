"""
Tests for L{zmqrelay.core.paths}: the order of a request's paths and the
primary path per target.
"""

from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.paths import PrimaryPaths, rankPaths
from zmqrelay.core.presence import CLOUD, DIRECT, PresenceView

from tests.fakes import PresenceRecorder


class FakeLink:
    """
    What L{rankPaths} reads of a link.
    """

    def __init__(self, role, nodeId, alive=True, draining=False, services=()):
        self.role = role
        self.nodeId = nodeId
        self.alive = alive
        self.draining = draining
        self.welcome = {"services": list(services)}

    def __repr__(self):
        return f"<FakeLink {self.role} {self.nodeId}>"


class RankPathsTests(SynchronousTestCase):
    """
    L{rankPaths}: direct, then the target's site proxy, then the cloud.
    """

    def setUp(self):
        self.cloud = FakeLink(protocol.CLOUD, "cloud")
        self.proxyA = FakeLink(protocol.PROXY, "proxyA")
        self.proxyB = FakeLink(protocol.PROXY, "proxyB")
        self.a1 = FakeLink(protocol.SERVER, "a1", services=["echo"])
        self.links = [self.cloud, self.proxyB, self.proxyA, self.a1]

    def test_directFirst(self):
        """
        A live direct link to the target comes first, then proxies, then the cloud.
        """
        self.assertEqual(rankPaths(self.links, "a1"), [self.a1, self.proxyB, self.proxyA, self.cloud])

    def test_directByService(self):
        """
        A server offering the service asked for is a direct path for it; one
        that does not is no path at all.
        """
        self.assertEqual(rankPaths(self.links, "echo")[0], self.a1)
        self.assertNotIn(self.a1, rankPaths(self.links, "other"))

    def test_deadDirectFallsBack(self):
        """
        When the direct link is down (heartbeats), the next path leads, and
        when it is back it leads again.
        """
        self.a1.alive = False
        self.assertEqual(rankPaths(self.links, "a1")[0], self.proxyB)
        self.a1.alive = True
        self.assertEqual(rankPaths(self.links, "a1")[0], self.a1)

    def test_siteProxyBeforeCloud(self):
        """
        When the target's site is known, its proxy comes before the cloud and
        a proxy of another site after it.
        """
        self.a1.alive = False
        ranked = rankPaths(self.links, "a1", sites={"a1": "proxyA"})
        self.assertEqual(ranked, [self.proxyA, self.cloud, self.proxyB])

    def test_siteOfBoundServer(self):
        """
        A request bound to a server uses that server's site, whatever its
        target (a service name) is.
        """
        self.a1.alive = False
        ranked = rankPaths(self.links, "echo", server=("a1", "inc"), sites={"a1": "proxyA"})
        self.assertEqual(ranked[:2], [self.proxyA, self.cloud])

    def test_directServersInTurn(self):
        """
        Several servers reached directly that offer the service are taken in
        turn; the proxy and the cloud stay behind them; a request bound to a
        server and a server asked by id are not rotated.
        """
        a = FakeLink(protocol.SERVER, "a", services=["echo"])
        b = FakeLink(protocol.SERVER, "b", services=["echo"])
        c = FakeLink(protocol.SERVER, "c", services=["other"])
        proxy = FakeLink(protocol.PROXY, "p")
        links = [a, b, c, proxy]
        firsts = [rankPaths(links, "echo", turn=t)[0] for t in range(1, 5)]
        self.assertEqual(firsts, [b, a, b, a])
        self.assertEqual(rankPaths(links, "echo", turn=1), [b, a, proxy])
        self.assertEqual(rankPaths(links, "echo", server=("a", "ai"), turn=1)[0], a)
        self.assertEqual(rankPaths(links, "a", turn=1), [a, proxy])
        # A draining one is not taken in turn with the others.
        b.draining = True
        self.assertEqual([rankPaths(links, "echo", turn=t)[0] for t in range(1, 3)], [a, a])

    def test_servicesInTurnAreNoSwitch(self):
        """
        Requests for a service taking its direct servers in turn do not count as path switches.
        """
        primary = PrimaryPaths()
        a = FakeLink(protocol.SERVER, "a", services=["echo"])
        b = FakeLink(protocol.SERVER, "b", services=["echo"])
        for link in (a, b, a, b):
            primary.used("echo", link)
        self.assertEqual(primary.counters["switches"], 0)
        primary.used("echo", FakeLink(protocol.PROXY, "p"))
        self.assertEqual(primary.counters["switches"], 1)

    def test_drainingLast(self):
        """
        A draining node's link comes last, unless the request is bound to it.
        """
        self.a1.draining = True
        self.assertEqual(rankPaths(self.links, "a1")[-1], self.a1)
        self.assertEqual(rankPaths(self.links, "a1", server=("a1", "inc"))[0], self.a1)


class PrimaryPathsTests(SynchronousTestCase):
    """
    L{PrimaryPaths}: switches are counted once, each way.
    """

    def test_switchAndBack(self):
        """
        Moving a target's requests to another path and back counts two
        switches; staying on a path counts none.
        """
        paths = PrimaryPaths()
        direct = FakeLink(protocol.SERVER, "a1")
        cloud = FakeLink(protocol.CLOUD, "cloud")
        self.assertEqual(paths.used("a1", direct), (None, ("server", "a1")))
        self.assertIsNone(paths.used("a1", direct))
        self.assertEqual(paths.used("a1", cloud), (("server", "a1"), ("cloud", "cloud")))
        self.assertIsNone(paths.used("a1", cloud))
        paths.used("a1", direct)
        self.assertEqual(paths.primary("a1"), ("server", "a1"))
        self.assertEqual(paths.counters["switches"], 2)

    def test_bounded(self):
        """
        At most C{limit} targets are remembered, the oldest forgotten first.
        """
        paths = PrimaryPaths(limit=2)
        link = FakeLink(protocol.CLOUD, "cloud")
        for target in ("t1", "t2", "t3"):
            paths.used(target, link)
        self.assertIsNone(paths.primary("t1"))
        self.assertEqual(paths.primary("t3"), ("cloud", "cloud"))


class NoPresenceFlapTests(SynchronousTestCase):
    """
    Why a switch does not flap a server's presence view: the client keeps its
    cloud path up while it uses the direct one.
    """

    def test_directComesAndGoes(self):
        """
        A client connected by the cloud and directly is connected once; its
        direct path going and coming back tells observers nothing.
        """
        view = PresenceView()
        recorder = PresenceRecorder()
        view.addObserver(recorder)
        view.attach("c1", CLOUD, "inc", 1.0)
        view.attach("c1", DIRECT, "inc", 1.0)
        view.detach("c1", DIRECT, "inc", "heartbeat-timeout")
        view.attach("c1", DIRECT, "inc", 5.0)
        self.assertEqual(recorder.events, [("connected", "c1", "inc", CLOUD)])
        self.assertTrue(view.isConnected("c1"))
