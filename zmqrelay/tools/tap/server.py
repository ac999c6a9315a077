"""
C{twistd zmqrelay-server}: a server running an application.
"""

import importlib

from twisted.python import usage
from twisted.python.reflect import namedAny

from zmqrelay.tools.tap._common import NodeOptions, _nonNegative, checkEndpoint, twistdService


class Options(NodeOptions):
    """
    Options of C{twistd zmqrelay-server}.
    """

    role = "server"
    synopsis = "--proxy ENDPOINT [--service NAME ...] [options]"
    longdesc = (
        "Run a server: it connects out to its site's proxy and binds its own "
        "endpoints for LAN clients. --app names a factory taking the server "
        "(and, as keyword arguments, every --app-option) and returning an "
        "IRequestHandler; if that is also a Service, it is started and "
        "stopped with the server."
    )
    optParameters = [
        ["proxy", "p", None, "The site proxy's control endpoint (omit for direct clients only)."],
        ["listen", "l", "tcp://*:5575", "Control endpoint (ROUTER) for direct clients ('' for none)."],
        ["pub", None, "tcp://*:5576", "Notification endpoint (XPUB) direct clients subscribe to ('' for none)."],
        ["app", "a", "zmqrelay.tools.examples.example", "Dotted name of the application factory."],
        ["tick", None, 0.0, "Seconds between tick notifications of the example app (0: none); "
         "the same as --app-option tick=SECONDS.", _nonNegative(float)],
        ["reply-cache", None, 10000, "Replies kept to answer retried requests.", _nonNegative(int)],
        ["reply-cache-bytes", None, 16 * 1024 * 1024,
         "Bytes the kept replies may take; the oldest are forgotten first.", _nonNegative(int)],
        ["history", None, 1000, "Notifications kept per topic for replay.", _nonNegative(int)],
        ["history-bytes", None, 16 * 1024 * 1024,
         "Bytes the kept notifications may take, all topics together; the oldest are "
         "forgotten first.", _nonNegative(int)],
        ["sub-bytes", None, 32 * 1024 * 1024,
         "Bytes held for one direct subscriber (queued and in the kernel) before its "
         "connection is cut as a slow consumer (0: never).", _nonNegative(int)],
        ["drain-timeout", None, 10.0, "Seconds a stop lets the work in flight finish (0: stop at once).",
         _nonNegative(float)],
    ]

    def __init__(self):
        NodeOptions.__init__(self)
        self["services"] = []
        self["appOptions"] = {}

    def opt_app_option(self, option):
        """
        KEY=VALUE handed to the --app factory as a keyword argument (repeatable).
        """
        key, sep, value = option.partition("=")
        if not sep or not key.isidentifier():
            raise usage.UsageError(f"--app-option {option!r} is not KEY=VALUE")
        self["appOptions"][key] = value

    def opt_service(self, name):
        """
        A service name this server offers (repeatable).
        """
        self["services"].append(name)

    def postOptions(self):
        NodeOptions.postOptions(self)
        checkEndpoint(self["proxy"] or None, "proxy")
        for name in ("listen", "pub"):
            checkEndpoint(self[name] or None, name, bind=True)
        if not self["proxy"] and not self["listen"]:
            raise usage.UsageError("a server needs --proxy, --listen or both")
        try:
            self["appFactory"] = namedAny(self["app"])
        except Exception as e:
            module = self["app"].rpartition(".")[0]
            hint = ""
            if module:
                try:
                    importlib.import_module(module)
                except ImportError as importError:
                    # namedAny says only "does not name an object".
                    hint = (f" (cannot import {module!r}: {importError}; twistd does not look in the "
                            "current directory: put the module's directory on PYTHONPATH)")
                except Exception:
                    pass
            raise usage.UsageError(f"--app {self['app']!r}: {e}{hint}")
        if not callable(self["appFactory"]):
            raise usage.UsageError(f"--app {self['app']!r}: not a factory (not callable)")


def makeService(options):
    """
    @return: a L{zmqrelay.roles.server.Server} service running the application.
    @raise usage.UsageError: if what C{--app} made is not an
        L{zmqrelay.interfaces.IRequestHandler}.
    """
    return twistdService(_build, options)


def _build(options):
    from twisted.application.service import IService
    from zope.interface.exceptions import Invalid
    from zope.interface.verify import verifyObject

    from zmqrelay.interfaces import IRequestHandler

    from zmqrelay.core.presence import PresenceLog
    from zmqrelay.roles.server import Server

    config = options.nodeConfig(
        replyCacheSize=options["reply-cache"], replyCacheBytes=options["reply-cache-bytes"],
        historySize=options["history"], historyBytes=options["history-bytes"],
        subBytes=options["sub-bytes"],
    )
    server = Server(
        config, None, options["services"], options["listen"] or None,
        options["pub"] or None, options["proxy"],
    )
    appOptions = dict(options["appOptions"])
    if options["tick"]:
        appOptions.setdefault("tick", options["tick"])
    try:
        app = options["appFactory"](server, **appOptions)
    except TypeError as e:
        raise usage.UsageError(f"--app {options['app']!r}: {e}")
    try:
        verifyObject(IRequestHandler, app)
    except Invalid as e:
        raise usage.UsageError(
            f"--app {options['app']!r} made a {type(app).__name__}, not an IRequestHandler: "
            f"{str(e).strip().splitlines()[0].rsplit(': ', 1)[-1]}"
        )
    server.handler = app
    if IService.providedBy(app):
        app.setServiceParent(server)
    server.presence.addObserver(PresenceLog(clock=server.reactor))
    options.attachDiscovery(server)
    return options.attachMetrics(server)
