"""
The notification relay: an XSUB/XPUB pair that forwards notifications down
inside libzmq, frames untouched, and subscriptions up through the reactor,
within bounds on what subscribers can make it hold.
"""

from collections import OrderedDict

from twisted.logger import Logger

from zmqrelay.core.slowsub import SlowSubscribers
from zmqrelay.edge import security

log = Logger()


#: The most distinct topic prefixes one relay forwards upstream at once, for
#: a relay made without a config (C{--max-subscriptions}), and the longest
#: prefix it forwards.
MAX_SUBSCRIPTIONS = 100000
MAX_PREFIX = 1024

#: Notifications a relay queues for one subscriber before it drops for it,
#: for a relay made without a config (C{--sub-hwm}).
SUBSCRIBER_HWM = 10000

#: Bytes a relay holds for one subscriber before it cuts it off, for a relay
#: made without a config (C{--sub-bytes}).
SUBSCRIBER_BYTES = 32 * 1024 * 1024

#: The kernel send buffer of each subscriber's connection (C{SO_SNDBUF};
#: Linux reserves twice this).  Without it the kernel grows the buffer of a
#: connection that never drains up to its own maximum (C{tcp_wmem}, MiBs).
SUBSCRIBER_SNDBUF = 256 * 1024


class NotificationRelay:
    """
    Forwards notifications from a bound XSUB to a bound XPUB (and to an
    upstream relay) inside libzmq, and subscriptions back through the
    reactor, within bounds.

    Notifications never reach Python: a L{zmqrelay.edge.plane} moves them
    in threads of its own, frames untouched and unread.  What a publisher
    sends is therefore not checked here (only each frame's size, by
    ZeroMQ's C{MAXMSGSIZE}, which cuts a publisher that exceeds it): who may
    publish is settled by CURVE (only proxies and servers may connect to
    the XSUB of a node that binds with CURVE), and subscribers check every
    notification they read (see docs/ARCHITECTURE.md, "Notifications").

    Subscriptions come out to the reactor, which checks them before they go
    upstream.  Every prefix forwarded is stored by every relay up to the
    servers, so at most C{maxSubscriptions} distinct prefixes of at most
    L{MAX_PREFIX} bytes go upstream at once.  The XPUB reports a prefix
    only when its first subscriber comes and when its last one goes, so a
    prefix refused for want of room would starve all its subscribers for
    good: it waits instead (at most C{maxSubscriptions} of them, oldest
    first) and goes upstream as soon as a forwarded prefix ends.  One that
    ends while it waits is forgotten; one that finds the waiting list full
    is forgotten and counted (C{forgotten-subscriptions}): its subscribers
    get nothing until all of them have left and one subscribes again.  Bad
    input is counted and logged on the 1st, 2nd, 4th, 8th... time, a
    bounded rate with no clock.

    Each subscriber gets at most C{subHwm} queued notifications (the XPUB's
    send high-water mark) and a kernel send buffer of L{SUBSCRIBER_SNDBUF},
    so one that does not read makes the relay hold at most about
    C{(subHwm + 1) x largest notification + 2 x SUBSCRIBER_SNDBUF} for it;
    beyond that it misses notifications (its sequence numbers show the gap
    and it asks the server to replay them) while everyone else gets them.
    libzmq does not count those misses, so neither does the relay.  In
    bytes, what is held for one subscriber is bounded by C{subBytes}
    (C{--sub-bytes}) and what is published in one tick of
    L{zmqrelay.core.slowsub}: past it, its TCP connection is cut as a slow
    consumer (counted C{slow-cut}, logged), libzmq frees its queue, and the
    subscriber reconnects when it reads again.  The
    upstream relay a proxy publishes to is no subscriber: it has a socket
    of its own that drops at once, counted, when its upstream is full (a
    stopped cloud must not stall the intake); see L{zmqrelay.edge.plane}.

    @ivar counters: C{notifications} (read from publishers), C{delivered}
        (handed to the subscribers' XPUB), C{upstream} (sent to the
        upstream relay), C{dropped} (held too long where nothing may be
        dropped), C{subscriptions} (subscriptions and their ends sent
        upstream), C{malformed} (a subscriber sent something other than a
        subscription), C{refused-subscriptions} (subscriber messages not
        forwarded when they came: a prefix too long, or with the table
        full, or already forwarded or waiting; the end of a subscription
        never forwarded), C{late-subscriptions} (forwarded after waiting),
        C{forgotten-subscriptions} (refused and not kept: the waiting list
        was full), C{slow-cut} (subscribers' connections cut as slow
        consumers) and C{slow-cut-bytes} (what was held for them then, at
        most).  The plane's figures are read from its threads when asked.
    @ivar maxSubscriptions: prefixes forwarded at once, and prefixes kept
        waiting.
    @ivar subscriberHwm: notifications queued per subscriber.
    @ivar subscriberBytes: bytes held per subscriber before it is cut (0:
        never; without a reactor there is no watching either).
    @ivar slow: the L{SlowSubscribers} watching the subscribers, if any.
    @ivar xpub: the reactor's XPUB that receives subscriptions (inproc).
    @ivar plane: the data plane, once started.
    """

    def __init__(self, socketFactory, subAddress, pubAddress, maxMessageSize=None, config=None,
                 reactor=None):
        self.socketFactory = socketFactory
        # With a reactor, subscriptions to forward are sent in one batch per
        # reactor turn (each batch pauses the intake thread: a storm of
        # 100,000 prefixes must not cost 100,000 pauses); without, at once.
        self.reactor = reactor
        self._outbox = []
        self._flushLater = None
        self.subAddress = subAddress
        self.pubAddress = pubAddress
        self.maxMessageSize = maxMessageSize
        self.config = config
        if config is None:
            self.maxSubscriptions = MAX_SUBSCRIPTIONS
            self.subscriberHwm = SUBSCRIBER_HWM
            self.subscriberBytes = SUBSCRIBER_BYTES
        else:
            self.maxSubscriptions = config.maxSubscriptions
            self.subscriberHwm = config.subHwm
            self.subscriberBytes = config.subBytes
        self._counters = {
            "subscriptions": 0, "malformed": 0, "refused-subscriptions": 0,
            "late-subscriptions": 0, "forgotten-subscriptions": 0,
        }
        self._topics = set()
        # Refused prefixes in the order they came, to forward when room frees up.
        self._waiting = OrderedDict()
        self.xpub = None
        self.plane = None
        self.slow = None
        self._upstream = None

    @property
    def counters(self):
        counters = dict(self._counters)
        if self.plane is not None:
            counters.update(self.plane.counters())
        if self.slow is not None:
            counters.update(self.slow.counters)
        return counters

    def start(self):
        """
        Bind both sockets and start moving notifications.

        @return: (sub endpoint, pub endpoint) as bound.
        """
        self.xpub = self.socketFactory.socket("xpub", self._fromSubscribers)
        subscriptions = self.xpub.bind(f"inproc://zmqrelay-subscriptions-{id(self):x}")
        self.plane = self.socketFactory.notificationPlane(
            subscriptions,
            security.boundOptions(self.config, security.PUBLISH),
            security.boundOptions(self.config, security.SUBSCRIBE),
            self.subscriberHwm,
            SUBSCRIBER_SNDBUF,
        )
        if self.reactor is not None and self.subscriberBytes > 0:
            plane = self.plane
            self.slow = SlowSubscribers(
                self.reactor, self.subscriberBytes, plane.fanoutBytes,
                plane.subscriberBacklog, plane.cutSubscriber, hwm=self.subscriberHwm,
            )
            plane.watchSubscribers(self.slow.connectionEvent)
        endpoints = self.plane.start(self.subAddress, self.pubAddress)
        if self.slow is not None:
            self.slow.start()
        return endpoints

    def connectUpstream(self, endpoint, via=None):
        """
        Also publish to an upstream XSUB (a proxy's notifications go to the
        cloud), replacing any earlier upstream.

        @param via: the control endpoint of that upstream: the connection
            is secured as that hop is (see L{zmqrelay.edge.security}).
        """
        if endpoint == self._upstream:
            return
        self._upstream = endpoint
        options = security.dialOptions(self.config, via) if via is not None else None
        self.plane.connectUpstream(endpoint, options)

    def addUpstream(self, key, endpoint, via=None):
        """
        Also publish to one more upstream XSUB, named C{key} (a proxy of
        several clouds publishes to each, issue 10); a new endpoint for the
        same key replaces the old one.
        """
        options = security.dialOptions(self.config, via) if via is not None else None
        add = getattr(self.plane, "addUpstream", None)
        if add is None:
            self.connectUpstream(endpoint, via)
        else:
            add(key, endpoint, options)

    def removeUpstream(self, key):
        """
        Stop publishing to the upstream named C{key} (its node is gone: what
        would queue for it would hold back every other subscriber).
        """
        remove = getattr(self.plane, "removeUpstream", None)
        if remove is not None:
            remove(key)

    def stop(self):
        """
        Stop the plane and close every socket.
        """
        if self._flushLater is not None:
            if self._flushLater.active():
                self._flushLater.cancel()
            self._flushLater = None
        del self._outbox[:]
        if self.slow is not None:
            self.slow.stop()
            self._counters.update(self.slow.counters)
            self.slow = None
        if self.plane is not None:
            self.plane.stop()
            final = self.plane.counters()
            self._counters.update(final)
            self.plane = None
        if self.xpub is not None:
            self.xpub.close()
            self.xpub = None

    def _fromSubscribers(self, frames):
        # Only (un)subscriptions travel upstream; anything else a subscriber
        # sends is not ours to pass on.
        if len(frames) != 1 or frames[0][:1] not in (b"\x00", b"\x01"):
            self._bad("malformed", "a subscriber sent something other than a subscription")
            return
        prefix = frames[0][1:]
        if frames[0][:1] == b"\x01":
            self._subscribed(prefix)
        else:
            self._unsubscribed(prefix)

    def _subscribed(self, prefix):
        if prefix in self._topics or prefix in self._waiting:
            # A non-verbose XPUB reports a prefix once; forwarding it twice
            # would take two ends upstream to undo.
            self._counters["refused-subscriptions"] += 1
            return
        if len(prefix) > MAX_PREFIX:
            self._bad("refused-subscriptions", f"subscription of {len(prefix)} bytes refused")
            return
        if len(self._topics) >= self.maxSubscriptions:
            self._bad(
                "refused-subscriptions",
                f"subscription refused: {len(self._topics)} prefixes forwarded, it waits for room",
            )
            if len(self._waiting) < self.maxSubscriptions:
                self._waiting[prefix] = None
            else:
                self._bad(
                    "forgotten-subscriptions",
                    f"subscription forgotten: {len(self._waiting)} already wait for room",
                )
            return
        self._topics.add(prefix)
        self._forward(b"\x01" + prefix)

    def _unsubscribed(self, prefix):
        if prefix in self._topics:
            self._topics.discard(prefix)
            self._forward(b"\x00" + prefix)
            # Room for the longest-waiting refused prefixes.
            while self._waiting and len(self._topics) < self.maxSubscriptions:
                waiting = self._waiting.popitem(last=False)[0]
                self._topics.add(waiting)
                self._counters["late-subscriptions"] += 1
                self._forward(b"\x01" + waiting)
        else:
            # The end of a subscription we never forwarded (waiting, too
            # long, or forgotten): nothing to undo upstream.
            self._waiting.pop(prefix, None)
            self._counters["refused-subscriptions"] += 1

    def _forward(self, subscription):
        self._counters["subscriptions"] += 1
        if self.reactor is None:
            self.plane.subscribe([subscription])
            return
        self._outbox.append(subscription)
        if self._flushLater is None:
            self._flushLater = self.reactor.callLater(0, self._flush)

    def _flush(self):
        self._flushLater = None
        batch, self._outbox = self._outbox, []
        if batch and self.plane is not None:
            self.plane.subscribe(batch)

    def _bad(self, counter, text):
        n = self._counters[counter] = self._counters[counter] + 1
        if n & (n - 1) == 0:
            log.warn("notification relay: {counter} input #{n}: {text}", counter=counter, n=n, text=text)
