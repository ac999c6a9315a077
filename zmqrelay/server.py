"""
The public import path of the server role (see L{zmqrelay.roles.server}).
"""

from zmqrelay.roles.server import Request, Server

__all__ = ["Request", "Server"]
