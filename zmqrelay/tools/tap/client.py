"""
C{twistd zmqrelay-client}: a client that subscribes and sends requests on a
timer, logging what comes back.  For demos, smoke tests and monitoring.
"""

from twisted.python import usage

from zmqrelay.tools.tap._common import NodeOptions, _nonNegative, _positive, checkEndpoint


class Options(NodeOptions):
    """
    Options of C{twistd zmqrelay-client}.
    """

    role = "client"
    synopsis = "[--cloud ENDPOINT] [--proxy ENDPOINT] [--server ENDPOINT ...] [options]"
    longdesc = (
        "Run a client: it connects to the cloud, a site proxy and/or servers "
        "directly (using the best live path for each request), subscribes to "
        "--subscribe prefixes and sends --payload to --target every --every "
        "seconds, logging replies, errors, notifications and messages."
    )
    optParameters = [
        ["cloud", "c", None, "The cloud's control endpoint."],
        ["proxy", "p", None, "A site proxy's control endpoint (LAN path)."],
        ["target", "t", None, "Server id or service name to send requests to."],
        ["payload", None, "hello", "Request payload (text)."],
        ["every", None, 1.0, "Seconds between requests.", _positive(float)],
        ["count", None, 0, "Requests to send, then stop sending (0: no end).", _nonNegative(int)],
        ["timeout", None, 5.0, "Seconds per request attempt.", _positive(float)],
        ["attempts", None, 3, "Attempts per request.", _positive(int)],
    ]

    def __init__(self):
        NodeOptions.__init__(self)
        self["servers"] = []
        self["subscribe"] = []

    def opt_server(self, endpoint):
        """
        A server's control endpoint, for the direct path (repeatable).
        """
        checkEndpoint(endpoint, "server")
        self["servers"].append(endpoint)

    def opt_subscribe(self, prefix):
        """
        A topic prefix to subscribe to (repeatable; '' for all).
        """
        self["subscribe"].append(prefix)

    def postOptions(self):
        NodeOptions.postOptions(self)
        for name in ("cloud", "proxy"):
            checkEndpoint(self[name], name)
        if not (self["cloud"] or self["proxy"] or self["servers"]):
            raise usage.UsageError("give --cloud, --proxy or --server")


def makeService(options):
    """
    @return: a L{zmqrelay.roles.client.Client} with a L{zmqrelay.tools.cli.Chatter}.
    """
    from zmqrelay.tools.cli import Chatter
    from zmqrelay.roles.client import Client

    config = options.nodeConfig(
        requestTimeout=options["timeout"], attempts=options["attempts"]
    )
    client = Client(config, options["cloud"], options["proxy"], options["servers"])
    Chatter(
        client,
        options["target"],
        options["payload"].encode(),
        options["every"],
        options["count"],
        [p.encode() for p in options["subscribe"]],
    ).setServiceParent(client)
    return client
