"""
C{twistd zmqrelay-proxy}: a site proxy.
"""

from twisted.python import usage

from zmqrelay.tools.tap._common import NodeOptions, RelayOptions, _nonNegative, checkEndpoint, twistdService


class Options(RelayOptions):
    """
    Options of C{twistd zmqrelay-proxy}.
    """

    role = "proxy"
    synopsis = "--cloud ENDPOINT | --lan-only [options]"
    longdesc = (
        "Run a site proxy: the site's servers connect to it; it connects out "
        "to the cloud and forwards for every server on its network. LAN "
        "clients may connect to it directly."
    )
    optParameters = [
        ["listen", "l", "tcp://*:5565", "Control endpoint (ROUTER) for servers and LAN clients."],
        ["pub", None, "tcp://*:5566", "Notification endpoint (XPUB) LAN clients subscribe to."],
        ["sub", None, "tcp://*:5567", "Notification endpoint (XSUB) servers publish to."],
        ["drain-timeout", None, 10.0, "Seconds a stop lets the work in flight finish (0: stop at once).",
         _nonNegative(float)],
    ]

    optFlags = [
        ["lan-only", None, "Run a site with no cloud: only its LAN clients reach its servers."],
    ]

    def __init__(self):
        RelayOptions.__init__(self)
        self["cloud"] = None
        self["clouds"] = []

    def opt_cloud(self, endpoint):
        """
        The cloud's control endpoint; repeat it for each of several clouds
        that form one (the proxy dials every one).
        """
        checkEndpoint(endpoint, "cloud")
        if endpoint not in self["clouds"]:
            self["clouds"].append(endpoint)
        self["cloud"] = self["clouds"][0]

    opt_c = opt_cloud

    def postOptions(self):
        NodeOptions.postOptions(self)
        for name in ("listen", "pub", "sub"):
            checkEndpoint(self[name], name, bind=True)
        if self["lan-only"] and self["cloud"]:
            raise usage.UsageError(f"--lan-only and --cloud {self['cloud']!r}: give one of them")
        if not (self["lan-only"] or self["cloud"]):
            raise usage.UsageError("a proxy needs --cloud ENDPOINT, or --lan-only for a site with no cloud")


def makeService(options):
    """
    @return: a L{zmqrelay.roles.proxy.Proxy} service.
    """
    return twistdService(_build, options)


def _build(options):
    from zmqrelay.core.presence import PresenceLog
    from zmqrelay.roles.proxy import Proxy

    proxy = Proxy(
        options.nodeConfig(), options["listen"], options["pub"], options["sub"], options["clouds"] or None
    )
    proxy.presence.addObserver(PresenceLog(clock=proxy.reactor))
    options.attachDiscovery(proxy)
    return options.attachMetrics(proxy)
