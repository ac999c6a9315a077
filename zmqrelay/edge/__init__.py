"""
The ZeroMQ edge: the socket adapter (the only place that imports txzmq), the
bound side of a hop (L{zmqrelay.edge.front.Front}), the dialling side
(L{zmqrelay.edge.link.UpstreamLink}), CURVE and ZAP, and memory trimming.
Imports only from L{zmqrelay.core} (and the interfaces).
"""
