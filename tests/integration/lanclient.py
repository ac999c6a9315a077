"""
A client process for the network-namespace tests (L{tests.integration.test_localpath}):
run inside a namespace with C{ip netns exec}, it sends a request to
C{--target} every C{--every} seconds and subscribes to C{--subscribe}, and
prints what the test watches for, one line each, flushed:

  - C{PATH <role> <node>}: the path the target's requests take changed;
  - C{FOUND <role> <node>}: DNS-SD found a node (its link opened);
  - C{RESULT <json>}: at the end (C{--duration} passed, or SIGTERM): every
    request's outcome and every notification received.

Its log goes to stderr.
"""

import json
import signal
import sys

from twisted.internet import reactor, task
from twisted.logger import globalLogBeginner, textFileLogObserver
from zope.interface import implementer

from zmqrelay.interfaces import INotificationReceiver
from zmqrelay.roles.client import Client
from zmqrelay.tools.tap._common import _positive
from zmqrelay.tools.tap.client import ConnectOptions


class Options(ConnectOptions):
    optParameters = [
        ["target", None, "a1", "Server to send requests to."],
        ["every", None, 0.05, "Seconds between requests.", _positive(float)],
        ["duration", None, 60.0, "Seconds to run.", _positive(float)],
        ["subscribe", None, None, "A topic prefix to subscribe to."],
    ]


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@implementer(INotificationReceiver)
class Received:
    def __init__(self):
        self.items = []
        self.lost = []

    def notificationReceived(self, n):
        self.items.append([n.serverId, n.incarnation, n.topic.decode(), n.seq])

    def notificationsLost(self, gap):
        self.lost.append(repr(gap))


class Driver:
    def __init__(self, client, options):
        self.client = client
        self.options = options
        self.outcomes = {}
        self.sent = 0
        self.path = None
        self.found = set()
        self.received = Received()
        self.ended = False

    def start(self):
        if self.options["subscribe"] is not None:
            self.client.subscribe(self.options["subscribe"].encode(), self.received)
        self.loop = task.LoopingCall(self.tick)
        self.loop.start(self.options["every"])
        reactor.callLater(self.options["duration"], self.end)

    def tick(self):
        self.sent += 1
        n = self.sent
        target = self.options["target"]
        d = self.client.request(target, b"req-%d" % n)
        d.addCallbacks(self.answered, self.failed, callbackArgs=(n,), errbackArgs=(n,))
        primary = self.client.primary.primary(target)
        if primary is not None and primary != self.path:
            self.path = primary
            out(f"PATH {primary[0]} {primary[1]}")
        for link in self.client.links:
            announcement = getattr(link, "discovered", None)
            if announcement is not None and announcement.nodeId not in self.found:
                self.found.add(announcement.nodeId)
                out(f"FOUND {announcement.role} {announcement.nodeId}")

    def answered(self, payload, n):
        self.outcomes.setdefault(n, []).append("ok" if payload == b"req-%d" % n else f"bad:{payload!r}")

    def failed(self, f, n):
        self.outcomes.setdefault(n, []).append(f"error:{f.type.__name__}:{f.value}")

    def end(self):
        if self.ended:
            return
        self.ended = True
        if self.loop.running:
            self.loop.stop()
        # Let the requests in flight end (their budget) before reporting.
        reactor.callLater(self.client.config.requestTimeout + 0.5, self.report)

    def report(self):
        out("RESULT " + json.dumps({
            "sent": self.sent,
            "outcomes": {str(k): v for k, v in self.outcomes.items()},
            "notifications": self.received.items,
            "lost": self.received.lost,
            "stats": {k: v for k, v in self.client.stats().items() if isinstance(v, (int, float))},
        }))
        self.client.stopService().addBoth(lambda _: reactor.stop())


def main(argv):
    options = Options()
    options.parseOptions(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    client = Client(
        options.clientConfig(), options["cloud"], options["proxy"], options["servers"],
        discover=options["discover"], discoverInterfaces=options["discover-interfaces"],
    )
    driver = Driver(client, options)
    client.startService()
    reactor.callWhenRunning(driver.start)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(driver.end))
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(sys.argv[1:])
