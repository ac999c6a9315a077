"""
twistd plugins for the four zmqrelay roles.

Declarations only: this file is imported by every twistd and trial run, so it
must not import the reactor, txzmq or zmqrelay itself.
"""

from twisted.application.service import ServiceMaker

zmqrelayCloud = ServiceMaker(
    "zmqrelay cloud",
    "zmqrelay.tap.cloud",
    "The zmqrelay cloud: forwards between clients and every site's proxy.",
    "zmqrelay-cloud",
)

zmqrelayProxy = ServiceMaker(
    "zmqrelay proxy",
    "zmqrelay.tap.proxy",
    "A zmqrelay site proxy: forwards for every server on its network.",
    "zmqrelay-proxy",
)

zmqrelayServer = ServiceMaker(
    "zmqrelay server",
    "zmqrelay.tap.server",
    "A zmqrelay server: answers requests and publishes notifications.",
    "zmqrelay-server",
)

zmqrelayClient = ServiceMaker(
    "zmqrelay client",
    "zmqrelay.tap.client",
    "A zmqrelay client: sends requests and prints notifications.",
    "zmqrelay-client",
)
