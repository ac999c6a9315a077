"""
C{twistd zmqrelay-client}: a client that subscribes and sends requests on a
timer, logging what comes back.  For demos, smoke tests and monitoring.

L{ConnectOptions} are also the connection options of the C{zmqrelay}
command (L{zmqrelay.tools.cli}): one definition for both.
"""

from twisted.python import usage

from zmqrelay.tools.tap._common import (
    InterspersedOptions,
    NodeOptions,
    _nonNegative,
    _positive,
    checkEndpoint,
    twistdService,
)


def _oneOrTwo(value):
    number = int(value)
    if number not in (1, 2):
        raise ValueError("must be 1 or 2")
    return number


_oneOrTwo.coerceDoc = "1 or 2."


class ConnectOptions(NodeOptions):
    """
    How a client connects: its paths, its deadlines, and every option a
    node has (CURVE, limits, protocol versions).
    """

    role = "client"
    optParameters = [
        ["proxy", "p", None, "A site proxy's control endpoint (LAN path)."],
        ["timeout", None, 5.0, "Seconds a request may take in all, its attempts included (and "
         "to wait for a path).", _positive(float)],
        ["attempts", None, 3, "Attempts per request, within its --timeout.", _positive(int)],
        ["cloud-links", None, 1, "With several --cloud: how many clouds to attach to at once (1 or 2).",
         _oneOrTwo],
    ]

    def __init__(self):
        NodeOptions.__init__(self)
        self["servers"] = []
        self["cloud"] = None
        self["clouds"] = []

    def opt_cloud(self, endpoint):
        """
        The cloud's control endpoint; repeat it for each of several clouds
        that form one (the client attaches to --cloud-links of them and
        moves to another when one is gone or draining).
        """
        checkEndpoint(endpoint, "cloud")
        if endpoint not in self["clouds"]:
            self["clouds"].append(endpoint)
        self["cloud"] = self["clouds"][0]

    opt_c = opt_cloud

    def opt_server(self, endpoint):
        """
        A server's control endpoint, for the direct path (repeatable).
        """
        checkEndpoint(endpoint, "server")
        self["servers"].append(endpoint)

    def postOptions(self):
        checkEndpoint(self["proxy"], "proxy")
        NodeOptions.postOptions(self)
        if not (self["cloud"] or self["proxy"] or self["servers"] or self["discover"]):
            raise usage.UsageError("give --cloud, --proxy, --server or --discover")

    def makeClient(self, reactor=None):
        """
        @return: the L{zmqrelay.roles.client.Client} these options describe,
            not started: every path (C{--cloud}, repeated, with
            C{--cloud-links}; C{--proxy}; C{--server}; C{--discover} on
            C{--discover-interface}) and the L{clientConfig}.
        """
        from zmqrelay.roles.client import Client

        return Client(
            self.clientConfig(), self["clouds"] or None, self["proxy"], self["servers"],
            reactor=reactor, discover=self["discover"],
            discoverInterfaces=self["discover-interfaces"], cloudLinks=self["cloud-links"],
        )

    def clientConfig(self, **extra):
        """
        @return: the L{zmqrelay.core.config.NodeConfig} of the client these
            options describe.
        """
        kw = dict(requestTimeout=self["timeout"], attempts=self["attempts"])
        kw.update(extra)
        return self.nodeConfig(**kw)


class CommandOptions(InterspersedOptions, ConnectOptions):
    """
    The connection options of a C{zmqrelay} command (L{zmqrelay.tools.cli},
    L{zmqrelay.tools.top}): options before or after the arguments, and no
    C{--metrics}, as a command ends when its work is done.
    """

    def postOptions(self):
        ConnectOptions.postOptions(self)
        if self["metrics"] is not None:
            raise usage.UsageError(
                "--metrics: a command serves no metrics; run a client under twistd "
                "(twistd zmqrelay-client --metrics ...) to have them"
            )


class Options(ConnectOptions):
    """
    Options of C{twistd zmqrelay-client}.
    """

    synopsis = "[--cloud ENDPOINT] [--proxy ENDPOINT] [--server ENDPOINT ...] [options]"
    longdesc = (
        "Run a client: it connects to the cloud, a site proxy and/or servers "
        "directly (using the best live path for each request), subscribes to "
        "--subscribe prefixes and sends --payload to --target every --every "
        "seconds, logging replies, errors, notifications and messages."
    )
    optParameters = [
        ["target", "t", None, "Server id or service name to send requests to."],
        ["payload", None, "hello", "Request payload (text)."],
        ["every", None, 1.0, "Seconds between requests.", _positive(float)],
        ["count", None, 0, "Requests to send, then stop sending (0: no end).", _nonNegative(int)],
    ]

    def __init__(self):
        ConnectOptions.__init__(self)
        self["subscribe"] = []

    def opt_subscribe(self, prefix):
        """
        A topic prefix to subscribe to (repeatable; '' for all).
        """
        self["subscribe"].append(prefix)


def makeService(options):
    """
    @return: a L{zmqrelay.roles.client.Client} with a L{zmqrelay.tools.chatter.Chatter}.
    """
    return twistdService(_build, options)


def _build(options):
    from zmqrelay.tools.chatter import Chatter

    client = options.makeClient()
    Chatter(
        client,
        options["target"],
        options["payload"].encode(),
        options["every"],
        options["count"],
        [p.encode() for p in options["subscribe"]],
    ).setServiceParent(client)
    return options.attachMetrics(client)
