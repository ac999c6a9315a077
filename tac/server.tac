# -*- mode: python -*-
"""
A server running an application (the example one by default), as a
deployment file:  twistd -ny tac/server.tac

Built from the same options as C{twistd zmqrelay-server}: every option
--some-name is read from ZMQRELAY_SOME_NAME (see zmqrelay.tools.tac), e.g.
  ZMQRELAY_ID        this node's id                              [server-<host>-<pid>]
  ZMQRELAY_PROXY     the site proxy's control endpoint; empty: none  [tcp://localhost:5565]
  ZMQRELAY_LISTEN    control ROUTER for direct clients; empty: none  [tcp://*:5575]
  ZMQRELAY_PUB       XPUB direct subscribers use; empty: none        [tcp://*:5576]
  ZMQRELAY_SERVICES  comma-separated service names offered           [echo]
  ZMQRELAY_TICK      seconds between tick.<id> notifications; 0: none [0]
  ZMQRELAY_APP       dotted name of your IRequestHandler factory
                     [zmqrelay.tools.examples.example]
  ZMQRELAY_APP_OPTIONS  comma-separated KEY=VALUE for the factory   []
  ZMQRELAY_METRICS   Prometheus /metrics, /healthz (e.g. tcp:9102)  []
"""

from twisted.application.service import Application

from zmqrelay.tools.tac import serviceFromEnvironment
from zmqrelay.tools.tap import server

application = Application("zmqrelay-server")
serviceFromEnvironment(
    server, {"proxy": "tcp://localhost:5565", "service": "echo"}
).setServiceParent(application)
