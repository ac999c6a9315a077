"""
A server: answers requests and publishes notifications.

It is made of:
  - a L{Front} where LAN clients attach directly;
  - an L{UpstreamLink} to its site's proxy (optional);
  - the application, an L{IRequestHandler}, called once per request id
    (a L{ReplyCache} answers retries);
  - an XPUB socket, bound for direct subscribers and connected to the
    proxy, with a L{NotificationHistory} for replay;
  - presence: its direct clients plus the proxy's replicated view;
  - L{Calls} for messages it sends to clients.
"""

from inspect import iscoroutine

import msgpack
import zmq
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core import errors, presence, protocol
from zmqrelay.edge import security
from zmqrelay.core.calls import Calls
from zmqrelay.core.errors import Rejected
from zmqrelay.edge.front import Front
from zmqrelay.core.history import NotificationHistory
from zmqrelay.interfaces import IFrontOwner, ILinkOwner, IRequest, IServer
from zmqrelay.edge.link import UpstreamLink
from zmqrelay.roles.hop import MAX_TTL_MS, advertised, noRoute, requestId, sendError
from zmqrelay.roles.drain import Drain
from zmqrelay.roles.node import Node, PresenceViewMixin
from zmqrelay.core.presence import PresenceView
from zmqrelay.core.replica import MapReplica, MapSource, answerSync, applyFrom, sendSnapshot
from zmqrelay.core.replycache import ReplyCache
from zmqrelay.core.slowsub import SlowSubscribers

log = Logger()

#: Seconds a publisher told it outran a hop (L{Server.publish}) is asked to
#: wait before publishing again.
PUBLISH_RETRY = 0.01


class _DeadlinePassed(Exception):
    """
    A handler's Deferred was cancelled at the request's deadline (answered
    ERR timeout; anything the handler itself raises is ERR handler-error).
    """


def _deadlinePassed(result, timeout):
    return Failure(_DeadlinePassed(f"the handler did not answer within {timeout:.3g}s"))


@implementer(IRequest)
class Request:
    """
    One request, as the application sees it.
    """

    __slots__ = ("clientId", "clientIncarnation", "requestId", "target", "path", "deadline", "payload")

    def __init__(self, clientId, clientIncarnation, requestId, target, path, deadline, payload):
        self.clientId = clientId
        self.clientIncarnation = clientIncarnation
        self.requestId = requestId
        self.target = target
        self.path = path
        self.deadline = deadline
        self.payload = payload

    def __repr__(self):
        return f"<Request {self.requestId} from {self.clientId} via {self.path} for {self.target}>"


@implementer(IServer, IFrontOwner, ILinkOwner)
class Server(PresenceViewMixin, Node):
    """
    The server role.

    @ivar handler: the application's L{IRequestHandler}.
    @ivar presence: the L{PresenceView} of direct, proxy and cloud clients.
    """

    role = protocol.SERVER

    def __init__(self, config, handler, services=(), listen=None, pub=None, proxy=None,
                 reactor=None, socketFactory=None):
        """
        @param config: the L{zmqrelay.core.config.NodeConfig} (its C{nodeId}
            is the server id clients name).
        @param handler: the L{IRequestHandler}; C{None} if it is made
            afterwards (it usually wants the server): set C{handler} before
            L{startService}.
        @param services: the service names this server offers.
        @param listen: the endpoint its ROUTER binds for direct clients
            (C{tcp://*:5575}), or C{None} for none.
        @param pub: the endpoint its XPUB binds for direct subscribers, or
            C{None}.
        @param proxy: the site proxy's control endpoint, or C{None} for a
            server of direct clients only (then C{listen} is needed).
        @param reactor: the reactor (default: the global one).
        @param socketFactory: an L{zmqrelay.interfaces.ISocketFactory}
            (default: one of its own, on a ZeroMQ context it owns).
        """
        Node.__init__(self, config, reactor, socketFactory)
        self.handler = handler
        self.serviceNames = tuple(services)
        self.listenAddress = listen
        self.pubAddress = pub
        self.proxyAddress = proxy
        self.presence = PresenceView()
        self.proxyPresence = MapReplica("presence", presence.checkPresenceEntry)
        # Our direct clients, reported up to the proxy and on to the cloud.
        self.localSource = MapSource("local")
        self.replies = ReplyCache(config.replyCacheSize, config.replyCacheBytes)
        self.history = NotificationHistory(config.historySize, maxBytes=config.historyBytes)
        self.calls = Calls(self.reactor)
        self._waiting = {}
        self._running = {}
        self._stopping = False
        self._drainer = None
        self.draining = False
        self._upstreamPub = None
        # Notifications to the proxy: a socket of its own that never drops.
        self.upPub = None
        self.front = None
        self.link = None
        self.xpub = None
        # Prefixes direct subscribers hold on xpub (see _directSubscriptions).
        self._directPrefixes = 0
        self._encodeNotification = protocol.notificationEncoder(self.nodeId, self.incarnation)
        # What was sent to xpub, for the slow subscribers' watch.
        self._directSent = [0, 0]
        self.slow = None
        self.counters = {"requests": 0, "handled": 0, "failed": 0, "expired": 0,
                         "published": 0, "replays": 0, "messages": 0}

    def _countedParts(self):
        parts = []
        if self.front is not None:
            parts.append(("front", self.front))
        if self.link is not None:
            parts.append(("proxy", self.link))
        return parts

    def stats(self):
        result = Node.stats(self)
        result["cache.hits"] = self.replies.hits
        result["cache.bytes"] = self.replies.bytes
        result["cache.evicted"] = self.replies.evicted
        result["history.bytes"] = self.history.bytes
        result["history.evicted"] = self.history.evicted
        result["calls.late"] = self.calls.late
        return result

    def _start(self):
        self._directPrefixes = 0
        self.xpub = self.socketFactory.socket(
            "xpub", self._directSubscriptions, security.boundOptions(self.config, security.SUBSCRIBE)
        )
        # Direct subscribers: a full queue fails the send, which is then
        # made again dropping for the full ones only (see publish).
        self.xpub.socket.setsockopt(zmq.XPUB_NODROP, 1)
        if self.pubAddress:
            if self.config.subBytes > 0:
                # Direct subscribers that do not read are cut off past
                # --sub-bytes, as a relay does (zmqrelay.core.slowsub).
                self.slow = SlowSubscribers(
                    self.reactor, self.config.subBytes, self._directFigures,
                    self.xpub.backlog, self._cutDirect,
                    hwm=self.xpub.socket.getsockopt(zmq.SNDHWM), counters=self.counters,
                )
                self.xpub.monitor(self.slow.connectionEvent)
            self._endpoints["pub"] = self.xpub.bind(self.pubAddress)
            if self.slow is not None:
                self.slow.start()
        if self.listenAddress:
            self.front = Front(self, self.config, self.reactor, self.socketFactory, self.listenAddress)
            self._endpoints["control"] = self.front.start()
        if self.proxyAddress:
            self.link = UpstreamLink(
                self, self.config, self.reactor, self.socketFactory, self.proxyAddress, "proxy"
            )
            self.link.start()
            self._startMarks()

    def _drain(self):
        """
        Stopping: say we are draining (HB with drain, PROTOCOL.md 7.1) to the
        proxy and the direct clients, so no new request is routed here, and
        let the running handlers finish (and their answers go) within
        C{drainTimeout}; what still runs then is cancelled by L{_stop}.
        """
        if self.config.drainTimeout <= 0 or not self._running:
            return None
        self.draining = True
        self._announceDrain()
        self._drainer = Drain(self.reactor, self.config.drainTimeout, lambda: bool(self._running))
        return self._drainer.start()

    def _announceDrain(self, session=None):
        if session is not None:
            session.send(protocol.HEARTBEAT, {"drain": True})
            return
        if self.link is not None and self.link.alive:
            self.link.send(protocol.HEARTBEAT, {"drain": True})
        if self.front is not None:
            for peer in self.front.peers():
                peer.send(protocol.HEARTBEAT, {"drain": True})

    def _stop(self):
        self._stopMarks()
        # Handlers still running are cancelled (their clients get ERR
        # shutdown while the sockets are still open), with their timers.
        self._stopping = True
        for d in list(self._running.values()):
            d.cancel()
        self._running.clear()
        self._stopping = False
        self.draining = False
        self._drainer = None
        self._upstreamPub = None
        if self.upPub is not None:
            self.upPub.close()
            self.upPub = None
        self.calls.failAll(errors.ShuttingDown("server stopping"))
        if self.link is not None:
            self.link.stop()
        if self.front is not None:
            self.front.stop()
        if self.slow is not None:
            self.slow.stop()
            self.slow = None
        if self.xpub is not None:
            self.xpub.close()
            self.xpub = None

    def _cutDirect(self, fd, address):
        # A slow consumer: reset, so the kernel lets go of its queue too.
        return self.xpub is not None and self.xpub.cut(fd, address, reset=True)

    def _directFigures(self):
        return tuple(self._directSent)

    # The application's API

    def publish(self, topic, payload):
        """
        See L{IServer.publish}.
        """
        if not isinstance(topic, bytes) or not isinstance(payload, bytes):
            raise TypeError("topic and payload must be bytes")
        if len(topic) + len(payload) > self.config.maxMessageSize - protocol.HEADROOM:
            # Relays drop what is over their limit; say so here, not there.
            raise errors.TooLarge(
                f"notification of {len(topic) + len(payload)} bytes, limit "
                f"{self.config.maxMessageSize - protocol.HEADROOM}"
            )
        seq = self.history.record(topic, payload)
        self.counters["published"] += 1
        frames = self._encodeNotification(topic, seq, payload)
        xpub = self.xpub
        if xpub is not None and self._directPrefixes:
            # Only while a direct subscriber subscribed to something: a send
            # costs a pyzmq call per frame even when ZeroMQ then drops it.
            if not xpub.send(frames):
                self._slowSubscriber(xpub, frames)
            sent = self._directSent
            sent[0] += len(topic) + len(frames[1]) + len(frames[2]) + len(payload)
            sent[1] += 1
        up = self.upPub
        if up is not None and not up.send(frames):
            # The queue toward the proxy is full: the publisher outruns
            # that hop.  Counted, and the publisher told, every time.
            self.counters["publish-dropped"] = self.counters.get("publish-dropped", 0) + 1
            error = errors.OverLimit(
                f"notification {seq} not sent: the queue toward the proxy is full "
                "(kept in the history for replay)",
                PUBLISH_RETRY,
            )
            error.seq = seq
            raise error
        return seq

    def _slowSubscriber(self, xpub, frames):
        # XPUB_NODROP: a direct subscriber's queue is full.  Send it again
        # dropping for the full ones only, so the others get it; ZeroMQ then
        # skips that subscriber until it has caught up (its sequence numbers
        # show the gap).  Counted as the notification relay did.
        raw = xpub.socket
        raw.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            xpub.send(frames)
        finally:
            raw.setsockopt(zmq.XPUB_NODROP, 1)
        self.counters["slow-dropped"] = self.counters.get("slow-dropped", 0) + 1

    def send(self, clientId, payload, timeout=None):
        """
        See L{IServer.send}.
        """
        if not isinstance(clientId, str) or not isinstance(payload, bytes):
            return fail(TypeError("clientId must be str and payload bytes"))
        timeout = self.config.requestTimeout if timeout is None else timeout
        peer = self.front.byNode.get(clientId) if self.front is not None else None
        if peer is None or peer.role != protocol.CLIENT:
            peer = self.link if self.link is not None and self.link.alive else None
            if peer is None or not self.presence.isConnected(clientId):
                return fail(errors.NoRoute(f"client {clientId!r} is not connected"))
        if not protocol.fits(peer, payload):
            return fail(errors.TooLarge(f"{len(payload)} bytes is more than {peer.nodeId} accepts"))
        rid = self.calls.newId()
        d = self.calls.expect(rid, peer, timeout)
        header = {"id": rid, "to": clientId, "ttl": int(timeout * 1000), "from": self.nodeId,
                  "mid": f"{self.incarnation}/{rid}"}
        if peer.send(protocol.MESSAGE, header, payload):
            self.counters["messages"] += 1
        else:
            self.calls.fail(rid, errors.OverLimit(f"queue to {peer.nodeId} is full", 0.1))
        return d.addCallback(lambda _: None)

    # Front callbacks: direct clients

    def peerHello(self, session):
        if session.role != protocol.CLIENT:
            raise Rejected(f"a server accepts clients, not {session.role}s")

    def welcomeExtras(self, session):
        extras = {"services": list(self.serviceNames)}
        if "pub" in self._endpoints:
            extras["pub"] = self._endpoints["pub"]
        return extras

    def peerJoined(self, session):
        if self.draining:
            self._announceDrain(session)
        self.presence.attach(session.nodeId, presence.DIRECT, session.incarnation, session.since)
        self._toProxy(self.localSource.set(
            (session.nodeId, presence.DIRECT, self.nodeId), [session.incarnation, session.since]
        ))

    def peerResumed(self, session):
        pass

    def peerLeft(self, session, reason):
        self._waiting.pop(session, None)
        self.calls.failPeer(session, errors.TargetLost(f"client {session.nodeId} {reason}"))
        self.presence.detach(session.nodeId, presence.DIRECT, session.incarnation, reason)
        delta = self.localSource.delete((session.nodeId, presence.DIRECT, self.nodeId), reason)
        if delta is not None:
            self._toProxy(delta)

    def _toProxy(self, message):
        if self.link is not None and self.link.alive:
            self.link.send(protocol.PRESENCE, *message)

    def _mark(self):
        self._toProxy(self.localSource.mark())

    def peerMessage(self, session, message):
        msgtype = message.type
        if msgtype == protocol.REQUEST:
            header = message.header
            if self._sys(session, header, message.payload):
                return
            rid = requestId(header)
            self._request(
                session, message, session.nodeId, session.incarnation, rid, presence.DIRECT
            )
        elif msgtype in (protocol.REPLY, protocol.ERROR):
            self.calls.settle(session, message)
        else:
            raise protocol.ProtocolError(protocol.E_UNKNOWN_TYPE, f"a client may not send {protocol.typeName(msgtype)} here")

    def isSysFor(self, header):
        # A server answers sys requests addressed to it by id or by any of
        # its service names; the application never sees them.
        return header.get("sys") is not None and (
            Node.isSysFor(self, header) or header.get("to") in self.serviceNames
        )

    def _sys(self, peer, header, payload):
        """
        A sys request (but replay, which L{_request} answers) is this node's,
        never the application's (PROTOCOL.md 10.7): answered if it is for
        this server, else ERR no-route.

        @return: C{True} if C{header} is such a request (it is dealt with).
        """
        op = header.get("sys")
        if op is None or op == "replay":
            return False
        if self.isSysFor(header):
            self.answerSys(peer, header, payload)
        else:
            noRoute(peer, requestId(header), header.get("to"), "this server", False)
        return True

    # Link callbacks: the proxy

    def helloExtras(self, link):
        return {"services": list(self.serviceNames)}

    def linkUp(self, link):
        if self.draining:
            self._announceDrain(link)
        sendSnapshot(link, self.localSource)
        sub = link.welcome.get("sub")
        if isinstance(sub, str):
            endpoint = advertised(sub, link.endpoint)
            if endpoint != self._upstreamPub:
                if self.upPub is None:
                    self.upPub = self.socketFactory.socket("xpub", self._subscriptions)
                    # A full queue toward the proxy fails the send, so that
                    # publish can say so.
                    self.upPub.socket.setsockopt(zmq.XPUB_NODROP, 1)
                if self._upstreamPub:
                    self.upPub.disconnect(self._upstreamPub)
                self._upstreamPub = endpoint
                security.secureDial(self.upPub, self.config, link.endpoint)
                self.upPub.connect(endpoint)

    def linkDown(self, link, reason):
        self.calls.failPeer(link, errors.TargetLost(f"proxy {reason}"))
        self._applyProxyPresence(self.proxyPresence.clear(presence.UPSTREAM_LOST))

    def linkMessage(self, link, message):
        msgtype = message.type
        header = message.header
        if msgtype == protocol.REQUEST:
            if self._sys(link, header, message.payload):
                return
            self._request(
                link,
                message,
                protocol.field(header, "client", str, required=True),
                protocol.field(header, "cinc", str, ""),
                protocol.field(header, "creq", int, required=True),
                protocol.field(header, "path", str, presence.PROXY),
            )
        elif msgtype in (protocol.REPLY, protocol.ERROR):
            self.calls.settle(link, message)
        elif msgtype == protocol.PRESENCE:
            self._applyProxyPresence(applyFrom(self.proxyPresence, link, message))
        elif msgtype == protocol.SYNC:
            answerSync(link, message, self.localSource, now=self.reactor.seconds())
        else:
            raise protocol.ProtocolError(protocol.E_UNKNOWN_TYPE, f"unexpected {protocol.typeName(msgtype)} from the proxy")

    def _applyProxyPresence(self, changes):
        for step, clientId, path, incarnation, extra in presence.replicaChanges(changes):
            if path == presence.DIRECT:
                continue
            if step == "detach":
                self.presence.detach(clientId, path, incarnation, extra)
            else:
                self.presence.attach(clientId, path, incarnation, extra)

    # Requests

    def _request(self, peer, message, clientId, clientInc, creq, path):
        header = message.header
        rid = requestId(header)
        self.counters["requests"] += 1
        if header.get("sys") == "replay":
            self._replay(peer, rid, message.payload)
            return
        # Malformed fields are refused (ERR bad-message) before anything is
        # counted for the request.
        ttl = min(
            protocol.field(header, "ttl", int, int(self.config.requestTimeout * 1000)), MAX_TTL_MS
        )
        target = protocol.field(header, "to", str, self.nodeId)
        key = (clientId, clientInc, creq)
        cached = self.replies.lookup(key)
        if cached is not None and cached.done:
            self._send(peer, rid, cached.msgtype, cached.header, cached.payload)
            return
        # Relays bound what clients behind them have in flight; a direct
        # client is bounded here.
        if peer.role == protocol.CLIENT:
            waiting = self._waiting.get(peer, 0)
            if waiting >= self.config.maxInFlight:
                self._error(peer, rid, protocol.E_OVER_LIMIT,
                            f"more than {self.config.maxInFlight} requests in flight", 0.05)
                return
            self._waiting[peer] = waiting + 1
        if cached is not None:
            cached.waiters.append((peer, rid, peer.incarnation))
            return
        now = self.reactor.seconds()
        if ttl <= 0:
            self.counters["expired"] += 1
            self._done(peer)
            # Nothing ran and nothing is kept: like a relay's, this answer
            # names no server, so the client may retry it.
            sendError(peer, rid, protocol.E_TIMEOUT, "deadline passed before the server got it")
            return
        request = Request(clientId, clientInc, creq, target, path, now + ttl / 1000.0, message.payload)
        # The peer's incarnation goes with the waiter: an answer must not go
        # to a restarted proxy that reuses the forward id for another request.
        self.replies.begin(key).waiters.append((peer, rid, peer.incarnation))
        try:
            result = self.handler.handleRequest(request)
        except BaseException:
            result = Failure()
        if result.__class__ is bytes:
            # The common case of a handler that answers at once: no Deferred,
            # no timer.
            self.timings["handler"].observe(0.0)
            self._handled(result, key)
            return
        if isinstance(result, Failure):
            d = fail(result)
        elif isinstance(result, Deferred):
            d = result
        elif iscoroutine(result):
            d = Deferred.fromCoroutine(result)
        else:
            # Not bytes: _handled answers ERR handler.
            d = succeed(result)
        self.timings["handler"].timeDeferred(d, self.reactor)
        if d.called:
            d.addCallbacks(self._handled, self._handlerFailed, callbackArgs=(key,), errbackArgs=(key, request))
            return
        # A handler that never answers must not pin the request forever.
        d.addTimeout(ttl / 1000.0, self.reactor, onTimeoutCancel=_deadlinePassed)
        self._running[key] = d
        d.addBoth(self._finished, key)
        d.addCallbacks(self._handled, self._handlerFailed, callbackArgs=(key,), errbackArgs=(key, request))

    def _finished(self, result, key):
        self._running.pop(key, None)
        if self._drainer is not None:
            # After this answer has gone (the callbacks below send it).
            self.reactor.callLater(0, self._drainer.check)
        return result

    def _handled(self, result, key):
        if not isinstance(result, bytes):
            return self._handlerFailed(None, key, None, f"handler returned {type(result).__name__}, not bytes")
        self.counters["handled"] += 1
        self._answer(key, protocol.REPLY, {}, result)

    def _handlerFailed(self, failure, key, request, text=None):
        self.counters["failed"] += 1
        code = protocol.E_HANDLER
        if failure is not None and self._stopping and failure.check(defer.CancelledError):
            code, text = protocol.E_SHUTDOWN, "the server is stopping"
        elif failure is not None and failure.check(_DeadlinePassed):
            code, text = protocol.E_TIMEOUT, "the handler did not answer before the deadline"
        elif failure is not None:
            log.failure("handler failed for {request}", failure, request=request)
            text = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        self._answer(key, protocol.ERROR, {"code": code, "msg": text}, b"")

    def _done(self, peer):
        waiting = self._waiting.get(peer)
        if waiting is not None:
            if waiting <= 1:
                del self._waiting[peer]
            else:
                self._waiting[peer] = waiting - 1

    def _answer(self, key, msgtype, header, payload):
        for peer, rid, incarnation in self.replies.finish(key, msgtype, header, payload):
            self._done(peer)
            if peer.incarnation != incarnation or not peer.alive:
                self.counters["stale"] = self.counters.get("stale", 0) + 1
                continue
            self._send(peer, rid, msgtype, header, payload)

    def _send(self, peer, rid, msgtype, header, payload):
        """
        Send an answer to request C{rid}, or ERR too-large if it is more
        than the peer accepts.
        """
        if not protocol.fits(peer, payload):
            self._error(peer, rid, protocol.E_TOO_LARGE,
                        f"the reply of {len(payload)} bytes is more than {peer.nodeId} accepts")
            return
        answer = dict(header)
        answer["id"] = rid
        # Which server answered (PROTOCOL.md 10.2): retries stick to it.
        answer["server"] = self.nodeId
        answer["sinc"] = self.incarnation
        peer.send(msgtype, answer, payload)

    def _replay(self, peer, rid, payload):
        self.counters["replays"] += 1
        try:
            ask = msgpack.unpackb(payload, raw=False)
            topic, inc, first, last = ask["topic"], ask["inc"], ask["first"], ask["last"]
            if not (isinstance(topic, bytes) and isinstance(first, int) and isinstance(last, int)):
                raise ValueError("bad types")
        except Exception as e:
            sendError(peer, rid, protocol.E_BAD_MESSAGE, f"bad replay request: {e}")
            return
        items = self.history.replay(topic, first, last) if inc == self.incarnation else []
        # As many as fit what the asker accepts, oldest first; it reports the
        # rest lost.
        room = peer.maxSize - protocol.HEADROOM - 64
        for n, (seq, data) in enumerate(items):
            room -= len(data) + 16
            if room < 0:
                items = items[:n]
                break
        peer.send(
            protocol.REPLY,
            {"id": rid, "server": self.nodeId, "sinc": self.incarnation},
            msgpack.packb({"inc": self.incarnation, "items": items}, use_bin_type=True),
        )

    def _error(self, peer, rid, code, text, retryAfter=None):
        """
        Send ERR for request C{rid}, naming this server (PROTOCOL.md 10.2).
        """
        sendError(peer, rid, code, text, retryAfter, {"server": self.nodeId, "sinc": self.incarnation})

    def _directSubscriptions(self, frames):
        # ZeroMQ passes on the first subscription to a prefix and the last
        # unsubscription from it (also when a subscriber goes): their
        # difference is how many prefixes direct subscribers hold.
        if len(frames) == 1:
            flag = frames[0][:1]
            if flag == b"\x01":
                self._directPrefixes += 1
            elif flag == b"\x00" and self._directPrefixes > 0:
                self._directPrefixes -= 1
        self._subscriptions(frames)

    def _subscriptions(self, frames):
        # (Un)subscriptions arrive here; ZeroMQ filters for us, so only count.
        # Anything else a subscriber sends (an XSUB may send any frames) is
        # bad input: counted, never acted on.
        if len(frames) != 1 or frames[0][:1] not in (b"\x00", b"\x01"):
            self.counters["malformed"] = self.counters.get("malformed", 0) + 1
            return
        self.counters["subscriptions"] = self.counters.get("subscriptions", 0) + 1

