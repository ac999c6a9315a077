"""
An example server application: echo, a few commands, and a ticker.

Used by C{tac/server.tac}, C{twistd zmqrelay-server} (the default C{--app}),
the demo, the integration tests and the benchmark.

Requests (payload -> reply):
  - C{whoami}: C{"<client id> <client incarnation> <path> <server id>"};
  - C{sleep:<seconds>}: the same payload, after that long;
  - C{fail}: a handler error;
  - C{send:<text>}: sends C{<text>} to the asking client with
    C{server.send}, replies C{sent} once the client has it;
  - C{publish:<topic>:<text>}: publishes, replies the sequence number;
  - C{runs}: how many requests the handler has run;
  - anything else: echoed back.
"""

from twisted.application.service import Service
from twisted.internet.task import LoopingCall, deferLater
from zope.interface import implementer

from zmqrelay.core.errors import OverLimit
from zmqrelay.interfaces import IRequestHandler


@implementer(IRequestHandler)
class ExampleApp(Service):
    """
    Echo and commands, plus a ticker publishing on C{tick.<server id>}.
    """

    def __init__(self, server, tick=0.0):
        self.server = server
        self.tick = float(tick)
        self.runs = 0
        self._ticker = None
        self._ticks = 0

    def handleRequest(self, request):
        self.runs += 1
        payload = request.payload
        if payload == b"whoami":
            return (
                f"{request.clientId} {request.clientIncarnation} {request.path} "
                f"{self.server.nodeId}"
            ).encode()
        if payload.startswith(b"sleep:"):
            seconds = float(payload[6:])
            return deferLater(self.server.reactor, seconds, lambda: payload)
        if payload == b"fail":
            raise ValueError("asked to fail")
        if payload.startswith(b"send:"):
            d = self.server.send(request.clientId, payload[5:])
            return d.addCallback(lambda _: b"sent")
        if payload.startswith(b"publish:"):
            _, topic, text = payload.split(b":", 2)
            return str(self.server.publish(topic, text)).encode()
        if payload == b"runs":
            return str(self.runs).encode()
        return payload

    def startService(self):
        Service.startService(self)
        if self.tick > 0:
            self._ticker = LoopingCall(self._publishTick)
            self._ticker.clock = self.server.reactor
            self._ticker.start(self.tick, now=False)

    def stopService(self):
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        return Service.stopService(self)

    def _publishTick(self):
        self._ticks += 1
        try:
            self.server.publish(
                f"tick.{self.server.nodeId}".encode(), str(self._ticks).encode()
            )
        except OverLimit:
            # Kept in the history: whoever missed it may ask for a replay.
            pass


def example(server, tick=0.0):
    """
    The default C{--app} factory: an L{ExampleApp} for C{server}.
    """
    return ExampleApp(server, tick)
