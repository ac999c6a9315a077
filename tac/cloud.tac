# -*- mode: python -*-
"""
The cloud, as a deployment file:  twistd -ny tac/cloud.tac

Built from the same options as C{twistd zmqrelay-cloud}: every option
--some-name is read from ZMQRELAY_SOME_NAME (see zmqrelay.tools.tac), e.g.
  ZMQRELAY_ID       this node's id              [cloud]
  ZMQRELAY_LISTEN   control ROUTER endpoint     [tcp://*:5555]
  ZMQRELAY_PUB      XPUB clients subscribe to   [tcp://*:5556]
  ZMQRELAY_SUB      XSUB proxies publish to     [tcp://*:5557]
  ZMQRELAY_PEER     the other cloud nodes, comma-separated (a cloud of several nodes)  []
  ZMQRELAY_METRICS  Prometheus /metrics, /healthz (e.g. tcp:9100)  []
  ZMQRELAY_CURVE_SECRET, ZMQRELAY_CURVE_AUTHORIZED, ZMQRELAY_RATE, ...
"""

from twisted.application.service import Application

from zmqrelay.tools.tac import serviceFromEnvironment
from zmqrelay.tools.tap import cloud

application = Application("zmqrelay-cloud")
serviceFromEnvironment(cloud, {"id": "cloud"}).setServiceParent(application)
