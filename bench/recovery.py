"""
Recovery times of zmqrelay under faults, measured on real processes.

For each role (cloud, proxy, server, client) and each fault (kill -9 then
restart; SIGSTOP for twice the liveness window then SIGCONT; clean stop then
restart), on the fault-suite topology (see
C{tests/integration/faulthelpers.py}) under steady traffic (a request every
50 ms, a notification every 50 ms), it measures, in seconds from the fault:

  - detected: when the cloud's presence no longer lists the client (client
    faults), or when a request for the server first fails with no route
    (server faults);
  - back: when the node was running again (restarted process ready, or
    SIGCONT sent);
  - first reply: when the first correct reply to a request issued after
    "back" arrived;
  - converged: when the presence views of cloud, proxy and server all equal
    the truth again.

Every run also checks the fault suite's guarantees (one outcome per request,
no handler run twice, notification streams whole) and reports any breach.

    .venv/bin/python bench/recovery.py [--rounds 3] [--write docs/RECOVERY.md]
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet import defer, task  # noqa: E402

from tests.integration import faulthelpers as fh  # noqa: E402

ROLES = ("cloud", "proxy", "server", "client")
FIELDS = ("detected", "recovered", "firstReply", "converged")
TITLES = {
    "detected": "detected",
    "recovered": "back",
    "firstReply": "first reply",
    "converged": "presence converged",
}


async def measure(reactor, rounds, workdir, progress):
    """
    Run every role's faults C{rounds} times.

    @return: (L{list} of L{fh.FaultResult}, L{list} of problems as text).
    """
    results = []
    problems = []
    for n in range(rounds):
        for role in ROLES:
            rig = fh.FaultRig(reactor, os.path.join(workdir, f"{role}-{n}"))
            try:
                await rig.startAll()
                for kind in fh.FAULTS:
                    result = await fh.injectFault(rig, role, kind)
                    results.append(result)
                    progress(f"round {n + 1}: {result!r}")
                if role == "client":
                    result = await fh.restartAtOnce(rig)
                    results.append(result)
                    progress(f"round {n + 1}: {result!r}")
                await rig.drain()
                problems.extend(f"{role}, round {n + 1}: {p}" for p in rig.problems())
            finally:
                await rig.shutdown()
    return results, problems


def _cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def report(results, problems, rounds, seconds, load):
    """
    @return: the Markdown report.
    """
    rows = []
    seen = []
    for r in results:
        if (r.role, r.kind) not in seen:
            seen.append((r.role, r.kind))
    for role, kind in seen:
        mine = [r for r in results if (r.role, r.kind) == (role, kind)]
        cells = [_cell([getattr(r, f) for r in mine]) for f in FIELDS]
        rows.append(f"| {role} | {kind} | " + " | ".join(cells) + " |")
    noRoute = [r.noRouteAnswer for r in results if r.noRouteAnswer is not None]
    lines = [
        "# Recovery times",
        "",
        "Measured by `bench/recovery.py` on real `twistd` processes over loopback:",
        "",
        "```",
        f".venv/bin/python bench/recovery.py --rounds {rounds} --write docs/RECOVERY.md",
        "```",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}.",
        f"{rounds} rounds, {seconds:.0f} s in all; load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after",
        "(other work on the machine shows in the maxima: a restart's *back* is mostly",
        "the time `twistd` takes to start).",
        "",
        "Topology and traffic (the fault suite's, `tests/integration/faulthelpers.py`):",
        "cloud, proxy `proxyA`, server `s1` (publishing every 50 ms), client process `c2`",
        "(a request every 200 ms), an in-process driver client on the cloud (a request",
        "every 50 ms, 1 s per attempt, 3 attempts, subscribed to `tick.`) and a LAN client",
        "on the proxy (subscribed to `tick.` too). Every node runs",
        f"`{' '.join(fh.FAST)}`: a silent peer is gone after {fh.WINDOW:.1f} s; the",
        "issue's bound for seeing a killed or frozen client gone is interval x liveness",
        f"+ one interval = {fh.DETECT_BOUND:.1f} s. A frozen node stays stopped "
        f"{fh.FROZEN_FOR:.1f} s.",
        "",
        "Seconds from the fault, median / max over the rounds:",
        "",
        "- **detected**: client faults: the cloud's presence no longer lists `c2`;",
        "  server faults: a request for `s1` first fails with no route;",
        "- **back**: the restarted process printed its ready line, or SIGCONT was sent;",
        "- **first reply**: the first correct reply to a request issued after *back*;",
        "- **presence converged**: cloud, proxy and server presence all equal the truth.",
        "",
        "| role | fault | " + " | ".join(TITLES[f] for f in FIELDS) + " |",
        "|---|---|" + "---|" * len(FIELDS),
    ]
    lines += rows
    lines += [
        "",
        f"Once a server is known gone, a new request for it failed with no route in "
        f"{_cell(noRoute)} s (median / max).",
        "",
    ]
    if problems:
        lines += [f"**{len(problems)} broken guarantees:**", ""]
        lines += [f"- {p}" for p in problems[:50]]
    else:
        lines += [
            "No guarantee was broken in these runs: every request got one outcome (the",
            "right reply, or a typed error within its deadline), no handler ran twice for a",
            "request id, every notification stream was whole (gaps replayed), and every",
            "node's presence events alternated connected / disconnected.",
        ]
    lines += [
        "",
        "What the numbers are made of:",
        "",
        "- **kill -9**: the process's TCP connections close at once. The next send to",
        "  it (a forwarded request, a reply, or a heartbeat, at most one interval when",
        "  idle) finds no connection with its routing id (`ROUTER_MANDATORY`), and the",
        "  node drops the session (`connection-lost`) on its next tick: a busy server is",
        "  known gone at once, an idle client within about one interval. A restarted",
        "  upstream answers the next heartbeat of each downstream node with ERR",
        "  hello-first, and they say hello again at once.",
        "- **SIGSTOP**: the connections stay open, so a frozen peer is gone only when",
        "  interval x liveness passes in silence (ZMTP heartbeats close its connections",
        "  at the same time). After SIGCONT the frozen node first drops every session",
        "  that went silent, then takes the new hellos of nodes that are by then waiting",
        "  out their reconnect backoff: these are the slowest recoveries.",
        "- **clean stop**: BYE is seen at once. A stopping upstream says BYE to every",
        "  peer, which then reconnect with backoff, so traffic resumes a backoff after",
        "  the restart, not at once.",
        "- **backoff**: Twisted's `backoffPolicy`: 0.25 s x 2^attempt (0.5 s the",
        "  first time), capped at `--reconnect-max`, *plus* up to 1 s of random jitter,",
        "  so with `--reconnect-max 1` a reconnect waits 0.5 to 2 s.",
        "- Requests issued during an outage fail fast with a typed error (no route,",
        "  target lost, not connected) once their attempts are used; *first reply* is",
        "  when new requests succeed again. Notifications published while a path was",
        "  down are recovered by replay when it is back (`REPLAY_TRIES` in",
        "  `zmqrelay/client.py` keeps asking while the relays relearn the route).",
        "",
        "The fault suite (`tests/integration/test_faults.py`) asserts the guarantees and",
        "the detection bounds on every run; it also puts a hop that drops and duplicates",
        "messages (`tests/integration/chaoshop.py`) in front of the cloud, for a client",
        "(10 % dropped, 10 % duplicated) and for the proxy (20 % dropped, 10 %",
        "duplicated), and checks that everything converges once the hop heals:",
        "",
        "```",
        ".venv/bin/python -m twisted.trial tests.integration.test_faults",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Times to run every fault.")
    parser.add_argument("--write", help="Write the Markdown report to this file.")
    args = parser.parse_args(argv)

    def progress(text):
        print(text, flush=True)

    async def run(reactor):
        started = time.monotonic()
        before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="zmqrelay-recovery-") as workdir:
            results, problems = await measure(reactor, args.rounds, workdir, progress)
        load = (before, os.getloadavg()[0])
        text = report(results, problems, args.rounds, time.monotonic() - started, load)
        print(text)
        if args.write:
            with open(args.write, "w") as f:
                f.write(text)
        if problems:
            raise SystemExit(1)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
