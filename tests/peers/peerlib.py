"""Drive the test peers (pymidi_listener.py, pymidi_initiator.py, node_peer.js).

Every peer prints one JSON object a line on stdout and reads command lines on
stdin. A reader thread per pipe collects them; `expect` waits for an event with
a deadline and fails with the recent output. Processes are stopped by PID.

    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.pymidi_listener(port)
        lst.expect("ready")
        ini = peers.node_peer("connect", free_port_pair(), target=("127.0.0.1", port))
        ini.expect("send-ready")
        ini.send("90 3c 64")
        assert lst.expect("midi")["bytes"] == "90 3c 64"
"""

import collections
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))
VENV_PYTHON = os.path.join(PEERS_DIR, "venv", "bin", "python")
NODE = "node"
DEFAULT_TIMEOUT = 20.0
# Events that mean a peer saw something wrong; a clean run has none.
PROBLEM_EVENTS = ("malformed", "dropped", "error", "non-json", "rejected", "timeout")


class PeerTimeout(AssertionError):
    pass


class PeerExited(AssertionError):
    pass


def setup():
    """Install the peers' dependencies when missing (quiet when present)."""
    subprocess.run(["bash", os.path.join(PEERS_DIR, "setup.sh")], check=True)


def free_port_pair(host="127.0.0.1"):
    """An even UDP port P with P and P+1 free on host (free when checked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_DGRAM) as a:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port % 2 or port >= 65535:
                continue
            with socket.socket(family, socket.SOCK_DGRAM) as b:
                try:
                    b.bind((host, port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free even UDP port pair on %s" % host)


def stop_process(proc, timeout):
    """Close PROC's stdin (end of input), then TERM, then KILL, by PID, each given TIMEOUT
    seconds to end it."""
    if proc.poll() is not None:
        return
    try:
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


class Peer:
    """One peer process: JSON events from stdout, command lines to stdin."""

    def __init__(self, argv, label, cwd=PEERS_DIR, env=None):
        self.label = label
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.history = []  # every event, in order, each with "t" (s since start)
        self._pending = []  # events no expect() has returned yet, in order
        self._eof = False  # stdout ended and every line is in history
        self._recent = collections.deque(maxlen=60)
        self._queue = queue.Queue()
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for r in self._readers:
            r.start()

    def _read(self, pipe, kind):
        for raw in iter(pipe.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                self._recent.append("%s %s" % (kind, line))
            if kind == "out":
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "non-json", "line": line}
                if not isinstance(event, dict):
                    event = {"event": "non-json", "line": line}
                event["t"] = round(time.monotonic() - self.started, 3)
                self._queue.put(event)
        if kind == "out":
            self._queue.put(None)  # EOF
        pipe.close()

    def _pump(self, timeout):
        """Move one queued item into history; False on timeout, None at EOF."""
        try:
            item = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if item is None:
            self._eof = True
            return None
        self.history.append(item)
        self._pending.append(item)
        return True

    def recent(self):
        with self._lock:
            return "\n".join(self._recent)

    def _fail(self, cls, what):
        raise cls(
            "%s (pid %d, %s): %s\n--- recent output ---\n%s"
            % (self.label, self.pid, " ".join(self.argv), what, self.recent())
        )

    def expect(self, event, timeout=DEFAULT_TIMEOUT, **fields):
        """Wait for the oldest event named `event` whose fields match that no
        expect has returned yet; return it (and only it: other events stay
        for later expects, so different kinds may be awaited in any order).
        """
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self._pending):
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                    del self._pending[i]
                    return e
            if self._eof:
                self._fail(PeerExited, "exited (status %s) before %r %r"
                           % (self.proc.poll(), event, fields))
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(PeerTimeout, "no %r %r within %.1f s" % (event, fields, timeout))
            self._pump(left)

    def expect_midi(self, count, timeout=DEFAULT_TIMEOUT):
        """The next `count` midi events' byte strings, in order of arrival."""
        return [self.expect("midi", timeout)["bytes"] for _ in range(count)]

    def events(self, event=None):
        """Events seen so far (all, or of one kind), without waiting."""
        while self._pump(0):
            pass
        return [e for e in self.history if event is None or e.get("event") == event]

    def problems(self):
        """Events that report something wrong (see PROBLEM_EVENTS)."""
        return [e for e in self.events() if e.get("event") in PROBLEM_EVENTS]

    def send_line(self, line):
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail(PeerExited, "stdin closed while sending %r" % line)

    def send(self, hex_bytes):
        """Ask the peer to send MIDI, e.g. send("90 3c 64")."""
        self.send_line("send " + hex_bytes)

    def stop(self, timeout=5.0):
        """Close stdin (the peers send BY and exit), then TERM, then KILL by PID.

        Reads stdout to its end, so `history` holds every event afterwards.
        Returns the exit status.
        """
        stop_process(self.proc, timeout)
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        for r in self._readers:
            r.join(timeout)
        return self.proc.returncode

    def kill(self):
        """Stop at once, with no BY (a crash, as the other side sees it)."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.stop()


class PeerGroup:
    """Starts peers and stops every one of them on exit, also on failure."""

    def __init__(self):
        self.peers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
        return False

    def stop_all(self):
        for peer in reversed(self.peers):
            peer.stop()

    def start(self, argv, label):
        peer = Peer(argv, label)
        self.peers.append(peer)
        return peer

    def pymidi_listener(self, port, name="pymidi", same_ssrc=False, host="127.0.0.1",
                        verbose=False):
        """pymidi's Server on host:port. same_ssrc: one SSRC for both sockets
        (needed by node-rtpmidi initiators, see pymidi_listener.py)."""
        argv = [VENV_PYTHON, "-u", os.path.join(PEERS_DIR, "pymidi_listener.py"), str(port),
                "--name", name, "--host", host]
        if same_ssrc:
            argv.append("--same-ssrc")
        if verbose:
            argv.append("-v")
        return self.start(argv, "pymidi_listener:%d" % port)

    def pymidi_initiator(self, target, name="pymidi-initiator", port=None, host="127.0.0.1",
                         sync=True, verbose=False, upstream=False):
        """Scripted initiator to target=(host, control port), bound on host."""
        thost, tport = target
        argv = [VENV_PYTHON, "-u", os.path.join(PEERS_DIR, "pymidi_initiator.py"),
                "%s:%d" % (_bracket(thost), tport), "--name", name, "--host", host]
        if not sync:
            argv.append("--no-sync")
        if upstream:
            argv.append("--upstream")
        if port is not None:
            argv += ["--port", str(port)]
        if verbose:
            argv.append("-v")
        return self.start(argv, "pymidi_initiator->%s:%d" % (_bracket(thost), tport))

    def node_peer(self, mode, port, target=None, name="node-rtpmidi", host="127.0.0.1",
                  verbose=False):
        """node-rtpmidi on host:port (even); mode "listen", or "connect" to target=(host, port)."""
        argv = [NODE, os.path.join(PEERS_DIR, "node_peer.js"), "--port", str(port),
                "--name", name, "--host", host]
        if verbose:
            argv.append("-v")
        argv.append(mode)
        if mode == "connect":
            argv.append("%s:%d" % (_bracket(target[0]), target[1]))
        return self.start(argv, "node_peer:%d:%s" % (port, mode))


def _bracket(host):
    return "[%s]" % host if ":" in host else host


if __name__ == "__main__":
    sys.exit("peerlib is a module; run selftest.py")
