"""
Tests for L{zmqrelay.core.discovery} (DNS-SD records and their ageing) and
for a client that uses what DNS-SD found, with a fake browser.
"""

import zmq
from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.discovery import (
    CHANGED,
    REMOVED,
    SILENT,
    BadRecord,
    DiscoveredNodes,
    parseRecord,
    txtRecord,
)
from zmqrelay.edge.discovery import hostOf, instanceName, portOf
from zmqrelay.roles.client import Client

from tests.fakes import welcomeFrames
from tests.test_roles import RoleTestCase

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
OTHER_KEY = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"


def props(**record):
    """
    @return: a TXT record as python-zeroconf gives it (bytes to bytes).
    """
    return {k.encode(): v.encode() for k, v in record.items()}


def changed(record, **values):
    """
    @return: C{record} with C{values} (bytes) in place of its own.
    """
    record = dict(record)
    record.update({k.encode(): v for k, v in values.items()})
    return record


def serverRecord(nodeId="a1", site="proxyA", control=5575, key=None, versions=(1,)):
    return props(**txtRecord(nodeId, "server", site, versions, control, 5576, key))


class Observer:
    """
    Records what a L{DiscoveredNodes} tells its observer.
    """

    def __init__(self):
        self.events = []

    def nodeFound(self, announcement):
        self.events.append(("found", announcement.nodeId, announcement.endpoint()))

    def nodeLost(self, announcement, reason):
        self.events.append(("lost", announcement.nodeId, reason))


class ParseRecordTests(SynchronousTestCase):
    """
    L{parseRecord}: what a record must say to be used.
    """

    def test_server(self):
        """
        A server's record gives its id, role, site, versions, ports and
        control endpoint at its IPv4 address.
        """
        a = parseRecord("a1._zmqrelay._tcp.local.", serverRecord(key=KEY), ["fe80::1", "10.0.0.2"])
        self.assertEqual(
            (a.nodeId, a.role, a.site, a.versions, a.control, a.pub, a.key),
            ("a1", "server", "proxyA", (1,), 5575, 5576, KEY),
        )
        self.assertEqual(a.endpoint(), "tcp://10.0.0.2:5575")

    def assertBad(self, kind, properties, addresses=("10.0.0.2",)):
        e = self.assertRaises(BadRecord, parseRecord, "x", properties, list(addresses))
        self.assertEqual(e.kind, kind)

    def test_foreign(self):
        """
        Records with no or another C{txtvers}, or a role that does not
        announce itself, are foreign.
        """
        self.assertBad("foreign", {b"path": b"/"})
        self.assertBad("foreign", changed(serverRecord(), txtvers=b"2"))
        self.assertBad("foreign", changed(serverRecord(), role=b"cloud"))
        self.assertBad("foreign", {})

    def test_malformed(self):
        """
        Our records with a wrong value are malformed: a bad port, key or
        versions, no id, a proxy naming another site, no usable address.
        """
        self.assertBad("malformed", changed(serverRecord(), ctl=b"70000"))
        self.assertBad("malformed", changed(serverRecord(), ctl=b"x"))
        self.assertBad("malformed", changed(serverRecord(), key=b"short"))
        self.assertBad("malformed", changed(serverRecord(), v=b"1,x"))
        self.assertBad("malformed", changed(serverRecord(), v=b"0"))
        self.assertBad("malformed", changed(serverRecord(), id=b""))
        self.assertBad("malformed", changed(serverRecord(), id=b"\xff"))
        self.assertBad("malformed", {k: v for k, v in serverRecord().items() if k != b"ctl"})
        self.assertBad("malformed", props(**txtRecord("p1", "proxy", "other", (1,), 5565)))
        self.assertBad("malformed", serverRecord(), addresses=["224.0.0.251", "nonsense"])
        self.assertBad("malformed", "not a dict")


class DiscoveredNodesTests(SynchronousTestCase):
    """
    L{DiscoveredNodes}: found, changed, gone, ignored, aged out.
    """

    def setUp(self):
        self.clock = Clock()
        self.observer = Observer()
        self.table = DiscoveredNodes(self.clock, self.observer, (1,), maxAge=10.0, ownId="me")

    def test_foundOnce(self):
        """
        A node is found once however often its record is seen unchanged.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.assertEqual(self.observer.events, [("found", "a1", "tcp://10.0.0.2:5575")])
        self.assertEqual(self.table.sites(), {"a1": "proxyA"})
        self.assertEqual(self.table.byId("a1").control, 5575)

    def test_changed(self):
        """
        A changed record loses the old node and finds the new one.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.table.seen("a1", serverRecord(control=6000), ["10.0.0.2"])
        self.assertEqual(self.observer.events[1:], [
            ("lost", "a1", CHANGED), ("found", "a1", "tcp://10.0.0.2:6000"),
        ])

    def test_siteLearnt(self):
        """
        A record whose site alone changed (the server's proxy welcomed it)
        is updated in place: no loss, no find.
        """
        self.table.seen("a1", serverRecord(site=""), ["10.0.0.2"])
        self.table.seen("a1", serverRecord(site="proxyA"), ["10.0.0.2"])
        self.assertEqual(len(self.observer.events), 1)
        self.assertEqual(self.table.sites(), {"a1": "proxyA"})

    def test_sameIdOtherName(self):
        """
        A node announced under a new instance name (it restarted) replaces
        its old record.
        """
        self.table.seen("a1-old", serverRecord(), ["10.0.0.2"])
        self.table.seen("a1-new", serverRecord(control=6000), ["10.0.0.3"])
        self.assertEqual(self.observer.events[1:], [
            ("lost", "a1", CHANGED), ("found", "a1", "tcp://10.0.0.3:6000"),
        ])
        self.assertEqual(len(self.table), 1)

    def test_gone(self):
        """
        A record DNS-SD removes loses its node; a name never seen is ignored.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.table.gone("a1")
        self.table.gone("nobody")
        self.assertEqual(self.observer.events[1:], [("lost", "a1", REMOVED)])
        self.assertEqual(self.table.nodes(), [])

    def test_ignoredAndCounted(self):
        """
        Foreign, malformed, own and version-less records find nothing and
        are counted by kind; a node whose record turns bad is lost.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.table.seen("x", {b"foo": b"bar"}, ["10.0.0.9"])
        self.table.seen("y", changed(serverRecord(nodeId="b1"), ctl=b"0"), ["10.0.0.9"])
        self.table.seen("z", serverRecord(nodeId="c1", versions=(7,)), ["10.0.0.9"])
        self.table.seen("me", serverRecord(nodeId="me"), ["10.0.0.9"])
        self.table.seen("a1", changed(serverRecord(), ctl=b"-1"), ["10.0.0.2"])
        self.assertEqual(self.observer.events, [
            ("found", "a1", "tcp://10.0.0.2:5575"), ("lost", "a1", CHANGED),
        ])
        counters = self.table.counters
        self.assertEqual(
            (counters["foreign"], counters["malformed"], counters["no-common-version"], counters["records"]),
            (1, 2, 1, 6),
        )

    def test_curveTrustedOnly(self):
        """
        With CURVE, only nodes announcing a trusted key are used; without
        CURVE, nodes announcing a key are not (a plain dial would fail).
        """
        table = DiscoveredNodes(self.clock, self.observer, (1,), trustedKeys={KEY})
        table.seen("a1", serverRecord(key=KEY), ["10.0.0.2"])
        table.seen("b1", serverRecord(nodeId="b1", key=OTHER_KEY), ["10.0.0.3"])
        table.seen("c1", serverRecord(nodeId="c1"), ["10.0.0.4"])
        self.assertEqual([e[1] for e in self.observer.events], ["a1"])
        self.assertEqual(table.counters["untrusted"], 2)
        self.table.seen("a1", serverRecord(key=KEY), ["10.0.0.2"])
        self.assertEqual(self.table.counters["needs-curve"], 1)

    def test_silentAgesOut(self):
        """
        A node whose link never comes up is lost after C{maxAge}, then
        offered again after C{maxAge} more.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.clock.advance(9.9)
        self.table.sweep()
        self.assertEqual(len(self.observer.events), 1)
        self.clock.advance(0.1)
        self.table.sweep()
        self.assertEqual(self.observer.events[1:], [("lost", "a1", SILENT)])
        self.assertEqual(self.table.nodes(), [])
        self.clock.advance(10)
        self.table.sweep()
        self.assertEqual(self.observer.events[2:], [("found", "a1", "tcp://10.0.0.2:5575")])

    def test_answeringKeepsIt(self):
        """
        A node that answers is kept however long; one that stops answering
        is lost C{maxAge} after it stopped.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.table.answering("a1", True)
        self.clock.advance(100)
        self.table.sweep()
        self.assertEqual(len(self.observer.events), 1)
        self.table.answering("a1", False)
        self.clock.advance(5)
        self.table.answering("a1", False)
        self.clock.advance(5)
        self.table.sweep()
        self.assertEqual(self.observer.events[1:], [("lost", "a1", SILENT)])

    def test_briefOutageKeepsIt(self):
        """
        A link down for less than C{maxAge} (the direct path broke and came
        back) keeps the node: its link reconnects by itself.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.table.answering("a1", True)
        self.table.answering("a1", False)
        self.clock.advance(9)
        self.table.sweep()
        self.table.answering("a1", True)
        self.clock.advance(20)
        self.table.sweep()
        self.assertEqual(len(self.observer.events), 1)

    def test_reannouncedAfterSilence(self):
        """
        A node lost for silence is found again at once if DNS-SD announces
        it again.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.clock.advance(10)
        self.table.sweep()
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.assertEqual([e[0] for e in self.observer.events], ["found", "lost", "found"])


class EdgeHelpersTests(SynchronousTestCase):
    """
    The helpers of L{zmqrelay.edge.discovery} that need no network.
    """

    def test_ports(self):
        """
        The port and host of a bound endpoint; a wildcard host is none.
        """
        self.assertEqual(portOf("tcp://0.0.0.0:5575"), 5575)
        self.assertIsNone(portOf("inproc://x"))
        self.assertIsNone(hostOf("tcp://0.0.0.0:5575"))
        self.assertEqual(hostOf("tcp://10.0.0.2:5575"), "10.0.0.2")

    def test_instanceName(self):
        """
        Instance names have no dots and fit a DNS label.
        """
        name = instanceName("a.b" * 40, "0123456789abcdef")
        instance = name[: -len("._zmqrelay._tcp.local.")]
        self.assertNotIn(".", instance)
        self.assertLessEqual(len(instance.encode()), 63)


class FakeBrowser(Service):
    """
    Stands for the DNS-SD browser: the test feeds the table itself.
    """

    def __init__(self, reactor, table, interfaces):
        self.table = table
        self.interfaces = interfaces


class DiscoveringClientTests(RoleTestCase):
    """
    A client with C{discover=True} and a cloud path: it uses a server DNS-SD
    found directly, falls back to the cloud while that path is dead, and
    comes back.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.browsers = []

        def browser(reactor, table, interfaces):
            b = FakeBrowser(reactor, table, interfaces)
            self.browsers.append(b)
            return b

        self.client = Client(
            self.config("c1", requestTimeout=5.0, attempts=3, heartbeat=1.0, liveness=3),
            cloud="inproc://cloud", reactor=self.clock, socketFactory=self.factory,
            discover=True, discoverInterfaces=["10.0.0.5"], browserFactory=browser,
        )
        self.start(self.client)
        [self.cloud] = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))
        [self.browser] = self.browsers
        self.table = self.browser.table

    def find(self, nodeId="a1"):
        self.table.seen(nodeId, serverRecord(nodeId), ["10.0.0.2"])
        link = self.dealers()[-1]
        self.assertEqual(link.connected, ["tcp://10.0.0.2:5575"])
        link.receive(welcomeFrames(nodeId, role="server", incarnation=nodeId + "-inc"))
        return link

    def beat(self, seconds, *links):
        """
        Let C{seconds} pass, the nodes behind C{links} answering heartbeats.
        """
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)
            for link in links:
                link.receive(protocol.encode(protocol.HEARTBEAT, {}))

    def test_interfaces(self):
        """
        The browser is given the interfaces to use.
        """
        self.assertEqual(self.browser.interfaces, ("10.0.0.5",))

    def test_direct(self):
        """
        A server DNS-SD found is dialled, and requests for it go direct.
        """
        direct = self.find()
        d = self.client.request("a1", b"q")
        [req] = direct.ofType(protocol.REQUEST)
        self.assertEqual(self.cloud.ofType(protocol.REQUEST), [])
        direct.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")
        self.assertEqual(self.client.primary.primary("a1"), ("server", "a1"))

    def test_switchAndBack(self):
        """
        When the direct link dies (no heartbeats), requests go by the cloud;
        a request in flight on it is retried there under the same id; when
        it is back, requests go direct again.
        """
        direct = self.find()
        d = self.client.request("a1", b"q")
        [req] = direct.ofType(protocol.REQUEST)
        # The direct path goes silent; the cloud keeps answering.
        self.beat(4.0, self.cloud)
        self.assertFalse(self.client.links[-1].alive)
        # Every attempt after the first (the budget is split over attempts)
        # went by the cloud, under the same id, naming the server.
        retries = self.cloud.ofType(protocol.REQUEST)
        self.assertTrue(retries)
        for retry in retries:
            self.assertEqual(retry.header["id"], req.header["id"])
            self.assertEqual(retry.header.get("server"), "a1")
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": req.header["id"]}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")

        d2 = self.client.request("a1", b"q2")
        self.assertEqual(len(self.cloud.ofType(protocol.REQUEST)), len(retries) + 1)
        self.cloud.receive(protocol.encode(
            protocol.REPLY, {"id": self.cloud.ofType(protocol.REQUEST)[-1].header["id"]}, b"b"))
        self.assertEqual(self.successResultOf(d2), b"b")
        self.assertEqual(self.client.primary.primary("a1"), ("cloud", "cloud"))

        # The link reconnects by itself (a new socket) and is welcomed.
        self.beat(2.0, self.cloud)
        again = self.dealers()[-1]
        self.assertIsNot(again, direct)
        again.receive(welcomeFrames("a1", role="server", incarnation="a1-inc"))
        d3 = self.client.request("a1", b"q3")
        [req3] = again.ofType(protocol.REQUEST)
        again.receive(protocol.encode(protocol.REPLY, {"id": req3.header["id"]}, b"c"))
        self.assertEqual(self.successResultOf(d3), b"c")
        self.assertEqual(self.client.primary.counters["switches"], 2)
        # Down for less than the age limit: the node was never dropped.
        self.assertEqual(len(self.table), 1)

    def test_lostClosesLink(self):
        """
        A node DNS-SD says is gone has its link closed, and its requests in
        flight move to the cloud.
        """
        direct = self.find()
        d = self.client.request("a1", b"q")
        self.table.gone("a1")
        self.assertTrue(direct.closed)
        self.assertEqual(len(self.client.links), 1)
        self.clock.advance(0.1)
        [retry] = self.cloud.ofType(protocol.REQUEST)
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": retry.header["id"]}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")

    def test_silentNodeDropped(self):
        """
        A node that never answers is dropped after the age limit.
        """
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        self.assertEqual(len(self.client.links), 2)
        self.clock.advance(self.client.discoverAge)
        self.table.sweep()
        self.assertEqual(len(self.client.links), 1)
        # Cleanup wants no pending timer: stop the probe cycle here.
        self.successResultOf(self.client.stopService())

    def test_siteProxy(self):
        """
        A site proxy DNS-SD found is a path too, preferred to the cloud for
        the servers of its site.
        """
        self.table.seen("pA", props(**txtRecord("proxyA", "proxy", "proxyA", (1,), 5565, 5566)), ["10.0.0.1"])
        proxy = self.dealers()[-1]
        proxy.receive(welcomeFrames("proxyA", role="proxy"))
        self.table.seen("a1", serverRecord(), ["10.0.0.2"])
        # a1's direct link is not up yet: its site proxy takes the request.
        self.client.request("a1", b"q").addErrback(lambda f: None)
        self.assertEqual(len(proxy.ofType(protocol.REQUEST)), 1)
        self.assertEqual(self.cloud.ofType(protocol.REQUEST), [])

    def test_explicitNotDuplicated(self):
        """
        A discovered node the client already dials by an explicit endpoint
        gets no second link.
        """
        self.successResultOf(self.client.stopService())
        client = Client(
            self.config("c2"), cloud="inproc://cloud2", servers=["tcp://10.0.0.2:5575"],
            reactor=self.clock, socketFactory=self.factory, discover=True,
            browserFactory=FakeBrowser,
        )
        self.start(client)
        client.discovered.seen("a1", serverRecord(), ["10.0.0.2"])
        self.assertEqual(len(client.links), 2)


class AnnouncerStopTests(SynchronousTestCase):
    """
    An L{Announcer} stopped while its first announcement runs in a thread.
    """

    def test_stopWhileFirstPublishRuns(self):
        """
        The Zeroconf instance the running publish makes is closed (a goodbye sent) once that
        publish ends: a stopped node does not go on announcing itself.
        """
        from twisted.internet.defer import Deferred

        from zmqrelay.edge.discovery import Announcer

        made = []

        class FakeZeroconf:
            closed = False

            def __init__(self):
                self.registered = []

            def register_service(self, info, allow_name_change=False):
                self.registered.append(info)

            def unregister_all_services(self):
                self.registered = []

            def close(self):
                self.closed = True

        def makeZeroconf(interfaces):
            made.append(FakeZeroconf())
            return made[-1]

        clock = Clock()
        jobs = []

        def inThread(f, *args, **kw):
            jobs.append((f, args, kw, Deferred()))
            return jobs[-1][3]

        announcer = Announcer(clock, "s1", "inc123456789", lambda: {"role": "server"}, lambda: 5575,
                              interfaces=["127.0.0.1"], zeroconf=makeZeroconf)
        announcer._inThread = inThread
        announcer.startService()
        clock.advance(0)
        [(publish, args, kw, published)] = jobs
        stopped = announcer.stopService()
        # The thread goes on: it makes the instance and registers, then ends.
        publish(*args, **kw)
        self.assertEqual(len(made[0].registered), 1)
        published.callback(None)
        [_, (close, args, kw, closed)] = jobs
        close(*args, **kw)
        closed.callback(None)
        self.successResultOf(stopped)
        self.assertTrue(made[0].closed)
        self.assertEqual(made[0].registered, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class AnnouncementTests(SynchronousTestCase):
    """
    What a node announces (L{zmqrelay.edge.discovery.announcerFor}): the key only if it binds with
    CURVE, and only the address it is bound to when it is bound to one.
    """

    class _Node:
        role = "proxy"
        nodeId = "proxyA"
        incarnation = "inc1234567"

        def __init__(self, curve, control="tcp://10.1.2.3:5565"):
            self.reactor = Clock()
            self.config = type("Config", (), {"curve": curve, "versions": (1,)})()
            self._control = control

        def endpoints(self):
            return {"control": self._control, "pub": "tcp://10.1.2.3:5566"}

    def test_keyOnlyWhenBindingWithCurve(self):
        """
        A node that only dials with CURVE (its upstream hop secured, its own sockets plain) announces
        no key: a client that saw one would dial it with CURVE and fail.
        """
        from zmqrelay.edge.discovery import announcerFor
        from zmqrelay.edge.security import CurveConfig, KeyRegistry

        public, secret = zmq.curve_keypair()
        dialsOnly = CurveConfig(public.decode(), secret.decode(), registry=None)
        binds = CurveConfig(public.decode(), secret.decode(), registry=KeyRegistry())
        self.assertNotIn("key", announcerFor(self._Node(dialsOnly)).describe())
        self.assertEqual(announcerFor(self._Node(binds)).describe()["key"], public.decode())

    def test_boundAddressAnnounced(self):
        """
        Bound to one address, the node announces that address only; bound to every interface, the
        addresses of the chosen interfaces.
        """
        from zmqrelay.edge.discovery import announcerFor

        self.assertEqual(announcerFor(self._Node(None), ["10.9.9.9"])._addresses(), ["10.1.2.3"])
        anywhere = self._Node(None, control="tcp://0.0.0.0:5565")
        self.assertEqual(announcerFor(anywhere, ["10.9.9.9"])._addresses(), ["10.9.9.9"])
