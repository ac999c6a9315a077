"""
The roles: the node service every role is, request forwarding, the
notification relay, and the cloud, proxy, server and client built from them.
Imports from L{zmqrelay.core} and L{zmqrelay.edge}, never from the tools.
"""
