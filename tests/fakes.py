"""
Fakes shared by the unit tests: sockets that record what is sent, owners
that record what a L{zmqrelay.edge.front.Front} or L{zmqrelay.edge.link.UpstreamLink}
tells them, and a few helpers to build and read frames.

Nothing here opens a socket or touches the global reactor.
"""

import itertools

from zope.interface import implementer

from zmqrelay.core import protocol
from zmqrelay.interfaces import (
    IFrontOwner,
    ILinkOwner,
    INotificationReceiver,
    IPresenceObserver,
    IRequestHandler,
    ISocket,
    ISocketFactory,
)


class FakeRawSocket:
    """
    Stands in for the pyzmq socket under an adapter socket (its C{socket}):
    records the options set on it.

    @ivar options: option number to the value last set.
    @ivar history: every C{(option, value)} set, in order.
    """

    def __init__(self):
        self.options = {}
        self.history = []

    def setsockopt(self, option, value):
        self.options[option] = value
        self.history.append((option, value))

    def getsockopt(self, option):
        return self.options.get(option, 0)


@implementer(ISocket)
class FakeSocket:
    """
    A socket that records what is done to it.

    @ivar kind: C{'router'}, C{'dealer'}, ...
    @ivar onMessage: the callback the code under test gave for incoming
        messages; call L{receive} to deliver one.
    @ivar sent: every frame list L{send} accepted.
    @ivar refused: every frame list L{send} refused (closed socket, or
        C{sendResult} false).
    @ivar sendResult: set C{False} to make L{send} refuse, as a full queue
        would.
    @ivar userIds: whether the factory was asked for ZAP User-Ids.
    @ivar curves: every CURVE setting L{useCurve} was given.
    @ivar socket: the L{FakeRawSocket} options are set on.
    @ivar onDiscard: what the code under test gave for messages discarded
        while read (see L{discard}).
    @ivar onEvent: the monitor callback given to L{monitor}, or C{None}.
    @ivar cuts: every C{(fd, address)} L{cut} was asked for.
    @ivar cutResult: what L{cut} returns.
    @ivar resets: the C{reset} argument of every L{cut}.
    @ivar backlogs: fd -> C{(acked, notsent)}, what L{backlog} returns (a
        missing fd: C{None}).
    """

    def __init__(self, factory, kind, onMessage, options):
        self.factory = factory
        self.kind = kind
        self.onMessage = onMessage
        self.options = options
        self.sent = []
        self.refused = []
        self.bound = []
        self.connected = []
        self.disconnected = []
        self.subscriptions = []
        self.closed = False
        self.sendResult = True
        self.userIds = False
        self.curves = []
        self.socket = FakeRawSocket()
        self.onDiscard = None
        self.onEvent = None
        self.cuts = []
        self.cutResult = True
        self.resets = []
        self._fd = -1
        self.inputLimit = None
        self.outputLimit = None

    def bind(self, address):
        """
        Pretend to bind: a C{*} port becomes a made-up port.
        """
        endpoint = address
        if address.endswith(":*"):
            endpoint = address[:-1] + str(next(self.factory.ports))
        self.bound.append(endpoint)
        return endpoint

    def connect(self, address):
        self.connected.append(address)

    def disconnect(self, address):
        self.disconnected.append(address)

    def subscribe(self, prefix):
        self.subscriptions.append(prefix)

    def unsubscribe(self, prefix):
        self.subscriptions.remove(prefix)

    def send(self, frames):
        if self.closed or not self.sendResult:
            self.refused.append(list(frames))
            return False
        self.sent.append(list(frames))
        return True

    def close(self):
        self.closed = True

    def limitInput(self, messages):
        self.inputLimit = messages

    def limitOutput(self, messages):
        self.outputLimit = messages

    def useCurve(self, curve):
        self.curves.append(curve)

    def checkReadable(self):
        pass

    def monitor(self, onEvent):
        self.onEvent = onEvent

    def cut(self, fd, address, reset=False):
        self.cuts.append((fd, address))
        self.resets.append(reset)
        return self.cutResult

    def backlog(self, fd):
        return self.backlogs.get(fd)

    def sourceFd(self):
        return self._fd

    def receive(self, frames, fd=-1):
        """
        Deliver one incoming message to the code under test, as if it came
        on the connection with descriptor C{fd}.
        """
        self._fd = fd
        try:
            self.onMessage(list(frames))
        finally:
            self._fd = -1

    def discard(self, frames, reason, size):
        """
        Tell the code under test that a message was discarded while read.
        """
        self.onDiscard(list(frames), reason, size)

    # Reading what was sent

    def messages(self, routed=False):
        """
        @param routed: C{True} for ROUTER sockets: strip the routing frame.
        @return: the decoded control messages sent, as a list of
            L{protocol.Message} (or, if C{routed}, of (routing id, message)).
        """
        result = []
        for frames in self.sent:
            if routed:
                result.append((frames[0], protocol.decode(frames[1:])))
            else:
                result.append(protocol.decode(frames))
        return result

    def ofType(self, msgtype, routed=False):
        """
        @return: the sent messages of one type (see L{messages}).
        """
        if routed:
            return [(r, m) for r, m in self.messages(True) if m.type == msgtype]
        return [m for m in self.messages() if m.type == msgtype]

    def clear(self):
        """
        Forget what was sent so far.
        """
        del self.sent[:]


class FakePlane:
    """
    Stands in for L{zmqrelay.edge.plane.NotificationPlane}: records what it
    is asked to do.

    @ivar sent: the (un)subscription frames sent upstream, one L{list} per
        message, as a fake socket records them.
    @ivar calls: how many times L{subscribe} was called (one batch each).
    @ivar upstream: (endpoint, options) of the upstream it publishes to.
    @ivar figures: what L{counters} reports.
    @ivar published: the bytes L{fanoutBytes} reports.
    @ivar notifications: the notifications L{fanoutBytes} reports.
    @ivar connections: fd -> C{(acked, notsent)}, what L{subscriberBacklog}
        reports (a missing fd: C{None}).
    @ivar cuts: the C{(fd, address)} of every L{cutSubscriber}.
    @ivar onSubscriber: what L{watchSubscribers} was given.
    """

    def __init__(self, subscriptions, publisherOptions, subscriberOptions,
                 subscriberHwm, subscriberSndbuf):
        self.subscriptions = subscriptions
        self.publisherOptions = publisherOptions
        self.subscriberOptions = subscriberOptions
        self.subscriberHwm = subscriberHwm
        self.subscriberSndbuf = subscriberSndbuf
        self.sent = []
        self.calls = 0
        self.upstream = None
        # Several upstreams (a proxy of several clouds): key -> (endpoint, options).
        self.more = {}
        self.started = self.stopped = False
        self.ports = itertools.count(41000)
        self.figures = {"notifications": 0, "delivered": 0, "upstream": 0, "dropped": 0}
        self.published = 0
        self.notifications = 0
        self.connections = {}
        self.cuts = []
        self.onSubscriber = None

    def watchSubscribers(self, onEvent):
        self.onSubscriber = onEvent

    def fanoutBytes(self):
        return self.published, self.notifications

    def subscriberBacklog(self, fd):
        return self.connections.get(fd)

    def cutSubscriber(self, fd, address):
        self.cuts.append((fd, address))
        return self.connections.pop(fd, None) is not None

    def start(self, subAddress, pubAddress):
        self.started = True
        return (subAddress.replace("*", str(next(self.ports))),
                pubAddress.replace("*", str(next(self.ports))))

    def subscribe(self, frames):
        self.calls += 1
        self.sent.extend([f] for f in frames)

    def connectUpstream(self, endpoint, options=None):
        self.upstream = (endpoint, options)

    def disconnectUpstream(self):
        self.upstream = None

    def addUpstream(self, key, endpoint, options=None):
        self.more[key] = (endpoint, options)

    def removeUpstream(self, key):
        self.more.pop(key, None)

    def counters(self):
        return dict(self.figures)

    def stop(self):
        self.stopped = True


@implementer(ISocketFactory)
class FakeSocketFactory:
    """
    Stands in for L{zmqrelay.edge._zmq.SocketFactory}.

    @ivar sockets: every L{FakeSocket} made, in order.
    """

    def __init__(self):
        self.sockets = []
        self.planes = []
        self.flushes = []
        self.ports = itertools.count(40000)
        self.shutdowns = 0

    def socket(self, kind, onMessage, options=None, userIds=False):
        sock = FakeSocket(self, kind, onMessage, options)
        sock.userIds = userIds
        self.sockets.append(sock)
        return sock

    def flushSoon(self, flush):
        if flush not in self.flushes:
            self.flushes.append(flush)

    def ofKind(self, kind):
        """
        @return: the sockets of one kind, in creation order.
        """
        return [s for s in self.sockets if s.kind == kind]

    def notificationPlane(self, subscriptions, publisherOptions, subscriberOptions,
                          subscriberHwm, subscriberSndbuf):
        plane = FakePlane(subscriptions, publisherOptions, subscriberOptions,
                          subscriberHwm, subscriberSndbuf)
        self.planes.append(plane)
        return plane

    def shutdown(self):
        self.shutdowns += 1


@implementer(IFrontOwner)
class FrontOwner:
    """
    Records the callbacks a L{zmqrelay.edge.front.Front} makes.

    @ivar reject: if set, an exception L{peerHello} raises.
    @ivar messageError: if set, an exception L{peerMessage} raises.
    """

    def __init__(self, role=protocol.CLOUD):
        self.role = role
        self.hellos = []
        self.joined = []
        self.left = []
        self.resumed = []
        self.received = []
        self.undeliveredMessages = []
        self.reject = None
        self.messageError = None

    def undelivered(self, session, msgtype, header):
        self.undeliveredMessages.append((session, msgtype, header))

    def peerHello(self, session):
        self.hellos.append(session)
        if self.reject is not None:
            raise self.reject

    def peerJoined(self, session):
        self.joined.append(session)

    def peerLeft(self, session, reason):
        self.left.append((session, reason))

    def peerResumed(self, session):
        self.resumed.append(session)

    def peerMessage(self, session, message):
        self.received.append((session, message))
        if self.messageError is not None:
            raise self.messageError

    def welcomeExtras(self, session):
        return {"extra": "yes"}


@implementer(ILinkOwner)
class LinkOwner:
    """
    Records the callbacks an L{zmqrelay.edge.link.UpstreamLink} makes.
    """

    def __init__(self, role=protocol.CLIENT):
        self.role = role
        self.ups = []
        self.downs = []
        self.received = []
        self.undeliveredMessages = []
        self.messageError = None

    def undelivered(self, link, msgtype, header):
        self.undeliveredMessages.append((link, msgtype, header))

    def helloExtras(self, link):
        return {"services": ["svc"]}

    def linkUp(self, link):
        self.ups.append(link)

    def linkDown(self, link, reason):
        self.downs.append((link, reason))

    def linkMessage(self, link, message):
        self.received.append((link, message))
        if self.messageError is not None:
            raise self.messageError


@implementer(IRequestHandler)
class RecordingHandler:
    """
    A request handler that answers C{b"re:" + payload} and counts its runs.

    @ivar answers: if set, a callable taking the request and returning the
        answer (bytes or a Deferred) instead.
    """

    def __init__(self):
        self.requests = []
        self.answers = None

    def handleRequest(self, request):
        self.requests.append(request)
        if self.answers is not None:
            return self.answers(request)
        return b"re:" + request.payload


@implementer(IPresenceObserver)
class PresenceRecorder:
    """
    Records presence events as tuples.
    """

    def __init__(self):
        self.events = []

    def clientConnected(self, event):
        self.events.append(("connected", event.clientId, event.incarnation, event.path))

    def clientDisconnected(self, event):
        self.events.append(
            ("disconnected", event.clientId, event.incarnation, event.path, event.reason)
        )


@implementer(INotificationReceiver)
class NotificationRecorder:
    """
    Records notifications and gaps.
    """

    def __init__(self):
        self.notifications = []
        self.gaps = []

    def notificationReceived(self, notification):
        self.notifications.append(notification)

    def notificationsLost(self, gap):
        self.gaps.append(gap)


def helloFrames(nodeId, incarnation="inc-1", role=protocol.CLIENT, versions=(1,), **extra):
    """
    @return: the frames of a HELLO (no routing frame).
    """
    header = {
        "id": nodeId,
        "role": role,
        "inc": incarnation,
        "versions": list(versions),
        "hb": 1000,
        "liveness": 3,
    }
    header.update(extra)
    return protocol.encode(protocol.HELLO, header, b"", max(versions))


def welcomeFrames(nodeId="up", role=protocol.PROXY, incarnation="up-inc", version=1, **extra):
    """
    @return: the frames of a WELCOME as an upstream would send it.
    """
    header = {
        "id": nodeId,
        "role": role,
        "inc": incarnation,
        "version": version,
        "versions": [version],
        "hb": 1000,
        "liveness": 3,
        "max": 4 * 1024 * 1024,
        "inflight": 1000,
    }
    header.update(extra)
    return protocol.encode(protocol.WELCOME, header, b"", version)
