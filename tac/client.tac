# -*- mode: python -*-
"""
A client that sends a request on a timer and logs what comes back, as a
deployment file:  twistd -ny tac/client.tac

Built from the same options as C{twistd zmqrelay-client}: every option
--some-name is read from ZMQRELAY_SOME_NAME (see zmqrelay.tools.tac), e.g.
  ZMQRELAY_ID         this client's id                     [client-<host>-<pid>]
  ZMQRELAY_CLOUD      the cloud's control endpoint(s), comma-separated  [tcp://localhost:5555]
  ZMQRELAY_PROXY      a site proxy's control endpoint      []
  ZMQRELAY_SERVERS    comma-separated server endpoints     []
  ZMQRELAY_TARGET     server id or service to ask; empty: none  [echo]
  ZMQRELAY_PAYLOAD    request payload                      [whoami]
  ZMQRELAY_EVERY      seconds between requests             [1]
  ZMQRELAY_COUNT      requests to send; 0: no end          [0]
  ZMQRELAY_SUBSCRIBE  comma-separated topic prefixes; set and empty: every topic  []
"""

import os

from twisted.application.service import Application

from zmqrelay.tools.tac import serviceFromEnvironment
from zmqrelay.tools.tap import client

defaults = {"target": "echo", "payload": "whoami"}
if not (os.environ.get("ZMQRELAY_PROXY") or os.environ.get("ZMQRELAY_SERVERS")):
    defaults["cloud"] = "tcp://localhost:5555"
application = Application("zmqrelay-client")
serviceFromEnvironment(client, defaults).setServiceParent(application)
