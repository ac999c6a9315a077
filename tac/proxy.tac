# -*- mode: python -*-
"""
A site proxy, as a deployment file:  twistd -ny tac/proxy.tac

Settings come from the environment (defaults in brackets):
  ZMQRELAY_ID      this node's id                          [proxy-<host>-<pid>]
  ZMQRELAY_CLOUD   the cloud's control endpoint; empty: LAN only  [tcp://localhost:5555]
  ZMQRELAY_LISTEN  control ROUTER for servers and LAN clients     [tcp://*:5565]
  ZMQRELAY_PUB     XPUB LAN clients subscribe to                  [tcp://*:5566]
  ZMQRELAY_SUB     XSUB the site's servers publish to             [tcp://*:5567]
"""

import os

from twisted.application.service import Application

from zmqrelay.config import NodeConfig, defaultNodeId
from zmqrelay.core.presence import PresenceLog
from zmqrelay.roles.proxy import Proxy

env = os.environ.get

proxy = Proxy(
    NodeConfig(env("ZMQRELAY_ID") or defaultNodeId("proxy")),
    listen=env("ZMQRELAY_LISTEN", "tcp://*:5565"),
    pub=env("ZMQRELAY_PUB", "tcp://*:5566"),
    sub=env("ZMQRELAY_SUB", "tcp://*:5567"),
    cloud=env("ZMQRELAY_CLOUD", "tcp://localhost:5555") or None,
)
proxy.presence.addObserver(PresenceLog())

application = Application("zmqrelay-proxy")
proxy.setServiceParent(application)
