"""
Tests for L{zmqrelay.core.presence}: merged per-client presence.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from zmqrelay.core import presence
from zmqrelay.interfaces import IPresenceObserver, IPresenceView
from zmqrelay.core.presence import PresenceLog, PresenceView, replicaChanges
from zmqrelay.core.replica import MapReplica, MapSource

from tests.fakes import PresenceRecorder


class _Broken:
    """
    An observer that fails on every event.
    """

    def clientConnected(self, event):
        raise RuntimeError("observer bug")

    clientDisconnected = clientConnected


class PresenceViewTests(SynchronousTestCase):
    """
    L{PresenceView} reports real transitions only.
    """

    def setUp(self):
        self.view = PresenceView()
        self.recorder = PresenceRecorder()
        self.view.addObserver(self.recorder)

    def test_interface(self):
        """
        PresenceView provides IPresenceView; the recorder IPresenceObserver.
        """
        verifyObject(IPresenceView, self.view)
        verifyObject(IPresenceObserver, self.recorder)
        verifyObject(IPresenceObserver, PresenceLog())

    def test_connectOnceOnTwoPaths(self):
        """
        A client attached on two paths is connected once, with both paths recorded.
        """
        self.view.attach("c1", presence.DIRECT, "i1", 1.0)
        self.view.attach("c1", presence.CLOUD, "i1", 2.0)
        self.assertEqual(self.recorder.events, [("connected", "c1", "i1", "direct")])
        self.assertTrue(self.view.isConnected("c1"))
        record = self.view.get("c1")
        self.assertEqual(sorted(record.paths), ["cloud", "direct"])
        self.assertEqual(record.since, 1.0)
        self.assertEqual(
            record.asDict(),
            {"client": "c1", "inc": "i1", "since": 1.0, "paths": ["cloud", "direct"]},
        )
        self.assertEqual(list(self.view.connectedClients()), ["c1"])

    def test_disconnectWhenLastPathGoes(self):
        """
        Losing one of two paths says nothing; losing the last says disconnected.
        """
        self.view.attach("c1", presence.DIRECT, "i1", 1.0)
        self.view.attach("c1", presence.CLOUD, "i1", 2.0)
        self.view.detach("c1", presence.DIRECT, "i1", "heartbeat-timeout")
        self.assertEqual(len(self.recorder.events), 1)
        self.assertTrue(self.view.isConnected("c1"))
        self.view.detach("c1", presence.CLOUD, "i1", "bye")
        self.assertEqual(
            self.recorder.events[1:], [("disconnected", "c1", "i1", "cloud", "bye")]
        )
        self.assertFalse(self.view.isConnected("c1"))
        self.assertIsNone(self.view.get("c1"))

    def test_detachUnknownPath(self):
        """
        Detaching a path the client was not on, or an unknown client, changes nothing.
        """
        self.view.attach("c1", presence.DIRECT, "i1", 1.0)
        self.view.detach("c1", presence.CLOUD, "i1", "bye")
        self.view.detach("nobody", presence.CLOUD, "i1", "bye")
        self.assertTrue(self.view.isConnected("c1"))
        self.assertEqual(len(self.recorder.events), 1)

    def test_newIncarnationReplaces(self):
        """
        A new incarnation disconnects the old one ('replaced') then connects.
        """
        self.view.attach("c1", presence.DIRECT, "old", 1.0)
        self.view.attach("c1", presence.CLOUD, "old", 1.5)
        self.view.attach("c1", presence.CLOUD, "new", 2.0)
        self.assertEqual(
            self.recorder.events,
            [
                ("connected", "c1", "old", "direct"),
                ("disconnected", "c1", "old", "cloud", "replaced"),
                ("connected", "c1", "new", "cloud"),
            ],
        )
        record = self.view.get("c1")
        self.assertEqual(record.incarnation, "new")
        self.assertEqual(list(record.paths), ["cloud"])
        self.assertEqual(record.since, 2.0)

    def test_staleUpdatesIgnored(self):
        """
        Late attach or detach for a retired incarnation change nothing.
        """
        self.view.attach("c1", presence.DIRECT, "old", 1.0)
        self.view.attach("c1", presence.CLOUD, "new", 2.0)
        del self.recorder.events[:]
        self.view.detach("c1", presence.DIRECT, "old", "heartbeat-timeout")
        self.view.attach("c1", presence.DIRECT, "old", 3.0)
        self.assertEqual(self.recorder.events, [])
        self.assertEqual(self.view.get("c1").incarnation, "new")
        self.assertEqual(list(self.view.get("c1").paths), ["cloud"])

    def test_newIncarnationOnOtherPathThenOld(self):
        """
        After a replacement, the old incarnation's late path removal is ignored.
        """
        self.view.attach("c1", presence.CLOUD, "old", 1.0)
        self.view.attach("c1", presence.DIRECT, "new", 2.0)
        self.view.detach("c1", presence.CLOUD, "old", "heartbeat-timeout")
        self.assertTrue(self.view.isConnected("c1"))
        self.view.detach("c1", presence.DIRECT, "new", "bye")
        self.assertEqual(self.recorder.events[-1], ("disconnected", "c1", "new", "direct", "bye"))
        self.assertFalse(self.view.isConnected("c1"))

    def test_lateDetachOfTheReplacedIncarnation(self):
        """
        A late detach of a replaced incarnation, on the path the new one now
        holds, leaves the new one connected there.
        """
        self.view.attach("c1", presence.CLOUD, "old", 1.0)
        self.view.attach("c1", presence.CLOUD, "new", 2.0)
        del self.recorder.events[:]
        self.view.detach("c1", presence.CLOUD, "old", "heartbeat-timeout")
        self.assertEqual(self.recorder.events, [])
        self.assertTrue(self.view.isConnected("c1"))
        self.assertEqual(self.view.get("c1").paths, {presence.CLOUD: ("new", 2.0)})

    def test_detachOfAnotherIncarnation(self):
        """
        Detaching a path for an incarnation the client does not have (never
        seen, not retired) changes nothing.
        """
        self.view.attach("c1", presence.DIRECT, "i1", 1.0)
        self.view.detach("c1", presence.DIRECT, "i0", "bye")
        self.assertTrue(self.view.isConnected("c1"))
        self.assertEqual(list(self.view.get("c1").paths), [presence.DIRECT])
        self.assertEqual(len(self.recorder.events), 1)

    def test_detachPath(self):
        """
        detachPath() removes one path from every client, disconnecting those left with none.
        """
        self.view.attach("c1", presence.CLOUD, "i1", 1.0)
        self.view.attach("c2", presence.CLOUD, "i2", 1.0)
        self.view.attach("c2", presence.DIRECT, "i2", 1.0)
        self.view.detachPath(presence.CLOUD, presence.UPSTREAM_LOST)
        self.assertFalse(self.view.isConnected("c1"))
        self.assertTrue(self.view.isConnected("c2"))
        self.assertEqual(
            self.recorder.events[-1], ("disconnected", "c1", "i1", "cloud", "upstream-lost")
        )

    def test_observerErrorsIsolated(self):
        """
        A failing observer is logged and does not stop the others.
        """
        view = PresenceView()
        later = PresenceRecorder()
        view.addObserver(_Broken())
        view.addObserver(later)
        view.attach("c1", presence.DIRECT, "i1", 1.0)
        view.detach("c1", presence.DIRECT, "i1", "bye")
        self.assertEqual([e[0] for e in later.events], ["connected", "disconnected"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_removeObserver(self):
        """
        A removed observer hears nothing more.
        """
        self.view.removeObserver(self.recorder)
        self.view.attach("c1", presence.DIRECT, "i1", 1.0)
        self.assertEqual(self.recorder.events, [])


class ReplicaChangesTests(SynchronousTestCase):
    """
    L{replicaChanges} turns replicated presence into attach and detach steps.
    """

    def setUp(self):
        self.source = MapSource("presence")
        self.replica = MapReplica("presence")

    def test_addAndRemove(self):
        """
        An added entry is an attach, a removed one a detach with its reason.
        """
        self.replica.apply(*self.source.snapshot())
        steps = list(replicaChanges(self.replica.apply(*self.source.set(("c1", "cloud"), ["i1", 5.0]))))
        self.assertEqual(steps, [("attach", "c1", "cloud", "i1", 5.0)])
        steps = list(replicaChanges(self.replica.apply(*self.source.delete(("c1", "cloud"), "bye"))))
        self.assertEqual(steps, [("detach", "c1", "cloud", "i1", "bye")])

    def test_noFlapOnResync(self):
        """
        A resync that keeps a client's incarnation (even with a new since) yields no step.
        """
        self.source.set(("c1", "cloud"), ["i1", 5.0])
        self.replica.apply(*self.source.snapshot())
        restarted = MapSource("presence")
        restarted.set(("c1", "cloud"), ["i1", 7.0])
        changes = self.replica.apply(*restarted.snapshot())
        self.assertEqual(len(changes), 1)
        self.assertEqual(list(replicaChanges(changes)), [])

    def test_newIncarnationOnResync(self):
        """
        A resync with a new incarnation detaches the old, then attaches the new.
        """
        self.source.set(("c1", "cloud"), ["i1", 5.0])
        self.replica.apply(*self.source.snapshot())
        restarted = MapSource("presence")
        restarted.set(("c1", "cloud"), ["i2", 9.0])
        steps = list(replicaChanges(self.replica.apply(*restarted.snapshot())))
        self.assertEqual(
            steps,
            [("detach", "c1", "cloud", "i1", "resync"), ("attach", "c1", "cloud", "i2", 9.0)],
        )

    def test_clearDetaches(self):
        """
        Clearing the replica detaches everyone with the reason given.
        """
        self.source.set(("c1", "cloud"), ["i1", 5.0])
        self.replica.apply(*self.source.snapshot())
        steps = list(replicaChanges(self.replica.clear(presence.UPSTREAM_LOST)))
        self.assertEqual(steps, [("detach", "c1", "cloud", "i1", "upstream-lost")])

    def test_emptyReasonIsResync(self):
        """
        A removal without a reason is reported as 'resync'.
        """
        steps = list(replicaChanges([(("c1", "cloud"), ["i1", 1.0], None, "")]))
        self.assertEqual(steps, [("detach", "c1", "cloud", "i1", "resync")])

    def test_validatesEntries(self):
        """
        Malformed keys or values raise ValueError.
        """
        good = ["i1", 1.0]
        for change in (
            ("c1", None, good, ""),
            (("c1",), None, good, ""),
            (("c1", 2), None, good, ""),
            (("c1", "cloud", "x"), None, good, ""),
            (("c1", "cloud"), None, "i1", ""),
            (("c1", "cloud"), None, ["i1"], ""),
            (("c1", "cloud"), None, [1, 1.0], ""),
            (("c1", "cloud"), None, ["i1", "soon"], ""),
            (("c1", "cloud"), ["i1", None], None, "bye"),
        ):
            self.assertRaises(ValueError, list, replicaChanges([change]))

    def test_feedsView(self):
        """
        Steps applied to a view give one connection for a client on two replicated paths.
        """
        view = PresenceView()
        recorder = PresenceRecorder()
        view.addObserver(recorder)
        self.source.set(("c1", "cloud"), ["i1", 1.0])
        self.source.set(("c1", "proxy"), ["i1", 1.0])
        for step, clientId, path, inc, extra in replicaChanges(
            self.replica.apply(*self.source.snapshot())
        ):
            self.assertEqual(step, "attach")
            view.attach(clientId, path, inc, extra)
        self.assertEqual(len(recorder.events), 1)


class _MoveRecorder(PresenceRecorder):
    """
    Records moves too.
    """

    def clientMoved(self, event):
        self.events.append(("moved", event.clientId, event.incarnation, event.path, event.reason))


class MoveGraceTests(SynchronousTestCase):
    """
    A view with a C{moveGrace} reports a client that moves between clouds
    as moved, never disconnected (issue 10).
    """

    def setUp(self):
        self.clock = Clock()
        self.view = PresenceView(self.clock, moveGrace=3.0)
        self.recorder = _MoveRecorder()
        self.view.addObserver(self.recorder)
        self.view.attach("c1", "cloud@A", "i1", 1.0)
        self.recorder.events.clear()
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_movedWithinGrace(self):
        """
        Lost on one cloud and seen on another within the grace: a move, no disconnection.
        """
        self.view.detach("c1", "cloud@A", "i1", presence.UPSTREAM_LOST)
        self.clock.advance(2.0)
        self.assertTrue(self.view.isConnected("c1"))
        self.view.attach("c1", "cloud@B", "i1", 4.0)
        self.clock.advance(10.0)
        self.assertEqual(self.recorder.events, [("moved", "c1", "i1", "cloud@B", presence.UPSTREAM_LOST)])
        self.assertEqual(sorted(self.view.get("c1").paths), ["cloud@B"])
        self.assertEqual(self.view.counters["moved"], 1)

    def test_overlapIsNoEvent(self):
        """
        Seen on the second cloud before it is lost on the first: no event at all.
        """
        self.view.attach("c1", "cloud@B", "i1", 4.0)
        self.view.detach("c1", "cloud@A", "i1", presence.HEARTBEAT_TIMEOUT)
        self.clock.advance(10.0)
        self.assertEqual(self.recorder.events, [])

    def test_goneAfterGrace(self):
        """
        Not seen again within the grace: disconnected then, with the lost path and reason.
        """
        self.view.detach("c1", "cloud@A", "i1", presence.UPSTREAM_LOST)
        self.clock.advance(2.9)
        self.assertEqual(self.recorder.events, [])
        self.clock.advance(0.2)
        self.assertEqual(
            self.recorder.events, [("disconnected", "c1", "i1", "cloud@A", presence.UPSTREAM_LOST)]
        )
        self.assertFalse(self.view.isConnected("c1"))

    def test_byeIsAtOnce(self):
        """
        A goodbye is a real disconnection: reported at once, no grace.
        """
        self.view.detach("c1", "cloud@A", "i1", presence.BYE)
        self.assertEqual(self.recorder.events, [("disconnected", "c1", "i1", "cloud@A", presence.BYE)])

    def test_newIncarnationDuringGrace(self):
        """
        A new incarnation within the grace replaces the old one: no move, no late event.
        """
        self.view.detach("c1", "cloud@A", "i1", presence.UPSTREAM_LOST)
        self.view.attach("c1", "cloud@B", "i2", 5.0)
        self.clock.advance(10.0)
        self.assertEqual(self.recorder.events, [
            ("disconnected", "c1", "i1", "cloud@B", presence.REPLACED),
            ("connected", "c1", "i2", "cloud@B"),
        ])

    def test_newerWins(self):
        """
        An older incarnation reported after a newer one (by since) is ignored.
        """
        self.view.attach("c1", "cloud@B", "i2", 5.0)
        self.recorder.events.clear()
        self.view.attach("c1", "cloud@A", "i1", 1.0)
        self.assertEqual(self.recorder.events, [])
        self.assertEqual(self.view.get("c1").incarnation, "i2")

    def test_stopReportsAtOnce(self):
        """
        Stopping the view reports clients within their grace and leaves no timer.
        """
        self.view.detach("c1", "cloud@A", "i1", presence.UPSTREAM_LOST)
        self.view.stop()
        self.assertEqual(
            self.recorder.events, [("disconnected", "c1", "i1", "cloud@A", presence.UPSTREAM_LOST)]
        )

    def test_observerWithoutMoved(self):
        """
        An observer without clientMoved is skipped for moves, not failed.
        """
        plain = PresenceRecorder()
        self.view.addObserver(plain)
        self.view.detach("c1", "cloud@A", "i1", presence.UPSTREAM_LOST)
        self.view.attach("c1", "cloud@B", "i1", 4.0)
        self.assertEqual(plain.events, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_needsClock(self):
        """
        A grace without a clock is refused.
        """
        self.assertRaises(ValueError, PresenceView, None, 3.0)


class PresenceLogRateTests(SynchronousTestCase):
    """
    The presence log, given a clock, logs at a bounded rate.
    """

    def test_boundedAndSummarised(self):
        """
        Past its burst it counts events instead of logging them, and says
        how many it left out in the next line it logs.
        """
        from twisted.logger import Logger, LogLevel

        events = []
        logger = Logger(observer=events.append)
        clock = Clock()
        presenceLog = PresenceLog(logger, clock=clock, rate=1.0, burst=3.0)
        event = presence.PresenceEvent("c1", "inc", True, presence.CLOUD)
        for _ in range(10):
            presenceLog.clientConnected(event)
        self.assertEqual(len(events), 3)
        self.assertEqual(presenceLog.unlogged, 7)
        clock.advance(1.0)
        presenceLog.clientDisconnected(event)
        self.assertEqual(len(events), 4)
        self.assertEqual(events[-1]["unlogged"], 7)
        self.assertEqual(events[-1]["log_level"], LogLevel.info)
        self.assertEqual(presenceLog.unlogged, 0)

    def test_noClockLogsAll(self):
        """
        Without a clock every event is logged (as before).
        """
        self.assertIsNone(PresenceLog().clock)
