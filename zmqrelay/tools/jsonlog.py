"""
JSON log lines for C{twistd}: one JSON object per event, its fields (peer,
client, code, path, ...) as keys, for log tools to query.

    twistd --logger zmqrelay.tools.jsonlog.logger -n zmqrelay-cloud ...

writes to standard output, or to the file named by C{$ZMQRELAY_LOG_JSON}.
Read them back with C{twisted.logger.eventsFromJSONLogFile}, or any JSON
tool: C{jq 'select(.code == "over-limit")'}.
"""

import io
import os
import sys

from twisted.logger import jsonFileLogObserver


def logger():
    """
    The observer factory C{twistd --logger} calls.

    @return: a L{twisted.logger.ILogObserver} writing one JSON object per
        line (no record separator: each line is plain JSON).
    """
    path = os.environ.get("ZMQRELAY_LOG_JSON")
    if path:
        out = io.open(path, "a", encoding="utf-8")
    else:
        # The real standard output: twistd may redirect sys.stdout to the log.
        out = sys.__stdout__
    return jsonFileLogObserver(out, recordSeparator="")
