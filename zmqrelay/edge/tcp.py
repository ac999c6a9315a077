"""
What the kernel knows of the TCP connections ZeroMQ owns: their peer,
their backlog, and a way to end one under ZeroMQ's feet.  Descriptors come
from a socket monitor (L{zmqrelay.edge._zmq.watchConnections}); they are
ZeroMQ's, so nothing here closes one.
"""

import os
import socket as _socket
import struct

_TCP_INFO = getattr(_socket, "TCP_INFO", 11)
# Linux struct tcp_info: tcpi_bytes_acked (u64) at 120, tcpi_notsent_bytes
# (u32) at 144 (Linux 4.1 and 4.6 on).
_ACKED = struct.Struct("=Q")
_NOTSENT = struct.Struct("=I")


def tcpBacklog(fd):
    """
    What the kernel says of the TCP connection on descriptor C{fd} (owned
    by ZeroMQ: it is neither duplicated nor closed).

    @return: C{(acked, notsent)}: bytes the peer has acknowledged so far,
        and bytes written but not yet sent; or C{None} if C{fd} is not a
        TCP socket (any more), or the kernel is too old to tell.
    """
    try:
        sock = _socket.socket(fileno=fd)
    except (OSError, ValueError):
        return None
    try:
        info = sock.getsockopt(_socket.IPPROTO_TCP, _TCP_INFO, 152)
    except OSError:
        return None
    finally:
        sock.detach()
    if len(info) < 148:
        return None
    return _ACKED.unpack_from(info, 120)[0], _NOTSENT.unpack_from(info, 144)[0]


def peerAddress(fd):
    """
    @return: the remote address of the TCP connection on descriptor C{fd},
        or C{None} if it is not a connected socket (any more).
    """
    try:
        sock = _socket.socket(fileno=fd)
    except (OSError, ValueError):
        return None
    try:
        return sock.getpeername()
    except OSError:
        return None
    finally:
        # The descriptor stays ZeroMQ's: let go of it, never close it.
        sock.detach()


_LINGER_RESET = struct.pack("ii", 1, 0)


def cutConnection(fd, address, reset=False):
    """
    End the connection on descriptor C{fd} under ZeroMQ's feet: shut the
    TCP connection down (never close the descriptor, which ZeroMQ owns);
    ZeroMQ then sees it end and forgets it as it does any lost connection.

    @param address: what L{peerAddress} said for C{fd} when it was
        accepted: if the descriptor now holds another connection (closed
        and reused meanwhile) it is left alone.
    @param reset: also drop what the kernel still holds for the peer: when
        ZeroMQ closes the descriptor the connection is reset (C{SO_LINGER}
        0) instead of lingering, unacknowledged, until a peer that does not
        read gives up (a slow consumer's queue would otherwise stay in the
        kernel for minutes).
    @return: C{True} if the connection was shut down.
    """
    try:
        sock = _socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        if address is None or sock.getpeername() != address:
            return False
        if reset:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RESET)
        sock.shutdown(_socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.close()
