# -*- mode: python -*-
"""
A server running the example application, as a deployment file:
twistd -ny tac/server.tac

Settings come from the environment (defaults in brackets):
  ZMQRELAY_ID        this node's id                              [server-<host>-<pid>]
  ZMQRELAY_PROXY     the site proxy's control endpoint; empty: none  [tcp://localhost:5565]
  ZMQRELAY_LISTEN    control ROUTER for direct clients; empty: none  [tcp://*:5575]
  ZMQRELAY_PUB       XPUB direct subscribers use; empty: none        [tcp://*:5576]
  ZMQRELAY_SERVICES  comma-separated service names offered           [echo]
  ZMQRELAY_TICK      seconds between tick.<id> notifications; 0: none [0]

To run your own application, replace ExampleApp with your IRequestHandler.
"""

import os

from twisted.application.service import Application

from zmqrelay.config import NodeConfig, defaultNodeId
from zmqrelay.tools.examples import ExampleApp
from zmqrelay.core.presence import PresenceLog
from zmqrelay.server import Server

env = os.environ.get

server = Server(
    NodeConfig(env("ZMQRELAY_ID") or defaultNodeId("server")),
    handler=None,
    services=[s for s in env("ZMQRELAY_SERVICES", "echo").split(",") if s],
    listen=env("ZMQRELAY_LISTEN", "tcp://*:5575") or None,
    pub=env("ZMQRELAY_PUB", "tcp://*:5576") or None,
    proxy=env("ZMQRELAY_PROXY", "tcp://localhost:5565") or None,
)
app = ExampleApp(server, float(env("ZMQRELAY_TICK", "0")))
server.handler = app
app.setServiceParent(server)
server.presence.addObserver(PresenceLog())

application = Application("zmqrelay-server")
server.setServiceParent(application)
