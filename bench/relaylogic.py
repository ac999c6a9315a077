"""
What a cloud relay's own Python costs per request and reply, with no
sockets, no kernel and no other process: the logic alone, warm.

    python bench/relaylogic.py [--batch 32] [--cycles 2000] [--profile]
    python bench/relaylogic.py --heartbeats 10000
    python bench/relaylogic.py --idle 0.5,2 [--batch 1]

A L{zmqrelay.roles.cloud.Cloud} runs on a L{Clock} and the test suite's fake
sockets (C{tests/fakes.py}), with a proxy (announcing server C{s1}) and a
client attached, both taking batches.  Each cycle the client sends one BATCH
of C{--batch} requests, the cloud forwards them (one BATCH to the proxy),
the proxy answers them all (one BATCH), and the cloud sends the replies back
(one BATCH to the client): every message goes through C{Front}, the limits,
the route table, the forwarder's in-flight table and window, and the
outboxes, as in the running node.  What the fake peers do (encoding their
batches, decoding the cloud's) is timed alone and taken off.

Compare the result with the CPU per request of the cloud in C{relaybench.py}
(both threads of the real process, under load): the difference is what the
process pays besides its logic, per message and per wakeup (pyzmq and
libzmq, the kernel, the reactor) and for running cold after sleeping.

With C{--idle MS,...} it measures how much running cold costs: the same
cycles, timed one by one, back to back and then with the process asleep
for each given number of milliseconds before each cycle (as a relay sleeps
between two lone requests).  The work is the same; only what the CPU
forgot while the process slept differs.

With C{--heartbeats CLIENTS} it measures instead what an idle client's HB
costs the cloud's C{Front} (session lookup, limits, C{lastSeen}) with that
many clients attached: zmqrelay's own share of the idle-client cost that
C{idleclients.py} measures whole.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import msgpack  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from tests.fakes import FakeSocketFactory, helloFrames  # noqa: E402
from zmqrelay.core import protocol  # noqa: E402
from zmqrelay.core.config import NodeConfig  # noqa: E402
from zmqrelay.roles.cloud import Cloud  # noqa: E402

LISTEN = "tcp://127.0.0.1:*"
PAYLOAD = b"x" * 100


def _encode(items):
    """
    @return: the frames of C{items} as a peer sends them: one message alone,
        more as a BATCH.
    """
    if len(items) == 1:
        return protocol.encode(*items[0])
    return protocol.encodeBatch(items)


def _items(message):
    if message.type == protocol.BATCH:
        return protocol.decodeBatch(message, 10 ** 6)
    return [message]


class Bench:
    """
    A started cloud on fake sockets, with its proxy and client attached.
    """

    def __init__(self, batch):
        self.batch = batch
        self.clock = Clock()
        self.clock.advance(1000)
        self.factory = FakeSocketFactory()
        # In the node every message is handed over inside a socket read,
        # whose end sends the outboxes: no timer is armed for them.
        self.factory.flushSoon = self._flushSoon
        # The limits still run on every message, raised so that they do not
        # refuse the load (as relaybench.py raises them).
        config = NodeConfig("cloud", incarnation="cloud-inc", rate=1e9, burst=1e9, byteRate=1e12)
        self.cloud = Cloud(config, LISTEN, LISTEN, LISTEN, reactor=self.clock, socketFactory=self.factory)
        self.cloud.startService()
        [self.router] = self.factory.ofKind("router")
        self.router.receive([b"P"] + helloFrames("proxy1", "pi", role=protocol.PROXY, batch=1000))
        self.router.receive([b"P"] + protocol.encode(
            protocol.ROUTES, {"map": "routes", "kind": "snapshot", "epoch": "e1", "seq": 0},
            msgpack.packb([["s1", ["s1-inc", ["echo"]]]]),
        ))
        self.router.receive([b"C"] + helloFrames("client1", "ci", batch=1000))
        self.flush()
        self.router.clear()
        self.nextId = 1

    def stop(self):
        self.cloud.stopService()

    def _flushSoon(self, flush):
        FakeSocketFactory.flushSoon(self.factory, flush)
        return True

    def flush(self):
        """
        End the read: send the outboxes, as the socket factory does.
        """
        flushes, self.factory.flushes[:] = list(self.factory.flushes), []
        for flush in flushes:
            flush()

    def requests(self):
        items = []
        for _ in range(self.batch):
            items.append((protocol.REQUEST, {"id": self.nextId, "to": "s1", "ttl": 10000}, PAYLOAD))
            self.nextId += 1
        return [b"C"] + _encode(items)

    def cycle(self):
        """
        One batch of requests through the cloud and its replies back.

        @return: the replies the client got.
        """
        router = self.router
        router.receive(self.requests())
        self.flush()
        answers = []
        for frames in router.sent:
            if frames[0] != b"P":
                raise RuntimeError(f"expected the proxy, got {frames[0]!r}: {_items(protocol.decode(frames[1:]))}")
            for item in _items(protocol.decode(frames[1:])):
                answers.append((protocol.REPLY, {"id": item.header["id"]}, item.payload))
        router.clear()
        router.receive([b"P"] + _encode(answers))
        self.flush()
        replies = 0
        for frames in router.sent:
            if frames[0] != b"C":
                raise RuntimeError(f"expected the client, got {frames[0]!r}")
            replies += len(_items(protocol.decode(frames[1:])))
        router.clear()
        return replies

    def peersOnly(self):
        """
        What the fake peers of one cycle do alone: the client's batch, the
        decoding of the forwarded batch, the proxy's answers, the decoding
        of the replies.
        """
        requests = self.requests()
        forwarded = [b"P"] + _encode([
            (protocol.REQUEST, {"id": i, "to": "s1", "ttl": 9999, "client": "client1", "cinc": "ci",
                                "creq": i, "path": "cloud", "server": "s1"}, PAYLOAD)
            for i in range(self.batch)
        ])
        answers = [(protocol.REPLY, {"id": item.header["id"]}, item.payload)
                   for item in _items(protocol.decode(forwarded[1:]))]
        replies = _encode(answers)
        _items(protocol.decode(replies))
        return requests


def measure(batch, cycles, rounds=5):
    """
    @return: C{(cycle, peers)}: microseconds per request and reply of a
        whole cycle and of the fake peers' part of it (best of C{rounds}).
    """
    bench = Bench(batch)
    try:
        for _ in range(200):
            if bench.cycle() != batch:
                raise RuntimeError("a request was not answered")
        best = peers = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(cycles):
                bench.cycle()
            best = min(best, (time.perf_counter() - started) / (cycles * batch))
            started = time.perf_counter()
            for _ in range(cycles):
                bench.peersOnly()
            peers = min(peers, (time.perf_counter() - started) / (cycles * batch))
        return best * 1e6, peers * 1e6
    finally:
        bench.stop()


def idleCost(batch, cycles, pauses, sleep=time.sleep):
    """
    The same cycles timed one by one, back to back and after sleeping.

    @param pauses: seconds to sleep before each cycle, one run each.
    @return: a list of C{(pause, median, mean)}: microseconds per request
        and reply of a cycle (its fake peers' part included), the first
        with a pause of 0 (back to back).
    """
    bench = Bench(batch)
    try:
        for _ in range(200):
            bench.cycle()
        results = []
        for pause in [0] + list(pauses):
            times = []
            for _ in range(cycles):
                if pause:
                    sleep(pause)
                started = time.perf_counter()
                if bench.cycle() != batch:
                    raise RuntimeError("a request was not answered")
                times.append((time.perf_counter() - started) / batch)
            times.sort()
            results.append((pause, times[len(times) // 2] * 1e6, sum(times) / len(times) * 1e6))
        return results
    finally:
        bench.stop()


def heartbeatCost(sessions, rounds=5):
    """
    What the cloud's C{Front} spends on one idle client's HB, warm: the
    session lookup, the limits and C{lastSeen}, with C{sessions} clients
    attached (the socket's reading is not in it).

    @return: microseconds per HB (best of C{rounds} passes over every client).
    """
    clock = Clock()
    clock.advance(1000)
    factory = FakeSocketFactory()
    config = NodeConfig("cloud", incarnation="cloud-inc", strangerRate=1e9)
    cloud = Cloud(config, LISTEN, LISTEN, LISTEN, reactor=clock, socketFactory=factory)
    cloud.startService()
    try:
        [router] = factory.ofKind("router")
        routingIds = [b"r%06d" % i for i in range(sessions)]
        for i, routingId in enumerate(routingIds):
            router.receive([routingId] + helloFrames(f"idle-{i}", "idle"))
        if len(cloud.front.sessions) != sessions:
            raise RuntimeError(f"{len(cloud.front.sessions)} of {sessions} clients welcomed")
        beat = protocol.encode(protocol.HEARTBEAT, {})
        messages = [[routingId] + beat for routingId in routingIds]
        onMessage = router.onMessage
        best = float("inf")
        for _ in range(rounds):
            clock.advance(0.5)
            started = time.perf_counter()
            for frames in messages:
                onMessage(frames)
            best = min(best, (time.perf_counter() - started) / sessions)
        return best * 1e6
    finally:
        cloud.stopService()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="requests per BATCH (the relay window is 32)")
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="cProfile the cycles instead")
    parser.add_argument("--heartbeats", type=int, metavar="CLIENTS", default=0,
                        help="measure instead what one idle client's HB costs the cloud's Front, "
                             "with CLIENTS attached")
    parser.add_argument("--idle", metavar="MS,...",
                        help="measure instead the cycles one by one, back to back and after "
                             "sleeping this many milliseconds before each")
    args = parser.parse_args(argv)
    if args.idle:
        try:
            pauses = [float(ms) / 1000 for ms in args.idle.split(",")]
        except ValueError:
            parser.error(f"--idle takes milliseconds separated by commas, not {args.idle!r}")
        if any(p <= 0 for p in pauses):
            parser.error("--idle: every pause must be more than 0 ms")
        results = idleCost(args.batch, args.cycles, pauses)
        warm = results[0][1]
        for pause, median, mean in results:
            what = "back to back" if not pause else f"after {pause * 1000:g} ms asleep"
            print(f"batches of {args.batch}, {what}: median {median:.1f} us per request and reply "
                  f"(mean {mean:.1f}), {median / warm:.2f}x back to back")
        return 0
    if args.heartbeats:
        print(f"{args.heartbeats} idle clients: {heartbeatCost(args.heartbeats):.2f} us of the cloud's "
              "Front per HB (reading the socket not included)")
        return 0
    if args.profile:
        import cProfile
        import pstats

        bench = Bench(args.batch)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.cycles):
            bench.cycle()
        profiler.disable()
        bench.stop()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return 0
    cycle, peers = measure(args.batch, args.cycles)
    print(f"batches of {args.batch}: {cycle:.2f} us per request and reply in all, {peers:.2f} us of it the "
          f"fake peers': the cloud's logic {cycle - peers:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
