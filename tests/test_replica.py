"""
Tests for L{zmqrelay.core.replica}: replicated maps by snapshot plus deltas.
"""

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.replica import (
    DELTA,
    MARK,
    SNAPSHOT,
    MapReplica,
    MapSource,
    ReplicaGap,
    MAX_PARTS,
    SYNC_INTERVAL,
    UNSENT_INTERVAL,
    answerSync,
    applyFrom,
    sendSnapshot,
)


def _pack(value):
    return msgpack.packb(value, use_bin_type=True)


class SnapshotDeltaTests(SynchronousTestCase):
    """
    A replica follows its source through a snapshot and deltas.
    """

    def setUp(self):
        self.source = MapSource("presence")
        self.replica = MapReplica("presence")

    def test_snapshotOfEmpty(self):
        """
        The snapshot of an empty source says so, with its epoch and sequence.
        """
        header, payload = self.source.snapshot()
        self.assertEqual(header["kind"], SNAPSHOT)
        self.assertEqual(header["map"], "presence")
        self.assertEqual(header["epoch"], self.source.epoch)
        self.assertEqual(header["seq"], 0)
        self.assertEqual(self.replica.apply(header, payload), [])
        self.assertEqual(self.replica.epoch, self.source.epoch)

    def test_snapshotThenDeltas(self):
        """
        After a snapshot, deltas in order keep the replica equal to the source.
        """
        self.source.set(("c1", "cloud"), ["inc1", 1.0])
        self.assertEqual(
            self.replica.apply(*self.source.snapshot()),
            [(("c1", "cloud"), None, ["inc1", 1.0], "resync")],
        )
        changes = self.replica.apply(*self.source.set(("c2", "cloud"), ["inc2", 2.0]))
        self.assertEqual(changes, [(("c2", "cloud"), None, ["inc2", 2.0], "")])
        changes = self.replica.apply(*self.source.set(("c2", "cloud"), ["inc3", 3.0]))
        self.assertEqual(changes, [(("c2", "cloud"), ["inc2", 2.0], ["inc3", 3.0], "")])
        changes = self.replica.apply(*self.source.delete(("c1", "cloud"), "bye"))
        self.assertEqual(changes, [(("c1", "cloud"), ["inc1", 1.0], None, "bye")])
        self.assertEqual(self.replica.entries, self.source.entries)
        self.assertEqual(self.replica.seq, self.source.seq)

    def test_stringKeys(self):
        """
        Plain string keys (routes) replicate as strings, tuple keys as tuples.
        """
        self.source.set("s1", ["inc", ["echo"]])
        self.replica.apply(*self.source.snapshot())
        self.replica.apply(*self.source.set(("a", "b"), 1))
        self.assertEqual(self.replica.entries, {"s1": ["inc", ["echo"]], ("a", "b"): 1})

    def test_deleteAbsent(self):
        """
        Deleting an absent key makes no delta and uses no sequence number.
        """
        self.assertIsNone(self.source.delete("nope"))
        self.assertEqual(self.source.seq, 0)

    def test_deltaHeader(self):
        """
        Each delta carries the next sequence number and the source's epoch.
        """
        first, _ = self.source.set("a", 1)
        second, _ = self.source.set("b", 2)
        self.assertEqual((first["kind"], first["seq"]), (DELTA, 1))
        self.assertEqual(second["seq"], 2)
        self.assertEqual(second["epoch"], self.source.epoch)

    def test_epochsDiffer(self):
        """
        Two sources get different epochs (a restarted owner is noticed).
        """
        self.assertNotEqual(MapSource("x").epoch, MapSource("x").epoch)


class GapTests(SynchronousTestCase):
    """
    A replica notices what it missed and asks for a snapshot.
    """

    def setUp(self):
        self.source = MapSource("routes")
        self.replica = MapReplica("routes")
        self.replica.apply(*self.source.snapshot())

    def test_skippedSequence(self):
        """
        A delta that skips a sequence number raises ReplicaGap and changes nothing.
        """
        self.source.set("a", 1)
        delta = self.source.set("b", 2)
        self.assertRaises(ReplicaGap, self.replica.apply, *delta)
        self.assertEqual(self.replica.entries, {})
        self.assertEqual(self.replica.seq, 0)

    def test_repeatedDelta(self):
        """
        A delta applied twice is a gap (it does not follow what we hold).
        """
        delta = self.source.set("a", 1)
        self.replica.apply(*delta)
        self.assertRaises(ReplicaGap, self.replica.apply, *delta)

    def test_newEpoch(self):
        """
        A delta from a restarted source (new epoch) raises ReplicaGap.
        """
        restarted = MapSource("routes")
        self.assertRaises(ReplicaGap, self.replica.apply, *restarted.set("a", 1))

    def test_deltaBeforeSnapshot(self):
        """
        A delta before any snapshot raises ReplicaGap.
        """
        fresh = MapReplica("routes")
        self.assertRaises(ReplicaGap, fresh.apply, *self.source.set("a", 1))

    def test_resyncAfterGap(self):
        """
        After a gap, a snapshot brings the replica back and deltas apply again.
        """
        self.source.set("a", 1)
        self.assertRaises(ReplicaGap, self.replica.apply, *self.source.set("b", 2))
        self.replica.apply(*self.source.snapshot())
        self.assertEqual(self.replica.entries, {"a": 1, "b": 2})
        self.assertEqual(self.replica.apply(*self.source.set("c", 3)), [("c", None, 3, "")])


class SnapshotDiffTests(SynchronousTestCase):
    """
    A snapshot yields the difference from what the replica held.
    """

    def test_oneChangePerKey(self):
        """
        Kept keys yield nothing; changed, added and removed keys one change each.
        """
        old = MapSource("m")
        for key, value in [("same", 1), ("changed", 2), ("removed", 3)]:
            old.set(key, value)
        replica = MapReplica("m")
        replica.apply(*old.snapshot())
        new = MapSource("m")
        for key, value in [("same", 1), ("changed", 20), ("added", 4)]:
            new.set(key, value)
        changes = replica.apply(*new.snapshot())
        self.assertEqual(
            sorted(changes),
            sorted(
                [
                    ("changed", 2, 20, "resync"),
                    ("removed", 3, None, "resync"),
                    ("added", None, 4, "resync"),
                ]
            ),
        )
        self.assertEqual(len({c[0] for c in changes}), len(changes))
        self.assertEqual(replica.entries, new.entries)
        self.assertEqual(replica.epoch, new.epoch)

    def test_sameSnapshotTwice(self):
        """
        The same snapshot applied twice yields nothing the second time.
        """
        source = MapSource("m")
        source.set("a", [1, 2])
        replica = MapReplica("m")
        replica.apply(*source.snapshot())
        self.assertEqual(replica.apply(*source.snapshot()), [])

    def test_clear(self):
        """
        clear() removes everything with the reason given and forgets the epoch.
        """
        source = MapSource("m")
        source.set("a", 1)
        source.set(("b", "c"), 2)
        replica = MapReplica("m")
        replica.apply(*source.snapshot())
        changes = replica.clear("upstream-lost")
        self.assertEqual(
            sorted(changes, key=repr),
            sorted([("a", 1, None, "upstream-lost"), (("b", "c"), 2, None, "upstream-lost")], key=repr),
        )
        self.assertEqual(replica.entries, {})
        self.assertIsNone(replica.epoch)
        self.assertEqual(replica.seq, 0)
        self.assertRaises(ReplicaGap, replica.apply, *source.set("d", 4))
        self.assertEqual(replica.clear("again"), [])


class MalformedTests(SynchronousTestCase):
    """
    What a peer may send wrong raises ValueError, never something else.
    """

    def setUp(self):
        self.source = MapSource("m")
        self.replica = MapReplica("m")
        self.replica.apply(*self.source.snapshot())
        self.epoch = self.source.epoch

    def header(self, kind=DELTA, seq=1, **extra):
        header = {"map": "m", "kind": kind, "epoch": self.epoch, "seq": seq}
        header.update(extra)
        return header

    def test_missingEpochOrSeq(self):
        """
        A header without a text epoch and an integer seq is malformed.
        """
        for header in (
            {"kind": SNAPSHOT, "seq": 0},
            {"kind": SNAPSHOT, "epoch": "e"},
            {"kind": SNAPSHOT, "epoch": 5, "seq": 0},
            {"kind": SNAPSHOT, "epoch": "e", "seq": "0"},
        ):
            self.assertRaises(ValueError, self.replica.apply, header, _pack([]))

    def test_badSnapshot(self):
        """
        A snapshot payload that is not a list of pairs is malformed.
        """
        for payload in (_pack({"a": 1}), _pack([["a"]]), _pack([["a", 1, 2]]), _pack(["a"])):
            self.assertRaises(
                ValueError, self.replica.apply, self.header(SNAPSHOT, 0), payload
            )

    def test_badDelta(self):
        """
        A delta that is not [op, key, value], or has an unknown op, is malformed.
        """
        for payload in (_pack(["set", "a"]), _pack({"op": "set"}), _pack(["frob", "a", 1])):
            replica = MapReplica("m")
            replica.apply(*self.source.snapshot())
            self.assertRaises(ValueError, replica.apply, self.header(), payload)

    def test_malformedDeltaThenGap(self):
        """
        A malformed delta does not advance the replica, so the next one is a gap.
        """
        for payload in (_pack(["frob", "a", 1]), _pack(["set", {"k": 1}, 1])):
            replica = MapReplica("m")
            replica.apply(*self.source.snapshot())
            seq = self.source.seq
            self.assertRaises(
                (ValueError, TypeError), replica.apply, self.header(seq=seq + 1), payload
            )
            self.assertEqual(replica.seq, seq)
            self.assertRaises(
                ReplicaGap, replica.apply, self.header(seq=seq + 2), _pack(["set", "b", 2])
            )

    def test_unknownKind(self):
        """
        An unknown message kind is malformed.
        """
        self.assertRaises(ValueError, self.replica.apply, self.header("patch"), _pack([]))

    def test_garbagePayload(self):
        """
        A payload that is not msgpack is malformed.
        """
        for payload in (b"\xc1", b"\x93\x01", b""):
            self.assertRaises(ValueError, self.replica.apply, self.header(), payload)

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.sampled_from([SNAPSHOT, DELTA, "x"]),
        st.integers(min_value=0, max_value=3),
        st.one_of(
            st.binary(max_size=30),
            st.recursive(
                st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3)),
                lambda inner: st.lists(inner, max_size=4),
                max_leaves=10,
            ).map(_pack),
        ),
    )
    def test_anyPayload(self, kind, seq, payload):
        """
        Any payload either applies or raises ValueError, TypeError or ReplicaGap.
        """
        replica = MapReplica("m")
        replica.apply(*self.source.snapshot())
        try:
            changes = replica.apply(self.header(kind, seq), payload)
        except (ValueError, TypeError, ReplicaGap):
            pass
        else:
            self.assertIsInstance(changes, list)


class CheckTests(SynchronousTestCase):
    """
    A replica with a check refuses a bad message whole.
    """

    def check(self, key, value):
        if not isinstance(value, int):
            raise ValueError(f"bad {value!r}")

    def test_badSnapshotLeavesReplicaAsItWas(self):
        """
        A snapshot with one bad entry changes nothing, and the next delta of
        the source reads as a gap (so the holder asks again).
        """
        source = MapSource("m")
        replica = MapReplica("m", self.check)
        replica.apply(*source.snapshot())
        source.set("a", 1)
        bad = MapSource("m")
        bad.entries = {"a": 1, "b": "junk"}
        self.assertRaises(ValueError, replica.apply, *bad.snapshot())
        self.assertEqual(replica.entries, {})
        self.assertRaises(ReplicaGap, replica.apply, *source.set("c", 3))

    def test_badDeltaLeavesReplicaAsItWas(self):
        """
        A delta setting a bad value changes neither the entries nor the
        sequence number.
        """
        source = MapSource("m")
        replica = MapReplica("m", self.check)
        replica.apply(*source.snapshot())
        self.assertRaises(ValueError, replica.apply, *source.set("a", "junk"))
        self.assertEqual((replica.entries, replica.seq), ({}, 0))


class MarkTests(SynchronousTestCase):
    """
    A mark says where the source is; a replica anywhere else has a gap.
    """

    def setUp(self):
        self.source = MapSource("presence")
        self.replica = MapReplica("presence")
        self.replica.apply(*self.source.snapshot())
        self.replica.apply(*self.source.set(("c1", "cloud"), ["i1", 1.0]))

    def test_markHeader(self):
        """
        A mark carries the map's name, epoch and sequence number, and no payload.
        """
        header, payload = self.source.mark()
        self.assertEqual(
            header, {"map": "presence", "kind": MARK, "epoch": self.source.epoch, "seq": 1}
        )
        self.assertEqual(payload, b"")

    def test_markWhereTheReplicaIs(self):
        """
        A mark at the replica's own epoch and sequence number changes nothing.
        """
        self.assertEqual(self.replica.apply(*self.source.mark()), [])
        self.assertEqual(self.replica.entries, {("c1", "cloud"): ["i1", 1.0]})
        self.assertEqual(self.replica.seq, 1)

    def test_markAfterALostLastDelta(self):
        """
        A mark ahead of the replica (its last delta was lost) raises ReplicaGap.
        """
        self.source.delete(("c1", "cloud"), "bye")
        self.assertRaises(ReplicaGap, self.replica.apply, *self.source.mark())
        self.assertEqual(self.replica.entries, {("c1", "cloud"): ["i1", 1.0]})

    def test_markBehindTheReplica(self):
        """
        A mark behind the replica (the replica is not the source's) raises ReplicaGap.
        """
        header, payload = self.source.mark()
        header["seq"] = 0
        self.assertRaises(ReplicaGap, self.replica.apply, header, payload)

    def test_markOfARestartedSource(self):
        """
        A mark with another epoch (the source restarted) raises ReplicaGap,
        even at the same sequence number.
        """
        restarted = MapSource("presence")
        restarted.set(("c9", "cloud"), ["i9", 9.0])
        self.assertRaises(ReplicaGap, self.replica.apply, *restarted.mark())

    def test_markBeforeAnySnapshot(self):
        """
        A mark reaching a replica that never had a snapshot raises ReplicaGap.
        """
        self.assertRaises(ReplicaGap, MapReplica("presence").apply, *MapSource("presence").mark())


class _Peer:
    """
    Records what is sent to it, as a session or a link would send it.
    """

    def __init__(self, maxSize=4 * 1024 * 1024, takesParts=True):
        self.sent = []
        self.maxSize = maxSize
        self.takesParts = takesParts

    def send(self, msgtype, header, payload=b""):
        self.sent.append((msgtype, header, payload))
        return True


class ApplyFromTests(SynchronousTestCase):
    """
    L{applyFrom} applies what a source sent, asks it for a snapshot after a
    gap, and turns malformed input into a protocol error.
    """

    def setUp(self):
        self.source = MapSource("presence")
        self.replica = MapReplica("presence")
        self.peer = _Peer()

    def message(self, header, payload, msgtype=protocol.PRESENCE):
        return protocol.Message(1, msgtype, header, payload)

    def test_applies(self):
        """
        A snapshot then a delta are applied and their changes returned; nothing is sent back.
        """
        self.source.set("a", 1)
        self.assertEqual(
            applyFrom(self.replica, self.peer, self.message(*self.source.snapshot())),
            [("a", None, 1, "resync")],
        )
        self.assertEqual(
            applyFrom(self.replica, self.peer, self.message(*self.source.set("b", 2))),
            [("b", None, 2, "")],
        )
        self.assertEqual(self.peer.sent, [])

    def test_gapAsksForASnapshot(self):
        """
        A delta that does not follow asks the source for a snapshot of that map (SYNC) and changes nothing.
        """
        applyFrom(self.replica, self.peer, self.message(*self.source.snapshot()))
        self.source.set("a", 1)
        self.assertEqual(
            applyFrom(self.replica, self.peer, self.message(*self.source.set("b", 2))), []
        )
        self.assertEqual(self.peer.sent, [(protocol.SYNC, {"map": "presence"}, b"")])
        self.assertEqual(self.replica.entries, {})

    def test_markAheadAsksForASnapshot(self):
        """
        A mark ahead of the replica asks the source for a snapshot; a mark where it is asks nothing.
        """
        applyFrom(self.replica, self.peer, self.message(*self.source.snapshot()))
        applyFrom(self.replica, self.peer, self.message(*self.source.mark()))
        self.assertEqual(self.peer.sent, [])
        self.source.set("a", 1)
        applyFrom(self.replica, self.peer, self.message(*self.source.mark()))
        self.assertEqual(self.peer.sent, [(protocol.SYNC, {"map": "presence"}, b"")])

    def test_malformedIsABadMessage(self):
        """
        A malformed message raises ProtocolError bad-message naming the message type as text.
        """
        applyFrom(self.replica, self.peer, self.message(*self.source.snapshot()))
        bad = self.message(
            {"map": "routes", "kind": DELTA, "epoch": self.source.epoch, "seq": 1},
            _pack(["frob", "a", 1]), protocol.ROUTES,
        )
        error = self.assertRaises(protocol.ProtocolError, applyFrom, self.replica, self.peer, bad)
        self.assertEqual(error.code, protocol.E_BAD_MESSAGE)
        self.assertTrue(error.message.startswith("bad ROUTES: "), error.message)
        self.assertEqual(self.peer.sent, [])


class AnswerSyncTests(SynchronousTestCase):
    """
    L{answerSync} sends a snapshot of the map a SYNC names, in the message
    type that carries it.
    """

    def sync(self, name):
        return protocol.Message(1, protocol.SYNC, {"map": name}, b"")

    def test_snapshotOfTheNamedMap(self):
        """
        Each map's snapshot goes in its own message type (ROUTES for routes, PRESENCE for local).
        """
        routes = MapSource("routes", protocol.ROUTES)
        local = MapSource("local")
        routes.set("s1", ["si", ["echo"]])
        peer = _Peer()
        answerSync(peer, self.sync("routes"), routes, local)
        answerSync(peer, self.sync("local"), routes, local)
        self.assertEqual(
            peer.sent,
            [(protocol.ROUTES,) + routes.snapshot(), (protocol.PRESENCE,) + local.snapshot()],
        )

    def test_snapshotsThrottledPerPeer(self):
        """
        A peer gets at most one snapshot of a map in answer to its SYNCs every SYNC_INTERVAL
        seconds; the SYNCs within that time are counted (throttled), not answered. Another peer,
        or another map, is not held back.
        """
        from zmqrelay.core.replica import SYNC_INTERVAL

        presence, local = MapSource("presence"), MapSource("local")
        one, two = _Peer(), _Peer()
        for _ in range(100):
            answerSync(one, self.sync("presence"), presence, local, now=10.0)
        answerSync(two, self.sync("presence"), presence, local, now=10.0)
        answerSync(one, self.sync("local"), presence, local, now=10.0)
        self.assertEqual((len(one.sent), len(two.sent), presence.throttled), (2, 1, 99))
        answerSync(one, self.sync("presence"), presence, local, now=10.0 + SYNC_INTERVAL)
        self.assertEqual(len(one.sent), 3)

    def test_otherMapsRefused(self):
        """
        A SYNC for a map this node does not replicate to the peer (or naming none) is refused
        (ProtocolError: its caller answers ERR bad-message), so the asker does not ask for ever.
        """
        peer = _Peer()
        for message in (self.sync("routes"), protocol.Message(1, protocol.SYNC, {}, b"")):
            e = self.assertRaises(protocol.ProtocolError, answerSync, peer, message, MapSource("presence"))
            self.assertEqual(e.code, protocol.E_BAD_MESSAGE)
        self.assertEqual(peer.sent, [])


def _bigSource(count, name="presence"):
    """
    @return: a source of C{count} presence entries, its seq past a few deltas.
    """
    source = MapSource(name)
    for i in range(count):
        source.set((f"client-{i:05d}", "cloud"), [f"inc-{i:05d}", 1700000000.0 + i])
    return source


class SnapshotPartsTests(SynchronousTestCase):
    """
    A snapshot larger than its holder takes in one message goes in parts to a
    holder that takes them, never whole (its socket would drop the connection),
    and the holder applies the parts as one snapshot once the last has come.
    """

    def setUp(self):
        self.source = _bigSource(500)
        # Each entry packs to about 40 bytes: room for about 100 a part.
        self.peer = _Peer(maxSize=protocol.HEADROOM + 4096)

    def test_wholeWhenItFits(self):
        """
        A snapshot that fits goes whole, with no part fields, as before parts existed.
        """
        peer = _Peer()
        self.assertTrue(sendSnapshot(peer, self.source))
        [(msgtype, header, payload)] = peer.sent
        self.assertEqual(msgtype, protocol.PRESENCE)
        self.assertEqual((header, payload), self.source.snapshot())
        self.assertNotIn("part", header)
        self.assertEqual(self.source.split, 0)

    def test_inParts(self):
        """
        Every part fits the holder's size, they are numbered in order with the
        same epoch and seq, and applied in order they give the source's map.
        """
        self.assertTrue(sendSnapshot(self.peer, self.source))
        parts = self.peer.sent
        self.assertGreater(len(parts), 2)
        self.assertEqual(self.source.split, 1)
        replica = MapReplica("presence")
        for i, (msgtype, header, payload) in enumerate(parts):
            self.assertEqual(msgtype, protocol.PRESENCE)
            self.assertLessEqual(len(payload), self.peer.maxSize - protocol.HEADROOM)
            self.assertEqual((header["part"], header["parts"]), (i, len(parts)))
            self.assertEqual((header["epoch"], header["seq"]), (self.source.epoch, self.source.seq))
            changes = replica.apply(header, payload)
            if i < len(parts) - 1:
                # Nothing changes before the last part.
                self.assertEqual(changes, [])
                self.assertEqual(replica.entries, {})
                self.assertIsNone(replica.epoch)
        self.assertEqual(len(changes), 500)
        self.assertEqual(replica.entries, self.source.entries)
        self.assertEqual((replica.epoch, replica.seq), (self.source.epoch, self.source.seq))
        # Deltas follow as after a whole snapshot.
        replica.apply(*self.source.delete(("client-00000", "cloud"), "bye"))
        self.assertEqual(replica.entries, self.source.entries)

    def test_lostPartAsksAgain(self):
        """
        A part missing (lost at a high-water mark) is a gap: the holder drops
        what it kept, its copy unchanged, and asks for a snapshot; a whole
        snapshot of parts afterwards is applied.
        """
        sendSnapshot(self.peer, self.source)
        parts = self.peer.sent
        replica = MapReplica("presence")
        source = _Peer()
        applyFrom(replica, source, protocol.Message(protocol.PRESENCE, 1, parts[0][1], parts[0][2]))
        self.assertEqual(
            applyFrom(replica, source, protocol.Message(protocol.PRESENCE, 1, parts[2][1], parts[2][2])), [])
        self.assertEqual(source.sent, [(protocol.SYNC, {"map": "presence"}, b"")])
        self.assertEqual(replica.entries, {})
        # The rest of the broken snapshot is dropped without asking again.
        for _, header, payload in parts[3:]:
            self.assertEqual(applyFrom(replica, source, protocol.Message(protocol.PRESENCE, 1, header, payload)),
                             [])
        self.assertEqual(len(source.sent), 1)
        self.assertEqual(replica.entries, {})
        for _, header, payload in parts:
            replica.apply(header, payload)
        self.assertEqual(replica.entries, self.source.entries)

    def test_partsOfTwoSnapshots(self):
        """
        Parts of another snapshot (another seq) do not join those kept: a gap.
        """
        sendSnapshot(self.peer, self.source)
        first = self.peer.sent
        self.source.set(("late", "cloud"), ["inc", 1.0])
        self.peer.sent = []
        sendSnapshot(self.peer, self.source)
        second = self.peer.sent
        replica = MapReplica("presence")
        replica.apply(first[0][1], first[0][2])
        with self.assertRaises(ReplicaGap):
            replica.apply(second[1][1], second[1][2])
        # A new part 0 starts over.
        for _, header, payload in second:
            replica.apply(header, payload)
        self.assertEqual(replica.entries, self.source.entries)

    def test_wholeSnapshotDropsParts(self):
        """
        A whole snapshot after some parts replaces the copy and forgets the
        parts: the rest of them is out of order.
        """
        sendSnapshot(self.peer, self.source)
        parts = self.peer.sent
        replica = MapReplica("presence")
        replica.apply(parts[0][1], parts[0][2])
        small = MapSource("presence")
        small.set(("c1", "cloud"), ["i", 1.0])
        replica.apply(*small.snapshot())
        self.assertEqual(replica.entries, small.entries)
        with self.assertRaises(ReplicaGap):
            replica.apply(parts[1][1], parts[1][2])
        self.assertEqual(replica.entries, small.entries)

    def test_noPartsToAnOldHolder(self):
        """
        A holder that takes no parts gets no snapshot larger than it takes
        (its socket would drop the connection, again on every reconnect):
        counted in unsent, logged, nothing sent.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        peer = _Peer(maxSize=self.peer.maxSize, takesParts=False)
        self.assertFalse(sendSnapshot(peer, self.source))
        self.assertEqual(peer.sent, [])
        self.assertEqual(self.source.unsent, 1)
        [event] = [e for e in events if e.get("log_level") == LogLevel.error]
        self.assertIn("takes no parts", formatEvent(event))
        self.assertIn("500 entries", formatEvent(event))

    def test_answerSyncInParts(self):
        """
        A SYNC is answered in parts too.
        """
        answerSync(self.peer, protocol.Message(protocol.SYNC, 1, {"map": "presence"}, b""), self.source)
        self.assertGreater(len(self.peer.sent), 2)
        self.assertEqual({h["parts"] for _, h, _ in self.peer.sent}, {len(self.peer.sent)})

    def test_largeEntryAlone(self):
        """
        An entry larger than a part's room goes alone in its part (the holder's
        own limit then refuses it, as it would have refused the whole).
        """
        source = MapSource("presence")
        source.set(("big", "cloud"), ["i" * 300, 1.0])
        source.set(("small", "cloud"), ["i", 1.0])
        messages = source.snapshotParts(100)
        self.assertEqual(len(messages), 2)
        self.assertEqual(len(msgpack.unpackb(messages[0][1])), 1)

    def test_notMoreThanMaxParts(self):
        """
        A snapshot that would need more than MAX_PARTS parts is not sent (the
        holder would refuse every part): counted unsent.
        """
        source = _bigSource(MAX_PARTS + 1)
        # Room for one entry a part.
        peer = _Peer(maxSize=protocol.HEADROOM + 60)
        self.assertEqual(len(source.snapshotParts(60)), MAX_PARTS + 1)
        self.assertFalse(sendSnapshot(peer, source))
        self.assertEqual(peer.sent, [])
        self.assertEqual((source.unsent, source.split), (1, 0))

    def test_entryLargerThanAMessage(self):
        """
        An entry larger than the holder takes in one message is never sent,
        alone in a map (whole) or among others (in parts): counted unsent.
        """
        for takesParts in (True, False):
            source = MapSource("presence")
            source.set(("big", "cloud"), ["i" * 300, 1.0])
            peer = _Peer(maxSize=protocol.HEADROOM + 100, takesParts=takesParts)
            self.assertFalse(sendSnapshot(peer, source))
            source.set(("small", "cloud"), ["i", 1.0])
            self.assertFalse(sendSnapshot(peer, source))
            self.assertEqual(peer.sent, [])
            self.assertEqual(source.unsent, 2)

    def test_queueRefusesAPart(self):
        """
        A part the holder's queue refuses ends the snapshot there, counted
        unsent: the holder sees the gap and asks again.
        """
        peer = _Peer(maxSize=self.peer.maxSize)
        sent = peer.send
        peer.send = lambda *message: len(peer.sent) < 2 and sent(*message)
        self.assertFalse(sendSnapshot(peer, self.source))
        self.assertEqual([h["part"] for _, h, _ in peer.sent], [0, 1])
        self.assertEqual((self.source.unsent, self.source.split), (1, 0))

    def test_unsentNotRebuiltAtEverySync(self):
        """
        After a snapshot too large for a peer, its SYNCs are left unanswered
        (counted throttled) for UNSENT_INTERVAL: building it costs as much as
        sending it. Past that, it is tried again.
        """
        peer = _Peer(maxSize=self.peer.maxSize, takesParts=False)
        sync = protocol.Message(protocol.SYNC, 1, {"map": "presence"}, b"")
        built = []
        snapshotParts = self.source.snapshotParts
        self.source.snapshotParts = lambda room: built.append(room) or snapshotParts(room)
        answerSync(peer, sync, self.source, now=100.0)
        answerSync(peer, sync, self.source, now=100.0 + SYNC_INTERVAL + 0.1)
        answerSync(peer, sync, self.source, now=100.0 + UNSENT_INTERVAL - 0.1)
        self.assertEqual((len(built), self.source.unsent, self.source.throttled), (1, 1, 2))
        answerSync(peer, sync, self.source, now=100.0 + UNSENT_INTERVAL + 0.1)
        self.assertEqual((len(built), self.source.unsent), (2, 2))
        # Another peer is not held back by this one.
        other = _Peer()
        answerSync(other, sync, self.source, now=101.0)
        self.assertEqual(len(other.sent), 1)

    def test_emptyWhole(self):
        """
        An empty map is one whole, empty snapshot.
        """
        [(header, payload)] = MapSource("presence").snapshotParts(10)
        self.assertNotIn("part", header)
        self.assertEqual(msgpack.unpackb(payload), [])

    def test_badParts(self):
        """
        Part fields that are not whole numbers with 0 <= part < parts, or more
        parts than MAX_PARTS, are refused as malformed, and drop kept parts.
        """
        header = {"map": "presence", "kind": SNAPSHOT, "epoch": "e", "seq": 1}
        replica = MapReplica("presence")
        for part, parts in [(0, None), (None, 2), (2, 2), (-1, 2), ("0", 2), (0, 1.5), (0, True),
                            (0, 1), (0, MAX_PARTS + 1)]:
            replica._parts = ["e", 1, 2, 1, {}]
            fields = {k: v for k, v in (("part", part), ("parts", parts)) if v is not None}
            with self.assertRaises(ValueError):
                replica.apply(dict(header, **fields), _pack([]))
            self.assertIsNone(replica._parts)

    def test_badEntryInAPart(self):
        """
        A malformed entry in a part refuses that part and forgets those kept.
        """
        replica = MapReplica("presence")
        header = {"map": "presence", "kind": SNAPSHOT, "epoch": "e", "seq": 1, "parts": 2}
        replica.apply(dict(header, part=0), _pack([[["c1", "cloud"], ["i", 1.0]]]))
        with self.assertRaises(ValueError):
            replica.apply(dict(header, part=1), _pack([["not", "a", "pair"]]))
        self.assertIsNone(replica._parts)
        self.assertEqual(replica.entries, {})

    def test_clearDropsParts(self):
        """
        A holder whose source is gone forgets the parts it kept.
        """
        sendSnapshot(self.peer, self.source)
        replica = MapReplica("presence")
        replica.apply(self.peer.sent[0][1], self.peer.sent[0][2])
        replica.clear("upstream-lost")
        with self.assertRaises(ReplicaGap):
            replica.apply(self.peer.sent[1][1], self.peer.sent[1][2])
