"""
The public import path of the typed failures a request can end with (see L{zmqrelay.core.errors}).
"""

from zmqrelay.core.errors import (
    RelayError,
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
    fromWire,
)

__all__ = [
    "RelayError",
    "RequestTimeout",
    "NoRoute",
    "TargetLost",
    "HandlerError",
    "OverLimit",
    "TooLarge",
    "BadMessage",
    "UnknownType",
    "VersionMismatch",
    "Rejected",
    "AuthenticationFailed",
    "NotConnected",
    "ShuttingDown",
    "fromWire",
]
