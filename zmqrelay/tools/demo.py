"""
C{make demo}: a whole topology on loopback, showing traffic, then a clean stop.

Starts, as real C{twistd} processes: a cloud of two nodes (C{cloud1} and
C{cloud2}, peers), one site proxy dialling both, two servers (C{a1}, C{a2},
both offering service C{echo} and ticking), a client that reaches the
servers only through the cloud (it holds both clouds' endpoints and attaches
to one), and a client on the site's LAN that talks to C{a1} directly (and
also holds both clouds).  Halfway through, C{cloud1} is killed (SIGKILL):
the requests go on with no error and the servers' presence does not change.
It prints the interesting lines of every node for C{--seconds} (default 12),
then a summary, and stops everything; Ctrl-C stops it early, cleanly.

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
    r"|connected to|lost:|refused|moved to|leaving cloud"
)
_REPLY = re.compile(r"reply \d+ from")
_FAILED = re.compile(r"request \d+ to \S+ failed")
_GONE = re.compile(r"client (far|near) \(\S+\) disconnected via")
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
        print("== starting a cloud of two nodes (cloud1, cloud2), proxy A, servers a1 and a2 "
              "(service 'echo'), two clients")
        cloud1, cloud2 = _ep(), _ep()
        for name, listen, peer in (("cloud1", cloud1, cloud2), ("cloud2", cloud2, cloud1)):
            await topology.start(
                name, "zmqrelay-cloud",
                ["--id", name, "--listen", listen, "--pub", _ep(), "--sub", _ep(), "--peer", peer]
                + fast,
            )
        clouds = ["--cloud", cloud1, "--cloud", cloud2]
        proxy = _ep()
        await topology.start(
            "proxyA", "zmqrelay-proxy",
            ["--id", "proxyA", "--listen", proxy, "--pub", _ep(), "--sub", _ep()] + clouds + fast,
        )
        a1 = _ep()
        for name, listen in (("a1", a1), ("a2", _ep())):
            await topology.start(
                name, "zmqrelay-server",
                ["--id", name, "--proxy", proxy, "--listen", listen, "--pub", _ep(),
                 "--service", "echo", "--tick", "2"] + fast,
            )
        print("== client 'far' goes through the cloud (cloud1, or cloud2 if cloud1 is gone) "
              "and the proxy; its requests for service 'echo' alternate between a1 and a2")
        await topology.start(
            "far", "zmqrelay-client",
            ["--id", "far", "--target", "echo", "--payload", "whoami",
             "--every", "0.5", "--subscribe", "tick.", "--timeout", "8"] + clouds + fast,
        )
        print("== client 'near' sits on site A's LAN: it asks a1 directly, and also holds "
              "a cloud path; it hears a1's ticks on both paths, each once")
        await topology.start(
            "near", "zmqrelay-client",
            ["--id", "near", "--server", a1, "--target", "a1",
             "--payload", "whoami", "--every", "1", "--subscribe", "tick.a1"] + clouds + fast,
        )
        interrupted = []
        # Ctrl-C ends a wait, and the nodes are stopped below, in order,
        # before the reactor goes.
        waits = []

        def interrupt(*a):
            interrupted.append(True)
            for w in waits:
                reactor.callFromThread(w.cancel)

        signal.signal(signal.SIGINT, interrupt)

        async def pause(duration):
            if interrupted:
                return
            wait = task.deferLater(reactor, duration, lambda: None)
            waits.append(wait)
            try:
                await wait
            except defer.CancelledError:
                pass

        await pause(seconds / 2)
        marks = {name: len(node.lines) for name, node in topology.nodes.items()}
        if not interrupted:
            print("== killing cloud1 (SIGKILL): its clients move to cloud2, their requests "
                  "are retried there, the servers see no client leave")
            await topology.kill("cloud1")
            await pause(seconds / 2)
        if interrupted:
            print("== interrupted")
        else:
            _summary(topology, marks)
        print("== stopping every node")
    finally:
        await topology.stopAll()
        reactor.removeSystemEventTrigger(stopping)
    print("== done")


def _summary(topology, marks):
    """
    Print what happened after the kill: replies and failures per client,
    and whether a server saw a client leave.
    """
    for name in ("far", "near"):
        lines = topology.nodes[name].lines[marks[name]:]
        replies = sum(1 for line in lines if _REPLY.search(line))
        failures = sum(1 for line in lines if _FAILED.search(line))
        print(f"== after the kill, {name}: {replies} replies, {failures} failed requests")
    gone = [
        line for name in ("a1", "a2") for line in topology.nodes[name].lines[marks[name]:]
        if _GONE.search(line)
    ]
    print(f"== after the kill, servers a1 and a2 saw {len(gone)} client disconnections "
          f"(presence unchanged: {'yes' if not gone else 'no'})")


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
