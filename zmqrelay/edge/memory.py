"""
Giving freed memory back to the operating system.

A flood of large messages, or a slow subscriber's backlog, makes libzmq and
Python allocate a lot and then free it.  glibc's allocator keeps freed heap
(and raises its mmap threshold after large frees, so later large buffers
come from the heap too): the node's resident size would stay at the
attack's peak for good.  L{MemoryTrimmer} asks glibc to return what is free,
every few seconds, so a node's footprint falls back near where it started
once an attack ends.  Elsewhere (no glibc) it does nothing.
"""

import ctypes
import ctypes.util

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def _loadTrim():
    """
    @return: glibc's C{malloc_trim}, or C{None} where there is none.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _loadTrim()


def trim():
    """
    Return free heap memory to the system now.

    @return: C{True} if glibc released some, C{False} if none or no glibc.
    """
    if _trim is None:
        return False
    return bool(_trim(0))


class MemoryTrimmer:
    """
    Calls L{trim} every C{interval} seconds while started.

    @ivar trims: how often memory was returned.
    """

    def __init__(self, reactor, interval=5.0, trimmer=None):
        self.reactor = reactor
        self.interval = interval
        self.trims = 0
        self._trim = trimmer or trim
        self._loop = None

    def start(self):
        """
        Start trimming (idempotent).
        """
        if self._loop is not None:
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def stop(self):
        """
        Stop trimming (idempotent); leaves no delayed call behind.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self):
        try:
            if self._trim():
                self.trims += 1
        except Exception:
            log.failure("malloc_trim failed")
