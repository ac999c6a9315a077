"""
Tests for L{zmqrelay.roles.client}: how a request's attempts move between paths.

The client role's everyday behaviour is tested in L{tests.test_roles}; here,
the request and its attempts when more than one path is up.
"""

from twisted.internet.defer import CancelledError

from zmqrelay.core import errors, protocol
from zmqrelay.roles.client import Client

from tests.fakes import welcomeFrames
from tests.test_roles import RoleTestCase


class AttemptsOnTwoPathsTests(RoleTestCase):
    """
    A client attached through a proxy and the cloud.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(
            self.config("c1", requestTimeout=0.5, attempts=3),
            cloud="inproc://cloud", proxy="inproc://proxy",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.start(self.client)
        self.cloud, self.proxy = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))
        self.proxy.receive(welcomeFrames("proxy1", role="proxy"))

    def moveToTheCloud(self):
        """
        Send a request, which goes by the proxy; the proxy says no-route, so
        it goes on by the cloud.

        @return: the request's Deferred and the id both attempts used.
        """
        d = self.client.request("echo", b"q")
        [first] = self.proxy.ofType(protocol.REQUEST)
        rid = first.header["id"]
        self.proxy.receive(protocol.encode(
            protocol.ERROR, {"id": rid, "code": protocol.E_NO_ROUTE, "msg": "not here"}))
        self.clock.advance(0)
        [second] = self.cloud.ofType(protocol.REQUEST)
        self.assertEqual(second.header["id"], rid)
        return d, rid

    def test_replyFromAnEarlierPath(self):
        """
        A reply that comes by a path the request has left still answers it,
        and the attempt waiting on the other path is forgotten.
        """
        d, rid = self.moveToTheCloud()
        self.proxy.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")
        self.assertEqual(len(self.client.calls), 0)
        # The cloud's answer, when it comes, is late.
        late = self.client.calls.late
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"again"))
        self.assertEqual(self.client.calls.late, late + 1)

    def test_errorFromAnEarlierPath(self):
        """
        An error that comes by a path the request has left does not settle
        it: the attempt on the other path goes on.
        """
        d, rid = self.moveToTheCloud()
        self.proxy.receive(protocol.encode(
            protocol.ERROR, {"id": rid, "code": protocol.E_TARGET_LOST, "msg": "gone"}))
        self.assertNoResult(d)
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a"))
        self.assertEqual(self.successResultOf(d), b"a")

    def test_requestForgottenHoweverItEnds(self):
        """
        A request the client tracks is forgotten once it is answered, fails,
        or is cancelled.
        """
        answered, rid = self.moveToTheCloud()
        self.cloud.receive(protocol.encode(protocol.REPLY, {"id": rid}, b"a"))
        self.successResultOf(answered)
        refused = self.client.request("x" * 10, b"q" * (8 * 1024 * 1024))
        self.failureResultOf(refused, errors.TooLarge)
        cancelled = self.client.request("echo", b"q")
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertEqual(self.client._attempts, {})
        self.assertEqual(len(self.client.calls), 0)


class DuplicateMessageTests(RoleTestCase):
    """
    A directed message (MSG) that comes twice, through two cloud nodes,
    after the first died with it in flight (PROTOCOL.md 21.4), is
    acknowledged each time and handed to the application once.
    """

    def setUp(self):
        RoleTestCase.setUp(self)
        self.client = Client(
            self.config("c1"), cloud="inproc://cloud", proxy="inproc://proxy",
            reactor=self.clock, socketFactory=self.factory,
        )
        self.got = []
        self.client.messageHandler = lambda sender, payload: self.got.append((sender, payload))
        self.start(self.client)
        self.cloud, self.proxy = self.dealers()
        self.cloud.receive(welcomeFrames("cloud", role="cloud"))
        self.proxy.receive(welcomeFrames("proxy1", role="proxy"))

    def message(self, link, rid, payload, **fields):
        header = {"id": rid, "to": "c1", "from": "s1"}
        header.update(fields)
        link.receive(protocol.encode(protocol.MESSAGE, header, payload))

    def acks(self, link):
        return [m.header["id"] for m in link.ofType(protocol.REPLY)]

    def test_onceToTheApplication(self):
        """
        The same C{from} and C{mid} twice (each hop's C{id} differs): two
        acknowledgements, one delivery, one duplicate counted.
        """
        self.message(self.cloud, 7, b"hello", mid="inc1/3")
        self.message(self.proxy, 90, b"hello", mid="inc1/3")
        self.assertEqual(self.got, [("s1", b"hello")])
        self.assertEqual(self.acks(self.cloud), [7])
        self.assertEqual(self.acks(self.proxy), [90])
        self.assertEqual(self.client.counters["duplicate-messages"], 1)
        self.assertEqual(self.client.counters["messages"], 1)

    def test_otherServerOrIncarnation(self):
        """
        Another server, or another incarnation of the same one, with the
        same number is another message.
        """
        self.message(self.cloud, 1, b"a", mid="inc1/3")
        self.message(self.cloud, 2, b"b", mid="inc2/3")
        self.message(self.cloud, 3, b"c", mid="inc1/3", **{"from": "s2"})
        self.assertEqual([p for _, p in self.got], [b"a", b"b", b"c"])

    def test_withoutMid(self):
        """
        A MSG without C{mid} (a server of an older release) is handed on
        every time it comes, as before.
        """
        self.message(self.cloud, 1, b"a")
        self.message(self.cloud, 2, b"a")
        self.assertEqual(len(self.got), 2)

    def test_badMid(self):
        """
        A C{mid} that is not a string is refused (ERR bad-message) and not
        handed on.
        """
        self.message(self.cloud, 4, b"a", mid=12)
        self.assertEqual(self.got, [])
        [err] = self.cloud.ofType(protocol.ERROR)
        self.assertEqual((err.header["id"], err.header["code"]), (4, protocol.E_BAD_MESSAGE))

    def test_memoryBounded(self):
        """
        Only the last C{MESSAGE_MEMORY} are remembered; an overlong C{mid}
        is never remembered.
        """
        from zmqrelay.roles import client as clientModule

        self.patch(clientModule, "MESSAGE_MEMORY", 3)
        for n in range(5):
            self.message(self.cloud, n, b"x", mid=f"i/{n}")
        self.assertEqual(len(self.client._messages), 3)
        self.message(self.cloud, 10, b"x", mid="i/0")
        self.assertEqual(len(self.got), 6)
        long = "i/" + "9" * 300
        self.message(self.cloud, 11, b"y", mid=long)
        self.message(self.cloud, 12, b"y", mid=long)
        self.assertEqual(len(self.got), 8)
