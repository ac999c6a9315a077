"""
A lossy hop for fault tests: sits between clients and an upstream node
(normally the cloud) and drops or duplicates a fraction of the messages it
forwards, with a seeded random generator so a run can be repeated.

    python tests/integration/chaoshop.py --upstream tcp://127.0.0.1:5555 \\
        --upstream-pub tcp://127.0.0.1:5556 --drop 0.05 --dup 0.05 --seed 1

Control channel: a ROUTER that clients connect to and, per client routing
id, a DEALER to the upstream, so the upstream sees one peer per client
connection as it would without the hop.  Frames go both ways; the WELCOME
coming back has its C{pub} endpoint replaced by the hop's own, so the
client's SUB socket comes through the hop as well.

Notification channel: an XPUB clients subscribe to and an XSUB connected to
the upstream's XPUB.  Notifications are dropped and duplicated like control
messages; (un)subscriptions pass untouched (they are ZeroMQ's own state, not
messages of ours).

It prints C{ready: chaoshop control=<endpoint> pub=<endpoint>} once bound,
then C{stats: forwarded=N dropped=N duplicated=N ...} whenever its counters
changed (at most twice a second).  SIGUSR1 heals it: from then on it
forwards everything once (it prints C{healed}).  SIGTERM or SIGINT ends it.

Standalone: it needs only pyzmq and msgpack, and never imports zmqrelay, so
it cannot share a bug with what it tests.
"""

import argparse
import random
import signal
import sys
import time

import msgpack
import zmq

#: A client connection silent this long is forgotten (its DEALER closed).
IDLE = 30.0


class ChaosHop:
    """
    The sockets and the fault policy of one hop.
    """

    def __init__(self, context, upstream, upstreamPub, listen, pub, drop, dup, seed):
        self.context = context
        self.upstream = upstream
        self.drop = drop
        self.dup = dup
        self.random = random.Random(seed)
        self.counters = {
            "forwarded": 0, "dropped": 0, "duplicated": 0, "overflow": 0, "connections": 0,
        }
        self.front = self._socket(zmq.ROUTER)
        self.front.bind(listen)
        self.controlEndpoint = self.front.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.xpub = self._socket(zmq.XPUB)
        self.xpub.bind(pub)
        self.pubEndpoint = self.xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.xsub = self._socket(zmq.XSUB)
        self.xsub.connect(upstreamPub)
        self.poller = zmq.Poller()
        for sock in (self.front, self.xpub, self.xsub):
            self.poller.register(sock, zmq.POLLIN)
        # routing id -> [dealer, last activity]; dealer -> routing id
        self.dealers = {}
        self.routingIds = {}

    def _socket(self, kind):
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.setsockopt(zmq.RCVHWM, 100000)
        return sock

    def fate(self):
        """
        @return: how many copies of the next message to forward (0, 1 or 2).
        """
        r = self.random.random()
        if r < self.drop:
            self.counters["dropped"] += 1
            return 0
        if r < self.drop + self.dup:
            self.counters["duplicated"] += 1
            return 2
        return 1

    def forward(self, sock, frames):
        for _ in range(self.fate()):
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counters["overflow"] += 1
            else:
                self.counters["forwarded"] += 1

    def dealerFor(self, routingId, now):
        entry = self.dealers.get(routingId)
        if entry is None:
            dealer = self._socket(zmq.DEALER)
            dealer.connect(self.upstream)
            self.poller.register(dealer, zmq.POLLIN)
            entry = self.dealers[routingId] = [dealer, now]
            self.routingIds[dealer] = routingId
            self.counters["connections"] += 1
        entry[1] = now
        return entry[0]

    def rewriteWelcome(self, frames):
        """
        Point the client's SUB socket at the hop: replace C{pub} in a WELCOME.
        """
        if len(frames) >= 3 and frames[1] == b"WELCOME":
            try:
                header = msgpack.unpackb(frames[2], raw=False)
            except Exception:
                return frames
            if isinstance(header, dict) and "pub" in header:
                header["pub"] = self.pubEndpoint
                frames = list(frames)
                frames[2] = msgpack.packb(header, use_bin_type=True)
        return frames

    def reap(self, now):
        for routingId, (dealer, last) in list(self.dealers.items()):
            if now - last > IDLE:
                del self.dealers[routingId]
                del self.routingIds[dealer]
                self.poller.unregister(dealer)
                dealer.close(0)

    def turn(self, timeout):
        """
        Forward what is waiting, waiting at most C{timeout} ms for it.
        """
        now = time.monotonic()
        for sock, _ in self.poller.poll(timeout):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if sock is self.front:
                    dealer = self.dealerFor(frames[0], now)
                    self.forward(dealer, frames[1:])
                elif sock is self.xsub:
                    self.forward(self.xpub, frames)
                elif sock is self.xpub:
                    try:
                        self.xsub.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.ZMQError:
                        self.counters["overflow"] += 1
                else:
                    routingId = self.routingIds.get(sock)
                    if routingId is None:
                        break
                    self.dealers[routingId][1] = now
                    self.forward(self.front, [routingId] + self.rewriteWelcome(frames))

    def close(self):
        for dealer in list(self.routingIds):
            dealer.close(0)
        for sock in (self.front, self.xpub, self.xsub):
            sock.close(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description="A hop that drops and duplicates messages.")
    parser.add_argument("--upstream", required=True, help="Upstream control endpoint (ROUTER).")
    parser.add_argument("--upstream-pub", required=True, help="Upstream notification endpoint (XPUB).")
    parser.add_argument("--listen", default="tcp://127.0.0.1:*", help="Our control endpoint.")
    parser.add_argument("--pub", default="tcp://127.0.0.1:*", help="Our notification endpoint.")
    parser.add_argument("--drop", type=float, default=0.05, help="Fraction of messages dropped.")
    parser.add_argument("--dup", type=float, default=0.05, help="Fraction of messages duplicated.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the random generator.")
    args = parser.parse_args(argv)
    if not (0 <= args.drop and 0 <= args.dup and args.drop + args.dup <= 1):
        parser.error("--drop and --dup are fractions adding up to 1 at most")

    stopping = []
    healing = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: healing.append(True))

    context = zmq.Context()
    hop = ChaosHop(
        context, args.upstream, args.upstream_pub, args.listen, args.pub,
        args.drop, args.dup, args.seed,
    )
    print(f"ready: chaoshop control={hop.controlEndpoint} pub={hop.pubEndpoint}", flush=True)
    shown = None
    lastShown = lastReap = time.monotonic()
    try:
        while not stopping:
            hop.turn(100)
            if healing and (hop.drop or hop.dup):
                hop.drop = hop.dup = 0.0
                print("healed", flush=True)
            now = time.monotonic()
            if now - lastShown >= 0.5 and hop.counters != shown:
                shown = dict(hop.counters)
                lastShown = now
                print("stats: " + " ".join(f"{k}={v}" for k, v in sorted(shown.items())), flush=True)
            if now - lastReap >= IDLE:
                hop.reap(now)
                lastReap = now
    finally:
        print("stats: " + " ".join(f"{k}={v}" for k, v in sorted(hop.counters.items())), flush=True)
        hop.close()
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
