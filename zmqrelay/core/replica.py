"""
Replicated maps: one node owns a map, its peers hold copies.

The owner (L{MapSource}) sends a snapshot when a peer says hello, then
sequenced deltas.  A holder (L{MapReplica}) applies them and notices a gap
(a lost delta, or a new epoch after the owner restarted), and then asks for a
new snapshot.  Applying a snapshot yields the difference from what the
replica held, so the layers above see one change per key whatever happened
in between.

The source also sends a mark now and then: where its map is (epoch, seq).
A holder whose copy is elsewhere asks for a snapshot; so a lost message (a
last delta, a snapshot, the holder's own request for one) is noticed even
when nothing changes any more.

A snapshot larger than its holder takes in one message goes in parts, to a
holder that said it takes them (C{parts} in its HELLO or WELCOME): the
holder applies them together once the last has come (L{sendSnapshot},
PROTOCOL.md 13.2).

Used for presence (cloud -> proxy -> server) and for server routes (proxy ->
cloud).  Pure: no sockets, no reactor; L{applyFrom} and L{answerSync} talk to
the peer they are given.
"""

import os
import weakref

import msgpack
from twisted.logger import Logger

from zmqrelay.core import protocol

log = Logger()

SNAPSHOT = "snapshot"
DELTA = "delta"
MARK = "mark"

#: The most parts of one snapshot: a source sends none larger (it counts
#: it unsent), a holder takes none larger.  All parts are queued at once, so
#: this stays well below a socket's queue of 1000 messages.
MAX_PARTS = 256

#: How long (seconds) a source answers no SYNC of a peer after a snapshot
#: was too large for it (see L{answerSync}): building one again costs as
#: much as sending it, and such a map does not shrink in a moment.
UNSENT_INTERVAL = 10.0


def newEpoch():
    """
    @return: a random epoch id (L{str}) for a new source.
    """
    return os.urandom(6).hex()


def _key(raw):
    return tuple(raw) if isinstance(raw, list) else raw


class MapSource:
    """
    The owner's side of a replicated map.

    Keys are L{str} or tuples of L{str}; values are msgpack-able.

    @ivar msgtype: the message type that carries this map (C{PRESENCE} for
        C{presence} and C{local}, C{ROUTES} for C{routes}).
    @ivar throttled: SYNCs left unanswered because the same peer had a
        snapshot of this map less than L{SYNC_INTERVAL} before (see
        L{answerSync}).
    @ivar split: snapshots sent in parts (see L{sendSnapshot}).
    @ivar unsent: snapshots not sent, or not whole: too large for a holder
        that takes no parts, in more than L{MAX_PARTS} parts, with an entry
        alone too large, or a part refused by the holder's queue (see
        L{sendSnapshot}).
    """

    def __init__(self, name, msgtype=protocol.PRESENCE):
        self.name = name
        self.msgtype = msgtype
        self.epoch = newEpoch()
        self.seq = 0
        self.entries = {}
        self.throttled = 0
        self.split = 0
        self.unsent = 0
        #: Peer -> when it was last sent a snapshot in answer to a SYNC.
        self._answered = weakref.WeakKeyDictionary()
        #: Peer -> when a snapshot for it was last found too large.
        self._unsentAt = weakref.WeakKeyDictionary()

    def snapshot(self):
        """
        @return: (header, payload) of a whole snapshot message.
        """
        [whole] = self.snapshotParts(float("inf"))
        return whole

    def snapshotParts(self, room):
        """
        The snapshot in parts of at most C{room} bytes of payload each.

        @param room: the most payload bytes a part may hold; an entry larger
            than that alone still goes in a part of its own.
        @return: a L{list} of (header, payload): one whole snapshot (no
            C{part} fields, as L{snapshot}) if it fits in C{room}; else
            parts numbered C{part} 0 to C{parts} - 1, each an array of
            entries as a whole snapshot is, all with the same C{epoch} and
            C{seq}.
        """
        header = {"map": self.name, "kind": SNAPSHOT, "epoch": self.epoch, "seq": self.seq}
        packb = msgpack.packb
        whole = packb(
            [[list(k) if isinstance(k, tuple) else k, v] for k, v in self.entries.items()],
            use_bin_type=True,
        )
        if len(whole) <= room:
            return [(header, whole)]
        chunks = []
        chunk, size = [], 5  # an array header takes at most 5 bytes
        for k, v in self.entries.items():
            item = packb([list(k) if isinstance(k, tuple) else k, v], use_bin_type=True)
            if chunk and size + len(item) > room:
                chunks.append(chunk)
                chunk, size = [], 5
            chunk.append(item)
            size += len(item)
        chunks.append(chunk)
        packer = msgpack.Packer(use_bin_type=True)
        if len(chunks) == 1:
            # One entry alone larger than the room.
            return [(header, whole)]
        return [
            (dict(header, part=i, parts=len(chunks)), packer.pack_array_header(len(c)) + b"".join(c))
            for i, c in enumerate(chunks)
        ]

    def set(self, key, value):
        """
        Add or replace an entry.

        @return: (header, payload) of the delta to send every holder.
        """
        self.entries[key] = value
        return self._delta(["set", key, value])

    def delete(self, key, reason=""):
        """
        Remove an entry if present.

        @return: (header, payload) of the delta, or C{None} if it was absent.
        """
        if self.entries.pop(key, None) is None:
            return None
        return self._delta(["del", key, reason])

    def mark(self):
        """
        @return: (header, payload) of a mark: the epoch and sequence number
            this map is at, for holders to check their copy against.
        """
        return {"map": self.name, "kind": MARK, "epoch": self.epoch, "seq": self.seq}, b""

    def _delta(self, op):
        self.seq += 1
        if isinstance(op[1], tuple):
            op[1] = list(op[1])
        return (
            {"map": self.name, "kind": DELTA, "epoch": self.epoch, "seq": self.seq},
            msgpack.packb(op, use_bin_type=True),
        )


class ReplicaGap(Exception):
    """
    The replica missed something and needs a snapshot.
    """


class MapReplica:
    """
    A holder's copy of a replicated map.

    @ivar entries: the current copy.
    @ivar epoch: the source epoch of the copy, or C{None} before a snapshot.
    """

    def __init__(self, name, check=None):
        """
        @param check: called with each (key, value) a message would store,
            before anything is stored; raises L{ValueError} to refuse the
            whole message (the replica is left as it was).
        """
        self.name = name
        self.check = check
        self.epoch = None
        self.seq = 0
        self.entries = {}
        # A snapshot coming in parts: [epoch, seq, parts, next part, entries].
        self._parts = None
        # (epoch, seq, parts) of the snapshot whose parts came out of order:
        # its remaining parts are dropped without asking again.
        self._broken = None

    def apply(self, header, payload):
        """
        Apply a snapshot, delta or mark.

        @return: a L{list} of changes C{(key, old, new, reason)}; C{old} is
            C{None} for an added key and C{new} is C{None} for a removed one.
        @raise ReplicaGap: if a delta does not follow what we hold, or a
            mark says the source is elsewhere; the caller asks the source for
            a snapshot.
        @raise ValueError: if the message is malformed.
        """
        kind = header.get("kind")
        epoch = header.get("epoch")
        seq = header.get("seq")
        if not isinstance(epoch, str) or not isinstance(seq, int):
            raise ValueError("replica message needs epoch and seq")
        if kind == MARK:
            if epoch != self.epoch or seq != self.seq:
                raise ReplicaGap(f"{self.name}: have {self.epoch}/{self.seq}, source at {epoch}/{seq}")
            return []
        data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if kind == SNAPSHOT:
            if not isinstance(data, list):
                raise ValueError("snapshot payload is not a list")
            part, parts = header.get("part"), header.get("parts")
            if part is not None or parts is not None:
                return self._applyPart(epoch, seq, part, parts, data)
            self._parts = self._broken = None
            fresh = {}
            self._entries(data, fresh)
            return self._replace(epoch, seq, fresh)
        if kind != DELTA:
            raise ValueError(f"unknown replica message kind {kind!r}")
        if epoch != self.epoch or seq != self.seq + 1:
            raise ReplicaGap(f"{self.name}: have {self.epoch}/{self.seq}, got {epoch}/{seq}")
        if not isinstance(data, list) or len(data) != 3:
            raise ValueError("delta payload is not [op, key, value]")
        op, key, value = data
        key = _key(key)
        if self.check is not None and op == "set":
            self.check(key, value)
        elif self.check is not None and op == "del":
            if key not in self.entries:
                return self._skip(seq)
        # The sequence advances only once the delta is applied: a malformed
        # one leaves the replica behind, so the next delta is a gap and the
        # holder resyncs instead of silently diverging.
        if op == "set":
            old = self.entries.get(key)
            self.entries[key] = value
            self.seq = seq
            return [(key, old, value, "")]
        if op == "del":
            old = self.entries.pop(key, None)
            self.seq = seq
            if old is None:
                return []
            return [(key, old, None, value if isinstance(value, str) else "")]
        raise ValueError(f"unknown delta op {op!r}")

    def _entries(self, data, fresh):
        """
        Check a snapshot's entries and add them to C{fresh}.
        """
        for item in data:
            if not isinstance(item, list) or len(item) != 2:
                raise ValueError("snapshot entry is not a pair")
            key = _key(item[0])
            if self.check is not None:
                self.check(key, item[1])
            fresh[key] = item[1]

    def _replace(self, epoch, seq, fresh):
        changes = self._diff(fresh, "resync")
        self.entries = fresh
        self.epoch = epoch
        self.seq = seq
        return changes

    def _applyPart(self, epoch, seq, part, parts, data):
        """
        One part of a snapshot: kept until the last, which applies them all
        as one snapshot.  A part out of order (one lost, or the parts of two
        snapshots mixed) drops what was kept and asks for a new snapshot.
        """
        if part.__class__ is not int or parts.__class__ is not int or not 0 <= part < parts or parts < 2:
            self._parts = self._broken = None
            raise ValueError(f"snapshot part {part!r} of {parts!r}")
        if parts > MAX_PARTS:
            self._parts = self._broken = None
            raise ValueError(f"snapshot in {parts} parts, more than {MAX_PARTS}")
        if part == 0:
            self._parts = [epoch, seq, parts, 0, {}]
            self._broken = None
        elif self._broken == (epoch, seq, parts):
            # The rest of a snapshot already found broken: asked for anew
            # once, not once a part.
            return []
        kept = self._parts
        if kept is None or kept[:4] != [epoch, seq, parts, part]:
            self._parts = None
            self._broken = (epoch, seq, parts)
            raise ReplicaGap(f"{self.name}: snapshot part {part} of {parts} ({epoch}/{seq}) out of order")
        try:
            self._entries(data, kept[4])
        except (ValueError, TypeError):
            self._parts = None
            raise
        if part < parts - 1:
            kept[3] = part + 1
            return []
        self._parts = None
        return self._replace(epoch, seq, kept[4])

    def _skip(self, seq):
        self.seq = seq
        return []

    def clear(self, reason):
        """
        Forget everything (the source is gone).

        @return: the removals, as from L{apply}.
        """
        changes = self._diff({}, reason)
        self.entries = {}
        self._parts = self._broken = None
        self.epoch = None
        self.seq = 0
        return changes

    def _diff(self, fresh, reason):
        changes = []
        for key, old in self.entries.items():
            new = fresh.get(key)
            if new is None:
                changes.append((key, old, None, reason))
            elif new != old:
                changes.append((key, old, new, reason))
        for key, new in fresh.items():
            if key not in self.entries:
                changes.append((key, None, new, reason))
        return changes


def applyFrom(replica, source, message):
    """
    Apply a replicated-map message (C{PRESENCE} or C{ROUTES}) to C{replica},
    or, if the replica missed something, ask C{source} for a snapshot.

    @param source: the peer that owns the map (a session or a link): it is
        sent C{SYNC} naming the map after a gap.
    @param message: the L{zmqrelay.core.protocol.Message}.
    @return: the changes, as from L{MapReplica.apply}; none after a gap.
    @raise zmqrelay.core.protocol.ProtocolError: (C{bad-message}) if the message
        is malformed; the replica is left as it was.
    """
    try:
        return replica.apply(message.header, message.payload)
    except ReplicaGap:
        source.send(protocol.SYNC, {"map": replica.name})
        return []
    except (ValueError, TypeError) as e:
        raise protocol.ProtocolError(
            protocol.E_BAD_MESSAGE, f"bad {message.type.decode('ascii', 'replace')}: {e}"
        )


def sendSnapshot(peer, source):
    """
    Send C{peer} a snapshot of C{source}'s map: whole if it fits in one
    message of the size C{peer} takes (its C{maxSize}), else in parts if
    C{peer} takes them (C{takesParts}: its HELLO or WELCOME said C{parts}).

    A message larger than the peer takes would make its ZeroMQ socket drop
    the connection (C{MAXMSGSIZE}), and again after every reconnect.  So a
    snapshot is not sent, but counted in C{unsent} and logged, if it is too
    large for a peer that takes no parts, if it needs more than
    L{MAX_PARTS} parts, or if one entry alone is too large; the peer's copy
    stays behind (see L{answerSync}) until the map fits again.  A part the
    peer's queue refuses is counted in C{unsent} too, and the rest are not
    sent: the peer sees the gap and asks again.

    @return: C{True} if every message of it was queued.
    """
    room = peer.maxSize - protocol.HEADROOM
    messages = source.snapshotParts(room)
    why = None
    advice = "; raise its --max-message-size, or upgrade it"
    if any(len(payload) > room for _, payload in messages):
        why = "an entry alone is larger than it takes in one message" + advice
    elif len(messages) > 1 and not getattr(peer, "takesParts", False):
        why = "it takes no parts" + advice
    elif len(messages) > MAX_PARTS:
        why = f"it would need {len(messages)} parts, more than {MAX_PARTS}; raise its --max-message-size"
    if why is None:
        for header, payload in messages:
            if not peer.send(source.msgtype, header, payload):
                why = f"its queue refused part {header.get('part', 0)} of {len(messages)}"
                break
        else:
            if len(messages) > 1:
                source.split += 1
            return True
    source.unsent += 1
    if source.unsent == 1 or not source.unsent % 100:
        log.error(
            "snapshot of {map} ({count} entries, {room} bytes a message) to {peer} not sent: {why} "
            "({unsent} not sent so far)",
            map=source.name, count=len(source.entries), peer=getattr(peer, "nodeId", None),
            why=why, room=room, unsent=source.unsent,
        )
    return False


#: The shortest time (seconds) between two snapshots of one map sent to one
#: peer in answer to its SYNCs (see L{answerSync}).
SYNC_INTERVAL = 0.5


def answerSync(peer, message, *sources, now=None):
    """
    Answer a C{SYNC}: send C{peer} a snapshot of the map it names, if that
    is one of C{sources}.

    A whole snapshot costs its source much more than the SYNC costs the
    asker (62 ms of a proxy's reactor for 50,000 clients), so a peer gets
    at most one in answer to SYNCs every L{SYNC_INTERVAL} seconds per map:
    a SYNC within that time is counted (C{throttled}) and not answered.  A
    holder that is still behind asks again at the source's next mark
    (PROTOCOL.md 13.3), and the snapshot it got meanwhile usually made the
    second SYNC moot.

    @param sources: the L{MapSource}s this node replicates to C{peer}.
    @param now: the reactor's time (C{None}: never throttled).
    @raise ProtocolError: for any other map (ERR bad-message: the asker
        learns it will get no snapshot, instead of asking for ever).
    """
    wanted = message.header.get("map")
    for source in sources:
        if source.name == wanted:
            if now is not None:
                last = source._answered.get(peer)
                unsent = source._unsentAt.get(peer)
                if (last is not None and now - last < SYNC_INTERVAL) or (
                    unsent is not None and now - unsent < UNSENT_INTERVAL
                ):
                    source.throttled += 1
                    return
                source._answered[peer] = now
            if not sendSnapshot(peer, source) and now is not None:
                source._unsentAt[peer] = now
            return
    raise protocol.ProtocolError(
        protocol.E_BAD_MESSAGE, f"SYNC for map {wanted!r}: this node sends {[s.name for s in sources]}"
    )
