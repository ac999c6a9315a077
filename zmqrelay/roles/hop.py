"""
What every hop says and reads alike: the endpoints it advertises, ERR
answers, request ids, and the longest deadline it accepts.
"""

from zmqrelay.core import protocol


def advertised(bound, dialled):
    """
    The endpoint a peer should use for one of our bound endpoints.

    A TCP endpoint keeps its port but takes the host the peer dialled to
    reach us: behind NAT, or bound to C{0.0.0.0}, our own idea of our address
    is useless to it.

    @param bound: the endpoint as we advertise it (C{tcp://0.0.0.0:5556}).
    @param dialled: the endpoint the peer connected to (C{tcp://relay:5555}).
    @return: the endpoint the peer should connect to.
    """
    if not bound.startswith("tcp://") or not dialled.startswith("tcp://"):
        return bound
    host = dialled[len("tcp://"):].rsplit(":", 1)[0]
    port = bound.rsplit(":", 1)[1]
    return f"tcp://{host}:{port}"


def sendError(peer, rid, code, text, retryAfter=None, extra=None):
    """
    Send ERR for request C{rid} to C{peer}.

    @param extra: more header fields (a server's C{server} and C{sinc}).
    """
    header = {"id": rid, "code": code, "msg": text}
    if retryAfter is not None:
        header["retry"] = round(retryAfter, 3)
    if extra:
        header.update(extra)
    return peer.send(protocol.ERROR, header)


def noRoute(peer, rid, target, where, known):
    """
    Send ERR no-route for request C{rid}.

    @param known: C{True} if C{target} exists but no instance of it can be
        reached now: the ERR then carries C{known: true} (PROTOCOL.md 12.1),
        and the client waits for one within its deadline instead of failing.
    """
    header = {"id": rid, "code": protocol.E_NO_ROUTE, "msg": f"no server or service {target!r} via {where}"}
    if known:
        header["known"] = True
    return peer.send(protocol.ERROR, header)


def requestTtl(header, config):
    """
    @return: the seconds a REQ's C{ttl} gives it (the node's request timeout
        if absent), at most L{MAX_TTL_MS}.
    """
    ttl = header.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        ttl = int(config.requestTimeout * 1000)
    return max(0, min(ttl, MAX_TTL_MS)) / 1000.0


def requestId(header):
    """
    @return: the C{id} field of a REQ/REP/ERR/MSG header.
    @raise ProtocolError: if it is missing or not an integer.
    """
    return protocol.field(header, "id", int, required=True)


#: The longest deadline a node accepts (ms): a client cannot pin relay state
#: or in-flight slots for longer than this with one request.
MAX_TTL_MS = 600000
