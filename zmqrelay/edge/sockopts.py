"""
The options every zmqrelay socket gets, set on a plain pyzmq socket before
it binds or connects: used by the reactor's sockets (L{zmqrelay.edge._zmq})
and by the notification relay's threads (L{zmqrelay.edge.plane}) alike.
"""

import zmq


#: The listen backlog of every bound socket (the kernel caps it at
#: C{net.core.somaxconn}).
LISTEN_BACKLOG = 4096


def applyOptions(sock, options):
    """
    Set what every zmqrelay socket gets (but high-water marks, which txzmq
    sets on its own sockets): message size limit, TCP keepalive, handshake
    timeout, CURVE.

    @param sock: a L{zmq.Socket}, before it binds or connects.
    @param options: L{SocketOptions}.
    """
    if options.maxMessageSize >= 0:
        sock.setsockopt(zmq.MAXMSGSIZE, options.maxMessageSize)
    # No ZMTP heartbeats (HEARTBEAT_IVL stays 0): our own heartbeats
    # judge liveness on every hop, and the kernel's keepalive clears
    # half-open TCP connections below them.
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    if options.heartbeat:
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, max(1, int(options.heartbeat * 5)))
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, int(options.heartbeat)))
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
    if options.handshake:
        sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(options.handshake * 1000)))
    # ZeroMQ's default listen backlog (100) overflows in a connect storm
    # (thousands of clients after a restart), and each overflow costs the
    # client the kernel's 1 s SYN retry.
    sock.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
    if options.curve is not None:
        useCurve(sock, options.curve)


def useCurve(sock, curve):
    """
    Set the security of the binds and connects that follow on C{sock}.

    @param curve: C{None} for none, or a dict with C{'public'} and
        C{'secret'} and either C{'server': True} (and a ZAP C{'domain'}) or
        C{'serverkey'}, keys in Z85.
    """
    if curve is None:
        sock.setsockopt(zmq.CURVE_SERVER, 0)
        return
    if curve.get("server"):
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        if curve.get("domain"):
            sock.setsockopt(zmq.ZAP_DOMAIN, curve["domain"])
        try:
            # No ZAP handler to ask: refuse, never let everyone in.
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except (AttributeError, zmq.ZMQError):
            pass
    else:
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve["serverkey"])
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve["public"])
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve["secret"])
