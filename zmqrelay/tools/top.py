"""
C{zmqrelay top}: a live view of a running system, refreshed every second.

It attaches to one node (C{--cloud}, C{--proxy} or C{--server}) and asks
with the C{sys} requests of PROTOCOL.md 10.7: C{routes} (which servers,
with their services, through which proxy; which peers are attached),
C{presence} (clients and their paths) and C{stats} of every node it can
reach.  From two refreshes it derives request and error rates.  It draws
with C{rich}.
"""

import msgpack
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import deferLater

from zmqrelay.tools.tap._common import _positive, _nonNegative
from zmqrelay.tools.tap.client import CommandOptions

#: The figures of L{zmqrelay.roles.metrics.REFUSAL_REASONS}.
_REFUSALS = ("rate", "size", "in-flight", "cooldown", "auth", "version")


class TopOptions(CommandOptions):
    """
    C{zmqrelay top}: a live view of the system.
    """

    idPrefix = "top"
    synopsis = "[connect options] [--interval SECONDS] [--count N]"
    optParameters = [
        ["interval", None, 1.0, "Seconds between refreshes.", _positive(float)],
        ["count", "n", 0, "Refreshes, then exit (0: until interrupted).", _nonNegative(int)],
    ]


def _unpack(payload):
    return msgpack.unpackb(payload, raw=False)


class Snapshot:
    """
    What one refresh learnt.

    @ivar attached: the id of the node attached to.
    @ivar nodes: node id to C{(role, stats or None, error or None)}.
    @ivar servers: server id to C{{"services": [...], "via": id}}.
    @ivar paths: path name to the number of clients on it.
    @ivar at: when (reactor seconds).
    """

    def __init__(self, attached, at):
        self.attached = attached
        self.at = at
        self.nodes = {}
        self.servers = {}
        self.paths = {}


@inlineCallbacks
def collect(client, attached, role, timeout):
    """
    Ask the attached node and every node it can reach.

    @return: a L{Deferred} firing with a L{Snapshot}.
    """
    snap = Snapshot(attached, client.reactor.seconds())

    def ask(op, to=""):
        return client.request(to, b"", sys=op, timeout=timeout, attempts=1).addCallback(_unpack)

    routes, presence, stats = yield DeferredList(
        [ask("routes"), ask("presence"), ask("stats")], consumeErrors=True
    )
    snap.nodes[attached] = (role, stats[1] if stats[0] else None,
                            None if stats[0] else stats[1].getErrorMessage())
    if routes[0]:
        snap.servers = routes[1].get("servers", {})
        below = {peerId: peerRole for peerId, peerRole in routes[1].get("peers", [])
                 if peerRole != "client"}
    else:
        below = {}
    if presence[0]:
        for record in presence[1].values():
            for path in record.get("paths", []):
                snap.paths[path] = snap.paths.get(path, 0) + 1
    others = dict(below)
    for serverId, route in snap.servers.items():
        others.setdefault(serverId, "server")
        if route.get("via") and route["via"] != serverId:
            others.setdefault(route["via"], "proxy")
    others.pop(attached, None)
    names = sorted(others)
    answers = yield DeferredList([ask("stats", to=name) for name in names], consumeErrors=True)
    for name, (ok, value) in zip(names, answers):
        snap.nodes[name] = (others[name], value if ok else None,
                            None if ok else value.getErrorMessage())
    return snap


def _errors(stats):
    return sum(v for k, v in stats.items() if k.startswith("errors."))


def render(snap, previous=None):
    """
    @return: a C{rich} renderable of C{snap}; rates against C{previous}.
    """
    from rich.console import Group
    from rich.table import Table

    order = {"cloud": 0, "proxy": 1, "server": 2}
    nodes = Table(title=f"zmqrelay top: attached to {snap.attached}", expand=False)
    for column in ("node", "role", "via", "services", "sessions", "in-flight",
                   "req/s", "err/s", "refused", "up"):
        nodes.add_column(column, justify="left" if column in ("node", "role", "via", "services") else "right")
    dt = (snap.at - previous.at) if previous is not None else 0.0
    for name in sorted(snap.nodes, key=lambda n: (order.get(snap.nodes[n][0], 3), n)):
        role, stats, error = snap.nodes[name]
        route = snap.servers.get(name, {})
        via = route.get("via", "") if route.get("via") != name else ""
        services = ",".join(route.get("services", []))
        if stats is None:
            nodes.add_row(name, role, via, services, "", "", "", "", "", f"[red]{error}[/red]")
            continue
        rate = errRate = ""
        before = previous.nodes.get(name, (None, None, None))[1] if previous is not None else None
        if before is not None and dt > 0:
            rate = f"{(stats.get('requests.received', 0) - before.get('requests.received', 0)) / dt:.1f}"
            errRate = f"{(_errors(stats) - _errors(before)) / dt:.1f}"
        sessions = " ".join(
            f"{r[0]}{stats.get(f'sessions.{r}', 0)}" for r in ("client", "server", "proxy")
            if stats.get(f"sessions.{r}", 0)
        )
        refused = sum(stats.get(f"refusals.{r}", 0) for r in _REFUSALS)
        links = stats.get("upstream.links", 0)
        up = "-" if not links else f"{stats.get('upstream.up', 0)}/{links}"
        nodes.add_row(name, role, via, services, sessions or "0", str(stats.get("inflight", 0)),
                      rate, errRate, str(refused), up)
    paths = Table(title="clients by path")
    paths.add_column("path")
    paths.add_column("clients", justify="right")
    for path, n in sorted(snap.paths.items()):
        paths.add_row(path, str(n))
    return Group(nodes, paths)


@inlineCallbacks
def run(reactor, opts, console=None):
    """
    Attach, then refresh the view every C{--interval} seconds.
    """
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    client = opts.makeClient(reactor)
    client.startService()
    try:
        yield client.whenConnected(opts["timeout"])
        [link] = [link for link in client.links if link.alive][:1]
        attached, role = link.nodeId, link.role
        previous = None
        done = 0
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                snap = yield collect(client, attached, role, opts["timeout"])
                live.update(render(snap, previous), refresh=True)
                previous = snap
                done += 1
                if opts["count"] and done >= opts["count"]:
                    break
                yield deferLater(reactor, opts["interval"], lambda: None)
    finally:
        yield client.stopService()
