#!/usr/bin/env python3
"""The test peers against each other on 127.0.0.1, without rtpmidid.

Run: tests/peers/setup.sh && tests/peers/venv/bin/python tests/peers/selftest.py [-k NAME]

Each case connects an initiator to a listener, sends MIDI both ways, stops
the initiator (BY) and then the listener, and asserts that each side received
exactly what the other sent, in order, and no error, malformed or dropped
event. Ends with the line `N passed, M failed`.
"""

import argparse
import sys
import time
import traceback

from peerlib import PeerGroup, free_port_pair

# What pymidi understands: note on/off, control change, poly pressure.
PYMIDI_SAFE = ["90 3c 64", "80 3c 00", "90 40 50", "b0 07 64", "a0 40 20", "80 40 00"]
# For peers that parse every command; each string is one `send` line (one packet).
FULL = PYMIDI_SAFE + ["c0 05", "e0 00 40", "d0 33", "90 43 60 80 43 00", "f0 7d 01 02 f7"]
BAD_EVENTS = ("malformed", "dropped", "error", "non-json", "rejected", "timeout")


def split_commands(lines):
    """The commands as the receiver reports them: one per command, not per line."""
    from midiwire import parse_hex, split_midi, to_hex

    return [to_hex(c) for line in lines for c in split_midi(parse_hex(line))]


def exchange(initiator, listener, to_listener, to_initiator):
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
    listener.expect("disconnected")
    listener.stop()
    for peer, want in ((listener, want_l), (initiator, want_i)):
        got = [e["bytes"] for e in peer.events("midi")]
        assert got == want, "%s: all midi %r, want %r" % (peer.label, got, want)
        bad = [e for e in peer.events() if e["event"] in BAD_EVENTS]
        assert not bad, "%s: unexpected events %r" % (peer.label, bad)
    return ready_at


def case_node_initiator_to_pymidi():
    with PeerGroup() as peers:
        port = free_port_pair()
        # node-rtpmidi keys the stream by the SSRC of the control OK and drops
        # pymidi's CK answer from the data socket's other SSRC: equalise them.
        lst = peers.pymidi_listener(port, same_ssrc=True)
        lst.expect("ready")
        ini = peers.node_peer("connect", free_port_pair(), target=("127.0.0.1", port),
                              name="node-ini")
        assert ini.expect("connected")["name"] == "pymidi"
        assert lst.expect("connected")["name"] == "node-ini"
        return exchange(ini, lst, PYMIDI_SAFE, FULL)


def case_pymidi_initiator_to_node():
    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.node_peer("listen", port, name="node-lst")
        lst.expect("ready")
        ini = peers.pymidi_initiator(("127.0.0.1", port), name="py-ini")
        assert ini.expect("connected")["name"] == "node-lst"
        assert lst.expect("connected")["name"] == "py-ini"
        return exchange(ini, lst, FULL, FULL)


def case_node_to_node():
    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.node_peer("listen", port, name="node-lst")
        lst.expect("ready")
        ini = peers.node_peer("connect", free_port_pair(), target=("127.0.0.1", port),
                              name="node-ini")
        assert ini.expect("connected")["name"] == "node-lst"
        assert lst.expect("connected")["name"] == "node-ini"
        return exchange(ini, lst, FULL, FULL)


def case_pymidi_initiator_to_pymidi():
    """pymidi as it is (two SSRCs); our initiator keys by token, so it works."""
    with PeerGroup() as peers:
        port = free_port_pair()
        lst = peers.pymidi_listener(port)
        ready = lst.expect("ready")
        assert ready["ssrc"] != ready["data_ssrc"]
        ini = peers.pymidi_initiator(("127.0.0.1", port), name="py-ini")
        assert ini.expect("connected")["name"] == "pymidi"
        assert lst.expect("connected")["name"] == "py-ini"
        return exchange(ini, lst, PYMIDI_SAFE, FULL)


CASES = [
    case_node_initiator_to_pymidi,
    case_pymidi_initiator_to_node,
    case_node_to_node,
    case_pymidi_initiator_to_pymidi,
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="run the cases whose name contains this")
    args = ap.parse_args()
    passed = failed = 0
    for case in CASES:
        name = case.__name__[len("case_"):]
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
            print("PASSED %s (%.1f s, send-ready after %.1f s)"
                  % (name, time.monotonic() - t0, ready_at - t0))
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
