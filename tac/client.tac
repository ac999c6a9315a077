# -*- mode: python -*-
"""
A client that sends a request on a timer and logs what comes back, as a
deployment file:  twistd -ny tac/client.tac

Settings come from the environment (defaults in brackets); give at least one
of ZMQRELAY_CLOUD, ZMQRELAY_PROXY, ZMQRELAY_SERVERS:
  ZMQRELAY_ID         this client's id                     [client-<host>-<pid>]
  ZMQRELAY_CLOUD      the cloud's control endpoint         [tcp://localhost:5555]
  ZMQRELAY_PROXY      a site proxy's control endpoint      []
  ZMQRELAY_SERVERS    comma-separated server endpoints     []
  ZMQRELAY_TARGET     server id or service to ask; empty: none  [echo]
  ZMQRELAY_PAYLOAD    request payload                      [whoami]
  ZMQRELAY_EVERY      seconds between requests             [1]
  ZMQRELAY_COUNT      requests to send; 0: no end          [0]
  ZMQRELAY_SUBSCRIBE  comma-separated topic prefixes       []
"""

import os

from twisted.application.service import Application

from zmqrelay.tools.cli import Chatter
from zmqrelay.client import Client
from zmqrelay.config import NodeConfig, defaultNodeId

env = os.environ.get


def _list(name):
    return [item for item in env(name, "").split(",") if item]


client = Client(
    NodeConfig(env("ZMQRELAY_ID") or defaultNodeId("client")),
    cloud=env("ZMQRELAY_CLOUD", "tcp://localhost:5555") or None,
    proxy=env("ZMQRELAY_PROXY") or None,
    servers=_list("ZMQRELAY_SERVERS"),
)
Chatter(
    client,
    env("ZMQRELAY_TARGET", "echo"),
    env("ZMQRELAY_PAYLOAD", "whoami").encode(),
    float(env("ZMQRELAY_EVERY", "1")),
    int(env("ZMQRELAY_COUNT", "0")),
    [p.encode() for p in _list("ZMQRELAY_SUBSCRIBE")],
).setServiceParent(client)

application = Application("zmqrelay-client")
client.setServiceParent(application)
