"""
The zope interfaces of zmqrelay: the map of the system.

Roles (L{ICloud}, L{IProxy}, L{IServer}, L{IClient}) are Twisted services.
Applications plug in through L{IRequestHandler}, L{INotificationReceiver} and
L{IPresenceObserver}.

Inside a node, a role owns the two ends of its hops and is told what happens
on them: a L{zmqrelay.edge.front.Front} calls its L{IFrontOwner}, an
L{zmqrelay.edge.link.UpstreamLink} its L{ILinkOwner}.  Both, and every other part
that talks ZeroMQ, get their sockets from an L{ISocketFactory}: the real one
in L{zmqrelay.edge._zmq}, a fake in the unit tests.
"""

from zope.interface import Attribute, Interface


class INode(Interface):
    """
    A zmqrelay node: any of the four roles.
    """

    nodeId = Attribute("This node's id (L{str}).")
    incarnation = Attribute(
        "A random id of this process (L{str}); a restarted node has a new one."
    )
    role = Attribute("C{'client'}, C{'server'}, C{'proxy'} or C{'cloud'}.")

    def endpoints():
        """
        The endpoints this node has bound, once it is running.

        @return: a L{dict} mapping C{'control'}, C{'pub'} and (relays)
            C{'sub'} to ZeroMQ endpoint strings: those the node binds (a
            server only those it was given; a client, which binds nothing,
            an empty L{dict}).
        """

    def stats():
        """
        Counters of what this node did and dropped, and figures of its
        state.

        @return: a L{dict} of name to number: counters are L{int}; a few
            figures are L{float} (seconds, such as C{retry-in} and the
            C{*.seconds} of timings).
        """


class IPresenceView(Interface):
    """
    Which clients are connected, by id, right now.
    """

    def connectedClients():
        """
        The clients connected now.

        @return: a L{dict} mapping client id to a L{zmqrelay.core.presence.ClientPresence}
            (incarnation, since when, and by which paths).
        """

    def isConnected(clientId):
        """
        @return: C{True} if a client with that id is connected on any path.
        """

    def addObserver(observer):
        """
        Start telling C{observer} about connections and disconnections.

        @param observer: an L{IPresenceObserver}.
        """

    def removeObserver(observer):
        """
        Stop telling C{observer}.
        """


class IPresenceObserver(Interface):
    """
    Told when a client connects or disconnects, on any path.

    A client reachable on two paths (direct and through the cloud) is one
    client: it is connected when its first path appears and disconnected when
    its last path goes.

    With several cloud nodes, a client that moves from one to another within
    the move grace is not disconnected; an observer that also has a method
    C{clientMoved(event)} (optional, not part of this interface) is told of
    the move, with the new path and the reason the old one was lost.
    """

    def clientConnected(event):
        """
        @param event: a L{zmqrelay.core.presence.PresenceEvent} with C{connected}
            true, naming the client id, incarnation and path.
        """

    def clientDisconnected(event):
        """
        @param event: a L{zmqrelay.core.presence.PresenceEvent} with C{connected}
            false and a C{reason} (C{'bye'}, C{'heartbeat-timeout'},
            C{'replaced'}, C{'upstream-lost'}, ...).
        """


class IRequest(Interface):
    """
    A request as a server's application sees it.
    """

    clientId = Attribute(
        "The id of the client that asked, stamped by the node the client is "
        "attached to; never the client's own claim."
    )
    clientIncarnation = Attribute("The incarnation of that client process.")
    requestId = Attribute("The client's id for this request (L{int}).")
    target = Attribute("The server id or service name the client asked for.")
    path = Attribute("C{'direct'}, C{'proxy'} or C{'cloud'}: how it came.")
    deadline = Attribute(
        "The local reactor time (seconds) after which nobody waits for the answer."
    )
    payload = Attribute("The request bytes.")


class IRequestHandler(Interface):
    """
    A server application: answers requests.
    """

    def handleRequest(request):
        """
        Answer one request.

        @param request: an L{IRequest}.
        @return: the reply L{bytes}, or a L{Deferred} (or a coroutine)
            with them.  A failure (or a raised exception, whatever its type)
            goes back to the client as a L{zmqrelay.core.errors.HandlerError}.
            A result not there by the request's deadline is cancelled and
            answered L{zmqrelay.core.errors.RequestTimeout}; one still running
            when the server stops after its drain timeout, with
            L{zmqrelay.core.errors.ShuttingDown}.  The server calls this once
            per request id: a retried request is answered from the reply
            cache (failures and timeouts too).
        """


class INotificationReceiver(Interface):
    """
    Receives the notifications a client subscribed to.
    """

    def notificationReceived(notification):
        """
        @param notification: a L{zmqrelay.core.sequence.Notification} (topic,
            payload, server id, incarnation, sequence number, replayed flag).
        """

    def notificationsLost(gap):
        """
        Some notifications were lost and could not be recovered by replay.

        @param gap: a L{zmqrelay.core.sequence.Gap} (server, topic, first and last
            missing sequence numbers).
        """


class IServer(INode, IPresenceView):
    """
    A server: answers requests and publishes notifications.
    """

    serviceNames = Attribute("The service names this server offers (L{tuple} of L{str}).")

    def publish(topic, payload):
        """
        Publish a notification to every subscribed client on every path.

        @param topic: L{bytes}; subscribers match on prefixes of it.
        @param payload: L{bytes}.
        The notification is queued without waiting.  A server that
        publishes faster than the hop toward its proxy takes them learns it:
        the send finds that queue full.

        @return: the sequence number given to it (L{int}).
        @raise TypeError: if C{topic} or C{payload} is not L{bytes}.
        @raise zmqrelay.core.errors.TooLarge: if it is larger than this node's
            message size limit allows (not published).
        @raise zmqrelay.core.errors.OverLimit: if the queue toward the proxy
            was full, so that the subscribers behind it miss it: it was
            published to the others and kept in the history under the
            sequence number the exception carries as C{seq} (those who miss
            it see the gap and may ask for a replay); counted as
            C{publish-dropped}.  Publish more slowly: wait C{retryAfter}
            seconds or until the reactor has run, then go on.  A direct
            subscriber whose own queue is full is skipped without an
            exception (it is one slow reader, not the publisher's fault):
            counted as C{slow-dropped}, it sees the gap.
        """

    def send(clientId, payload, timeout=None):
        """
        Send a message to one client, on whatever path it is attached.

        @param clientId: the client's id.
        @param payload: L{bytes}.
        @param timeout: seconds to wait for the client's receipt (C{None}:
            the configuration's request timeout, 5 s by default).
        @return: a L{Deferred} firing with C{None} when the client has it, or
            failing with L{zmqrelay.core.errors.NoRoute} (not connected),
            L{zmqrelay.core.errors.TargetLost}, L{zmqrelay.core.errors.RequestTimeout},
            L{zmqrelay.core.errors.TooLarge} (more than the path accepts),
            L{zmqrelay.core.errors.OverLimit} (the queue toward the path is
            full), L{zmqrelay.core.errors.ShuttingDown} (the server stops),
            or L{TypeError} (C{clientId} not L{str}, C{payload} not L{bytes}).
        """


class IClient(INode):
    """
    A client: sends requests, receives notifications and messages.
    """

    def request(target, payload, timeout=None, attempts=None, failFast=False):
        """
        Send a request to a server id or a service name.

        @param target: a server id, or a service name (any live server that
            offers it).
        @param payload: L{bytes}.
        @param timeout: the request's whole budget in seconds, shared by its
            attempts (C{None}: the configuration's, 5 s by default); while no
            path or no reachable instance of a known target is up, it waits
            for one within it.
        @param attempts: how many attempts may end unanswered (an attempt's
            share of the budget passed, or the node refused it: over-limit)
            before the request fails (C{None}: the configuration's, 3).  An
            attempt cut short (C{target-lost}, C{shutdown}) or that found no
            route is tried again without using one up, after a backoff of
            0.05 s doubling up to 0.5 s: the timeout bounds those.  A retry
            reuses the request id and goes to the server that took it while
            that server lives, so the handler runs once; a server's own
            C{timeout} answer is final.
        @param failFast: C{True} for the old behaviour: C{timeout} per
            attempt, no waiting for a route or for room
            (L{zmqrelay.core.errors.NoRoute} or
            L{zmqrelay.core.errors.OverLimit} at once); with no live path at
            all it looks again after C{min(timeout, 0.5)} s while attempts
            last, then fails with L{zmqrelay.core.errors.NotConnected}.
        @return: a L{Deferred} that always fires: with the reply L{bytes}, or
            with a L{zmqrelay.core.errors.RelayError} (timeout, no route, target
            lost, over limit, handler error, version mismatch, ...); with
            L{TypeError} or L{ValueError} for arguments of the wrong type or
            range (nothing sent).  A target no live path knows fails with
            L{zmqrelay.core.errors.NoRoute}: at once if every path is up,
            else at the end of C{timeout}.  Cancelling it abandons the
            request.
        """

    def subscribe(prefix, receiver):
        """
        Receive notifications whose topic starts with C{prefix}.

        @param prefix: L{bytes} (C{b''} for everything).
        @param receiver: an L{INotificationReceiver}.
        """

    def unsubscribe(prefix, receiver):
        """
        Undo one L{subscribe}.
        """

    def whenConnected(timeout=10.0):
        """
        @return: a L{Deferred} firing with C{None} when at least one path is
            up, or failing with L{zmqrelay.core.errors.RequestTimeout} after
            C{timeout} seconds, or with L{zmqrelay.core.errors.ShuttingDown}
            if the client stops first.  Cancelling it stops the wait.
        """

    messageHandler = Attribute(
        "A callable taking (serverId, payload) for messages a server sent to "
        "this client with C{IServer.send}, or C{None}."
    )


class IProxy(INode, IPresenceView):
    """
    A site proxy: forwards for every server on its network.
    """

    def servers():
        """
        @return: a L{dict} of server id to the services it offers.
        """


class ICloud(INode, IPresenceView):
    """
    The cloud: forwards between clients and every site's proxy.
    """

    def servers():
        """
        @return: a L{dict} of server id to (proxy id, services).
        """


class IFrontOwner(Interface):
    """
    The role behind a L{zmqrelay.edge.front.Front}: told about the peers attached
    to it and what they send.  The front has done the handshake, the
    heartbeats and the limits; what a message means is the owner's.
    """

    role = Attribute("This node's role, as the front's WELCOME names it.")

    def peerHello(session):
        """
        A peer said HELLO: accept it or refuse it.

        @param session: the L{zmqrelay.edge.front.PeerSession} it would have.
        @raise zmqrelay.core.errors.Rejected: to refuse it; it gets REJECT.
        """

    def peerJoined(session):
        """
        A new peer (a new id, or a new incarnation of one) was welcomed.
        """

    def peerResumed(session):
        """
        The same peer process (same id and incarnation) came back on a new
        connection and was welcomed again: it needs our state again.
        """

    def peerLeft(session, reason):
        """
        A peer's session ended.

        @param reason: why (C{'bye'}, C{'heartbeat-timeout'}, C{'replaced'},
            C{'connection-lost'}, ...).
        """

    def peerMessage(session, message):
        """
        A peer sent anything other than HELLO, BYE or a heartbeat.

        @param message: the L{zmqrelay.core.protocol.Message}.
        @raise zmqrelay.core.protocol.ProtocolError: the message is not acceptable
            here; the peer gets ERR with its code and text.
        """

    def welcomeExtras(session):
        """
        @return: a L{dict} of extra fields for the WELCOME to C{session}.
        """


class ILinkOwner(Interface):
    """
    The role behind an L{zmqrelay.edge.link.UpstreamLink}: told when the hop
    upstream comes and goes, and what the upstream node sends.

    An owner may also have, and the link calls them if it does:
    C{linkDraining(link)}, the upstream said it is draining (HB with
    C{drain}); C{linkRefused(link)}, the upstream refused us (REJECT, an ERR
    in answer to our HELLO, or a WELCOME in a version we did not offer;
    C{link.lastError} says why).
    """

    role = Attribute("This node's role, as the link's HELLO names it.")

    def helloExtras(link):
        """
        @return: a L{dict} of extra fields for each HELLO C{link} sends.
        """

    def linkUp(link):
        """
        The upstream node welcomed us; C{link.welcome} has its WELCOME.
        """

    def linkDown(link, reason):
        """
        The session with the upstream node ended; the link tries again
        unless it is stopping.

        @param reason: why (C{'heartbeat-timeout'}, C{'bye'}, C{'rejected'},
            C{'upstream-restarted'}, C{'shutdown'}, ...).
        """

    def linkMessage(link, message):
        """
        The upstream node sent anything other than WELCOME, REJECT or a
        heartbeat.

        @param message: the L{zmqrelay.core.protocol.Message}.
        @raise zmqrelay.core.protocol.ProtocolError: the message is not acceptable
            here; it is logged and counted (and an unreadable REQ or MSG is
            answered ERR with the error's code).
        """


class ISocket(Interface):
    """
    One ZeroMQ socket read by the reactor, as the roles use it.  Its
    messages go to the C{onMessage} callback it was made with.
    """

    def bind(address):
        """
        Bind to C{address}; a C{*} port is picked by the system.

        @return: the endpoint actually bound (L{str}).
        """

    def connect(address):
        """
        Connect to C{address}; ZeroMQ reconnects by itself after a drop.
        """

    def disconnect(address):
        """
        Undo a L{connect}; an unknown address is ignored.
        """

    def subscribe(prefix):
        """
        SUB sockets: receive the messages whose first frame starts with
        C{prefix} (L{bytes}).
        """

    def unsubscribe(prefix):
        """
        SUB sockets: undo one L{subscribe}.
        """

    def send(frames):
        """
        Queue one multipart message without blocking; never raises.

        @param frames: a L{list} of L{bytes}.
        @return: C{True} if queued; C{False} if the queue is full or (a
            ROUTER) no connection has that routing id.
        """

    def limitInput(messages):
        """
        Hold at most C{messages} unread messages per connection (ZeroMQ's
        receive high-water mark; set before L{bind}): past it, ZeroMQ stops
        reading that connection, and TCP pushes back on its sender.
        """

    def limitOutput(messages):
        """
        Queue at most C{messages} toward one connection (ZeroMQ's send
        high-water mark; set before L{bind}): past it, sends to that peer
        fail (C{False}) until it reads.
        """

    def useCurve(curve):
        """
        Secure the binds and connects that follow with CURVE.

        @param curve: C{None} for none, or a L{dict} with C{'public'} and
            C{'secret'} and either C{'server': True} (and a ZAP C{'domain'})
            or C{'serverkey'}, keys in Z85.
        """

    def close():
        """
        Close the socket now; safe to call twice.
        """

    onDiscard = Attribute(
        "C{None}, or called with C{(frames, reason, size)} for each message "
        "discarded while it was read: C{reason} C{'too-large'} (more bytes in "
        "all than the socket's limit) or C{'too-many-frames'}; C{frames} are "
        "its first frames, those within both bounds."
    )

    def checkReadable():
        """
        Look whether input waits and schedule a read if so: call it after
        touching the underlying socket by hand (ZeroMQ's descriptor is
        edge-triggered, and any use of the socket can consume the edge).
        """

    def sourceFd():
        """
        While a message is delivered to C{onMessage}: the file descriptor of
        the connection it came on, or C{-1} if none (C{inproc://}).
        """

    def monitor(onEvent):
        """
        Watch the socket's connections: call C{onEvent(event, fd, address)}
        with C{'accepted'} (and the peer's address) for each new one and
        C{'closed'} (address C{None}) for each that ended.
        """

    def cut(fd, address, reset=False):
        """
        End the connection on descriptor C{fd} if it still has the peer
        C{address} (as C{monitor} reported it).

        @param reset: reset it, dropping what the kernel still holds for
            the peer, instead of letting that linger.
        @return: C{True} if it was ended.
        """

    def backlog(fd):
        """
        What the kernel says of the TCP connection on descriptor C{fd} (as
        C{monitor} reported it).

        @return: C{(acked, notsent)}: bytes its peer acknowledged so far and
            bytes not yet sent; or C{None} if it is not TCP (any more).
        """


class ISocketFactory(Interface):
    """
    Makes the sockets of one node, from one ZeroMQ context it owns.
    """

    def socket(socketType, onMessage, options=None, userIds=False):
        """
        Make a socket.

        @param socketType: C{'router'}, C{'dealer'}, C{'xpub'}, C{'xsub'} or
            C{'sub'}.
        @param onMessage: called with the L{list} of frames of each message.
        @param options: the socket options, or C{None} for the factory's.
        @param userIds: call C{onMessage(frames, userId)} with the ZAP
            C{User-Id} of the connection each message came on (CURVE
            servers).
        @return: an L{ISocket}.
        """

    def notificationPlane(subscriptions, publisherOptions, subscriberOptions,
                          subscriberHwm, subscriberSndbuf):
        """
        Make the data plane of a notification relay: it moves notifications
        from a bound XSUB to a bound XPUB (and upstream) without the
        reactor, and sends subscriptions out to the reactor XPUB bound at
        C{subscriptions}.

        @return: an object with C{start(subAddress, pubAddress)} (returning
            the two endpoints bound), C{subscribe(frames)},
            C{connectUpstream(endpoint, options)}, C{disconnectUpstream()},
            C{counters()} and C{stop()}, and for watching slow subscribers
            C{watchSubscribers(onEvent)} (before C{start}),
            C{fanoutBytes()}, C{subscriberBacklog(fd)} and
            C{cutSubscriber(fd, address)}, as
            L{zmqrelay.edge.plane.NotificationPlane}.
        """

    def flushSoon(flush):
        """
        Call C{flush} (once, with no argument) the next time a socket of
        this factory has read a few messages or finished reading, if that
        comes before the caller's own end-of-turn call: an outbox (a
        BATCH, PROTOCOL.md 3.3) then waits behind a few messages of a
        long read, not behind all of it.

        @return: true if a socket is reading now, so that C{flush} is
            certain to be called when that read ends: the caller then needs
            no end-of-turn call of its own.
        """

    def shutdown():
        """
        Close every socket and end the context; safe to call twice.
        """
