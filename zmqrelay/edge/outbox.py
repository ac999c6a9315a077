"""
What a BATCH (PROTOCOL.md 3.3) that could not be queued leaves to do, for the
two senders of batches: L{zmqrelay.edge.front.Front} and
L{zmqrelay.edge.link.UpstreamLink}.
"""

from twisted.logger import Logger

log = Logger()


def reportUndelivered(owner, peer, items, counters):
    """
    Tell C{owner} about each message of a send that failed after its
    caller had been told it was queued (it waited in an outbox).

    @param owner: the sender's owner; its optional C{undelivered(peer,
        type, header)} is called for each message.
    @param peer: the session or link the messages were for.
    @param items: the C{(type, header, payload)} that were not sent.
    @param counters: the sender's counters; C{undelivered} counts them.
    """
    hook = getattr(owner, "undelivered", None)
    for msgtype, header, _ in items:
        counters["undelivered"] += 1
        if hook is not None:
            try:
                hook(peer, msgtype, header)
            except Exception:
                log.failure("handling an undelivered message to {peer} failed", peer=peer)
