"""Start rtpmidid for a test and read its log.

The daemon always runs with --no-mdns (never multicast from the host namespace) and, unless a
test says otherwise, --no-alsa, bound to loopback. Waits are on log lines with deadlines, never
bare sleeps; the process is stopped by PID.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("RTPMIDID_BIN", os.path.join(ROOT, "target", "debug", "rtpmidid"))
DEFAULT_TIMEOUT = 20.0


class DaemonTimeout(AssertionError):
    pass


class Daemon:
    def __init__(self, port, name="rtpmidid", args=(), host="127.0.0.1", alsa=False):
        self.port = port
        self.name = name
        argv = [BINARY, "-vv", "--no-mdns", "-n", name, "-p", str(port)]
        if host is not None:  # None: the default, every address
            argv += ["-b", host]
        if not alsa:
            argv.append("--no-alsa")
        argv += list(args)
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = []
        self._cursor = 0
        self._queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _pump(self, timeout):
        try:
            line = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if line is None:
            self._eof = True
            return False
        self.lines.append(line)
        return True

    _eof = False

    def recent(self, n=40):
        return "\n".join(self.lines[-n:])

    def expect_log(self, pattern, timeout=DEFAULT_TIMEOUT):
        """The next log line (after the previous match) that matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                m = regex.search(line)
                if m:
                    return m
            if self._eof:
                raise DaemonTimeout("rtpmidid exited (%s) before %r:\n%s"
                                    % (self.proc.poll(), pattern, self.recent()))
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonTimeout("no log line %r within %.0f s:\n%s"
                                    % (pattern, timeout, self.recent()))
            self._pump(left)

    def wait_count(self, pattern, n=1, timeout=DEFAULT_TIMEOUT):
        """Waits until `n` log lines so far, in any order, match `pattern`."""
        deadline = time.monotonic() + timeout
        while self.count(pattern) < n:
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                raise DaemonTimeout("fewer than %d log lines %r within %.0f s:\n%s"
                                    % (n, pattern, timeout, self.recent()))
            self._pump(min(left, 0.2))

    def count(self, pattern):
        """Log lines so far matching `pattern`."""
        while self._pump(0):
            pass
        return sum(1 for line in self.lines if re.search(pattern, line))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=5.0):
        """SIGTERM; returns the exit status (the process is killed if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout)
        while self._pump(0):
            pass
        return self.proc.returncode


class Daemons:
    """Context manager that stops every daemon it started, also when the test fails."""

    def __init__(self):
        self.started = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for d in self.started:
            d.stop()

    def start(self, *args, **kwargs):
        d = Daemon(*args, **kwargs)
        self.started.append(d)
        return d
