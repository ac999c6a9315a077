"""
C{twistd zmqrelay-proxy}: a site proxy.
"""

from zmqrelay.tools.tap._common import NodeOptions, RelayOptions, checkEndpoint


class Options(RelayOptions):
    """
    Options of C{twistd zmqrelay-proxy}.
    """

    role = "proxy"
    synopsis = "--cloud ENDPOINT [options]"
    longdesc = (
        "Run a site proxy: the site's servers connect to it; it connects out "
        "to the cloud and forwards for every server on its network. LAN "
        "clients may connect to it directly."
    )
    optParameters = [
        ["cloud", "c", None, "The cloud's control endpoint (omit for a LAN-only site)."],
        ["listen", "l", "tcp://*:5565", "Control endpoint (ROUTER) for servers and LAN clients."],
        ["pub", None, "tcp://*:5566", "Notification endpoint (XPUB) LAN clients subscribe to."],
        ["sub", None, "tcp://*:5567", "Notification endpoint (XSUB) servers publish to."],
    ]

    def postOptions(self):
        NodeOptions.postOptions(self)
        for name in ("cloud", "listen", "pub", "sub"):
            checkEndpoint(self[name], name)


def makeService(options):
    """
    @return: a L{zmqrelay.roles.proxy.Proxy} service.
    """
    from zmqrelay.core.presence import PresenceLog
    from zmqrelay.roles.proxy import Proxy

    proxy = Proxy(
        options.nodeConfig(), options["listen"], options["pub"], options["sub"], options["cloud"]
    )
    proxy.presence.addObserver(PresenceLog())
    return proxy
