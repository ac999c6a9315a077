"""
C{twistd zmqrelay-cloud}: the cloud.
"""

from zmqrelay.tools.tap._common import NodeOptions, RelayOptions, _nonNegative, checkEndpoint, twistdService


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
        ["drain-timeout", None, 10.0, "Seconds a stop lets the work in flight finish (0: stop at once).",
         _nonNegative(float)],
    ]

    def __init__(self):
        RelayOptions.__init__(self)
        self["peers"] = []

    def opt_peer(self, endpoint):
        """
        The control endpoint of another cloud; clouds that list each other
        form one cloud (repeatable).
        """
        checkEndpoint(endpoint, "peer")
        if endpoint not in self["peers"]:
            self["peers"].append(endpoint)

    def postOptions(self):
        NodeOptions.postOptions(self)
        for name in ("listen", "pub", "sub"):
            checkEndpoint(self[name], name, bind=True)


def makeService(options):
    """
    @return: a L{zmqrelay.roles.cloud.Cloud} service.
    """
    return twistdService(_build, options)


def _build(options):
    from zmqrelay.roles.cloud import Cloud
    from zmqrelay.core.presence import PresenceLog

    cloud = Cloud(
        options.nodeConfig(), options["listen"], options["pub"], options["sub"], peers=options["peers"]
    )
    cloud.presence.addObserver(PresenceLog(clock=cloud.reactor))
    return options.attachMetrics(cloud)

