"""
twistd plugins for the four zmqrelay roles.

Declarations only: this file is imported by every twistd and trial run, so it
must not import the reactor, txzmq or zmqrelay itself.
"""

from twisted.application.service import ServiceMaker

zmqrelayCloud = ServiceMaker(
    "zmqrelay cloud",
    "zmqrelay.tools.tap.cloud",
    "The zmqrelay cloud: forwards between clients and every site's proxy.",
    "zmqrelay-cloud",
)

zmqrelayProxy = ServiceMaker(
    "zmqrelay proxy",
    "zmqrelay.tools.tap.proxy",
    "A zmqrelay site proxy: forwards for every server on its network.",
    "zmqrelay-proxy",
)

zmqrelayServer = ServiceMaker(
    "zmqrelay server",
    "zmqrelay.tools.tap.server",
    "A zmqrelay server: answers requests and publishes notifications.",
    "zmqrelay-server",
)

zmqrelayClient = ServiceMaker(
    "zmqrelay client",
    "zmqrelay.tools.tap.client",
    "A zmqrelay client: sends requests and prints notifications.",
    "zmqrelay-client",
)
