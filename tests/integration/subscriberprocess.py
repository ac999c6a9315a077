"""
A zmqrelay client in a process of its own that subscribes and says, one
line each, what it got: for the integration tests that stop it (SIGSTOP) to
make it a slow consumer.

    python -m tests.integration.subscriberprocess CLOUD_ENDPOINT PREFIX

Prints C{ready} once a path is up, then C{n SERVER SEQ R} for every
notification (C{R} 1 if it came by replay, else 0) and C{lost SERVER FIRST
LAST} for every gap that could not be replayed.  It ends on SIGTERM, or on
its own after L{LIFETIME} seconds in case the test that started it could
not end it.
"""

import sys

from twisted.internet import reactor
from twisted.python import log as twlog
from zope.interface import implementer

from zmqrelay.core.config import NodeConfig
from zmqrelay.interfaces import INotificationReceiver
from zmqrelay.roles.client import Client

#: Seconds after which the process ends by itself.
LIFETIME = 120.0


@implementer(INotificationReceiver)
class Printer:
    def notificationReceived(self, notification):
        print(f"n {notification.serverId} {notification.seq} {int(notification.replayed)}",
              flush=True)

    def notificationsLost(self, gap):
        print(f"lost {gap.serverId} {gap.first} {gap.last}", flush=True)


def main(cloud, prefix):
    twlog.startLogging(sys.stderr, setStdout=False)
    client = Client(NodeConfig("slow-subscriber"), cloud=cloud, reactor=reactor)
    client.subscribe(prefix.encode(), Printer())
    client.startService()
    client.whenConnected(30.0).addCallback(lambda _: print("ready", flush=True))
    reactor.callLater(LIFETIME, reactor.stop)
    reactor.addSystemEventTrigger("before", "shutdown", client.stopService)
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:3])
