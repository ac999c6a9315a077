"""
The notification relay: an XSUB/XPUB pair that forwards notifications down
and subscriptions up, frames untouched, within bounds on what subscribers
can make it hold.
"""

from collections import OrderedDict

import zmq
from twisted.logger import Logger

from zmqrelay.core import protocol
from zmqrelay.edge import security

log = Logger()


#: The most distinct topic prefixes one relay forwards upstream at once, for
#: a relay made without a config (C{--max-subscriptions}), and the longest
#: prefix it forwards.
MAX_SUBSCRIPTIONS = 100000
MAX_PREFIX = 1024

#: Notifications a relay queues for one subscriber before it drops for it,
#: for a relay made without a config (C{--sub-hwm}).
SUBSCRIBER_HWM = 1000

#: The kernel send buffer of each subscriber's connection (C{SO_SNDBUF};
#: Linux reserves twice this).  Without it the kernel grows the buffer of a
#: connection that never drains up to its own maximum (C{tcp_wmem}, MiBs).
SUBSCRIBER_SNDBUF = 256 * 1024


class NotificationRelay:
    """
    Forwards notifications from a bound XSUB to an XPUB, and subscriptions
    back, frames untouched.

    Anyone who can reach the XSUB can publish into it, so what publishers
    send is checked (never changed): only what a subscriber can read goes
    on.  Bad input is counted (C{malformed}, C{too-large}) and logged on the
    1st, 2nd, 4th, 8th... time, a bounded rate with no clock.

    Every prefix forwarded is stored by every relay up to the servers, so
    at most C{maxSubscriptions} distinct prefixes of at most L{MAX_PREFIX}
    bytes go upstream at once.  The XPUB reports a prefix only when its
    first subscriber comes and when its last one goes, so a prefix refused
    for want of room would starve all its subscribers for good: it waits
    instead (at most C{maxSubscriptions} of them, oldest first) and goes
    upstream as soon as a forwarded prefix ends.  One that ends while it
    waits is forgotten; one that finds the waiting list full is forgotten
    and counted (C{forgotten-subscriptions}): its subscribers get nothing
    until all of them have left and one subscribes again.

    Each subscriber gets at most C{subHwm} queued notifications (the XPUB's
    send high-water mark) and a kernel send buffer of L{SUBSCRIBER_SNDBUF},
    so one that does not read makes the relay hold at most about
    C{(subHwm + 1) x largest notification + 2 x SUBSCRIBER_SNDBUF} for it;
    beyond that it misses notifications (its sequence numbers show the gap)
    while everyone else gets them.  The XPUB runs with C{XPUB_NODROP}, so a
    send that would drop for someone fails instead; it is sent again
    without C{XPUB_NODROP} and counted (C{slow-dropped}).  ZeroMQ then
    skips that subscriber, silently, until it has read half its queue, so
    C{slow-dropped} counts how often a subscriber fell behind (each time
    losing that notification and, unseen, those after it until it catches
    up), not every notification it lost: as NATS counts slow consumers.
    The upstream relay a proxy publishes to is no subscriber: that
    connection keeps the node's own high-water mark and kernel buffer.

    @ivar counters: C{notifications}, C{subscriptions} (subscriptions and
        their ends sent upstream), C{dropped} (queue full even when
        dropping for slow subscribers), C{slow-dropped} (see above),
        C{malformed}, C{too-large}, C{refused-subscriptions} (subscriber
        messages not forwarded when they came: a prefix too long, or with
        the table full, or already forwarded or waiting; the end of a
        subscription never forwarded), C{late-subscriptions} (forwarded
        after waiting), C{forgotten-subscriptions} (refused and not kept:
        the waiting list was full).
    @ivar maxSubscriptions: prefixes forwarded at once, and prefixes kept
        waiting.
    @ivar subscriberHwm: notifications queued per subscriber.
    """

    def __init__(self, socketFactory, subAddress, pubAddress, maxMessageSize=None, config=None):
        self.socketFactory = socketFactory
        self.subAddress = subAddress
        self.pubAddress = pubAddress
        self.maxMessageSize = maxMessageSize
        self.config = config
        if config is None:
            self.maxSubscriptions = MAX_SUBSCRIPTIONS
            self.subscriberHwm = SUBSCRIBER_HWM
        else:
            self.maxSubscriptions = config.maxSubscriptions
            self.subscriberHwm = config.subHwm
        self.counters = {
            "notifications": 0, "subscriptions": 0, "dropped": 0, "slow-dropped": 0,
            "malformed": 0, "too-large": 0, "refused-subscriptions": 0,
            "late-subscriptions": 0, "forgotten-subscriptions": 0,
        }
        self._topics = set()
        # Refused prefixes in the order they came, to forward when room frees up.
        self._waiting = OrderedDict()
        self.xsub = None
        self.xpub = None
        self._upstream = None
        self._upstreamHwm = None

    def start(self):
        """
        Bind both sockets.

        @return: (sub endpoint, pub endpoint) as bound.
        """
        self.xpub = self.socketFactory.socket(
            "xpub", self._fromSubscribers, security.boundOptions(self.config, security.SUBSCRIBE)
        )
        # Options are copied into each connection when it is made: these
        # bound every subscriber that connects to what we bind.
        raw = self.xpub.socket
        self._upstreamHwm = raw.getsockopt(zmq.SNDHWM)
        raw.setsockopt(zmq.SNDHWM, self.subscriberHwm)
        raw.setsockopt(zmq.SNDBUF, SUBSCRIBER_SNDBUF)
        raw.setsockopt(zmq.XPUB_NODROP, 1)
        self.xsub = self.socketFactory.socket(
            "xsub", self._fromPublishers, security.boundOptions(self.config, security.PUBLISH)
        )
        return self.xsub.bind(self.subAddress), self.xpub.bind(self.pubAddress)

    def connectUpstream(self, endpoint, via=None):
        """
        Also publish to an upstream XSUB (a proxy's notifications go to the
        cloud), replacing any earlier upstream.

        @param via: the control endpoint of that upstream: the connection
            is secured as that hop is (see L{zmqrelay.edge.security}).
        """
        if endpoint == self._upstream:
            return
        if self._upstream is not None:
            self.xpub.disconnect(self._upstream)
        self._upstream = endpoint
        if via is not None:
            security.secureDial(self.xpub, self.config, via)
        # One trusted hop that carries everything, not a subscriber: the
        # node's own high-water mark and the kernel's own buffer sizing.
        raw = self.xpub.socket
        raw.setsockopt(zmq.SNDHWM, self._upstreamHwm)
        raw.setsockopt(zmq.SNDBUF, -1)
        try:
            self.xpub.connect(endpoint)
        finally:
            raw.setsockopt(zmq.SNDHWM, self.subscriberHwm)
            raw.setsockopt(zmq.SNDBUF, SUBSCRIBER_SNDBUF)

    def stop(self):
        """
        Close both sockets.
        """
        for sock in (self.xsub, self.xpub):
            if sock is not None:
                sock.close()
        self.xsub = self.xpub = None

    def _fromPublishers(self, frames):
        if self.maxMessageSize is not None:
            size = 0
            for f in frames:
                size += len(f)
            if size > self.maxMessageSize:
                self._bad("too-large", f"notification of {size} bytes")
                return
        try:
            header = protocol.decodeNotification(frames)[1].header
            protocol.field(header, "server", str, required=True)
            protocol.field(header, "inc", str, required=True)
            protocol.field(header, "seq", int, required=True)
        except protocol.ProtocolError as e:
            self._bad("malformed", e.message)
            return
        self.counters["notifications"] += 1
        xpub = self.xpub
        if xpub.send(frames):
            return
        # XPUB_NODROP: some subscriber's queue is full.  Send it again
        # dropping for that one only, so the others still get it.  (Setting
        # an option processes no ZeroMQ commands, so it cannot swallow the
        # edge that announces input; the send re-checks anyway.)
        raw = xpub.socket
        raw.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            delivered = xpub.send(frames)
        finally:
            raw.setsockopt(zmq.XPUB_NODROP, 1)
        if delivered:
            self.counters["slow-dropped"] += 1
        else:
            self.counters["dropped"] += 1

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
            self.counters["refused-subscriptions"] += 1
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
                self.counters["late-subscriptions"] += 1
                self._forward(b"\x01" + waiting)
        else:
            # The end of a subscription we never forwarded (waiting, too
            # long, or forgotten): nothing to undo upstream.
            self._waiting.pop(prefix, None)
            self.counters["refused-subscriptions"] += 1

    def _forward(self, subscription):
        self.counters["subscriptions"] += 1
        self.xsub.send([subscription])

    def _bad(self, counter, text):
        n = self.counters[counter] = self.counters[counter] + 1
        if n & (n - 1) == 0:
            log.warn("notification relay: {counter} input #{n}: {text}", counter=counter, n=n, text=text)
