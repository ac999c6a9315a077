"""
The server application of C{bench/notifybench.py}: publishes notifications
at a paced rate when asked, and says how it went.

    twistd -n zmqrelay-server --app bench.publisher.publisher \\
        --app-option topic=bench.notify --app-option size=64 ...

A request C{run <rate> <seconds>} starts a run: every C{tick} seconds the
application calls C{server.publish} as many times as the offered rate is
due by then (so a late tick catches up), until C{seconds} have passed.  A
publish that raises L{OverLimit} (the queue toward the proxy is full) is
counted and ends that tick's batch: the publisher backs off until the next
tick, as an application told to wait should.  The reply, once the run is
over, is a JSON object: C{offered} (publish calls), C{refused} (of which
raised L{OverLimit}), C{seconds} (how long the run took), C{first} and
C{last} (the sequence numbers used) and the server's own publish counters.
Any other request is echoed.
"""

import json

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from zmqrelay.core.errors import OverLimit
from zmqrelay.interfaces import IRequestHandler

log = Logger()


class _Run:
    """
    One paced run: what it must publish and what it did so far.
    """

    def __init__(self, rate, seconds, started):
        self.rate = rate
        self.seconds = seconds
        self.started = started
        self.total = int(rate * seconds)
        self.offered = 0
        self.refused = 0
        self.first = None
        self.last = None
        self.done = defer.Deferred()


@implementer(IRequestHandler)
class Publisher(Service):
    """
    Publishes C{size}-byte notifications on C{topic} at the rate a C{run}
    request asks for; one run at a time.
    """

    def __init__(self, server, topic="bench.notify", size=64, tick=0.005):
        self.server = server
        self.topic = topic.encode() if isinstance(topic, str) else topic
        self.payload = b"n" * int(size)
        self.tick = float(tick)
        self._run = None
        self._loop = None

    def handleRequest(self, request):
        words = request.payload.split()
        if not words or words[0] != b"run":
            return request.payload
        if self._run is not None:
            raise ValueError("a run is already going")
        rate, seconds = float(words[1]), float(words[2])
        if rate <= 0 or seconds <= 0:
            raise ValueError("rate and seconds must be positive")
        run = self._run = _Run(rate, seconds, self.server.reactor.seconds())
        self._loop = LoopingCall(self._publish)
        self._loop.clock = self.server.reactor
        self._loop.start(self.tick, now=True).addErrback(self._failed)
        return run.done.addCallback(self._report)

    def _publish(self):
        run = self._run
        elapsed = self.server.reactor.seconds() - run.started
        due = min(run.total, int(run.rate * elapsed) + 1)
        publish, topic, payload = self.server.publish, self.topic, self.payload
        while run.offered < due:
            run.offered += 1
            try:
                seq = publish(topic, payload)
            except OverLimit as e:
                run.refused += 1
                seq = e.seq
                run.last = seq
                if run.first is None:
                    run.first = seq
                break
            run.last = seq
            if run.first is None:
                run.first = seq
        if run.offered >= run.total or elapsed >= run.seconds:
            self._finish()

    def _finish(self):
        run, self._run = self._run, None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        run.elapsed = self.server.reactor.seconds() - run.started
        run.done.callback(run)

    def _failed(self, failure):
        log.failure("notification benchmark publisher failed", failure)
        run, self._run = self._run, None
        self._loop = None
        if run is not None:
            run.done.errback(failure)

    def _report(self, run):
        counters = self.server.counters
        return json.dumps({
            "rate": run.rate,
            "offered": run.offered,
            "refused": run.refused,
            "seconds": run.elapsed,
            "first": run.first,
            "last": run.last,
            "publish-dropped": counters.get("publish-dropped", 0),
            "slow-dropped": counters.get("slow-dropped", 0),
        }).encode()

    def stopService(self):
        if self._run is not None:
            self._finish()
        return Service.stopService(self)


def publisher(server, topic="bench.notify", size=64, tick=0.005):
    """
    The C{--app} factory: a L{Publisher} for C{server}.
    """
    return Publisher(server, topic, size, tick)
