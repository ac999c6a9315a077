"""
The C{zmqrelay} command: talk to a running system from a shell.

    zmqrelay request   --cloud tcp://host:5555 TARGET PAYLOAD
    zmqrelay subscribe --cloud tcp://host:5555 [PREFIX ...]
    zmqrelay presence  --cloud tcp://host:5555 [--node ID]
    zmqrelay stats     --cloud tcp://host:5555 [--node ID]
    zmqrelay top       --cloud tcp://host:5555 [--interval 1] [--count N]
    zmqrelay keygen    NAME [--dir DIR] [--role ROLE] [--id ID]

With CURVE, the connect options take C{--curve-secret} and
C{--curve-server-key} (the cloud's, or the proxy's without --cloud).

(L{zmqrelay.tools.chatter.Chatter} is the loop of C{twistd zmqrelay-client}.)
"""

import json
import sys

import msgpack
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from zmqrelay.interfaces import INotificationReceiver
from zmqrelay.core.protocol import ROLES
from zmqrelay.tools.tap._common import InterspersedOptions, _nonNegative
from zmqrelay.tools.tap.client import CommandOptions
from zmqrelay.tools.top import TopOptions

log = Logger()


class _Connect(CommandOptions):
    """
    The connection options of every command that talks to a node: those of
    C{twistd zmqrelay-client} (L{ConnectOptions}), one definition for both.
    """

    idPrefix = "cli"


class RequestOptions(_Connect):
    """
    C{zmqrelay request}: send one request, print the reply.
    """

    synopsis = "[connect options] TARGET PAYLOAD"

    def parseArgs(self, target, payload):
        self["target"] = target
        self["payload"] = payload


class SubscribeOptions(_Connect):
    """
    C{zmqrelay subscribe}: print notifications as they come.
    """

    synopsis = "[connect options] [PREFIX ...]"
    optParameters = [
        ["count", "n", 0, "Stop after this many notifications (0: never).", _nonNegative(int)],
        ["duration", None, 0.0, "Stop after this many seconds (0: never).", _nonNegative(float)],
    ]

    def parseArgs(self, *prefixes):
        self["prefixes"] = list(prefixes) or [""]


class QueryOptions(_Connect):
    """
    C{zmqrelay presence} and C{zmqrelay stats}: ask a node.
    """

    synopsis = "[connect options] [--node ID]"
    optParameters = [["node", None, None, "The node to ask (default: the one attached to)."]]


class KeygenOptions(InterspersedOptions):
    """
    C{zmqrelay keygen}: make a CURVE keypair bound to a node id and role.
    """

    synopsis = "NAME [--dir DIR] [--role ROLE] [--id ID] [--force]"
    longdesc = (
        "Make a CURVE keypair: DIR/NAME.key (public: copy it into the "
        "--curve-authorized directory of the nodes this one connects to, or "
        "give it as their --curve-server-key) and DIR/NAME.key_secret (secret, "
        "mode 0600: this node's --curve-secret). Both carry the node id and "
        "role the key stands for."
    )
    optParameters = [
        ["dir", "d", ".", "Directory to write the certificates to."],
        ["role", "r", "client", "Role the key may use: client, server, proxy or cloud."],
        ["id", None, None, "Node id the key may use (default: NAME)."],
    ]
    optFlags = [["force", "f", "Replace existing certificates."]]

    def parseArgs(self, name):
        self["name"] = name

    def postOptions(self):
        if self["role"] not in ROLES:
            raise usage.UsageError(f"--role {self['role']!r}: one of {', '.join(sorted(ROLES))}")


class Options(usage.Options):
    """
    The C{zmqrelay} command and its subcommands.
    """

    synopsis = "zmqrelay COMMAND [options]"
    subCommands = [
        ["keygen", None, KeygenOptions, "Make a CURVE keypair (certificate files)."],
        ["request", None, RequestOptions, "Send one request, print the reply."],
        ["subscribe", None, SubscribeOptions, "Print notifications."],
        ["presence", None, QueryOptions, "Print which clients a node sees connected."],
        ["stats", None, QueryOptions, "Print a node's counters."],
        ["top", None, TopOptions, "A live view of the system, refreshed every second."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("give a command")


def _client(reactor, opts):
    client = opts.makeClient(reactor)
    client.startService()
    return client


async def _run(reactor, options, out):
    command, opts = options.subCommand, options.subOptions
    client = _client(reactor, opts)
    try:
        await client.whenConnected(opts["timeout"])
        if command == "request":
            reply = await client.request(
                opts["target"], opts["payload"].encode(), attempts=opts["attempts"]
            )
            out.write(reply.decode("utf-8", "replace") + "\n")
        elif command in ("presence", "stats"):
            reply = await client.request(opts["node"] or "", b"", sys=command)
            out.write(json.dumps(msgpack.unpackb(reply, raw=False), indent=2, default=repr) + "\n")
        else:
            await _subscribe(reactor, client, opts, out)
    finally:
        await client.stopService()


def _subscribe(reactor, client, opts, out):
    from twisted.internet.defer import Deferred

    done = Deferred()

    @implementer(INotificationReceiver)
    class Printer:
        seen = 0

        def notificationReceived(self, n):
            out.write(f"{n.topic.decode('utf-8', 'replace')} {n.serverId}#{n.seq} "
                      f"{n.payload.decode('utf-8', 'replace')}\n")
            out.flush()
            Printer.seen += 1
            if opts["count"] and Printer.seen >= opts["count"] and not done.called:
                done.callback(None)

        def notificationsLost(self, gap):
            out.write(f"LOST {gap!r}\n")

    printer = Printer()
    for prefix in opts["prefixes"]:
        client.subscribe(prefix.encode(), printer)
    if opts["duration"]:
        timer = reactor.callLater(opts["duration"], lambda: done.called or done.callback(None))
        done.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
    return done


def _keygen(opts, out):
    """
    C{zmqrelay keygen}: write a certificate pair, print where.

    @return: the exit status.
    """
    from zmqrelay.edge.security import writeCertificates

    try:
        public, secret = writeCertificates(
            opts["dir"], opts["name"], opts["id"], opts["role"], opts["force"]
        )
    except (OSError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    out.write(f"public: {public}\nsecret: {secret}\n")
    return 0


def main(argv=None, out=None):
    """
    Entry point of the C{zmqrelay} console script.
    """
    from twisted.internet.task import react

    out = out or sys.stdout
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        command = f" {options.subCommand}" if options.subCommand else ""
        sys.stderr.write(f"zmqrelay{command}: error: {e} (zmqrelay{command} --help for usage)\n")
        sys.exit(2)
    if options.subCommand == "keygen":
        sys.exit(_keygen(options.subOptions, out))
    if options.subCommand == "top":
        from zmqrelay.tools import top

        def runTop(reactor):
            def failed(f):
                sys.stderr.write(f"zmqrelay top: error: {f.value}\n")
                raise SystemExit(1)

            return _interruptible(reactor, top.run(reactor, options.subOptions)).addErrback(failed)

        react(runTop)

    def run(reactor):
        d = _interruptible(reactor, ensureDeferred(_run(reactor, options, out)))

        def failed(f):
            sys.stderr.write(f"error: {f.value}\n")
            raise SystemExit(1)

        return d.addErrback(failed)

    react(run)


def _interruptible(reactor, d):
    """
    Ctrl-C or SIGTERM (how C{subscribe} and C{top} are ended) cancels C{d}:
    the command stops its client and ends with status 0, instead of the
    reactor stopping under it and its coroutine being torn down with the
    interpreter (a traceback on stderr).

    @return: C{d}, a cancellation turned into success.
    """
    import signal

    from twisted.internet.defer import CancelledError

    def interrupted(signum, frame):
        reactor.callFromThread(d.cancel)

    def install():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, interrupted)

    reactor.callWhenRunning(install)
    return d.addErrback(lambda f: f.trap(CancelledError) and None)
