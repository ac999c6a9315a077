"""
The typed failures a zmqrelay Deferred can carry.

Every error code on the wire (see L{zmqrelay.core.protocol}) maps to one class
here, so an application can C{trap} exactly what it can handle.
"""

from zmqrelay.core import protocol


class RelayError(Exception):
    """
    Base class of every zmqrelay failure.

    @ivar code: the wire error code.
    @ivar message: a human-readable explanation.
    @ivar retryAfter: seconds the sender should wait before trying again,
        or C{None}.
    """

    code = "error"

    def __init__(self, message="", retryAfter=None):
        Exception.__init__(self, message)
        self.message = message
        self.retryAfter = retryAfter

    def __str__(self):
        text = f"{self.code}: {self.message}"
        if self.retryAfter is not None:
            text += f" (retry after {self.retryAfter:.3g}s)"
        return text


class RequestTimeout(RelayError):
    """No answer arrived before the request's deadline."""

    code = protocol.E_TIMEOUT


class NoRoute(RelayError):
    """No live server (or client) with that id or service is known."""

    code = protocol.E_NO_ROUTE


class TargetLost(RelayError):
    """The target, or a hop on the way to it, went away with the request in flight."""

    code = protocol.E_TARGET_LOST


class HandlerError(RelayError):
    """The server's request handler failed."""

    code = protocol.E_HANDLER


class OverLimit(RelayError):
    """A limit of a node was exceeded; see C{retryAfter}."""

    code = protocol.E_OVER_LIMIT


class TooLarge(RelayError):
    """The message is larger than the peer accepts."""

    code = protocol.E_TOO_LARGE


class BadMessage(RelayError):
    """The peer could not parse what we sent."""

    code = protocol.E_BAD_MESSAGE


class UnknownType(RelayError):
    """The peer does not know the message type we sent."""

    code = protocol.E_UNKNOWN_TYPE


class VersionMismatch(RelayError):
    """The two nodes have no protocol version in common."""

    code = protocol.E_VERSION


class Rejected(RelayError):
    """The peer refused us (hello refused, role not allowed, ...)."""

    code = protocol.E_REJECTED


class AuthenticationFailed(Rejected):
    """The peer refused our credentials or our claimed id."""

    code = protocol.E_AUTH


class NotConnected(RelayError):
    """There is no live path to send this on."""

    code = "not-connected"


class ShuttingDown(RelayError):
    """The node is stopping; the request was abandoned."""

    code = protocol.E_SHUTDOWN


class Unavailable(RelayError):
    """
    The target is known (it was offered, or answered before) but no instance
    of it could be reached before the request's deadline.  Raised by the
    client itself, never sent on the wire.
    """

    code = "unavailable"


_BY_CODE = {
    cls.code: cls
    for cls in [
        RequestTimeout,
        NoRoute,
        TargetLost,
        HandlerError,
        OverLimit,
        TooLarge,
        BadMessage,
        UnknownType,
        VersionMismatch,
        Rejected,
        AuthenticationFailed,
        NotConnected,
        ShuttingDown,
        Unavailable,
    ]
}


def fromWire(code, message="", retryAfter=None):
    """
    Build the exception for an error code received from a peer.

    An unknown code (from a newer peer) becomes a plain L{RelayError} that
    keeps the code.

    @rtype: L{RelayError}
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        error = RelayError(message, retryAfter)
        error.code = str(code)
        return error
    return cls(message, retryAfter)
