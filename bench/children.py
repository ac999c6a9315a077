"""
The child processes of a benchmark: started with their output in a
temporary directory, waited for by their ready line, ended by pid.

Shared by C{relaybench.py} and C{floodbench.py}; synchronous (the benchmark
drivers are plain pyzmq loops, not Twisted programs).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from zmqrelay.tools.launcher import TWISTD_MAIN  # noqa: E402

#: A zmqrelay node's ready line, or a baseline process's.
READY = re.compile(r"ready: (?:role=\S+ id=\S+ inc=\S+|baseline \S+)(.*)$")


class BenchError(Exception):
    """
    The benchmark could not run (a node did not start, a run stalled).
    """


class Children:
    """
    The processes a benchmark started; L{stopAll} ends each one by pid.
    """

    def __init__(self, prefix="bench-"):
        self.logDir = tempfile.mkdtemp(prefix=prefix)
        self.procs = {}
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env["PYTHONUNBUFFERED"] = "1"

    def _path(self, name):
        return os.path.join(self.logDir, name + ".log")

    def spawn(self, name, argv):
        """
        Start C{argv} as C{name}, without waiting.
        """
        with open(self._path(name), "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=ROOT,
            )

    def waitFor(self, name, pattern, timeout=30.0):
        """
        @return: the first match of C{pattern} in C{name}'s output.
        @raise BenchError: if it exits first or C{timeout} passes.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines(name):
                match = regex.search(line)
                if match:
                    return match
            proc = self.procs[name]
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            time.sleep(0.05)
        raise BenchError(f"{name}: no {pattern!r} after {timeout}s:\n{self.tail(name)}")

    def start(self, name, argv, timeout=30.0):
        """
        Start C{argv} and wait for its ready line.

        @return: the L{dict} of C{key=value} pairs on the ready line.
        """
        self.spawn(name, argv)
        match = self.waitFor(name, READY.pattern, timeout)
        return dict(kv.split("=", 1) for kv in match.group(1).split() if "=" in kv)

    def twistd(self, name, plugin, args, profile=None):
        """
        Start C{twistd -n <plugin> <args>} (as L{zmqrelay.tools.launcher} does).

        @return: the endpoints on its ready line.
        """
        argv = [sys.executable, "-c", TWISTD_MAIN, "-n", "--pidfile=", "--logfile=-"]
        if profile:
            argv += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
        return self.start(name, argv + [plugin] + list(args))

    def pid(self, name):
        return self.procs[name].pid

    def lines(self, name):
        """
        @return: C{name}'s output lines so far.
        """
        try:
            with open(self._path(name), "r", errors="replace") as f:
                return f.readlines()
        except OSError:
            return []

    def tail(self, name, lines=20):
        return "".join(self.lines(name)[-lines:])

    def wait(self, name, timeout):
        """
        Wait for C{name} to end; SIGKILL it after C{timeout}.
        """
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            self.procs[name].kill()
            self.procs[name].wait()
            raise BenchError(f"{name} still running after {timeout}s")

    def stopAll(self, timeout=10.0):
        """
        SIGTERM every child still running, SIGKILL those that do not end
        within C{timeout}; then remove the logs.
        """
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.logDir, ignore_errors=True)
