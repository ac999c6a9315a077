"""
Network namespaces for the local-path tests: a site LAN and an outside
network, made and removed by the test itself.

    ns "s" (server a1)   10.71.1.11 -+
    ns "c" (LAN client)  10.71.1.3  -+- bridge in ns "l" (the site LAN; mDNS lives here)
    ns "p" (proxy)       10.71.1.2  -+
    ns "p"               10.71.2.2  --- 10.71.2.1 ns "o" (outside: the cloud, remote clients)
    ns "c"               10.71.3.3  --- 10.71.3.1 ns "o"

The LAN client reaches a1 directly over the bridge and the cloud over its
own link to the outside, so taking its LAN interface down breaks the direct
path while a1's way to its proxy stays up.  Every process runs inside a
namespace with C{ip netns exec}; mDNS is confined (C{--discover-interface})
to the LAN addresses, and nothing binds or sends on the host's interfaces.
"""

import os
import shutil
import subprocess

#: The LAN and outside addresses, by namespace role.
LAN = {"s": "10.71.1.11", "c": "10.71.1.3", "p": "10.71.1.2"}
OUTSIDE_P = ("10.71.2.2", "10.71.2.1")
OUTSIDE_C = ("10.71.3.3", "10.71.3.1")


class CannotCreate(Exception):
    """
    This machine (or user) cannot create network namespaces.
    """


def _ip(*args, check=True):
    result = subprocess.run(
        ["ip"] + list(args), capture_output=True, text=True, timeout=10
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class SiteNetwork:
    """
    The namespaces of one test; L{remove} deletes them all (idempotent).

    @ivar names: namespace role (C{'s'}, C{'c'}, C{'p'}, C{'l'}, C{'o'}) to
        its name.
    """

    def __init__(self, tag=None):
        tag = tag or f"{os.getpid() % 100000}"
        self.tag = tag
        self.names = {role: f"zr{tag}{role}" for role in "scplo"}

    def create(self):
        """
        Make the namespaces, links and addresses.

        @raise CannotCreate: if namespaces cannot be made here.
        """
        if shutil.which("ip") is None:
            raise CannotCreate("no 'ip' command (iproute2)")
        if os.geteuid() != 0:
            raise CannotCreate("creating network namespaces needs root")
        probe = _ip("netns", "add", self.names["l"], check=False)
        if probe.returncode != 0:
            raise CannotCreate(f"ip netns add failed: {probe.stderr.strip()}")
        try:
            self._build()
        except Exception:
            self.remove()
            raise

    def _build(self):
        n = self.names
        t = self.tag
        for role in "scpo":
            _ip("netns", "add", n[role])
        for role in "scplo":
            _ip("-n", n[role], "link", "set", "lo", "up")
        _ip("-n", n["l"], "link", "add", "br0", "type", "bridge")
        # No IGMP snooping: mDNS floods the LAN like on a plain switch.
        _ip("-n", n["l"], "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", n["l"], "link", "set", "br0", "up")
        for role in "scp":
            inside, port = f"zr{t}{role}0", f"zr{t}{role}b"
            _ip("link", "add", inside, "type", "veth", "peer", "name", port)
            _ip("link", "set", inside, "netns", n[role])
            _ip("link", "set", port, "netns", n["l"])
            _ip("-n", n[role], "link", "set", inside, "name", "lan0")
            _ip("-n", n[role], "addr", "add", f"{LAN[role]}/24", "dev", "lan0")
            _ip("-n", n[role], "link", "set", "lan0", "up")
            _ip("-n", n["l"], "link", "set", port, "master", "br0")
            _ip("-n", n["l"], "link", "set", port, "up")
        for role, (inner, outer) in (("p", OUTSIDE_P), ("c", OUTSIDE_C)):
            inside, outside = f"zr{t}{role}1", f"zr{t}{role}o"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", n[role])
            _ip("link", "set", outside, "netns", n["o"])
            _ip("-n", n[role], "link", "set", inside, "name", "out0")
            _ip("-n", n[role], "addr", "add", f"{inner}/24", "dev", "out0")
            _ip("-n", n[role], "link", "set", "out0", "up")
            _ip("-n", n["o"], "addr", "add", f"{outer}/24", "dev", outside)
            _ip("-n", n["o"], "link", "set", outside, "up")

    def setLan(self, role, up):
        """
        Take namespace C{role}'s LAN interface down or bring it up.
        """
        _ip("-n", self.names[role], "link", "set", "lan0", "up" if up else "down")

    def command(self, role, argv):
        """
        @return: C{argv} run inside namespace C{role}.
        """
        return ["ip", "netns", "exec", self.names[role]] + list(argv)

    def remove(self):
        for name in self.names.values():
            _ip("netns", "delete", name, check=False)
