"""
Deployment files (C{tac/*.tac}) build their service from the same options
as the twistd plugins: environment variables become an argument list, the
tap module's C{Options} parse it, and its C{makeService} builds the node.

Every option C{--some-name} of a role is read from C{ZMQRELAY_SOME_NAME};
a flag is on when its variable is C{1}, C{yes}, C{true} or C{on}; repeatable options
(C{--server}, C{--service}, C{--subscribe}, C{--app-option},
C{--curve-peer-key}) take comma-separated lists, from C{ZMQRELAY_SERVERS},
C{ZMQRELAY_SERVICES}, C{ZMQRELAY_SUBSCRIBE}, C{ZMQRELAY_APP_OPTIONS} and
C{ZMQRELAY_CURVE_PEER_KEYS}.  C{ZMQRELAY_SUBSCRIBE} set and empty is every
topic (C{--subscribe ''}).
"""

import os
import sys

from twisted.python import usage

#: Variables of repeatable options, where their plural reads better.
_PLURAL = {
    "server": "ZMQRELAY_SERVERS",
    "service": "ZMQRELAY_SERVICES",
    "app-option": "ZMQRELAY_APP_OPTIONS",
    "curve-peer-key": "ZMQRELAY_CURVE_PEER_KEYS",
}

_SKIP = {"help", "version"}

_TRUE = {"1", "yes", "true", "on"}


def variable(name):
    """
    @return: the environment variable of option C{--name}.
    """
    return _PLURAL.get(name, "ZMQRELAY_" + name.upper().replace("-", "_"))


def argumentsFromEnvironment(optionsClass, environ, defaults=None):
    """
    The argument list the environment describes for C{optionsClass}.

    @param defaults: option name to value, used when its variable is unset.
    @return: a L{list} of arguments for C{parseOptions}.
    """
    options = optionsClass()
    defaults = defaults or {}
    argv = []
    for long in options.longOpt:
        takesValue = long.endswith("=")
        name = long.rstrip("=")
        if name in _SKIP:
            continue
        value = environ.get(variable(name))
        if value is None:
            value = defaults.get(name)
        if value is None:
            continue
        if not takesValue:
            if str(value).strip().lower() in _TRUE:
                argv.append(f"--{name}")
        elif name in options.defaults:
            argv.append(f"--{name}={value}")
        elif name == "subscribe" and not str(value):
            # As --subscribe '': every topic.
            argv.append("--subscribe=")
        else:
            # Repeatable: handled by an opt_ method, not a parameter.
            argv.extend(f"--{name}={item}" for item in str(value).split(",") if item)
    return argv


def serviceFromEnvironment(tapModule, defaults=None, environ=None):
    """
    Build the service of C{tapModule} (one of L{zmqrelay.tools.tap}) from
    the environment, as C{twistd} builds it from the command line.

    A wrong setting ends the process with one line naming the variable's
    option and value, and status 2.

    @return: the service.
    """
    environ = os.environ if environ is None else environ
    argv = argumentsFromEnvironment(tapModule.Options, environ, defaults)
    options = tapModule.Options()
    # Like twistd's: a bind failure at start is one line, not a traceback.
    options.runAs = tapModule.__name__
    try:
        options.parseOptions(argv)
        return tapModule.makeService(options)
    except usage.UsageError as e:
        sys.stderr.write(f"{tapModule.__name__}: error: {e} (options from ZMQRELAY_* variables)\n")
        raise SystemExit(2)
