"""
The public import path of the settings every node has (see L{zmqrelay.core.config}).
"""

from zmqrelay.core.config import (
    newIncarnation,
    defaultNodeId,
    NodeConfig,
    SocketOptions,
    MAX_FRAMES,
)

__all__ = [
    "newIncarnation",
    "defaultNodeId",
    "NodeConfig",
    "SocketOptions",
    "MAX_FRAMES",
]
