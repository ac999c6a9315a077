"""
The zmqrelay wire format: frames to messages and back.

Pure code: no sockets, no reactor.  C{docs/PROTOCOL.md} is the specification;
this module follows it.

A control message (DEALER <-> ROUTER) is four frames::

    [signature + version] [type] [header] [payload]

and a notification (XPUB -> SUB) is four frames with the topic first, so that
ZeroMQ's prefix filtering works on it::

    [topic] [signature + version] [header] [payload]

The header is a msgpack map with text keys; the payload is opaque bytes that
relays forward untouched.
"""

import msgpack

#: The first four bytes of every signature frame.
SIGNATURE = b"ZRLY"

#: The protocol versions this release speaks, lowest first.
SUPPORTED_VERSIONS = (1,)

#: The version a node writes when it has negotiated nothing yet.
CURRENT_VERSION = SUPPORTED_VERSIONS[-1]

#: Pre-built signature frames, one per version byte.
_SIG = {v: SIGNATURE + bytes([v]) for v in range(256)}

# Message types: the second frame of a control message.
HELLO = b"HELLO"
WELCOME = b"WELCOME"
REJECT = b"REJECT"
HEARTBEAT = b"HB"
BYE = b"BYE"
REQUEST = b"REQ"
REPLY = b"REP"
ERROR = b"ERR"
MESSAGE = b"MSG"
PRESENCE = b"PRESENCE"
ROUTES = b"ROUTES"
SYNC = b"SYNC"
#: Several messages in one (section 3.3), to a peer that announced C{batch}.
BATCH = b"BATCH"

#: Types that never travel inside a BATCH.
UNBATCHED = frozenset([HELLO, WELCOME, REJECT, BATCH])

#: Bytes counted for each item of a BATCH besides its payload when a sender
#: sizes a batch (its type and header, generously).
BATCH_ITEM_ALLOWANCE = 512

#: Every message type this version understands.
KNOWN_TYPES = frozenset(
    [
        HELLO,
        WELCOME,
        REJECT,
        HEARTBEAT,
        BYE,
        REQUEST,
        REPLY,
        ERROR,
        MESSAGE,
        PRESENCE,
        ROUTES,
        SYNC,
        BATCH,
    ]
)

# Roles, as named in HELLO.
CLIENT = "client"
SERVER = "server"
PROXY = "proxy"
CLOUD = "cloud"
ROLES = frozenset([CLIENT, SERVER, PROXY, CLOUD])

# Error codes carried in ERR and REJECT.
E_BAD_MESSAGE = "bad-message"
E_UNKNOWN_TYPE = "unknown-type"
E_HELLO_FIRST = "hello-first"
E_VERSION = "version"
E_NO_ROUTE = "no-route"
E_TARGET_LOST = "target-lost"
E_TIMEOUT = "timeout"
E_HANDLER = "handler-error"
E_OVER_LIMIT = "over-limit"
E_TOO_LARGE = "too-large"
E_REJECTED = "rejected"
E_AUTH = "auth"
E_SHUTDOWN = "shutdown"

_packb = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb

#: Bytes of a message's limit kept for its signature, type and header: a
#: payload fits a peer if it is at most the peer's C{max} less this.
HEADROOM = 1024


def announcedMax(header, default):
    """
    The C{max} a peer announced in its HELLO or WELCOME.

    @param default: what to assume if it announced none (or nonsense).
    @rtype: L{int}
    """
    value = header.get("max")
    if isinstance(value, int) and not isinstance(value, bool) and value > HEADROOM:
        return value
    return default


def fits(peer, payload):
    """
    @param peer: anything with a C{maxSize} (the peer's announced C{max}).
    @return: C{True} if a message with C{payload} is within what C{peer}
        accepts; a larger one would make its ZeroMQ socket drop the
        connection.
    """
    return len(payload) <= peer.maxSize - HEADROOM


def typeName(msgtype, limit=32):
    """
    A message type as error texts show it: ASCII as is (C{FROB}), other
    bytes as C{\\xNN}, at most C{limit} bytes; never a Python repr, since the
    text goes to peers written in any language.

    @param msgtype: the type frame (L{bytes}).
    @rtype: L{str}
    """
    return msgtype[:limit].decode("ascii", "backslashreplace")


class ProtocolError(Exception):
    """
    A message could not be decoded or does not follow the protocol.

    @ivar code: the error code to send back (one of the C{E_*} constants).
    @ivar message: a human-readable explanation.
    """

    def __init__(self, code, message):
        Exception.__init__(self, code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"{self.code}: {self.message}"


class Message:
    """
    A decoded control message.

    @ivar version: the protocol version byte of the signature frame.
    @ivar type: the message type (bytes, e.g. L{REQUEST}).
    @ivar header: the decoded header map.
    @ivar payload: the opaque payload bytes.
    """

    __slots__ = ("version", "type", "header", "payload")

    def __init__(self, version, type, header, payload):
        self.version = version
        self.type = type
        self.header = header
        self.payload = payload

    def __repr__(self):
        return (
            f"<Message v{self.version} {self.type!r} {self.header!r} "
            f"{len(self.payload)} bytes>"
        )


def encodeHeader(header):
    """
    Encode a header map.

    @param header: a L{dict} with L{str} keys.
    @rtype: L{bytes}
    """
    return _packb(header)


def decodeHeader(data):
    """
    Decode a header frame.

    @raise ProtocolError: if C{data} is not a msgpack map.
    @rtype: L{dict}
    """
    try:
        header = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:
        raise ProtocolError(E_BAD_MESSAGE, f"header is not msgpack: {e}")
    if not isinstance(header, dict):
        raise ProtocolError(E_BAD_MESSAGE, "header is not a map")
    return header


def encode(msgtype, header, payload=b"", version=CURRENT_VERSION):
    """
    Build the frames of a control message.

    @param msgtype: one of the message type constants.
    @param header: the header map.
    @param payload: the payload bytes.
    @param version: the protocol version to write.
    @return: a L{list} of four L{bytes} frames.
    """
    return [_SIG[version], msgtype, _packb(header), payload]


def decode(frames, start=0):
    """
    Parse the frames of a control message.

    Tolerant reader: frames after the payload are ignored and a missing
    payload frame reads as empty.

    @param frames: a L{list} of L{bytes}.
    @param start: where the message starts in C{frames} (C{1} after a
        ROUTER's routing-id frame).
    @rtype: L{Message}
    @raise ProtocolError: if the frames are not a control message.
    """
    count = len(frames) - start
    if count < 3:
        raise ProtocolError(E_BAD_MESSAGE, f"{count} frames, need 3 or more")
    sig = frames[start]
    if len(sig) != 5 or sig[:4] != SIGNATURE:
        raise ProtocolError(E_BAD_MESSAGE, "bad signature frame")
    try:
        header = _unpackb(frames[start + 2], raw=False, strict_map_key=False)
    except Exception as e:
        raise ProtocolError(E_BAD_MESSAGE, f"header is not msgpack: {e}")
    if header.__class__ is not dict:
        raise ProtocolError(E_BAD_MESSAGE, "header is not a map")
    return Message(sig[4], frames[start + 1], header, frames[start + 3] if count > 3 else b"")


def encodeBatch(items, version=CURRENT_VERSION):
    """
    Build the frames of a BATCH: several messages for one peer in one.

    @param items: a L{list} of C{(type, header, payload)}; no type of
        L{UNBATCHED}.
    @param version: the protocol version to write.
    @return: a L{list} of four L{bytes} frames.
    """
    return [_SIG[version], BATCH, _packb({"n": len(items)}), _packb(items)]


#: Payloads this large travel alone, never in a BATCH: packing them into one
#: would copy them twice (into the batch, out of it), which costs more than
#: the message they would share (ZeroMQ sends such frames without copying).
BATCH_LARGE = 65536


def batches(items, most, room):
    """
    Group what waits for one peer into what to send, in order.

    @param items: C{(type, header, payload)} tuples.
    @param most: the most items in one group (the peer's C{batch}).
    @param room: the bytes one group may take (the peer's C{max} less
        L{HEADROOM}), counting each item as its payload and
        L{BATCH_ITEM_ALLOWANCE}.
    @return: a generator of non-empty L{list}s: one item is sent as it is,
        more as one BATCH.  An item with a payload of L{BATCH_LARGE} bytes
        or more is always alone.
    """
    chunk = []
    size = 0
    for item in items:
        length = len(item[2])
        if length >= BATCH_LARGE:
            if chunk:
                yield chunk
                chunk = []
                size = 0
            yield [item]
            continue
        cost = length + BATCH_ITEM_ALLOWANCE
        if chunk and (len(chunk) >= most or size + cost > room):
            yield chunk
            chunk = []
            size = 0
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk


def decodeBatch(message, limit):
    """
    Take a BATCH apart.

    @param message: the BATCH L{Message}.
    @param limit: the most items accepted (what the reader announced).
    @return: a L{list} of L{Message}, in order, each with the BATCH's
        version.
    @raise ProtocolError: if the payload is not a list of C{[type, header,
        payload]} items (type bin, not one of L{UNBATCHED}; header map;
        payload bin), or has more than C{limit} items.
    """
    try:
        items = _unpackb(message.payload, raw=False, strict_map_key=False)
    except Exception as e:
        raise ProtocolError(E_BAD_MESSAGE, f"batch payload is not msgpack: {e}")
    if items.__class__ is not list:
        raise ProtocolError(E_BAD_MESSAGE, "batch payload is not a list")
    if len(items) > limit:
        raise ProtocolError(E_BAD_MESSAGE, f"batch of {len(items)} messages, at most {limit}")
    version = message.version
    messages = []
    for item in items:
        if item.__class__ is not list or len(item) != 3:
            raise ProtocolError(E_BAD_MESSAGE, "batch item is not [type, header, payload]")
        msgtype, header, payload = item
        if msgtype.__class__ is not bytes or header.__class__ is not dict or (
            payload.__class__ is not bytes
        ):
            raise ProtocolError(E_BAD_MESSAGE, "batch item is not [bin, map, bin]")
        if msgtype in UNBATCHED:
            raise ProtocolError(E_BAD_MESSAGE, f"{typeName(msgtype)} may not travel in a batch")
        messages.append(Message(version, msgtype, header, payload))
    return messages


def batchLimit(header):
    """
    The C{batch} a peer announced in its HELLO or WELCOME.

    @return: the most items it accepts in one BATCH (C{0}: it takes none).
    """
    value = header.get("batch")
    if value.__class__ is int and value >= 2:
        return value
    return 0


def takesParts(header):
    """
    Whether a peer's HELLO or WELCOME said it takes snapshots in parts
    (C{parts}: true; PROTOCOL.md 13.2).
    """
    return header.get("parts") is True


def notificationEncoder(server, inc, version=CURRENT_VERSION):
    """
    A publisher's encoder of notifications: only the sequence number
    changes from one to the next, so the rest of the header is packed once.

    @param server: the publisher's id.
    @param inc: its incarnation.
    @return: C{encode(topic, seq, payload)}, returning the same frames as
        C{encodeNotification(topic, {"server": server, "inc": inc, "seq":
        seq}, payload, version)}.
    """
    head = _packb({"server": server, "inc": inc, "seq": 0})[:-1]
    sig = _SIG[version]
    packb = _packb

    def encode(topic, seq, payload):
        return [topic, sig, head + packb(seq), payload]

    return encode


def encodeNotification(topic, header, payload, version=CURRENT_VERSION):
    """
    Build the frames of a notification.

    @param topic: the topic (bytes); subscribers match on its prefix.
    @param header: the header map (C{server}, C{inc}, C{seq}).
    @param payload: the payload bytes.
    @return: a L{list} of four L{bytes} frames.
    """
    return [topic, _SIG[version], _packb(header), payload]


def decodeNotification(frames):
    """
    Parse a notification.

    @return: a tuple (topic, L{Message}) whose message type is C{None}.
    @raise ProtocolError: if the frames are not a notification.
    """
    if len(frames) < 3:
        raise ProtocolError(E_BAD_MESSAGE, "notification needs 3 or more frames")
    sig = frames[1]
    if len(sig) != 5 or sig[:4] != SIGNATURE:
        raise ProtocolError(E_BAD_MESSAGE, "bad notification signature frame")
    return frames[0], Message(
        sig[4],
        None,
        decodeHeader(frames[2]),
        frames[3] if len(frames) > 3 else b"",
    )


def negotiate(ours, theirs):
    """
    Pick the highest protocol version both sides speak.

    @param ours: the versions we speak.
    @param theirs: the versions the peer says it speaks.
    @return: the version, or C{None} if there is none in common.
    """
    common = set(ours).intersection(theirs)
    return max(common) if common else None


def field(header, key, kind, default=None, required=False):
    """
    Read one header field, checking its type.

    A peer controls every header; this is the single place that checks what
    it sent before any role looks at it.

    @param header: the header map.
    @param key: the field name.
    @param kind: the expected type, or a tuple of types.
    @param default: returned when the field is absent and not required.
    @param required: raise if the field is absent.
    @raise ProtocolError: if the field has the wrong type or is missing.
    """
    value = header.get(key, default)
    if value.__class__ is kind:
        # The common case, decided without the checks below.
        return value
    if value is None:
        if required:
            raise ProtocolError(E_BAD_MESSAGE, f"header field {key!r} is required")
        return default
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise ProtocolError(
            E_BAD_MESSAGE, f"header field {key!r} has type {type(value).__name__}"
        )
    return value


def versionList(header):
    """
    Read the C{versions} field of a HELLO or REJECT.

    @return: a L{list} of L{int}.
    @raise ProtocolError: if it is not a list of small integers.
    """
    versions = field(header, "versions", list, required=True)
    if not versions or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v < 256
        for v in versions
    ):
        raise ProtocolError(E_BAD_MESSAGE, "versions must be integers 1..255")
    return versions
