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

With C{--matrix}, it runs the exactly-once matrix instead (issue 9, see
L{tests.integration.faulthelpers.MatrixRig}): a service offered by two
servers, traffic on the cloud path and on direct links, and per fault the
failures the application saw, the handlers that ran twice, and how long
recovery took.

    .venv/bin/python bench/recovery.py [--rounds 3] [--write docs/RECOVERY.md]
    .venv/bin/python bench/recovery.py --matrix [--rounds 1]
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
        "  interval x liveness passes in silence (the node that gives it up cuts its",
        "  connection then). After SIGCONT the frozen node first drops every session",
        "  that went silent, then takes the new hellos of nodes that are by then waiting",
        "  out their reconnect backoff: these are the slowest recoveries.",
        "- **clean stop**: BYE is seen at once. A stopping upstream says BYE to every",
        "  peer, which then reconnect with backoff, so traffic resumes a backoff after",
        "  the restart, not at once.",
        "- **backoff**: `zmqrelay.edge.link.backoffPolicy`: 0.25 s doubling per attempt,",
        "  capped at `--reconnect-max`, each delay scaled by a random factor between",
        "  0.5 and 1 (so the first retry after a BYE comes 0.125 to 0.25 s later).",
        "  An earlier version used Twisted's `backoffPolicy`, which adds up to 1 s of",
        "  jitter on top; clean restarts then took about 1 s to recover instead of",
        "  0.3 s.",
        "- Requests issued during an outage fail fast with a typed error (no route,",
        "  target lost, not connected) once their attempts are used; *first reply* is",
        "  when new requests succeed again. Notifications published while a path was",
        "  down are recovered by replay when it is back (`REPLAY_TRIES` in",
        "  `zmqrelay/roles/client.py` keeps asking while the relays relearn the route).",
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


async def measureMatrix(reactor, rounds, workdir, progress):
    """
    Run the exactly-once matrix C{rounds} times.

    @return: (L{list} of L{fh.MatrixCell}, L{list} of problems as text).
    """
    cells = []
    problems = []
    for n in range(rounds):
        for role in fh.MATRIX_ROLES:
            rig = fh.MatrixRig(reactor, os.path.join(workdir, f"matrix-{role}-{n}"))
            try:
                await rig.startAll()
                mine = await fh.runMatrixRole(rig, role, lambda c: progress(f"round {n + 1}: {c!r}"))
                cells.extend(mine)
                await rig.drain()
                problems.extend(f"{role}, round {n + 1}: {p}" for p in rig.problems())
                for cell in mine:
                    problems.extend(f"{role} {cell.kind}, round {n + 1}: {p}" for p in cell.problems)
            finally:
                await rig.shutdown()
    return cells, problems


MATRIX_TITLE = "## Exactly once, as the application sees it (issue 9)"


def matrixReport(cells, problems, rounds, seconds, load):
    """
    @return: the Markdown section of the exactly-once matrix.
    """
    rows = []
    seen = []
    for c in cells:
        if (c.role, c.kind) not in seen:
            seen.append((c.role, c.kind))
    for role, kind in seen:
        mine = [c for c in cells if (c.role, c.kind) == (role, kind)]
        requests = sum(c.requests for c in mine)
        failures = sum(len(c.failures) + c.clientFailures for c in mine)
        double = sum(len(c.doubleRuns) for c in mine)
        documented = sum(len(c.documented) for c in mine)
        cells_ = [
            str(requests), str(failures), str(double), str(documented),
            _cell([c.back for c in mine]), _cell([c.firstReply for c in mine]),
            _cell([c.worst for c in mine]),
        ]
        rows.append(f"| {role} | {kind} | " + " | ".join(cells_) + " |")
    lines = [
        MATRIX_TITLE,
        "",
        "```",
        f".venv/bin/python bench/recovery.py --matrix --rounds {rounds}",
        "```",
        "",
        f"{rounds} round(s), {seconds:.0f} s in all; load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after (2 CPUs shared with other work).",
        "",
        "Topology (`MatrixRig` in `tests/integration/faulthelpers.py`): cloud, proxy",
        "`proxyA`, servers `a1` and `a2` behind it, both offering `echo`, each echo",
        f"taking {fh.HANDLER_DELAY * 1000:.0f} ms; a client process `c2` asking `echo` through the cloud every",
        "200 ms; in process, `driver` on the cloud path and `direct` with direct links",
        "to `a1` and `a2`, each asking `echo` every 50 ms with "
        f"`timeout={fh.BUDGET:g}` (the whole budget), `attempts={fh.ATTEMPTS}`.",
        f"Every node runs `{' '.join(fh.MATRIX_FAST)}` (a silent peer is gone after",
        f"{fh.MATRIX_WINDOW:.1f} s). A frozen node stays stopped {fh.MATRIX_FROZEN_FOR:.1f} s; a killed server",
        f"stays down {fh.BUDGET + 1:g} s (longer than the budget: `a2` must take over), any other killed",
        "node is restarted at once. Each fault is one cell: the requests issued from",
        "the end of the previous cell until traffic flows again, every one of them",
        "settled.",
        "",
        "- **requests**: requests `driver` and `direct` issued in the cell;",
        "- **visible failures**: requests of `driver`, `direct` and `c2` that failed",
        "  (`c2`'s own are not counted when `c2` is the node hit);",
        "- **double runs**: request ids whose handler ran more than once, beyond the",
        "  documented case;",
        "- **documented**: request ids run twice because the server that had taken",
        "  them was killed, or frozen past liveness, while it held them (see below);",
        "- **back**, **first reply**, **worst wait**: seconds from the fault until the",
        "  node was back, until both drivers had a reply to a request issued after",
        "  that, and the longest any request of the cell waited for its outcome",
        "  (median / max over the rounds).",
        "",
        "| role | fault | requests | visible failures | double runs | documented | back | first reply | worst wait |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += rows
    lines.append("")
    if problems:
        lines += [f"**{len(problems)} broken guarantees:**", ""]
        lines += [f"- {p}" for p in problems[:50]]
    else:
        lines += [
            "Every request got exactly one outcome, the right reply, within its budget.",
        ]
    lines += DOCUMENTED
    return "\n".join(lines)


#: The documented exception to "a handler runs once per request".
DOCUMENTED = [
    "",
    "**When a handler may run twice.** A retry sticks to the server that took the",
    "first attempt while that server lives. A server is gone when it said goodbye",
    "(after draining: it answered what it took, nothing runs twice) or when its",
    "proxy, or a client's direct link, declared it lost: its connection closed",
    "(kill -9) or it stayed silent past the liveness window (SIGSTOP, a machine",
    "that hangs). Only then may another server run the request. A server killed",
    "while it ran a handler may have run it (the *documented* column, kill -9); a",
    "server frozen past liveness may have run it, or started it, before the",
    "freeze (the *documented* column, SIGSTOP): its answer then comes too late to",
    "count, but its side effects are real. What it still had queued when it",
    "continues is not run: its link to the proxy starts a fresh session (the",
    "queued requests go with the old socket) and its front drops requests that",
    "direct clients sent before they gave up on it (counted `front.stale`).",
    "Handlers that must never run twice need their own idempotence key (the",
    "request's client id, incarnation and request id are in `IRequest`).",
    "",
]


def writeReport(path, text, matrix):
    """
    Write one part of RECOVERY.md and keep the other: the times are the
    file's head, the exactly-once matrix (from L{MATRIX_TITLE} on) its tail.

    @param matrix: C{True} if C{text} is the matrix section, else the times.
    """
    old = open(path).read() if os.path.exists(path) else ""
    head, title, tail = old.partition(MATRIX_TITLE)
    parts = [head, title + tail]
    parts[1 if matrix else 0] = text
    with open(path, "w") as f:
        f.write("\n\n".join(part.strip("\n") for part in parts if part.strip()) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Times to run every fault.")
    parser.add_argument("--write", help="Write the Markdown report to this file.")
    parser.add_argument("--matrix", action="store_true", help="Run the exactly-once matrix instead.")
    args = parser.parse_args(argv)

    def progress(text):
        print(text, flush=True)

    async def run(reactor):
        started = time.monotonic()
        before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="zmqrelay-recovery-") as workdir:
            if args.matrix:
                results, problems = await measureMatrix(reactor, args.rounds, workdir, progress)
            else:
                results, problems = await measure(reactor, args.rounds, workdir, progress)
        load = (before, os.getloadavg()[0])
        build = matrixReport if args.matrix else report
        text = build(results, problems, args.rounds, time.monotonic() - started, load)
        print(text)
        if args.write:
            writeReport(args.write, text, args.matrix)
        if problems:
            raise SystemExit(1)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
