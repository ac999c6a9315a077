"""
Integration tests of the deployment files in C{tac/}: each started with
C{twistd -ny}, configured through environment variables, on loopback.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.integration.helpers import LOOPBACK, Cluster, reachable


class TacTests(unittest.TestCase):
    """
    cloud.tac, proxy.tac, server.tac and client.tac make a working system.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_tacFilesServeARequest(self):
        """A system started from the tac files answers requests from a cloud client and from client.tac."""
        c = Cluster(self)
        cloud = yield c.startTac("cloud", "cloud.tac", {
            "ZMQRELAY_ID": "tac-cloud", "ZMQRELAY_LISTEN": LOOPBACK,
            "ZMQRELAY_PUB": LOOPBACK, "ZMQRELAY_SUB": LOOPBACK,
        })
        proxy = yield c.startTac("proxy", "proxy.tac", {
            "ZMQRELAY_ID": "tac-proxy", "ZMQRELAY_CLOUD": cloud.endpoints["control"],
            "ZMQRELAY_LISTEN": LOOPBACK, "ZMQRELAY_PUB": LOOPBACK, "ZMQRELAY_SUB": LOOPBACK,
        })
        yield c.startTac("server", "server.tac", {
            "ZMQRELAY_ID": "tac-server", "ZMQRELAY_PROXY": proxy.endpoints["control"],
            "ZMQRELAY_LISTEN": LOOPBACK, "ZMQRELAY_PUB": LOOPBACK,
            "ZMQRELAY_SERVICES": "echo,tac",
        })
        self.assertEqual(cloud.endpoints.keys(), {"control", "pub", "sub"})

        client = yield c.client("tac-user", cloud=cloud)
        yield reachable(client, "tac-server")
        reply = yield client.request("tac-server", b"whoami")
        self.assertEqual(reply, f"tac-user {client.incarnation} cloud tac-server".encode())
        reply = yield client.request("tac", b"over the tac service")
        self.assertEqual(reply, b"over the tac service")

        chatter = yield c.startTac("client", "client.tac", {
            "ZMQRELAY_ID": "tac-chatter", "ZMQRELAY_CLOUD": cloud.endpoints["control"],
            "ZMQRELAY_TARGET": "echo", "ZMQRELAY_PAYLOAD": "whoami", "ZMQRELAY_EVERY": "0.1",
        })
        yield chatter.waitFor(r"reply \d+ from echo: b'tac-chatter \S+ cloud tac-server'", 15.0)
