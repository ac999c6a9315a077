"""
zmqrelay: a client / server / proxy / cloud relay over ZeroMQ, as Twisted services.
"""

__version__ = "0.1.0"
