"""
The public import path of the client role (see L{zmqrelay.roles.client}).
"""

from zmqrelay.roles.client import Client

__all__ = ["Client"]
