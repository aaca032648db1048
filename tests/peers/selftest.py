#!/usr/bin/env python3
"""The test peers against each other on loopback (127.0.0.1, ::1), without rtpmidid.

Run: tests/peers/setup.sh && tests/peers/venv/bin/python tests/peers/selftest.py [-k NAME]

Each pair case connects an initiator to a listener, sends MIDI both ways,
stops the initiator (BY) and then the listener, and asserts that each side
received exactly what the other sent, in order, and no error, malformed or
dropped event. The quirk cases pin down behaviour of the third-party peers
that rtpmidid's tests must live with. Ends with the line `N passed, M failed`.
"""

import argparse
import sys
import time
import traceback

from midiwire import parse_hex, split_midi, to_hex
from peerlib import PeerGroup, free_port_pair

# What pymidi understands: note on/off, control change, poly pressure.
# "90 41 40 42 40" is two notes in running status (sent with it by node-rtpmidi);
# the chord is a command list longer than 15 bytes (B=1, RFC 6295 3.1).
CHORD = " ".join("90 %02x 40" % k for k in range(0x30, 0x36))
PYMIDI_SAFE = ["90 3c 64", "80 3c 00", "90 40 50", "b0 07 64", "a0 40 20", "80 40 00",
               "90 41 40 42 40", "80 41 00 80 42 00", CHORD, CHORD.replace("90", "80")]
# For peers that parse every command; each string is one `send` line (one packet).
FULL = PYMIDI_SAFE + ["c0 05", "e0 00 40", "d0 33", "90 43 60 80 43 00", "f0 7d 01 02 f7"]


def split_commands(lines):
    """The commands as the receiver reports them: one per command, not per line."""
    return [to_hex(c) for line in lines for c in split_midi(parse_hex(line))]


def exchange(initiator, listener, initiator_name, to_listener, to_initiator):
    """Send both ways once both sides can; stop both; check what each got.

    Returns the time both sides could send."""
    initiator.expect("send-ready")
    listener.expect("send-ready")
    ready_at = time.monotonic()
    for line in to_listener:
        initiator.send(line)
    for line in to_initiator:
        listener.send(line)
    want_l = split_commands(to_listener)
    want_i = split_commands(to_initiator)
    got_l = listener.expect_midi(len(want_l))
    got_i = initiator.expect_midi(len(want_i))
    assert got_l == want_l, "listener got %r, want %r" % (got_l, want_l)
    assert got_i == want_i, "initiator got %r, want %r" % (got_i, want_i)
    initiator.stop()
    listener.expect("disconnected", name=initiator_name)
    listener.stop()
    for peer, want in ((listener, want_l), (initiator, want_i)):
        got = [e["bytes"] for e in peer.events("midi")]
        assert got == want, "%s: all midi %r, want %r" % (peer.label, got, want)
        assert not peer.problems(), "%s: %r" % (peer.label, peer.problems())
    return ready_at


def run_pair(listener_kind, initiator_kind, host="127.0.0.1"):
    """Start a listener and an initiator of the given kinds on host, then exchange."""
    with PeerGroup() as peers:
        port = free_port_pair(host)
        if listener_kind == "pymidi":
            # node-rtpmidi keys its stream by the SSRC of the control OK and drops
            # pymidi's CK answer, which comes from the data socket's other SSRC.
            lst = peers.pymidi_listener(port, name="py-lst", host=host,
                                        same_ssrc=initiator_kind == "node")
            ready = lst.expect("ready")
            if initiator_kind != "node":
                assert ready["ssrc"] != ready["data_ssrc"]  # pymidi as it is
        else:
            lst = peers.node_peer("listen", port, name="node-lst", host=host)
            lst.expect("ready")
        target = (host, port)
        if initiator_kind == "pymidi":
            ini = peers.pymidi_initiator(target, name="py-ini", host=host)
        else:
            ini = peers.node_peer("connect", free_port_pair(host), target=target,
                                  name="node-ini", host=host)
        lst_name = "py-lst" if listener_kind == "pymidi" else "node-lst"
        ini_name = "py-ini" if initiator_kind == "pymidi" else "node-ini"
        assert ini.expect("connected")["name"] == lst_name
        assert lst.expect("connected")["name"] == ini_name
        to_listener = PYMIDI_SAFE if listener_kind == "pymidi" else FULL
        return exchange(ini, lst, ini_name, to_listener, FULL)


def quirk_node_drops_pymidi_ck():
    """pymidi answers CK from its data SSRC, which node-rtpmidi does not know."""
    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.pymidi_listener(port)
        ready = lst.expect("ready")
        ini = peers.node_peer("connect", free_port_pair(), target=("127.0.0.1", port))
        drop = ini.expect("dropped", command="synchronization")
        assert drop["ssrc"] == ready["data_ssrc"], drop
        assert not ini.events("send-ready")


def quirk_pymidi_journal_s_bit():
    """pymidi reads journal bit S as 'system journal present': S=1 packets fail."""
    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.pymidi_listener(port)
        lst.expect("ready")
        ini = peers.pymidi_initiator(("127.0.0.1", port))
        ini.expect("send-ready")
        lst.expect("send-ready")
        ssrc = ini.events("ready")[0]["ssrc"]
        # RTP header, command section J=1 LEN=3 "90 3c 64", journal header S=1 A=1
        # TOTCHAN=0, checkpoint 1, channel 0 journal (LEN 6) with chapter C: CC 7 = 100.
        packet = "80 e1 00 02 00 00 00 00 %08x 43 90 3c 64 a0 00 01 00 06 40 00 07 64" % ssrc
        s0 = packet.replace(" a0 00 01", " 20 00 01")  # the same with S=0
        for p in (packet, s0):
            ini.send_line("raw data " + p.replace(" ", ""))
        assert "journal" in lst.expect("malformed")["error"]
        assert lst.expect_midi(1) == ["90 3c 64"]  # the S=0 copy


def quirk_node_ignores_lone_one_byte_command():
    """A command list of one 1-byte command (F8 alone) is skipped by node-rtpmidi."""
    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.node_peer("listen", port)
        lst.expect("ready")
        ini = peers.pymidi_initiator(("127.0.0.1", port))
        ini.expect("send-ready")
        lst.expect("send-ready")
        ini.send("f8")
        ini.send("90 3c 64 f8")
        assert lst.expect_midi(2) == ["90 3c 64", "f8"]
        ini.stop()
        lst.stop()
        assert [e["bytes"] for e in lst.events("midi")] == ["90 3c 64", "f8"]


CASES = [
    ("node_initiator_to_pymidi", lambda: run_pair("pymidi", "node")),
    ("pymidi_initiator_to_node", lambda: run_pair("node", "pymidi")),
    ("node_to_node", lambda: run_pair("node", "node")),
    ("pymidi_initiator_to_pymidi", lambda: run_pair("pymidi", "pymidi")),
    ("node_initiator_to_pymidi_ipv6", lambda: run_pair("pymidi", "node", "::1")),
    ("pymidi_initiator_to_node_ipv6", lambda: run_pair("node", "pymidi", "::1")),
    ("quirk_node_drops_pymidi_ck", quirk_node_drops_pymidi_ck),
    ("quirk_pymidi_journal_s_bit", quirk_pymidi_journal_s_bit),
    ("quirk_node_ignores_lone_one_byte_command", quirk_node_ignores_lone_one_byte_command),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="run the cases whose name contains this")
    args = ap.parse_args()
    passed = failed = 0
    for name, case in CASES:
        if args.k not in name:
            continue
        t0 = time.monotonic()
        try:
            ready_at = case()
        except Exception:
            failed += 1
            print("FAILED %s (%.1f s)" % (name, time.monotonic() - t0))
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            ready = ", send-ready after %.1f s" % (ready_at - t0) if ready_at else ""
            print("PASSED %s (%.1f s%s)" % (name, time.monotonic() - t0, ready))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
