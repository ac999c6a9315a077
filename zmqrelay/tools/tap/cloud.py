"""
C{twistd zmqrelay-cloud}: the cloud.
"""

from zmqrelay.tools.tap._common import NodeOptions, RelayOptions, checkEndpoint


class Options(RelayOptions):
    """
    Options of C{twistd zmqrelay-cloud}.
    """

    role = "cloud"
    synopsis = "[options]"
    longdesc = (
        "Run the cloud: clients and site proxies connect to it; it forwards "
        "requests to the proxy of the server asked for, notifications to "
        "subscribed clients, and tracks which clients are connected."
    )
    optParameters = [
        ["listen", "l", "tcp://*:5555", "Control endpoint (ROUTER) for clients and proxies."],
        ["pub", None, "tcp://*:5556", "Notification endpoint (XPUB) clients subscribe to."],
        ["sub", None, "tcp://*:5557", "Notification endpoint (XSUB) proxies publish to."],
    ]

    def postOptions(self):
        NodeOptions.postOptions(self)
        for name in ("listen", "pub", "sub"):
            checkEndpoint(self[name], name)


def makeService(options):
    """
    @return: a L{zmqrelay.roles.cloud.Cloud} service.
    """
    from zmqrelay.roles.cloud import Cloud
    from zmqrelay.core.presence import PresenceLog

    cloud = Cloud(options.nodeConfig(), options["listen"], options["pub"], options["sub"])
    cloud.presence.addObserver(PresenceLog())
    return cloud

