# -*- mode: python -*-
"""
A site proxy, as a deployment file:  twistd -ny tac/proxy.tac

Built from the same options as C{twistd zmqrelay-proxy}: every option
--some-name is read from ZMQRELAY_SOME_NAME (see zmqrelay.tools.tac), e.g.
  ZMQRELAY_ID        this node's id                       [proxy-<host>-<pid>]
  ZMQRELAY_CLOUD     the cloud's control endpoint(s), comma-separated  [tcp://localhost:5555]
  ZMQRELAY_LAN_ONLY  1: a site with no cloud (leave ZMQRELAY_CLOUD unset)  []
  ZMQRELAY_LISTEN    control ROUTER for servers and LAN clients  [tcp://*:5565]
  ZMQRELAY_PUB       XPUB LAN clients subscribe to               [tcp://*:5566]
  ZMQRELAY_SUB       XSUB the site's servers publish to          [tcp://*:5567]
  ZMQRELAY_METRICS   Prometheus /metrics, /healthz (e.g. tcp:9101)  []
  ZMQRELAY_CURVE_SECRET, ZMQRELAY_CURVE_SERVER_KEY, ZMQRELAY_HWM, ...
"""

import os

from twisted.application.service import Application

from zmqrelay.tools.tac import serviceFromEnvironment
from zmqrelay.tools.tap import proxy

defaults = {} if os.environ.get("ZMQRELAY_LAN_ONLY") else {"cloud": "tcp://localhost:5555"}
application = Application("zmqrelay-proxy")
serviceFromEnvironment(proxy, defaults).setServiceParent(application)
