"""Drive amidi2net-server / amidi2net-client (Network MIDI 2.0 over UDP) as test peers.

They run with the test-only --stdio backend (io-stdio.c): UMP packets go in on stdin and
come out on stdout, one packet a line as hex words; logs (with -d) go to stderr. A reader
thread per pipe collects them. Processes are stopped by PID. Standard library only.

    import a2nlib
    with a2nlib.Group() as g:
        srv = g.server(secret="s3cret")          # port=0: a free port, read back
        cli = g.client(srv.port, secret="s3cret")
        cli.wait_session(); srv.wait_session()
        cli.send(a2nlib.midi1_note_on(0, 0, 60, 100))
        assert srv.recv() == (0x20903C64,)
        srv.send_many(a2nlib.sysex7_packets(bytes(10240)))
        assert a2nlib.sysex7_join(cli.recv_n(1707)) == bytes(10240)
"""

import collections
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import peerlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_SH = os.path.join(HERE, "build.sh")
DEFAULT_TIMEOUT = 10.0
# Words per UMP packet by message type (high nibble of the first word).
UMP_WORDS = (1, 1, 1, 2, 2, 4, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4)


class A2nTimeout(AssertionError):
    pass


class A2nExited(AssertionError):
    pass


_bin_dir = None


def build():
    """Build the rig when needed (cached; see build.sh); return the directory of the binaries."""
    global _bin_dir
    if _bin_dir is None:
        out = subprocess.run(["bash", BUILD_SH], check=True, stdout=subprocess.PIPE, text=True)
        _bin_dir = out.stdout.strip().splitlines()[-1]
    return _bin_dir


def free_udp_port(host="127.0.0.1"):
    """A UDP port free on host when checked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- UMP helpers ---------------------------------------------------------------------------

def ump_words(packet):
    """A packet as a tuple of ints from a tuple/list of ints, one int, or a hex string."""
    if isinstance(packet, int):
        words = (packet,)
    elif isinstance(packet, str):
        words = tuple(int(w, 16) for w in packet.split())
    else:
        words = tuple(int(w) for w in packet)
    if not words or len(words) != UMP_WORDS[words[0] >> 28]:
        raise ValueError("not one UMP packet: %r" % (packet,))
    return words


def ump_line(packet):
    return " ".join("%08x" % w for w in ump_words(packet))


def midi1_note_on(group, channel, note, velocity):
    """MIDI 1.0 channel voice message (type 2), one word."""
    return (0x20900000 | group << 24 | channel << 16 | note << 8 | velocity,)


def midi1_note_off(group, channel, note, velocity=0):
    return (0x20800000 | group << 24 | channel << 16 | note << 8 | velocity,)


def midi2_note_on(group, channel, note, velocity16, attr_type=0, attr=0):
    """MIDI 2.0 channel voice message (type 4), two words."""
    return (0x40900000 | group << 24 | channel << 16 | note << 8 | attr_type,
            velocity16 << 16 | attr)


def sysex7_packets(data, group=0):
    """Split SysEx payload bytes (no F0/F7) into UMP type 3 packets (6 bytes each)."""
    data = bytes(data)
    chunks = [data[i:i + 6] for i in range(0, len(data), 6)] or [b""]
    out = []
    for i, c in enumerate(chunks):
        if len(chunks) == 1:
            status = 0  # complete in one packet
        elif i == 0:
            status = 1  # start
        elif i == len(chunks) - 1:
            status = 3  # end
        else:
            status = 2  # continue
        b = c + bytes(6 - len(c))
        out.append((0x30000000 | group << 24 | status << 20 | len(c) << 16 | b[0] << 8 | b[1],
                    b[2] << 24 | b[3] << 16 | b[4] << 8 | b[5]))
    return out


def sysex7_join(packets):
    """Reassemble one SysEx message from type 3 packets; checks the status sequence."""
    data = bytearray()
    packets = [ump_words(p) for p in packets]
    for i, (w0, w1) in enumerate(packets):
        if w0 >> 28 != 3:
            raise ValueError("packet %d is not SysEx7: %08x" % (i, w0))
        status, n = (w0 >> 20) & 0xF, (w0 >> 16) & 0xF
        if len(packets) == 1:
            want = 0
        else:
            want = 1 if i == 0 else 3 if i == len(packets) - 1 else 2
        if status != want or n > 6:
            raise ValueError("packet %d: status %d count %d, want status %d" % (i, status, n, want))
        data += bytes([(w0 >> 8) & 0xFF, w0 & 0xFF, w1 >> 24, (w1 >> 16) & 0xFF,
                       (w1 >> 8) & 0xFF, w1 & 0xFF])[:n]
    return bytes(data)


# ---- processes -----------------------------------------------------------------------------

class A2nProc:
    """One amidi2net-server or -client: UMP packets from stdout, log lines from stderr."""

    def __init__(self, argv, label):
        self.label = label
        self.argv = list(argv)
        # A new session: no controlling terminal, so a password prompt can never grab one.
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.received = []  # every UMP packet read so far by recv*, in order (tuples)
        self.log = []  # every stderr line so far
        self._log_seen = 0  # wait_log() searches from here
        self._packets = queue.Queue()
        self._eof = False
        self._log_cond = threading.Condition()
        self._log_eof = False
        self._recent = collections.deque(maxlen=60)
        self._readers = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for r in self._readers:
            r.start()

    def _read_out(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").strip()
            self._recent.append("out " + line)
            try:
                self._packets.put(tuple(int(w, 16) for w in line.split()))
            except ValueError:
                self._packets.put(("bad-line", line))
        self._packets.put(None)
        self.proc.stdout.close()

    def _read_err(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self._recent.append("err " + line)
            with self._log_cond:
                self.log.append(line)
                self._log_cond.notify_all()
        with self._log_cond:
            self._log_eof = True
            self._log_cond.notify_all()
        self.proc.stderr.close()

    def recent(self):
        return "\n".join(list(self._recent))

    def _fail(self, cls, what):
        raise cls("%s (pid %d, %s): %s\n--- recent output ---\n%s"
                  % (self.label, self.pid, " ".join(self.argv), what, self.recent()))

    # -- input to the network
    def send(self, *packets, allow_128bit=False):
        """Send UMP packets (each a tuple of words, an int, or a hex string) into the network.

        amidi2net aborts on a 128-bit packet from its I/O side (types 5, 0xD, 0xE, 0xF: an
        `assert(plen < 4)` in submit_*_output_ump), so these are refused unless
        allow_128bit=True. Receiving them from the network works."""
        words = [ump_words(p) for p in packets]
        if not allow_128bit and any(len(w) == 4 for w in words):
            raise ValueError("amidi2net aborts on 128-bit UMPs from its I/O side "
                             "(assert plen < 4); pass allow_128bit=True to do it anyway")
        self.send_lines([ump_line(w) for w in words])

    def send_lines(self, lines):
        """Write raw lines to stdin (for malformed-input tests: no checks here)."""
        try:
            self.proc.stdin.write("".join(line + "\n" for line in lines).encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            self._fail(A2nExited, "stdin closed")

    def send_many(self, packets, chunk=16, pause=0.002):
        """Send many packets, `chunk` at a time with `pause` s between chunks. amidi2net reads
        all the lines it has at once and sends each as its own datagram, with no pacing;
        an unpaced burst of thousands overflows the receiver's socket buffer."""
        packets = list(packets)
        for i in range(0, len(packets), chunk):
            self.send(*packets[i:i + chunk])
            if pause:
                time.sleep(pause)

    # -- output from the network
    def recv(self, timeout=DEFAULT_TIMEOUT):
        """The next UMP packet received from the network (a tuple of ints)."""
        try:
            item = self._packets.get(timeout=max(timeout, 0))
        except queue.Empty:
            self._fail(A2nTimeout, "no UMP packet within %.1f s" % timeout)
        if item is None:
            self._eof = True
            self._packets.put(None)
            self._fail(A2nExited, "exited (status %s) before a UMP packet" % self.proc.poll())
        if item and item[0] == "bad-line":
            self._fail(AssertionError, "unparsable output line %r" % item[1])
        self.received.append(item)
        return item

    def recv_n(self, n, timeout=DEFAULT_TIMEOUT):
        """The next n packets; timeout is for all of them."""
        deadline = time.monotonic() + timeout
        return [self.recv(deadline - time.monotonic()) for _ in range(n)]

    def expect(self, *packets, timeout=DEFAULT_TIMEOUT):
        """The next packets must be exactly these (same forms as send)."""
        want = [ump_words(p) for p in packets]
        got = self.recv_n(len(want), timeout)
        if got != want:
            self._fail(AssertionError, "received %s, expected %s"
                       % ([ump_line(g) for g in got], [ump_line(w) for w in want]))
        return got

    def expect_nothing(self, wait=0.5):
        """No packet arrives within `wait` s."""
        try:
            item = self._packets.get(timeout=wait)
        except queue.Empty:
            return
        self._packets.put(item)
        if item is not None:
            self._fail(AssertionError, "unexpected UMP packet %s" % ump_line(item))

    def pending(self):
        """Packets already received and not yet returned by recv, without waiting."""
        out = []
        while True:
            try:
                item = self._packets.get_nowait()
            except queue.Empty:
                return out
            if item is None:
                self._packets.put(None)
                return out
            self.received.append(item)
            out.append(item)

    # -- logs
    def wait_log(self, pattern, timeout=DEFAULT_TIMEOUT, since_start=False):
        """Wait for a stderr line matching the regex `pattern` (searched from after the previous
        wait_log match, or from the start); return the re.Match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_cond:
            i = 0 if since_start else self._log_seen
            while True:
                while i < len(self.log):
                    m = rx.search(self.log[i])
                    i += 1
                    if m:
                        self._log_seen = i
                        return m
                if self._log_eof:
                    self._fail(A2nExited, "exited (status %s) before log /%s/"
                               % (self.proc.poll(), pattern))
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(A2nTimeout, "no log /%s/ within %.1f s" % (pattern, timeout))
                self._log_cond.wait(left)

    def wait_session(self, timeout=DEFAULT_TIMEOUT):
        """Wait until a session is established ("invitation accepted" / "auth accepted")."""
        return self.wait_log(r"^(invitation|auth) accepted$", timeout)

    def errors(self):
        """stderr lines starting with ERROR: (a clean run has none)."""
        with self._log_cond:
            return [l for l in self.log if l.startswith("ERROR")]

    # -- lifetime
    def alive(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        """Wait for the process to exit by itself; return its status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._fail(A2nTimeout, "still running after %.1f s" % timeout)

    def stop(self, timeout=5.0):
        """Close stdin (end of input: amidi2net leaves its loop and exits, without sending
        Bye), then TERM, then KILL, by PID. Returns the exit status."""
        peerlib.stop_process(self.proc, timeout)
        for r in self._readers:
            r.join(timeout)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.stop()


class RawClient:
    """A bare Network MIDI 2.0 client on its own UDP socket, for wire-level probes of a server
    (no FEC, no retransmit, no ping answers: keep probes shorter than the liveness timeout)."""

    def __init__(self, port, host="127.0.0.1", name="raw-probe", prod_id="0"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.addr = (host, port)
        self.name, self.prod_id = name, prod_id
        self.seqno = 0

    @staticmethod
    def _string(s):
        b = s.encode() + b"\0" if s else b""
        return b + bytes(-len(b) % 4)

    def send_cmds(self, *cmds):
        """Send one datagram: "MIDI" + each (code, byte2, byte3, payload bytes)."""
        out = bytearray(b"MIDI")
        for code, b2, b3, payload in cmds:
            assert len(payload) % 4 == 0
            out += bytes([code, len(payload) // 4, b2, b3]) + payload
        self.sock.sendto(bytes(out), self.addr)

    def recv_cmds(self, timeout=DEFAULT_TIMEOUT):
        """The commands of the next datagram: [(code, byte2, byte3, payload bytes), ...]."""
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(2048)
        assert data[:4] == b"MIDI", data[:4]
        cmds, i = [], 4
        while i + 4 <= len(data):
            code, n, b2, b3 = data[i:i + 4]
            cmds.append((code, b2, b3, data[i + 4:i + 4 + 4 * n]))
            i += 4 + 4 * n
        return cmds

    def invite(self, caps=0, timeout=DEFAULT_TIMEOUT):
        """Send an Invitation; return the first reply command (0x10 = accepted)."""
        name, prod = self._string(self.name), self._string(self.prod_id)
        self.send_cmds((0x01, len(name) // 4, caps, name + prod))
        return self.recv_cmds(timeout)[0]

    def send_ump(self, *packets):
        """One UMP Data command (next sequence number) holding these packets."""
        self.seqno = (self.seqno + 1) & 0xFFFF
        payload = b"".join(w.to_bytes(4, "big") for p in packets for w in ump_words(p))
        self.send_cmds((0xFF, self.seqno >> 8, self.seqno & 0xFF, payload))

    def recv_ump(self, timeout=DEFAULT_TIMEOUT):
        """(seqno, [words]) of the newest UMP Data command in the next datagram carrying one
        (FEC copies of older ones come first in the same datagram); skips other commands."""
        deadline = time.monotonic() + timeout
        while True:
            data = [c for c in self.recv_cmds(max(deadline - time.monotonic(), 0.001))
                    if c[0] == 0xFF]
            if data:
                code, b2, b3, payload = data[-1]
                return (b2 << 8 | b3, [int.from_bytes(payload[i:i + 4], "big")
                                       for i in range(0, len(payload), 4)])

    def bye(self, reason=0x01):
        self.send_cmds((0xF0, reason, 0, b""))

    def close(self):
        self.sock.close()


def _common_args(fec, ipv6, debug, ep_name, extra):
    argv = ["--stdio"]
    if fec is not None:
        argv.append("--fec=%d" % fec)
    if ipv6:
        argv.append("--ipv6")
    if ep_name is not None:
        argv.append("--ep-name=%s" % ep_name)
    argv += ["--debug"] * debug
    return argv + list(extra)


class Server(A2nProc):
    """amidi2net-server --stdio; `port` is the UDP port it listens on (0.0.0.0, and :: with
    ipv6=True). Keep the network loopback-only: run in a namespace or behind no route."""

    def __init__(self, bin_dir, port=0, secret=None, user=None, auth_forced=False, fec=None,
                 max_sessions=None, ipv6=False, debug=1, ep_name=None, extra=()):
        argv = [os.path.join(bin_dir, "amidi2net-server")]
        argv += _common_args(fec, ipv6, debug, ep_name, extra)
        argv.append("--port=%d" % port)
        # --secret alone: shared-secret authentication; with --user: user authentication.
        if user is not None:
            argv.append("--user=%s" % user)
        if secret is not None:
            argv.append("--secret=%s" % secret)
        if auth_forced:
            argv.append("--auth-forced")
        if max_sessions is not None:
            argv.append("--sessions=%d" % max_sessions)
        super().__init__(argv, "amidi2net-server")
        try:
            if port == 0:
                port = int(self.wait_log(r"assigned UDP port = (\d+)").group(1))
            self.port = port
            if debug:
                self.wait_log(r"^server main loop starting$")
        except BaseException:
            self.kill()
            raise


class Client(A2nProc):
    """amidi2net-client --stdio connecting to host:port. It sends the Invitation at once and
    exits (status 1) when no session comes up after its invitation retries."""

    def __init__(self, bin_dir, port, host="127.0.0.1", secret=None, user=None, fec=None,
                 ipv6=False, debug=1, ep_name=None, extra=()):
        argv = [os.path.join(bin_dir, "amidi2net-client")]
        argv += _common_args(fec, ipv6, debug, ep_name, extra)
        if user is not None:
            argv.append("--user=%s" % user)
        if secret is not None:
            argv.append("--secret=%s" % secret)
        argv += [host, str(port)]
        super().__init__(argv, "amidi2net-client->%s:%d" % (host, port))
        self.host, self.port = host, port


class Group:
    """Starts servers and clients and stops every one of them on exit, also on failure."""

    def __init__(self, bin_dir=None):
        self.bin_dir = bin_dir or build()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
        return False

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()

    def server(self, **kw):
        p = Server(self.bin_dir, **kw)
        self.procs.append(p)
        return p

    def client(self, port, **kw):
        p = Client(self.bin_dir, port, **kw)
        self.procs.append(p)
        return p


if __name__ == "__main__":
    sys.exit("a2nlib is a module; run selftest.py")


def run_tests(namespace, argv):
    """Runs the test_* functions of NAMESPACE (a module's globals()), those whose name
    holds the text after -k in ARGV if given; prints each outcome and a total. Returns the
    exit status: non-zero if any failed or none ran."""
    only = argv[argv.index("-k") + 1] if "-k" in argv else ""
    tests = sorted((n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f))
    build()
    passed = failed = 0
    for name, fn in tests:
        if only not in name:
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception:
            failed += 1
            print("FAIL %s (%.1f s)" % (name, time.monotonic() - t0))
            traceback.print_exc()
        else:
            passed += 1
            print("ok   %s (%.1f s)" % (name, time.monotonic() - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0
