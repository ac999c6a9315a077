"""
Stopping without cancelling: a node being stopped first lets the work it
took finish, within a bound, and only then goes (PROTOCOL.md 8.1).
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

#: States of a L{Drain}.
IDLE, DRAINING, DONE = "idle", "draining", "done"


class Drain:
    """
    Wait until a node has no work in flight, or C{timeout} seconds.

    C{busy} is asked when the owner says something ended (L{check}), and
    every C{step} seconds besides (work can also end by ways the owner does
    not report, such as a relay's sweep of expired requests).

    @ivar state: L{IDLE}, L{DRAINING} or L{DONE}.
    @ivar drained: after L{DONE}, C{True} if the work ended, C{False} if the
        timeout cut it short.
    """

    def __init__(self, reactor, timeout, busy, step=0.05):
        self.reactor = reactor
        self.timeout = timeout
        self.busy = busy
        self.step = step
        self.state = IDLE
        self.drained = None
        self._done = None
        self._timer = None
        self._poll = None

    def start(self):
        """
        Start draining.

        @return: a L{Deferred} firing with C{True} once nothing is in flight,
            or C{False} at the timeout; cancelling it ends the wait at once,
            as the timeout would (it fires with C{False}): a node whose stop
            is cancelled stops now instead of draining.
        """
        self.state = DRAINING
        self._done = Deferred(lambda d: self._finish(False))
        if not self.busy():
            self._finish(True)
            return self._done
        self._timer = self.reactor.callLater(self.timeout, self._finish, False)
        self._poll = LoopingCall(self.check)
        self._poll.clock = self.reactor
        self._poll.start(self.step, now=False)
        return self._done

    def check(self):
        """
        Something in flight ended: finish if nothing is left.
        """
        if self.state == DRAINING and not self.busy():
            self._finish(True)

    def _finish(self, drained):
        if self.state != DRAINING:
            return
        self.state = DONE
        self.drained = drained
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        self._done.callback(drained)
