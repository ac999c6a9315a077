"""
The public import path of L{zmqrelay.core.config}: everything it defines.
"""

from zmqrelay.core.config import *  # noqa: F401,F403 (a re-export of the whole module)
