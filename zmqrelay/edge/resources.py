"""
What a node process asks of the operating system before it serves: enough
file descriptors for every connection it may hold.

ZeroMQ needs a descriptor per TCP connection (and a few per socket): a cloud
holding ten thousand clients needs more than the usual soft limit of 1024.
The soft limit may be raised up to the hard one without privileges.
"""

import resource

from twisted.logger import Logger

log = Logger()


def raiseFileLimit(wanted=None):
    """
    Raise this process's soft limit on open files to C{wanted} (default: the
    hard limit), never above the hard limit.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target == resource.RLIM_INFINITY:
        target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warn("could not raise the open files limit to {target}: {error}", target=target, error=e)
    return soft
