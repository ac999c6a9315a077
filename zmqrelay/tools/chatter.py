"""
L{Chatter}: the request/subscribe loop of C{twistd zmqrelay-client} (and
C{tac/client.tac}): a demonstration and monitoring client.
"""

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.interfaces import INotificationReceiver

log = Logger()


@implementer(INotificationReceiver)
class Chatter(Service):
    """
    Sends a request every C{every} seconds and logs replies, notifications
    and messages.
    """

    def __init__(self, client, target, payload, every, count, prefixes):
        self.client = client
        self.target = target
        self.payload = payload
        self.every = every
        self.count = count
        self.prefixes = prefixes
        self.sent = 0
        self._loop = None
        client.messageHandler = self.messageReceived

    def startService(self):
        Service.startService(self)
        for prefix in self.prefixes:
            self.client.subscribe(prefix, self)
        if self.target:
            self._loop = LoopingCall(self._send)
            self._loop.clock = self.client.reactor
            self._loop.start(self.every, now=False)

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return Service.stopService(self)

    def _send(self):
        if self.count and self.sent >= self.count:
            self._loop.stop()
            return
        self.sent += 1
        n = self.sent
        d = self.client.request(self.target, self.payload)
        d.addCallbacks(
            lambda reply: log.info("reply {n} from {target}: {reply!r}", n=n, target=self.target, reply=reply),
            lambda f: log.warn("request {n} to {target} failed: {error}", n=n, target=self.target, error=f.value),
        )

    def notificationReceived(self, notification):
        log.info(
            "notification {topic!r} {server}#{seq}{replayed}: {payload!r}",
            topic=notification.topic, server=notification.serverId, seq=notification.seq,
            replayed=" (replayed)" if notification.replayed else "", payload=notification.payload,
        )

    def notificationsLost(self, gap):
        log.warn("notifications lost: {gap!r}", gap=gap)

    def messageReceived(self, sender, payload):
        log.info("message from {sender}: {payload!r}", sender=sender, payload=payload)
