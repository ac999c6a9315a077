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
