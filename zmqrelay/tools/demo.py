"""
C{make demo}: a whole topology on loopback, showing traffic, then a clean stop.

Starts, as real C{twistd} processes: one cloud, one site proxy, two servers
(C{a1}, C{a2}, both offering service C{echo} and ticking), a client that
reaches the servers only through the cloud, and a client on the site's LAN
that talks to C{a1} directly (and also holds a cloud path).  It prints
the interesting lines of every node for C{--seconds} (default 12), then
stops everything; Ctrl-C stops it early, cleanly.

    python -m zmqrelay.tools.demo [--seconds N]
"""

import re
import signal
import socket
import sys

from twisted.internet import defer, task
from twisted.python import usage

from zmqrelay.tools.launcher import Topology

_INTERESTING = re.compile(
    r"ready:|reply \d+|failed|notification b'|message from|lost|connected via|disconnected via"
    r"|connected to|lost:|refused"
)
_STRIP = re.compile(r"^\S+ \[[^\]]+\] ")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ep(port=None):
    return f"tcp://127.0.0.1:{port or _port()}"


class Options(usage.Options):
    """
    Options of C{python -m zmqrelay.tools.demo}.
    """

    optParameters = [["seconds", "s", 12.0, "How long to run before stopping.", float]]


def _echo(node, line):
    if _INTERESTING.search(line):
        print(f"{node.name:>8} | {_STRIP.sub('', line)}", flush=True)


async def main(reactor, seconds):
    """
    Start the topology, let it run C{seconds} (or until Ctrl-C), stop it.
    """
    topology = Topology(reactor, echo=_echo)
    stopping = reactor.addSystemEventTrigger("before", "shutdown", topology.stopAll)
    fast = ["--heartbeat", "0.5"]
    try:
        print("== starting cloud, proxy A, servers a1 and a2 (service 'echo'), two clients")
        cloud = _ep()
        await topology.start(
            "cloud", "zmqrelay-cloud",
            ["--id", "cloud", "--listen", cloud, "--pub", _ep(), "--sub", _ep()] + fast,
        )
        proxy = _ep()
        await topology.start(
            "proxyA", "zmqrelay-proxy",
            ["--id", "proxyA", "--cloud", cloud, "--listen", proxy, "--pub", _ep(), "--sub", _ep()]
            + fast,
        )
        a1 = _ep()
        for name, listen in (("a1", a1), ("a2", _ep())):
            await topology.start(
                name, "zmqrelay-server",
                ["--id", name, "--proxy", proxy, "--listen", listen, "--pub", _ep(),
                 "--service", "echo", "--tick", "2"] + fast,
            )
        print("== client 'far' goes through the cloud and the proxy; its requests for "
              "service 'echo' alternate between a1 and a2")
        await topology.start(
            "far", "zmqrelay-client",
            ["--id", "far", "--cloud", cloud, "--target", "echo", "--payload", "whoami",
             "--every", "1", "--subscribe", "tick."] + fast,
        )
        print("== client 'near' sits on site A's LAN: it asks a1 directly, and also holds "
              "a cloud path; it hears a1's ticks on both paths, each once")
        await topology.start(
            "near", "zmqrelay-client",
            ["--id", "near", "--cloud", cloud, "--server", a1, "--target", "a1",
             "--payload", "whoami", "--every", "1", "--subscribe", "tick.a1"] + fast,
        )
        wait = task.deferLater(reactor, seconds, lambda: None)
        # Ctrl-C ends the wait, and the nodes are stopped below, in order,
        # before the reactor goes.
        signal.signal(signal.SIGINT, lambda *a: reactor.callFromThread(wait.cancel))
        try:
            await wait
        except defer.CancelledError:
            print("== interrupted")
        print("== stopping every node")
    finally:
        await topology.stopAll()
        reactor.removeSystemEventTrigger(stopping)
    print("== done")


def run(argv=None):
    """
    Entry point of C{python -m zmqrelay.tools.demo}.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        raise SystemExit(f"{options}\n{e}")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options["seconds"])))


if __name__ == "__main__":
    run()
