"""rtpmidid against amidi2net (the ALSA maintainer's Network MIDI 2.0 implementation), end to end.

    python3 tests/peers/amidi2net/test_daemon.py [-k SUBSTRING]   # prints "N passed, M failed"
    tests/peers/venv/bin/python -m pytest -q tests/peers/amidi2net/test_daemon.py

Each test runs a real daemon (target/debug/rtpmidid, or $RTPMIDID_BIN: --no-alsa --no-mdns
--hub, loopback) between amidi2net (server or client, with the rig's --stdio backend: exact
UMP words in and out) and an RTP-MIDI peer (tests/peers' pymidi_initiator: exact MIDI 1.0
bytes in and out), so every message crosses the daemon's translation both ways:

    amidi2net  <-- Network MIDI 2.0 (UMP) -->  rtpmidid --hub  <-- RTP-MIDI -->  pymidi

Covered: the daemon as host (amidi2net-client) and as client (`-C midi2://`, amidi2net-server);
notes, controllers, pitch bend, MIDI 2.0 channel voice scaled down, system messages and a
10 kB SysEx both ways; shared-secret and user/password authentication both ways ([midi2] auth
and secret, [connect] user and password), wrong ones refused;
lost datagrams repaired by FEC and by retransmission, both ways (amidi2net's own drop
simulation, and a lossy UDP relay in this file). Needs the peers' setup
(tests/peers/setup.sh), the rig (build.sh, built on demand) and a built daemon. Like the
rig's self-test, amidi2net-server binds the wildcard address: stage 35 runs this in a
private network namespace.
"""

import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path[:0] = [HERE, os.path.join(ROOT, "tests", "peers"), os.path.join(ROOT, "tests", "e2e")]
import a2nlib  # noqa: E402
import midiwire  # noqa: E402
from a2nlib import midi1_note_off, midi1_note_on, midi2_note_on  # noqa: E402
from daemonlib import Daemons  # noqa: E402
from peerlib import PeerGroup, free_port_pair  # noqa: E402

LOCAL = "127.0.0.1"
SLOW = 30


# ---- the rig: daemon + amidi2net + pymidi ---------------------------------------------------

class Rig:
    """Starts everything a test needs and stops all of it (by PID) on exit."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="rtpmidid-a2n-")
        self.daemons = Daemons()
        self.peers = PeerGroup()
        self.a2n = a2nlib.Group()
        self.relays = []
        self.rtp_seq = 1000
        self.ini = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for r in self.relays:
            r.stop()
        self.peers.stop_all()
        self.a2n.stop_all()
        self.daemons.__exit__(*exc)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def daemon(self, midi2_port=None, connect=None, conf="", extra=()):
        """rtpmidid --hub with a Network MIDI 2.0 host on midi2_port (a free one if None)."""
        self.rtp_port = free_port_pair()
        self.midi2_port = midi2_port or a2nlib.free_udp_port()
        path = os.path.join(self.tmp, "rtpmidid.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.control = os.path.join(self.tmp, "control.sock")
        args = ["--hub", "--midi2-port", str(self.midi2_port), "-c", path,
                "--control", self.control]
        if connect:
            args += ["-C", connect]
        d = self.daemons.start(self.rtp_port, name="hub", args=args + list(extra))
        d.expect_log(r"listening")
        self.d = d
        return d

    def pymidi(self):
        """pymidi_initiator connected to the daemon, ready to send."""
        ini = self.peers.pymidi_initiator((LOCAL, self.rtp_port), name="pyini")
        self.ini_ssrc = ini.expect("ready")["ssrc"]
        ini.expect("send-ready")
        self.d.expect_log(r'session opened: "pyini"')
        self.ini = ini
        return ini

    def rtp_send(self, *commands):
        """One RTP-MIDI packet from pymidi_initiator holding these commands (each bytes or hex;
        SysEx segments allowed), with our own consecutive sequence numbers (the initiator's
        `send` is never used, so the daemon sees one unbroken sequence)."""
        cmds = [c if isinstance(c, bytes) else midiwire.parse_hex(c) for c in commands]
        self.rtp_seq += 1
        packet = midiwire.encode_rtp_midi(self.rtp_seq, self.rtp_seq * 10, self.ini_ssrc, cmds)
        self.ini.send_line("raw data " + packet.hex())
        self.ini.expect("sent-raw")

    def ctl_peers(self):
        import json
        out = subprocess.run([self.d.argv[0], "ctl", "--control", self.control, "--json",
                              "peers"], stdout=subprocess.PIPE, text=True, timeout=10)
        return json.loads(out.stdout)["peers"]

    def midi2_peer(self):
        rows = [p for p in self.ctl_peers() if p["protocol"] == "midi2"]
        assert len(rows) == 1, rows
        return rows[0]


# ---- what crosses ---------------------------------------------------------------------------

# amidi2net -> daemon -> pymidi: UMP sent, the MIDI 1.0 commands pymidi must get.
UP = [
    (midi1_note_on(0, 0, 60, 100), ["90 3c 64"]),
    ((0x20B00750,), ["b0 07 50"]),                       # controller 7 = 80
    ((0x20E00040,), ["e0 00 40"]),                       # pitch bend center
    ((0x20E37F7F,), ["e3 7f 7f"]),                       # pitch bend max, channel 4
    ((0x20C20500,), ["c2 05"]),                          # program change
    ((0x20D13300,), ["d1 33"]),                          # channel pressure
    ((0x20A03C10,), ["a0 3c 10"]),                       # poly pressure
    (midi1_note_off(0, 0, 60), ["80 3c 00"]),
    # MIDI 2.0 channel voice (type 4), scaled down (MIDI 2.0 spec's min-center-max rules)
    (midi2_note_on(0, 1, 62, 0xFFFF), ["91 3e 7f"]),
    (midi2_note_on(0, 1, 63, 0x8000), ["91 3f 40"]),
    ((0x40B10780, 0x80000000), ["b1 07 40"]),            # controller, 32-bit center
    ((0x40E10000, 0xFFFFFFFF), ["e1 7f 7f"]),            # pitch bend, 32-bit max
    ((0x40E10000, 0x80000000), ["e1 00 40"]),            # pitch bend, 32-bit center
    ((0x40C10001, 0x05000102), ["b1 00 01", "b1 20 02", "c1 05"]),  # program + bank
    ((0x40810000 | 62 << 8, 0x00000000), ["81 3e 00"]),  # MIDI 2.0 note off
    # system (type 1)
    ((0x10F20102,), ["f2 01 02"]),                       # song position
    ((0x10F80000,), ["f8"]),                             # clock
    ((0x10FA0000,), ["fa"]),                             # start
]

# pymidi -> daemon -> amidi2net: one RTP-MIDI packet each, the UMP amidi2net must get.
DOWN = [
    (["90 3c 64"], [midi1_note_on(0, 0, 60, 100)]),
    (["b5 0a 7f"], [(0x20B50A7F,)]),
    (["e0 00 40"], [(0x20E00040,)]),
    (["ef 7f 7f"], [(0x20EF7F7F,)]),
    (["c0 05"], [(0x20C00500,)]),
    (["d9 33"], [(0x20D93300,)]),
    (["a0 3c 10"], [(0x20A03C10,)]),
    (["80 3c 00", "91 40 7f", "81 40 00"],
     [midi1_note_off(0, 0, 60), midi1_note_on(0, 1, 64, 127), midi1_note_off(0, 1, 64)]),
    (["f2 01 02"], [(0x10F20102,)]),
    (["f8"], [(0x10F80000,)]),
]


def sysex_payload(size, seed):
    return bytes((i * 7 + seed) & 0x7F for i in range(size))


def rtp_sysex_segments(data, chunk=1000):
    """A SysEx as RTP-MIDI segments (RFC 6295 3.2): F0..F0, F7..F0, ..., F7..F7."""
    parts = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    out = []
    for i, p in enumerate(parts):
        head = b"\xf0" if i == 0 else b"\xf7"
        tail = b"\xf7" if i == len(parts) - 1 else b"\xf0"
        out.append(head + p + tail)
    return out


def join_rtp_sysex(commands):
    """Payload of one SysEx received by pymidi as commands (whole, or segments)."""
    segs = [midiwire.parse_hex(c) for c in commands]
    assert segs[0][0] == 0xF0 and segs[-1][-1] == 0xF7, (commands[0][:20], commands[-1][-20:])
    for s in segs[1:]:
        assert s[0] == 0xF7, s[:4]
    for s in segs[:-1]:
        assert s[-1] == 0xF0, s[-4:]
    return b"".join(s[1:-1] for s in segs)


def exchange_messages(rig, a2n, ini):
    """Everything in UP and DOWN, checked exactly, then nothing more on either side."""
    for ump, _ in UP:
        a2n.send(ump)
    want = [c for _, cmds in UP for c in cmds]
    got = ini.expect_midi(len(want), timeout=SLOW)
    assert got == want, "pymidi got %s, want %s" % (got, want)
    for cmds, _ in DOWN:
        rig.rtp_send(*cmds)
    want = [u for _, umps in DOWN for u in umps]
    a2n.expect(*want, timeout=SLOW)
    a2n.expect_nothing(0.5)
    assert not ini.problems(), ini.problems()
    assert [e["bytes"] for e in ini.events("midi")][-len(got):] == got


def exchange_sysex(rig, a2n, ini, size=10240):
    """A `size`-byte SysEx each way: amidi2net -> pymidi (UMP type 3 packets, paced), then
    pymidi -> amidi2net (RTP-MIDI segments of 1000 bytes), with a note after each."""
    up = sysex_payload(size, 1)
    a2n.send_many(a2nlib.sysex7_packets(up))
    a2n.send(midi1_note_on(0, 2, 1, 2))
    cmds = []
    deadline = time.monotonic() + SLOW
    while True:
        c = ini.expect("midi", timeout=max(deadline - time.monotonic(), 0.1))["bytes"]
        if c == "92 01 02":
            break
        cmds.append(c)
    got = join_rtp_sysex(cmds)
    assert got == up, "SysEx up: %d bytes arrived of %d (first difference at %s)" % (
        len(got), len(up), next((i for i, (a, b) in enumerate(zip(got, up)) if a != b), None))
    assert not ini.problems(), ini.problems()

    sysex_down(rig, a2n, sysex_payload(size, 2))
    return cmds


def sysex_down(rig, a2n, data):
    """`data` as a SysEx from pymidi (RTP-MIDI segments of 1000 bytes), then a note: both
    reach amidi2net, the SysEx whole in UMP type 3 packets."""
    for seg in rtp_sysex_segments(data):
        rig.rtp_send(seg)
    rig.rtp_send("93 02 03")
    n = len(a2nlib.sysex7_packets(data))
    packets = a2n.recv_n(n + 1, SLOW)
    assert packets[-1] == midi1_note_on(0, 3, 2, 3), a2nlib.ump_line(packets[-1])
    assert a2nlib.sysex7_join(packets[:-1]) == data


def clean(*procs):
    for p in procs:
        assert not p.errors(), "%s logged errors: %s" % (p.label, p.errors()[:5])
        assert p.alive(), "%s exited (%s)" % (p.label, p.proc.poll())


# ---- 1. the daemon as host, amidi2net-client ------------------------------------------------

def test_host_messages_both_ways():
    with Rig() as rig:
        d = rig.daemon()
        ini = rig.pymidi()
        cli = rig.a2n.client(rig.midi2_port, ep_name="a2n-client")
        cli.wait_session()
        d.expect_log(r'session opened: "a2n-client"')
        exchange_messages(rig, cli, ini)
        clean(cli)
        assert rig.midi2_peer()["state"] == "connected"


def test_host_sysex_10k_both_ways():
    with Rig() as rig:
        rig.daemon()
        ini = rig.pymidi()
        cli = rig.a2n.client(rig.midi2_port, ep_name="a2n-client")
        cli.wait_session()
        exchange_sysex(rig, cli, ini)
        cli.expect_nothing(0.5)
        clean(cli)


def test_host_unpaced_bursts_both_ways():
    """Unpaced: amidi2net sends a 10 kB SysEx as fast as it can (1707 datagrams, one UMP
    each: against amidi2net-server this loses data, see tests/peers/README.md), and pymidi
    sends 600 one-note RTP-MIDI packets at once. The daemon takes the first whole and, sending
    several UMPs a datagram, does not overrun amidi2net with the second."""
    with Rig() as rig:
        rig.daemon()
        ini = rig.pymidi()
        cli = rig.a2n.client(rig.midi2_port, ep_name="a2n-client")
        cli.wait_session()
        data = sysex_payload(10240, 5)
        cli.send(*a2nlib.sysex7_packets(data))
        cli.send(midi1_note_on(0, 2, 1, 2))
        cmds = []
        while True:
            c = ini.expect("midi", timeout=SLOW)["bytes"]
            if c == "92 01 02":
                break
            cmds.append(c)
        assert join_rtp_sysex(cmds) == data
        assert rig.midi2_peer()["lost"] == 0

        lines = []
        for i in range(600):
            rig.rtp_seq += 1
            packet = midiwire.encode_rtp_midi(rig.rtp_seq, rig.rtp_seq * 10, rig.ini_ssrc,
                                              [bytes([0x91, i % 128, 1 + i // 128])])
            lines.append("raw data " + packet.hex())
        ini.proc.stdin.write(("\n".join(lines) + "\n").encode())
        ini.proc.stdin.flush()
        cli.expect(*[midi1_note_on(0, 1, i % 128, 1 + i // 128) for i in range(600)],
                   timeout=SLOW)
        cli.expect_nothing(0.5)
        assert not any("retransmit" in l or "eset" in l for l in cli.log
                       if not l.startswith("*")), cli.log[-10:]
        clean(cli)


def test_host_sysex_64k_to_amidi2net():
    host_long_sysex_to_amidi2net(65536)


def test_host_sysex_200k_to_amidi2net():
    host_long_sysex_to_amidi2net(200_000)


def host_long_sysex_to_amidi2net(size):
    """A long SysEx from pymidi (RTP-MIDI segments) goes to amidi2net as UMPs in datagrams of
    1400 bytes. amidi2net's socket buffer holds about 90 of them (rmem_default 212992), so the
    daemon paces them (a burst of 16, then one each 500 us; faster lost datagrams with the
    test backend writing every UMP to a pipe): 200 kB (~290 datagrams) arrives whole too."""
    with Rig() as rig:
        rig.daemon()
        ini = rig.pymidi()
        cli = rig.a2n.client(rig.midi2_port, ep_name="a2n-client")
        cli.wait_session()
        sysex_down(rig, cli, sysex_payload(size, 3))
        assert rig.midi2_peer()["state"] == "connected"


# ---- 2. the daemon as client of amidi2net-server --------------------------------------------

def test_client_messages_both_ways():
    with Rig() as rig:
        srv = rig.a2n.server(ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port))
        srv.wait_session()
        d.expect_log(r'session opened: "a2n-server"')
        ini = rig.pymidi()
        exchange_messages(rig, srv, ini)
        clean(srv)


def test_client_sysex_10k_both_ways():
    with Rig() as rig:
        srv = rig.a2n.server(ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port))
        srv.wait_session()
        d.expect_log(r'session opened: "a2n-server"')
        ini = rig.pymidi()
        exchange_sysex(rig, srv, ini)
        srv.expect_nothing(0.5)
        clean(srv)


def test_session_lifetime_midi2_to_midi2_through_the_hub():
    """amidi2net-client -> daemon (host) -> hub -> daemon (client) -> amidi2net-server, UMP
    both ways; idle 7 s with the server pinging every second (--liveness-timeout=1000) and
    the daemon pinging both every 5 s: both sessions stay. The server killed (it sends no
    Bye): the daemon times the session out and reconnects to a new server on the same port.
    SIGTERM: the daemon says Bye to the server."""
    with Rig() as rig:
        srv = rig.a2n.server(ep_name="a2n-server", extra=["--liveness-timeout=1000"])
        port = srv.port
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, port))
        cli = rig.a2n.client(rig.midi2_port, ep_name="a2n-client")
        srv.wait_session()
        cli.wait_session()
        d.wait_count(r'session opened: "a2n-(server|client)"', 2)
        # UMP between two MIDI 2.0 sessions: the hub carries MIDI 1.0, so a MIDI 2.0 note
        # arrives as a MIDI 1.0 one (16-bit velocity down to 7 bits).
        cli.send(midi1_note_on(0, 0, 60, 100), midi2_note_on(0, 1, 62, 0xFFFF))
        srv.expect(midi1_note_on(0, 0, 60, 100), midi1_note_on(0, 1, 62, 127))
        srv.send(midi1_note_off(0, 0, 60))
        cli.expect(midi1_note_off(0, 0, 60))
        time.sleep(7)
        assert srv.alive() and cli.alive()
        assert d.count(r"session closed") == 0, d.recent()
        rows = rig.ctl_peers()
        assert [r["state"] for r in rows] == ["connected", "connected"], rows
        cli.send(midi1_note_on(0, 0, 61, 1))
        srv.expect(midi1_note_on(0, 0, 61, 1))

        t0 = time.monotonic()
        srv.stop()
        d.expect_log(r"session closed: a2n-server: Timeout", timeout=SLOW)
        srv2 = rig.a2n.server(port=port, ep_name="a2n-server2")
        srv2.wait_session(timeout=SLOW)
        d.expect_log(r'session opened: "a2n-server2"')
        print("  server gone: timed out and reconnected in %.1f s" % (time.monotonic() - t0))
        cli.send(midi1_note_on(0, 0, 62, 2))
        srv2.expect(midi1_note_on(0, 0, 62, 2))
        assert d.stop() == 0
        srv2.wait_log(r"received bye message")
        cli.wait_log(r"received bye message")
        assert not srv2.errors() and not cli.errors(), (srv2.errors(), cli.errors())


def test_ipv6_host_and_ctl_connect():
    """On ::1: amidi2net-client --ipv6 to the daemon's host, and `ctl connect midi2://[::1]:P`
    to amidi2net-server --ipv6; UMP both ways between them through the hub."""
    with Rig() as rig:
        midi2 = a2nlib.free_udp_port("::1")
        conf = os.path.join(rig.tmp, "rtpmidid.conf")
        open(conf, "w").close()
        control = os.path.join(rig.tmp, "control.sock")
        d = rig.daemons.start(free_port_pair("::1"), name="hub6", host="::1",
                              args=["--hub", "--midi2-port", str(midi2), "-c", conf,
                                    "--control", control])
        d.expect_log(r"\(MIDI 2\.0\) listening on \[::1\]:%d" % midi2)
        srv = rig.a2n.server(ipv6=True, ep_name="srv6")
        cli = rig.a2n.client(midi2, host="::1", ipv6=True, ep_name="cli6")
        cli.wait_session()
        d.expect_log(r'session opened: "cli6" at \[::1\]:')
        out = subprocess.run([d.argv[0], "ctl", "--control", control, "connect",
                              "midi2://[::1]:%d" % srv.port], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=10)
        assert out.returncode == 0, out.stdout
        srv.wait_session()
        d.expect_log(r'session opened: "srv6" at \[::1\]:%d' % srv.port)
        cli.send(midi1_note_on(0, 0, 1, 1))
        srv.expect(midi1_note_on(0, 0, 1, 1))
        srv.send(midi1_note_on(0, 0, 2, 1))
        cli.expect(midi1_note_on(0, 0, 2, 1))
        clean(srv, cli)


def test_node_rtpmidi_through_the_hub_to_amidi2net_server():
    """The other RTP-MIDI implementation: node-rtpmidi listening, the daemon connecting to it
    and to amidi2net-server (`-C` both), notes, controllers and pitch bend both ways."""
    with Rig() as rig:
        node_port = free_port_pair()
        node = rig.peers.node_peer("listen", node_port, name="nodelisten")
        node.expect("ready")
        srv = rig.a2n.server(ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port),
                       extra=["-C", "%s:%d" % (LOCAL, node_port)])
        srv.wait_session()
        d.expect_log(r'session opened: "nodelisten"', timeout=SLOW)
        node.expect("send-ready", timeout=SLOW)
        srv.send(midi1_note_on(0, 0, 60, 100), (0x20B00750,), (0x20E00040,),
                 midi2_note_on(0, 1, 62, 0xFFFF), midi1_note_off(0, 0, 60))
        want = ["90 3c 64", "b0 07 50", "e0 00 40", "91 3e 7f", "80 3c 00"]
        assert node.expect_midi(len(want), timeout=SLOW) == want
        for m in ("90 40 7f", "b3 01 02", "e5 10 20", "80 40 00"):
            node.send(m)
        srv.expect(midi1_note_on(0, 0, 64, 127), (0x20B30102,), (0x20E51020,),
                   midi1_note_off(0, 0, 64), timeout=SLOW)
        srv.expect_nothing(0.5)
        node.stop()
        assert [e["bytes"] for e in node.events("midi")] == want
        assert not node.problems(), node.problems()
        clean(srv)


# ---- 3. authentication ----------------------------------------------------------------------

def _notes_through(rig, a2n, ini):
    a2n.send(midi1_note_on(0, 0, 61, 1))
    assert ini.expect_midi(1, SLOW) == ["90 3d 01"]
    rig.rtp_send("80 3d 00")
    a2n.expect(midi1_note_off(0, 0, 61))


def _authenticated_notes_through(rig, d, ini, **credentials):
    """A client "good" with CREDENTIALS, refused at first without them, is let in by the
    daemon D; notes pass between it and the RTP-MIDI peer INI."""
    cli = rig.a2n.client(rig.midi2_port, ep_name="good", **credentials)
    cli.wait_session()
    cli.wait_log(r"retry invitation with (user-)?auth", since_start=True)
    d.expect_log(r'session opened: "good"')
    _notes_through(rig, cli, ini)
    clean(cli)


def test_host_shared_secret():
    with Rig() as rig:
        d = rig.daemon(conf="[midi2]\nsecret = s3cret\n")
        ini = rig.pymidi()
        bad = rig.a2n.client(rig.midi2_port, secret="wrong", ep_name="bad",
                             extra=["--invitation-timeout=300"])
        assert bad.wait_exit(15) != 0
        bad.wait_log(r"Invalid auth", since_start=True)
        assert d.count(r'session opened: "bad"') == 0
        _authenticated_notes_through(rig, d, ini, secret="s3cret")


def test_host_user_password():
    with Rig() as rig:
        d = rig.daemon(conf="[midi2]\nusers = alice:pw1, bob:pw2\n")
        ini = rig.pymidi()
        for user, pw in (("alice", "nope"), ("mallory", "pw1")):
            bad = rig.a2n.client(rig.midi2_port, user=user, secret=pw, ep_name="bad",
                                 extra=["--invitation-timeout=300"])
            assert bad.wait_exit(15) != 0
            bad.wait_log(r"Invalid user auth", since_start=True)
        assert d.count(r'session opened: "bad"') == 0
        _authenticated_notes_through(rig, d, ini, user="bob", secret="pw2")


def test_client_shared_secret():
    with Rig() as rig:
        srv = rig.a2n.server(secret="s3cret", auth_forced=True, ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port),
                       conf="[midi2]\nsecret = s3cret\n")
        srv.wait_log(r"^auth accepted$")
        d.expect_log(r'session opened: "a2n-server"')
        ini = rig.pymidi()
        _notes_through(rig, srv, ini)
        clean(srv)


def test_client_wrong_shared_secret_refused():
    with Rig() as rig:
        srv = rig.a2n.server(secret="s3cret", auth_forced=True, ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port),
                       conf="[midi2]\nsecret = wrong\n")
        srv.wait_log(r"[Ii]nvalid|[Ii]ncorrect|digest|auth", timeout=SLOW)
        time.sleep(2)
        assert not any("accepted" in l for l in srv.log), srv.log
        assert d.count(r'session opened: "a2n-server"') == 0
        assert srv.alive()


def test_client_to_a_user_auth_server_refused():
    """A connection without a user name and password (`-C midi2://`: only [midi2] secret):
    amidi2net-server forcing user authentication answers its invitation with Bye 0x45 (no
    matching authentication method). The daemon says so and retries with back-off."""
    with Rig() as rig:
        srv = rig.a2n.server(user="alice", secret="pw", auth_forced=True, ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port),
                       conf="[midi2]\nsecret = pw\n")
        d.expect_log(r"session closed: .*Refused\(69\): authentication refused", timeout=SLOW)
        d.expect_log(r"reconnecting to 127\.0\.0\.1:%d" % srv.port)
        assert not any("accepted" in l for l in srv.log), srv.log
        assert srv.alive()


def _studio(port, **keys):
    """A [connect studio] section for amidi2net-server on PORT, with these keys besides."""
    lines = ["[connect studio]", "host = %s" % LOCAL, "port = %d" % port, "protocol = midi2"]
    return "\n".join(lines + ["%s = %s" % kv for kv in keys.items()]) + "\n"


def _no_secret_shown(rig, d, *secrets):
    """Neither the daemon's log (debug level) nor `ctl peers` shows any of SECRETS."""
    peers = repr(rig.ctl_peers())
    d.count("")  # reads the log so far
    shown = "\n".join(d.lines) + peers
    for secret in secrets:
        assert secret not in shown, "%r shown" % secret


def test_client_user_password():
    """[connect] user and password answer amidi2net-server forcing user authentication, over
    the [midi2] secret; notes pass both ways. The file (mode 644) is warned about."""
    with Rig() as rig:
        srv = rig.a2n.server(user="alice", secret="pw-alice", auth_forced=True,
                             ep_name="a2n-server")
        d = rig.daemon(conf=_studio(srv.port, user="alice", password="pw-alice")
                       + "[midi2]\nsecret = not-this-one\n")
        assert d.count(r"rtpmidid\.conf: every user can read the Network MIDI 2\.0 secrets") == 1
        srv.wait_log(r"^try user authentication$")
        srv.wait_log(r"^auth accepted$")
        d.expect_log(r'session opened: "a2n-server"')
        ini = rig.pymidi()
        _notes_through(rig, srv, ini)
        assert rig.midi2_peer()["connection"] == "studio"
        _no_secret_shown(rig, d, "pw-alice", "not-this-one")
        clean(srv)


def test_client_wrong_password_refused_with_back_off():
    """A wrong [connect] password: amidi2net-server asks again (incorrect digest), the daemon
    gives up that session with Bye and says why, then retries with a doubling back-off
    (1 s, 2 s, 4 s): at most 4 tries in 6 s, never a session."""
    with Rig() as rig:
        srv = rig.a2n.server(user="alice", secret="pw-alice", auth_forced=True,
                             ep_name="a2n-server")
        d = rig.daemon(conf=_studio(srv.port, user="alice", password="pw-wrong"))
        t0 = time.monotonic()
        d.expect_log(r"session closed: studio: AuthFailed: wrong credentials", timeout=SLOW)
        d.expect_log(r"reconnecting to 127\.0\.0\.1:%d in 1s" % srv.port)
        d.expect_log(r"reconnecting to 127\.0\.0\.1:%d in 2s" % srv.port, timeout=SLOW)
        d.expect_log(r"reconnecting to 127\.0\.0\.1:%d in 4s" % srv.port, timeout=SLOW)
        time.sleep(max(0, 6 - (time.monotonic() - t0)))
        tries = [l for l in srv.log if l == "try user authentication"]
        assert 3 <= len(tries) <= 4, srv.log
        assert not any("accepted" in l for l in srv.log), srv.log
        assert d.count(r'session opened: "a2n-server"') == 0
        _no_secret_shown(rig, d, "pw-wrong")
        assert srv.alive()


def test_host_auth_secret_named_over_users():
    """[midi2] auth = secret with users set too: the host asks for the shared secret (the
    default would be users), so a user/password client finds no method in common."""
    with Rig() as rig:
        d = rig.daemon(conf="[midi2]\nauth = secret\nsecret = s3cret\nusers = alice:pw1\n")
        ini = rig.pymidi()
        bad = rig.a2n.client(rig.midi2_port, user="alice", secret="pw1", ep_name="bad",
                             extra=["--invitation-timeout=300"])
        assert bad.wait_exit(15) != 0
        assert not any("accepted" in l for l in bad.log), bad.log
        assert d.count(r'session opened: "bad"') == 0
        _authenticated_notes_through(rig, d, ini, secret="s3cret")


def test_host_auth_none_and_a_secret_for_our_connections():
    """[midi2] auth = none with a secret: amidi2net-client gets in without authenticating,
    while the daemon's connection to amidi2net-server (forcing the shared secret) shows the
    secret; UMP passes between the two through the hub."""
    with Rig() as rig:
        srv = rig.a2n.server(secret="s3cret", auth_forced=True, ep_name="a2n-server")
        d = rig.daemon(connect="midi2://%s:%d" % (LOCAL, srv.port),
                       conf="[midi2]\nauth = none\nsecret = s3cret\n")
        srv.wait_log(r"^auth accepted$")
        cli = rig.a2n.client(rig.midi2_port, ep_name="open")
        cli.wait_session()
        d.wait_count(r'session opened: "(a2n-server|open)"', 2)
        assert not any("auth" in l for l in cli.log if not l.startswith("*")), cli.log
        cli.send(midi1_note_on(0, 0, 60, 100))
        srv.expect(midi1_note_on(0, 0, 60, 100))
        srv.send(midi1_note_off(0, 0, 60))
        cli.expect(midi1_note_off(0, 0, 60))
        clean(srv, cli)


# ---- 4. loss: FEC and retransmission ---------------------------------------------------------

class LossyRelay:
    """A UDP relay between a Network MIDI 2.0 client (which sends to .port) and a host:
    datagrams bringing new UMP Data commands (a newer sequence number than any before, with
    a payload) are counted per direction, and `drop(direction, n)` (direction "up" = client
    to host, n = that count) decides which are lost. Retransmissions pass, unless
    `drop_resends` is set: then `drop(direction, None)` decides. Everything else passes."""

    def __init__(self, host_port, drop):
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((LOCAL, 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind((LOCAL, 0))
        self.host = (LOCAL, host_port)
        self.drop = drop
        self.client = None
        self.count = {"up": 0, "down": 0}
        self.top = {"up": None, "down": None}  # newest UMP data sequence number seen
        self.drop_resends = False
        self.dropped = {"up": [], "down": []}
        self.codes = {"up": set(), "down": set()}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _commands(data):
        """[(code, payload words, bytes 2-3), ...]"""
        cmds, i = [], 4
        while i + 4 <= len(data):
            cmds.append((data[i], data[i + 1], data[i + 2] << 8 | data[i + 3]))
            i += 4 + 4 * data[i + 1]
        return cmds

    def _run(self):
        while self.running:
            r, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in r:
                data, addr = s.recvfrom(4096)
                up = s is self.front
                if up:
                    self.client = addr
                direction = "up" if up else "down"
                cmds = self._commands(data)
                self.codes[direction].update(c for c, _, _ in cmds)
                seqs = [seq for c, n, seq in cmds if c == 0xFF and n > 0]
                if seqs:
                    top = self.top[direction]
                    fresh = top is None or 0 < (seqs[-1] - top) & 0xFFFF < 0x8000
                    if fresh:
                        self.top[direction] = seqs[-1]
                        self.count[direction] += 1
                        n = self.count[direction]
                    else:
                        n = None  # a retransmission (or a stale copy)
                    if (fresh or self.drop_resends) and self.drop(direction, n):
                        if n is not None:
                            self.dropped[direction].append(n)
                        continue
                if up:
                    self.back.sendto(data, self.host)
                elif self.client:
                    self.front.sendto(data, self.client)

    def stop(self):
        self.running = False
        self.thread.join(2)
        self.front.close()
        self.back.close()


def _loss_run(drop, a2n_extra=(), notes=120):
    """Daemon host <- relay <- amidi2net-client; notes each way, one at a time (paced),
    all of them must arrive in order. Returns (rig-independent) stats."""
    with Rig() as rig:
        d = rig.daemon()
        ini = rig.pymidi()
        relay = LossyRelay(rig.midi2_port, drop)
        rig.relays.append(relay)
        cli = rig.a2n.client(relay.port, ep_name="lossy", extra=list(a2n_extra))
        cli.wait_session()
        d.expect_log(r'session opened: "lossy"')
        up = [midi1_note_on(0, 0, i % 128, 1 + i // 128) for i in range(notes)]
        for n in up:
            cli.send(n)
            time.sleep(0.01)
        want = ["90 %02x %02x" % (i % 128, 1 + i // 128) for i in range(notes)]
        got = ini.expect_midi(len(want), timeout=SLOW)
        assert got == want, [(i, a, b) for i, (a, b) in enumerate(zip(got, want)) if a != b][:5]
        for i in range(notes):
            rig.rtp_send("91 %02x %02x" % (i % 128, 1 + i // 128))
            time.sleep(0.01)
        cli.expect(*[midi1_note_on(0, 1, i % 128, 1 + i // 128) for i in range(notes)],
                   timeout=SLOW)
        cli.expect_nothing(0.5)
        time.sleep(0.3)
        assert ini.events("midi")[len(want):] == [], ini.events("midi")[len(want):]
        peer = rig.midi2_peer()
        return {"relay_dropped": dict(relay.dropped), "codes": {k: sorted("%02x" % c for c in v)
                for k, v in relay.codes.items()}, "daemon": peer, "a2n_log": list(cli.log),
                "daemon_log": list(d.lines)}


def test_fec_repairs_single_losses_both_ways():
    """1 in 7 UMP data datagrams lost each way: FEC (3 earlier commands in each datagram) must
    fill every gap without a retransmission."""
    s = _loss_run(lambda direction, n: n % 7 == 3)
    assert len(s["relay_dropped"]["up"]) >= 10 and len(s["relay_dropped"]["down"]) >= 10, s
    assert s["daemon"]["lost"] == 0, s["daemon"]
    # FEC does the work: no retransmit request from the daemon, and (nearly) none from
    # amidi2net. (Once in ~20 runs here, under load, amidi2net asked once; the daemon
    # answered it.) The daemon's repair count stays 0: a FEC copy arrives before the gap is
    # ever seen.
    assert "80" not in s["codes"]["down"], s["codes"]
    asked = [l for l in s["a2n_log"] if "retransmit request" in l]
    assert len(asked) <= 2, asked


def test_amidi2net_fail_test_mode_repaired_by_daemon():
    """amidi2net's own drop simulation (--fail-test=10 --fail-test-mode=0: 1 in 10 sent
    datagrams not sent): the daemon must repair each gap from FEC."""
    s = _loss_run(lambda direction, n: False, a2n_extra=["--fail-test=10", "--fail-test-mode=0"])
    assert any("simulate packet drop" in l for l in s["a2n_log"]), s["a2n_log"][-10:]
    assert s["daemon"]["lost"] == 0, s["daemon"]
    assert "80" not in s["codes"]["down"], s["codes"]


def _burst(direction_wanted):
    # Bursts of 5 (> FEC count 3 + 1) consecutive UMP data datagrams lost: FEC cannot fill
    # the gap; the receiver must ask for a retransmission (command 0x80).
    return lambda direction, n: direction == direction_wanted and n % 30 in (10, 11, 12, 13, 14)


def test_retransmit_daemon_to_amidi2net():
    s = _loss_run(_burst("down"))
    assert len(s["relay_dropped"]["down"]) >= 10, s["relay_dropped"]
    assert "80" in s["codes"]["up"], ("amidi2net never asked for a retransmission", s["codes"])
    assert any("retransmit request" in l for l in s["a2n_log"]), s["a2n_log"][-10:]
    assert not any("eset" in l for l in s["a2n_log"]), s["a2n_log"][-10:]


def test_retransmit_amidi2net_to_daemon():
    s = _loss_run(_burst("up"))
    assert len(s["relay_dropped"]["up"]) >= 10, s["relay_dropped"]
    assert "80" in s["codes"]["down"], ("the daemon never asked for a retransmission", s["codes"])
    assert any(l.startswith("retransmit requested") for l in s["a2n_log"]), s["a2n_log"][-10:]
    # Each burst: 5 datagrams lost, FEC fills 3, the retransmission the other 2.
    assert s["daemon"]["lost"] == 0 and s["daemon"]["journal_repairs"] >= 2, s["daemon"]


def _lossy_sysex(drop):
    with Rig() as rig:
        rig.daemon()
        ini = rig.pymidi()
        relay = LossyRelay(rig.midi2_port, drop)
        rig.relays.append(relay)
        cli = rig.a2n.client(relay.port, ep_name="lossy")
        cli.wait_session()
        exchange_sysex(rig, cli, ini)
        cli.expect_nothing(0.3)
        return relay, rig.midi2_peer(), [l for l in cli.log if not l.startswith("*")]


def test_sysex_10k_to_amidi2net_with_losses():
    """The daemon sends a 10 kB SysEx as 1707 UMP data commands in ~15 datagrams at once:
    FEC (3 commands) cannot cover a lost datagram of 116 commands, a retransmission must.
    Single losses both ways (1 datagram in 7), from amidi2net only the SysEx direction
    matters here: its single-UMP datagrams are repaired by FEC. (With the daemon keeping 256
    commands for retransmission this failed: the note after the SysEx evicted it, amidi2net
    got a Retransmit Error and reset the session.)"""
    relay, peer, a2n_log = _lossy_sysex(lambda direction, n: n % 7 == 3)
    assert relay.dropped["down"] and len(relay.dropped["up"]) > 100, relay.dropped
    assert 0x80 in relay.codes["up"], "amidi2net never asked for a retransmission"
    assert 0x81 not in relay.codes["down"], "the daemon answered a Retransmit Error"
    assert not any("reset" in l for l in a2n_log), a2n_log[-8:]
    assert peer["lost"] == 0, peer


def test_sysex_10k_to_amidi2net_with_a_burst_lost():
    relay, peer, a2n_log = _lossy_sysex(lambda direction, n: direction == "down" and
                                        n in (4, 5, 6, 7, 8))
    assert relay.dropped["down"] == [4, 5, 6, 7, 8], relay.dropped
    assert 0x80 in relay.codes["up"] and 0x81 not in relay.codes["down"], relay.codes
    assert not any("reset" in l for l in a2n_log), a2n_log[-8:]


def test_sysex_10k_from_amidi2net_with_bursts_lost():
    """amidi2net's 1707 single-UMP datagrams (paced 16 per 2 ms), 5 in a row lost every 30:
    FEC fills 3, a retransmission the rest. amidi2net keeps only its last 64 commands, so
    the daemon must ask at once (it used to wait 30 ms, got Retransmit Errors, reset the
    session and lost 110 UMPs: the SysEx never arrived). Retransmissions are not dropped: a
    lost one is asked for again after 100 ms, long after amidi2net forgot it (Retransmit
    Error, session reset, the SysEx lost)."""
    # amidi2net forgets a datagram about 8 ms after sending it: on a loaded machine the
    # daemon's request can come later than that (seen once in CI-like runs). Three tries.
    failures = []
    for _ in range(3):
        try:
            relay, peer, a2n_log = _lossy_sysex(lambda direction, n: direction == "up" and
                                                n % 30 in (10, 11, 12, 13, 14))
            assert len(relay.dropped["up"]) > 250, relay.dropped
            assert 0x80 in relay.codes["down"] and 0x81 not in relay.codes["up"], relay.codes
            assert 0x82 not in relay.codes["down"], "the daemon reset the session"
            assert peer["lost"] == 0 and peer["journal_repairs"] >= 50, peer
            return
        except (AssertionError, IndexError) as e:
            failures.append(repr(e)[:300])
    raise AssertionError("three tries failed: %s" % failures)


def test_session_reset_both_ways():
    """Losses no retransmission can repair end in a Session Reset, after which the stream goes
    on. Down: every data datagram to amidi2net is lost until amidi2net gives up (its
    retransmit requests answered, the answers lost too) and sends Session Reset; the daemon
    replies and the notes after it arrive. Up: 80 datagrams from amidi2net in a row lost,
    more than the 64 it keeps: the daemon's request gets a Retransmit Error, it resets, and
    the notes after it arrive."""
    state = {"down": False, "up": range(0)}
    relay = None

    def drop(direction, n):
        if direction == "down":
            return state["down"] and 0x82 not in relay.codes["up"]
        return n in state["up"]

    with Rig() as rig:
        d = rig.daemon()
        ini = rig.pymidi()
        relay = LossyRelay(rig.midi2_port, drop)
        relay.drop_resends = True
        rig.relays.append(relay)
        cli = rig.a2n.client(relay.port, ep_name="lossy")
        cli.wait_session()
        note = lambda i: midi1_note_on(0, 1, i, 1)  # noqa: E731

        def down(i):
            rig.rtp_send("91 %02x 01" % i)
            time.sleep(0.01)

        for i in range(10):
            down(i)
        cli.expect(*[note(i) for i in range(10)])
        state["down"] = True
        for i in range(10, 20):
            down(i)
        deadline = time.monotonic() + SLOW
        while 0x82 not in relay.codes["up"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0x82 in relay.codes["up"], ("amidi2net never reset", relay.codes)
        time.sleep(0.2)
        assert 0x83 in relay.codes["down"], ("no Session Reset Reply", relay.codes)
        for i in range(20, 30):
            down(i)
        cli.expect(*[note(i) for i in range(20, 30)])
        cli.expect_nothing(0.3)

        n0 = relay.count["up"]
        state["up"] = range(n0 + 11, n0 + 91)
        for i in range(100):
            cli.send(midi1_note_on(0, 2, i, 1))
            time.sleep(0.01)
        got = []
        deadline = time.monotonic() + SLOW
        while "92 63 01" not in got and time.monotonic() < deadline:
            got += [e["bytes"] for e in ini.events("midi")[len(got):]]
            time.sleep(0.05)
        want = ["92 %02x 01" % i for i in range(100)]
        assert got[:10] == want[:10] and got[-10:] == want[-10:], got
        assert all(g in want for g in got) and got == sorted(got), got
        assert 0x81 in relay.codes["up"] and 0x82 in relay.codes["down"], relay.codes
        assert 0x83 in relay.codes["up"], relay.codes
        assert rig.midi2_peer()["lost"] >= 70, rig.midi2_peer()
        assert d.count(r"session closed") == 0
        clean(cli)


# ---- 6. Wireshark ----------------------------------------------------------------------------

def test_tshark_has_no_network_midi2_dissector():
    """Wireshark (tshark 4.0 here) dissects AppleMIDI and RTP-MIDI, not Network MIDI 2.0:
    nothing to check at the wire level with it. Fails once a dissector appears, so that a
    capture check gets written then."""
    try:
        out = subprocess.run(["tshark", "-G", "protocols"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return  # no tshark: nothing to say
    names = [l for l in out.splitlines() if "midi" in l.lower()]
    midi2 = [l for l in names if "2.0" in l or "ump" in l.lower() or "midi2" in l.lower()]
    assert not midi2, "tshark has a MIDI 2.0 dissector now, write the capture check: %s" % midi2


def _tshark(*args):
    return subprocess.run(["tshark", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, timeout=120).stdout


def test_tshark_capture_of_a_bridged_session():
    """A loopback capture of test 1's traffic (notes, controllers, bend, 10 kB SysEx both
    ways): the RTP-MIDI leg decodes as AppleMIDI/RTP-MIDI with no malformed packet or expert
    error; the Network MIDI 2.0 leg is only UDP data to tshark (no dissector). Skipped (passes)
    without tshark or without the right to capture."""
    try:
        subprocess.run(["tshark", "-v"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        print("  no tshark: skipped")
        return
    with tempfile.TemporaryDirectory(prefix="rtpmidid-a2n-pcap-") as capdir:
        _capture_and_check(os.path.join(capdir, "session.pcap"))


def _capture_and_check(pcap):
    with Rig() as rig:
        d = rig.daemon()
        rtp, m2 = rig.rtp_port, rig.midi2_port
        cap = subprocess.Popen(["tshark", "-i", "lo", "-n", "-q", "-w", pcap, "-f",
                                "udp port %d or udp port %d or udp port %d" % (rtp, rtp + 1, m2)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            started = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = cap.stderr.readline()
                if not line:
                    break
                if "Capturing on" in line:
                    started = True
                    break
            if not started:
                print("  tshark cannot capture on lo: skipped")
                return
            time.sleep(0.5)
            ini = rig.pymidi()
            cli = rig.a2n.client(m2, ep_name="a2n-client")
            cli.wait_session()
            d.expect_log(r'session opened: "a2n-client"')
            exchange_messages(rig, cli, ini)
            exchange_sysex(rig, cli, ini)
            time.sleep(0.5)
        finally:
            cap.terminate()
            cap.wait(10)
    opts = ["-n", "-r", pcap, "-o", "rtp.heuristic_rtp:FALSE", "-o",
            "udp.try_heuristic_first:TRUE", "-d", "udp.port==%d,rtp" % rtp,
            "-d", "udp.port==%d,rtp" % (rtp + 1), "-d", "rtp.pt==97,rtpmidi"]
    frames = _tshark(*opts, "-T", "fields", "-e", "frame.number", "-e", "udp.port",
                     "-e", "frame.protocols").splitlines()
    legs = {"rtp": [], "midi2": []}
    for f in frames:
        num, ports, protos = f.split("\t")
        legs["midi2" if str(m2) in ports.split(",") else "rtp"].append(protos)
    assert any("applemidi" in p for p in legs["rtp"]), legs["rtp"][:5]
    assert sum("rtpmidi" in p for p in legs["rtp"]) >= 20, legs["rtp"][:5]
    # Only the RTP-MIDI leg: the Network MIDI 2.0 port is random, and some port-registered
    # dissector may take (and mis-read) those datagrams.
    bad = _tshark(*opts, "-Y", '(_ws.malformed || _ws.expert.severity >= "error") && '
                  '(udp.port == %d || udp.port == %d)' % (rtp, rtp + 1),
                  "-T", "fields", "-e", "frame.number", "-e", "frame.protocols").splitlines()
    assert not bad, "malformed or expert errors: %s" % bad[:10]
    assert len(legs["midi2"]) >= 20, len(legs["midi2"])
    undissected = [p for p in legs["midi2"] if p.endswith(":udp:data") or p.endswith(":udp")]
    print("  %d RTP-MIDI frames clean; %d Network MIDI 2.0 frames, %d of them only UDP data%s"
          % (len(legs["rtp"]), len(legs["midi2"]), len(undissected),
             "" if len(undissected) == len(legs["midi2"])
             else " (others: %s)" % sorted(set(legs["midi2"]) - set(undissected))[:3]))


if __name__ == "__main__":
    sys.exit(a2nlib.run_tests(globals(), sys.argv[1:]))
