"""
Tests for L{zmqrelay.core.protocol}: the wire codec.
"""

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from zmqrelay.core import protocol
from zmqrelay.core.protocol import ProtocolError

SIG = protocol.SIGNATURE + bytes([protocol.CURRENT_VERSION])

# Values msgpack carries unchanged (lists, not tuples; no NaN, which is not
# equal to itself).
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
_headers = st.dictionaries(st.text(max_size=12), _values, max_size=6)

# Frames that are sometimes well-formed, so random input reaches every check.
_sigFrames = st.one_of(
    st.binary(max_size=8),
    st.integers(min_value=0, max_value=255).map(lambda v: protocol.SIGNATURE + bytes([v])),
)
_headerFrames = st.one_of(
    st.binary(max_size=40),
    _values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
)
_anyFrames = st.one_of(
    st.lists(st.binary(max_size=40), max_size=6),
    st.tuples(_sigFrames, st.binary(max_size=10), _headerFrames, st.binary(max_size=10)).map(list),
    st.tuples(st.binary(max_size=10), _sigFrames, _headerFrames).map(list),
)

_property = settings(max_examples=200, deadline=None, database=None)


class EncodeDecodeTests(SynchronousTestCase):
    """
    Control messages survive a round trip, and the reader is tolerant.
    """

    def test_roundTrip(self):
        """
        decode(encode(...)) gives back the type, header, payload and version.
        """
        frames = protocol.encode(protocol.REQUEST, {"id": 7, "to": "s1"}, b"\x00payload")
        self.assertEqual(len(frames), 4)
        self.assertEqual(frames[0], SIG)
        message = protocol.decode(frames)
        self.assertEqual(message.version, protocol.CURRENT_VERSION)
        self.assertEqual(message.type, protocol.REQUEST)
        self.assertEqual(message.header, {"id": 7, "to": "s1"})
        self.assertEqual(message.payload, b"\x00payload")

    def test_versionWritten(self):
        """
        The version passed to encode() is the byte after the signature.
        """
        frames = protocol.encode(protocol.HELLO, {}, b"", version=9)
        self.assertEqual(frames[0], protocol.SIGNATURE + b"\x09")
        self.assertEqual(protocol.decode(frames).version, 9)

    def test_missingPayload(self):
        """
        A message with no payload frame reads as an empty payload.
        """
        frames = protocol.encode(protocol.HEARTBEAT, {"a": 1})[:3]
        message = protocol.decode(frames)
        self.assertEqual(message.payload, b"")
        self.assertEqual(message.header, {"a": 1})

    def test_extraFramesIgnored(self):
        """
        Frames after the payload are ignored.
        """
        frames = protocol.encode(protocol.REPLY, {"id": 1}, b"p") + [b"x", b"y"]
        message = protocol.decode(frames)
        self.assertEqual(message.payload, b"p")
        self.assertEqual(message.header, {"id": 1})

    def test_unknownHeaderKeysKept(self):
        """
        Unknown header keys do not stop decoding (the roles just ignore them).
        """
        frames = protocol.encode(protocol.REQUEST, {"id": 1, "future-thing": [1, 2]})
        self.assertEqual(protocol.decode(frames).header["future-thing"], [1, 2])

    def test_unknownTypeDecodes(self):
        """
        The codec passes unknown message types through; roles answer them.
        """
        message = protocol.decode(protocol.encode(b"NEWTHING", {}))
        self.assertEqual(message.type, b"NEWTHING")
        self.assertNotIn(b"NEWTHING", protocol.KNOWN_TYPES)

    def test_notificationRoundTrip(self):
        """
        Notifications put the topic first and survive a round trip.
        """
        header = {"server": "s1", "inc": "i", "seq": 3}
        frames = protocol.encodeNotification(b"tick.s1", header, b"data")
        self.assertEqual(frames[0], b"tick.s1")
        self.assertEqual(frames[1], SIG)
        topic, message = protocol.decodeNotification(frames)
        self.assertEqual(topic, b"tick.s1")
        self.assertIsNone(message.type)
        self.assertEqual(message.header, header)
        self.assertEqual(message.payload, b"data")

    def test_notificationMissingPayload(self):
        """
        A notification without a payload frame reads as an empty payload.
        """
        frames = protocol.encodeNotification(b"t", {"seq": 1}, b"x")[:3]
        self.assertEqual(protocol.decodeNotification(frames)[1].payload, b"")

    def test_errorText(self):
        """
        A ProtocolError carries its code and message, and shows both.
        """
        error = ProtocolError(protocol.E_BAD_MESSAGE, "oops")
        self.assertEqual(error.code, "bad-message")
        self.assertEqual(error.message, "oops")
        self.assertEqual(str(error), "bad-message: oops")


class StrictErrorTests(SynchronousTestCase):
    """
    What is not a message raises L{ProtocolError} with code bad-message.
    """

    def assertBad(self, decoder, frames):
        error = self.assertRaises(ProtocolError, decoder, frames)
        self.assertEqual(error.code, protocol.E_BAD_MESSAGE)
        return error

    def test_tooFewFrames(self):
        """
        Fewer than three frames is an error, for both kinds of message.
        """
        for frames in ([], [SIG], [SIG, protocol.REQUEST]):
            self.assertBad(protocol.decode, frames)
            self.assertBad(protocol.decodeNotification, frames)

    def test_badSignature(self):
        """
        A wrong or truncated signature frame is an error.
        """
        header = protocol.encodeHeader({})
        for sig in (b"ZRLX\x01", b"ZRLY", b"ZRLY\x01\x01", b"", b"HELLO"):
            self.assertBad(protocol.decode, [sig, protocol.HELLO, header])
            self.assertBad(protocol.decodeNotification, [b"t", sig, header])

    def test_headerNotMap(self):
        """
        A header that is valid msgpack but not a map is an error.
        """
        for value in ([1, 2], 3, "text", None):
            frames = [SIG, protocol.REQUEST, msgpack.packb(value)]
            error = self.assertBad(protocol.decode, frames)
            self.assertIn("not a map", error.message)

    def test_garbageHeader(self):
        """
        A header that is not msgpack at all is an error.
        """
        for data in (b"\xc1", b"\x92\x01", b"", b"\x81\xa1a"):
            error = self.assertBad(protocol.decode, [SIG, protocol.REQUEST, data])
            self.assertIn("header", error.message)

    def test_decodeHeader(self):
        """
        decodeHeader() reads maps and refuses anything else.
        """
        self.assertEqual(protocol.decodeHeader(protocol.encodeHeader({"k": b"v"})), {"k": b"v"})
        self.assertBad(protocol.decodeHeader, msgpack.packb([]))


class NegotiateTests(SynchronousTestCase):
    """
    L{protocol.negotiate} picks the highest common version.
    """

    def test_highestCommon(self):
        """
        The highest version both sides speak wins.
        """
        self.assertEqual(protocol.negotiate((1, 2, 3), [2, 3, 4]), 3)
        self.assertEqual(protocol.negotiate((1,), [1]), 1)
        self.assertEqual(protocol.negotiate([5, 1], (1, 5, 9)), 5)

    def test_noneInCommon(self):
        """
        No common version gives None.
        """
        self.assertIsNone(protocol.negotiate((1,), [2, 3]))
        self.assertIsNone(protocol.negotiate((1,), []))


class FieldTests(SynchronousTestCase):
    """
    L{protocol.field} checks the type of what a peer sent.
    """

    def test_present(self):
        """
        A field of the right type is returned.
        """
        self.assertEqual(protocol.field({"id": 3}, "id", int), 3)
        self.assertEqual(protocol.field({"to": "s"}, "to", str, required=True), "s")
        self.assertEqual(protocol.field({"r": 1.5}, "r", (int, float)), 1.5)

    def test_default(self):
        """
        A missing (or nil) optional field gives the default.
        """
        self.assertEqual(protocol.field({}, "ttl", int, 500), 500)
        self.assertEqual(protocol.field({"ttl": None}, "ttl", int, 500), 500)
        self.assertIsNone(protocol.field({}, "ttl", int))

    def test_required(self):
        """
        A missing required field is a bad-message error naming it.
        """
        error = self.assertRaises(ProtocolError, protocol.field, {}, "id", int, required=True)
        self.assertEqual(error.code, protocol.E_BAD_MESSAGE)
        self.assertIn("'id'", error.message)

    def test_wrongType(self):
        """
        A field of the wrong type is a bad-message error.
        """
        for header in ({"id": "3"}, {"id": 3.0}, {"id": [3]}, {"id": b"3"}):
            error = self.assertRaises(ProtocolError, protocol.field, header, "id", int)
            self.assertEqual(error.code, protocol.E_BAD_MESSAGE)
        self.assertRaises(ProtocolError, protocol.field, {"to": b"s"}, "to", str)

    def test_boolIsNotInt(self):
        """
        True and False are not integers, even though Python says they are.
        """
        for value in (True, False):
            self.assertRaises(ProtocolError, protocol.field, {"id": value}, "id", int)
            self.assertRaises(
                ProtocolError, protocol.field, {"id": value}, "id", int, required=True
            )
        self.assertIs(protocol.field({"flag": False}, "flag", bool), False)


class VersionListTests(SynchronousTestCase):
    """
    L{protocol.versionList} reads the versions of a HELLO or REJECT.
    """

    def test_valid(self):
        """
        A list of integers 1..255 is returned as is.
        """
        self.assertEqual(protocol.versionList({"versions": [1, 2, 255]}), [1, 2, 255])

    def test_invalid(self):
        """
        Missing, empty, out of range, boolean or non-integer versions are errors.
        """
        for header in (
            {},
            {"versions": None},
            {"versions": []},
            {"versions": [0]},
            {"versions": [256]},
            {"versions": [-1]},
            {"versions": [True]},
            {"versions": [1.0]},
            {"versions": ["1"]},
            {"versions": "1"},
            {"versions": 1},
        ):
            error = self.assertRaises(ProtocolError, protocol.versionList, header)
            self.assertEqual(error.code, protocol.E_BAD_MESSAGE)


class PropertyTests(SynchronousTestCase):
    """
    Properties of the codec over generated input.
    """

    @_property
    @given(
        st.sampled_from(sorted(protocol.KNOWN_TYPES)),
        _headers,
        st.binary(max_size=200),
        st.integers(min_value=0, max_value=255),
    )
    def test_anyMessageRoundTrips(self, msgtype, header, payload, version):
        """
        Any header map and payload survive encode() then decode().
        """
        message = protocol.decode(protocol.encode(msgtype, header, payload, version))
        self.assertEqual(
            (message.version, message.type, message.header, message.payload),
            (version, msgtype, header, payload),
        )

    @_property
    @given(st.binary(max_size=30), _headers, st.binary(max_size=200))
    def test_anyNotificationRoundTrips(self, topic, header, payload):
        """
        Any topic, header map and payload survive a notification round trip.
        """
        got, message = protocol.decodeNotification(
            protocol.encodeNotification(topic, header, payload)
        )
        self.assertEqual((got, message.header, message.payload), (topic, header, payload))

    @_property
    @given(_anyFrames)
    def test_decodeAnyFrames(self, frames):
        """
        decode() of any frames returns a Message or raises ProtocolError.
        """
        try:
            message = protocol.decode(frames)
        except ProtocolError as e:
            self.assertEqual(e.code, protocol.E_BAD_MESSAGE)
        else:
            self.assertIsInstance(message, protocol.Message)
            self.assertIsInstance(message.header, dict)
            self.assertIsInstance(message.payload, bytes)

    @_property
    @given(_anyFrames)
    def test_decodeNotificationAnyFrames(self, frames):
        """
        decodeNotification() of any frames returns (topic, Message) or raises ProtocolError.
        """
        try:
            topic, message = protocol.decodeNotification(frames)
        except ProtocolError as e:
            self.assertEqual(e.code, protocol.E_BAD_MESSAGE)
        else:
            self.assertIsInstance(topic, bytes)
            self.assertIsInstance(message.header, dict)


class NotificationEncoderTests(SynchronousTestCase):
    """
    L{protocol.notificationEncoder} packs the header's fixed part once and
    writes the same bytes as L{protocol.encodeNotification}.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        server=st.text(max_size=300), inc=st.text(max_size=64),
        seq=st.integers(min_value=0, max_value=2 ** 64 - 1),
        topic=st.binary(max_size=40), payload=st.binary(max_size=100),
    )
    def test_sameFrames(self, server, inc, seq, topic, payload):
        encode = protocol.notificationEncoder(server, inc)
        self.assertEqual(
            encode(topic, seq, payload),
            protocol.encodeNotification(topic, {"server": server, "inc": inc, "seq": seq}, payload),
        )
