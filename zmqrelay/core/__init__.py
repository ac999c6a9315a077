"""
The pure core: the wire protocol, replicated maps, presence, routing, limits,
caches and sequence tracking.  Nothing here touches a socket or the reactor
(time is passed in, or, for L{zmqrelay.core.calls}, an injected clock), so
every rule is unit-tested with a C{Clock}.  Imports nothing from the other
layers.
"""
