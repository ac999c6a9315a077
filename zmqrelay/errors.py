"""
The public import path of L{zmqrelay.core.errors}: everything it defines.
"""

from zmqrelay.core.errors import *  # noqa: F401,F403 (a re-export of the whole module)
