# -*- mode: python -*-
"""
The cloud, as a deployment file:  twistd -ny tac/cloud.tac

Settings come from the environment (defaults in brackets):
  ZMQRELAY_ID      this node's id              [cloud]
  ZMQRELAY_LISTEN  control ROUTER endpoint     [tcp://*:5555]
  ZMQRELAY_PUB     XPUB clients subscribe to   [tcp://*:5556]
  ZMQRELAY_SUB     XSUB proxies publish to     [tcp://*:5557]
"""

import os

from twisted.application.service import Application

from zmqrelay.roles.cloud import Cloud
from zmqrelay.config import NodeConfig
from zmqrelay.core.presence import PresenceLog

env = os.environ.get

cloud = Cloud(
    NodeConfig(env("ZMQRELAY_ID", "cloud")),
    listen=env("ZMQRELAY_LISTEN", "tcp://*:5555"),
    pub=env("ZMQRELAY_PUB", "tcp://*:5556"),
    sub=env("ZMQRELAY_SUB", "tcp://*:5557"),
)
cloud.presence.addObserver(PresenceLog())

application = Application("zmqrelay-cloud")
cloud.setServiceParent(application)
