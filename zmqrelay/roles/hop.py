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


def sendError(peer, rid, code, text, retryAfter=None):
    """
    Send ERR for request C{rid} to C{peer}.
    """
    header = {"id": rid, "code": code, "msg": text}
    if retryAfter is not None:
        header["retry"] = round(retryAfter, 3)
    return peer.send(protocol.ERROR, header)


def requestId(header):
    """
    @return: the C{id} field of a REQ/REP/ERR/MSG header.
    @raise ProtocolError: if it is missing or not an integer.
    """
    return protocol.field(header, "id", int, required=True)


#: The longest deadline a node accepts (ms): a client cannot pin relay state
#: or in-flight slots for longer than this with one request.
MAX_TTL_MS = 600000
