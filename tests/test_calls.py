"""
Tests for L{zmqrelay.core.calls}: calls in flight, their timers and answers.
"""

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import errors, protocol
from zmqrelay.core.calls import Calls


def _answer(msgtype, header, payload=b""):
    return protocol.Message(protocol.CURRENT_VERSION, msgtype, header, payload)


class CallsTests(SynchronousTestCase):
    """
    L{Calls}: every call's Deferred fires exactly once, and leaves no timer.
    """

    def setUp(self):
        self.clock = Clock()
        self.calls = Calls(self.clock)
        self.peer = object()
        self.other = object()
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_newIds(self):
        """
        Request ids are fresh integers.
        """
        ids = [self.calls.newId() for _ in range(3)]
        self.assertEqual(len(set(ids)), 3)
        self.assertTrue(all(isinstance(i, int) for i in ids))

    def test_reply(self):
        """
        A REP from the peer fires the Deferred with the payload and stops the timer.
        """
        d = self.calls.expect(1, self.peer, 5.0)
        self.assertNoResult(d)
        self.assertEqual(len(self.calls), 1)
        self.assertTrue(self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": 1}, b"ok")))
        self.assertEqual(self.successResultOf(d), b"ok")
        self.assertEqual(len(self.calls), 0)

    def test_typedError(self):
        """
        An ERR becomes the matching RelayError subclass, with message and retry-after.
        """
        d = self.calls.expect(1, self.peer, 5.0)
        self.calls.settle(
            self.peer,
            _answer(protocol.ERROR, {"id": 1, "code": "over-limit", "msg": "slow down", "retry": 1.5}),
        )
        error = self.failureResultOf(d, errors.OverLimit).value
        self.assertEqual(error.message, "slow down")
        self.assertEqual(error.retryAfter, 1.5)

    def test_errorCodes(self):
        """
        Each known code maps to its class; an unknown code keeps its name.
        """
        for code, cls in [
            ("no-route", errors.NoRoute),
            ("target-lost", errors.TargetLost),
            ("handler-error", errors.HandlerError),
            ("version", errors.VersionMismatch),
        ]:
            rid = self.calls.newId()
            d = self.calls.expect(rid, self.peer, 5.0)
            self.calls.settle(self.peer, _answer(protocol.ERROR, {"id": rid, "code": code}))
            self.assertIsNone(self.failureResultOf(d, cls).value.retryAfter)
        rid = self.calls.newId()
        d = self.calls.expect(rid, self.peer, 5.0)
        self.calls.settle(self.peer, _answer(protocol.ERROR, {"id": rid, "code": "brand-new", "retry": "x"}))
        error = self.failureResultOf(d, errors.RelayError).value
        self.assertEqual(error.code, "brand-new")
        self.assertIsNone(error.retryAfter)

    def test_timeout(self):
        """
        No answer within the timeout fails with RequestTimeout and forgets the call.
        """
        d = self.calls.expect(1, self.peer, 2.0)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, errors.RequestTimeout)
        self.assertEqual(len(self.calls), 0)

    def test_lateAnswers(self):
        """
        Answers after a timeout, for unknown ids, or with bad ids are counted as late.
        """
        d = self.calls.expect(1, self.peer, 1.0)
        self.clock.advance(1.0)
        self.failureResultOf(d, errors.RequestTimeout)
        self.assertFalse(self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": 1})))
        self.assertFalse(self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": 77})))
        self.assertFalse(self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": "1"})))
        self.assertFalse(self.calls.settle(self.peer, _answer(protocol.REPLY, {})))
        self.assertEqual(self.calls.late, 4)

    def test_answerFromOtherPeer(self):
        """
        An answer from a peer the call did not go to does not settle it.
        """
        d = self.calls.expect(1, self.peer, 5.0)
        self.assertFalse(self.calls.settle(self.other, _answer(protocol.REPLY, {"id": 1}, b"x")))
        self.assertNoResult(d)
        self.assertEqual(self.calls.late, 1)
        self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": 1}, b"y"))
        self.assertEqual(self.successResultOf(d), b"y")

    def test_cancel(self):
        """
        Cancelling forgets the call and its timer; a later answer is late.
        """
        d = self.calls.expect(1, self.peer, 5.0)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.calls), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": 1})))

    def test_failPeer(self):
        """
        failPeer() fails only the calls that went to that peer.
        """
        mine = [self.calls.expect(i, self.peer, 5.0) for i in (1, 2)]
        theirs = self.calls.expect(3, self.other, 5.0)
        self.calls.failPeer(self.peer, errors.TargetLost("gone"))
        for d in mine:
            self.failureResultOf(d, errors.TargetLost)
        self.assertNoResult(theirs)
        self.assertEqual(len(self.calls), 1)
        self.calls.settle(self.other, _answer(protocol.REPLY, {"id": 3}))
        self.successResultOf(theirs)

    def test_failAll(self):
        """
        failAll() fails every call and leaves no timer.
        """
        ds = [self.calls.expect(i, self.peer if i % 2 else self.other, 5.0) for i in range(4)]
        self.calls.failAll(errors.ShuttingDown("bye"))
        for d in ds:
            self.failureResultOf(d, errors.ShuttingDown)
        self.assertEqual(len(self.calls), 0)

    def test_outstandingAndRoom(self):
        """
        L{Calls.outstanding} counts the calls waiting on each peer, and
        C{onRoom} hears of each one that ends on its own (answered, failed,
        timed out, forgotten, cancelled), not of those L{Calls.failPeer}
        ends all at once.
        """
        room = []
        self.calls.onRoom = room.append
        ds = [self.calls.expect(rid, self.peer, 1.0) for rid in (1, 2, 3, 4, 5)]
        other = self.calls.expect(6, self.other, 1.0)
        self.assertEqual((self.calls.outstanding(self.peer), self.calls.outstanding(self.other)), (5, 1))
        self.calls.settle(self.peer, _answer(protocol.REPLY, {"id": 1}, b"a"))
        self.calls.fail(2, errors.OverLimit("full", 0.05))
        self.calls.forget(3)
        ds[3].cancel()
        self.assertEqual(room, [self.peer] * 4)
        self.assertEqual(self.calls.outstanding(self.peer), 1)
        self.clock.advance(1.0)
        self.assertEqual(room, [self.peer] * 5 + [self.other])
        self.assertEqual((self.calls.outstanding(self.peer), self.calls.outstanding(self.other)), (0, 0))
        self.successResultOf(ds[0])
        self.failureResultOf(ds[1], errors.OverLimit)
        self.failureResultOf(ds[3], CancelledError)
        self.failureResultOf(ds[4], errors.RequestTimeout)
        self.failureResultOf(other, errors.RequestTimeout)
        gone = [self.calls.expect(rid, self.peer, 1.0) for rid in (7, 8)]
        self.calls.failPeer(self.peer, errors.TargetLost("gone"))
        self.assertEqual(self.calls.outstanding(self.peer), 0)
        self.assertEqual(len(room), 6)
        for d in gone:
            self.failureResultOf(d, errors.TargetLost)
