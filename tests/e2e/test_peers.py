"""rtpmidid against third-party RTP-MIDI implementations on loopback (pymidi, node-rtpmidi).

Run with the peers' venv: tests/peers/venv/bin/python -m pytest tests/e2e
"""

import os
import signal
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "peers"))

from daemonlib import Daemons  # noqa: E402
from peerlib import PeerGroup, free_port_pair  # noqa: E402

LOCAL = "127.0.0.1"
# node-rtpmidi needs ~3 s after connecting before it can send; every wait is generous.
SLOW = 30

NOTES = ["90 3c 64", "b0 07 50", "80 3c 00", "90 40 7f", "a0 40 20", "80 40 00"]


@pytest.fixture
def peers():
    with PeerGroup() as group:
        yield group


@pytest.fixture
def daemons():
    with Daemons() as group:
        yield group


def send_all(peer, notes):
    for n in notes:
        peer.send(n)


def assert_received_exactly(peer, notes):
    """The peer got these MIDI commands in this order, and nothing else so far."""
    got = peer.expect_midi(len(notes), timeout=SLOW)
    assert got == notes
    assert not peer.problems(), peer.problems()


def test_node_initiator_through_hub_to_pymidi_listener_and_back(peers, daemons):
    py_port = free_port_pair()
    listener = peers.pymidi_listener(py_port, name="pylisten")
    listener.expect("ready")
    hub_port = free_port_pair()
    hub = daemons.start(hub_port, name="hub", args=["--hub", "-C", "%s:%d" % (LOCAL, py_port)])
    hub.expect_log(r'session opened: "pylisten"')
    node = peers.node_peer("connect", free_port_pair(), target=(LOCAL, hub_port), name="nodeini")
    hub.expect_log(r'session opened: "nodeini"', timeout=SLOW)
    node.expect("send-ready", timeout=SLOW)

    send_all(node, NOTES)
    assert_received_exactly(listener, NOTES)

    back = ["90 30 40", "80 30 00"]
    send_all(listener, back)
    assert_received_exactly(node, back)

    # Nothing else arrives on either side, and nothing echoes to its sender.
    node.stop()
    listener.stop()
    assert [e["bytes"] for e in listener.events("midi")] == NOTES
    assert [e["bytes"] for e in node.events("midi")] == back
    assert hub.stop() == 0


def test_connect_to_node_listener(peers, daemons):
    node_port = free_port_pair()
    node = peers.node_peer("listen", node_port, name="nodelisten")
    node.expect("ready")
    hub_port = free_port_pair()
    hub = daemons.start(hub_port, name="hub", args=["--hub", "-C", "%s:%d" % (LOCAL, node_port)])
    hub.expect_log(r'session opened: "nodelisten"')
    node.expect("send-ready", timeout=SLOW)
    initiator = peers.pymidi_initiator((LOCAL, hub_port), name="pyini")
    hub.expect_log(r'session opened: "pyini"')
    initiator.expect("send-ready")

    send_all(initiator, NOTES)
    assert_received_exactly(node, NOTES)
    send_all(node, NOTES[:2])
    assert_received_exactly(initiator, NOTES[:2])
    initiator.stop()
    node.stop()
    assert [e["bytes"] for e in node.events("midi")] == NOTES
    assert hub.stop() == 0


def test_two_daemons_in_a_chain(peers, daemons):
    a_port = free_port_pair()
    a = daemons.start(a_port, name="A", args=["--hub"])
    a.expect_log(r"listening on")
    b_port = free_port_pair()
    b = daemons.start(b_port, name="B", args=["--hub", "-C", "%s:%d" % (LOCAL, a_port)])
    a.expect_log(r'session opened: "B"')
    b.expect_log(r'session opened: "A"')
    source = peers.pymidi_initiator((LOCAL, b_port), name="source")
    sink = peers.pymidi_initiator((LOCAL, a_port), name="sink")
    source.expect("send-ready")
    sink.expect("send-ready")
    b.expect_log(r'session opened: "source"')
    a.expect_log(r'session opened: "sink"')

    send_all(source, NOTES)
    assert_received_exactly(sink, NOTES)
    send_all(sink, NOTES[::-1])
    assert_received_exactly(source, NOTES[::-1])
    source.stop()
    sink.stop()
    assert [e["bytes"] for e in sink.events("midi")] == NOTES
    assert [e["bytes"] for e in source.events("midi")] == NOTES[::-1]
    assert b.stop() == 0
    assert a.stop() == 0


GARBAGE = [b"", b"\xff", b"\xff\xffIN\x00", b"\xff\xffCK" + b"\x00" * 3, b"\x80\x61\x00",
           b"\x80\x61\x00\x01\x00\x00\x00\x00\x12\x34\x56\x78\xf0\xff",
           b"\xff\xffBY\x00\x00\x00\x02", bytes(range(256)) * 3]


def test_garbage_and_floods_do_not_stall_other_sessions(peers, daemons):
    hub_port = free_port_pair()
    hub = daemons.start(hub_port, name="hub", args=["--hub"])
    one = peers.pymidi_initiator((LOCAL, hub_port), name="one")
    two = peers.pymidi_initiator((LOCAL, hub_port), name="two")
    one.expect("send-ready")
    two.expect("send-ready")
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Garbage interleaved with real MIDI, in bursts the kernel's socket buffer holds: every
        # note must come through, in order.
        notes = ["90 %02x 40" % k for k in range(40)]
        for k, note in enumerate(notes):
            for i in range(100):
                flooder.sendto(GARBAGE[(k + i) % len(GARBAGE)], (LOCAL, hub_port + (i % 2)))
            one.send(note)
        assert_received_exactly(two, notes)

        # A blast far beyond what the socket buffer holds: the kernel drops some of it (and
        # maybe a note sent meanwhile), but the sessions must work as soon as it is over.
        for i in range(30000):
            flooder.sendto(GARBAGE[i % len(GARBAGE)], (LOCAL, hub_port + (i % 2)))
    finally:
        flooder.close()
    # A session peer can send junk too, on its own sockets.
    one.send_line("raw data 80610001000000000000000000 50")
    probe = "90 7f 01"
    deadline = time.monotonic() + SLOW
    while not any(e["bytes"] == probe for e in two.events("midi")):
        assert time.monotonic() < deadline, "the hub stalled after the flood"
        one.send(probe)
        try:
            two.expect("midi", timeout=0.5, bytes=probe)
        except AssertionError:
            pass
    send_all(one, NOTES)
    got = [b for b in two.expect_midi(len(NOTES), timeout=SLOW) if b != probe]
    while len(got) < len(NOTES):
        got += [b for b in two.expect_midi(1, timeout=SLOW) if b != probe]
    assert got == NOTES
    hub.expect_log(r"WARN .*dropped \d+ datagram")
    assert hub.proc.poll() is None
    one.stop()
    two.stop()
    assert hub.stop() == 0


def test_reconnects_after_the_listener_restarts_without_a_duplicate(peers, daemons):
    py_port = free_port_pair()
    listener = peers.pymidi_listener(py_port, name="pylisten")
    listener.expect("ready")
    hub_port = free_port_pair()
    hub = daemons.start(hub_port, name="hub", args=["--hub", "-C", "%s:%d" % (LOCAL, py_port)])
    hub.expect_log(r'session opened: "pylisten"')
    listener.kill()  # gone without BY

    listener = peers.pymidi_listener(py_port, name="pylisten")
    listener.expect("ready")
    hub.expect_log(r'session closed: pylisten: Timeout', timeout=40)
    hub.expect_log(r'session opened: "pylisten"', timeout=40)
    initiator = peers.pymidi_initiator((LOCAL, hub_port), name="pyini")
    initiator.expect("send-ready")
    hub.expect_log(r'session opened: "pyini"')
    send_all(initiator, NOTES)
    assert_received_exactly(listener, NOTES)
    initiator.stop()
    listener.stop()
    # Exactly once: a stale second session would have delivered every note twice.
    assert [e["bytes"] for e in listener.events("midi")] == NOTES
    assert hub.stop() == 0


def test_sigterm_says_goodbye_and_exits_quickly(peers, daemons):
    hub_port = free_port_pair()
    hub = daemons.start(hub_port, name="hub")
    initiator = peers.pymidi_initiator((LOCAL, hub_port), name="pyini")
    initiator.expect("send-ready")
    started = time.monotonic()
    hub.signal(signal.SIGTERM)
    assert hub.proc.wait(5) == 0
    assert time.monotonic() - started < 1.0
    initiator.expect("disconnected", local=False)


def test_refuses_a_port_in_use(daemons):
    port = free_port_pair()
    first = daemons.start(port, name="first")
    first.expect_log(r"listening on")
    second = daemons.start(port, name="second")
    assert second.proc.wait(10) == 1
    second.stop()
    assert any("cannot start on UDP port" in line for line in second.lines)


def test_ipv6_and_ipv4_on_the_default_dual_stack_sockets(peers, daemons):
    """Without -b the daemon listens on every address: an IPv6 and an IPv4 peer meet in the hub."""
    port = free_port_pair("::1")
    # No -b: the default dual-stack socket (Daemon always passes -b, so build the argv here).
    hub = daemons.start(port, name="hub", args=["--hub"], host=None)
    v6 = peers.pymidi_initiator(("::1", port), name="six", host="::1")
    v4 = peers.pymidi_initiator((LOCAL, port), name="four")
    v6.expect("send-ready")
    v4.expect("send-ready")
    hub.wait_count(r'session opened: "six" at \[::1\]')
    hub.wait_count(r'session opened: "four" at 127\.0\.0\.1')
    send_all(v6, NOTES)
    assert_received_exactly(v4, NOTES)
    send_all(v4, NOTES[:3])
    assert_received_exactly(v6, NOTES[:3])
    v6.stop()
    v4.stop()
    assert hub.stop() == 0


def test_responder_probes_keep_quiet_initiators_and_drop_dead_ones_quickly(peers, daemons):
    """As responder the daemon checks a silent initiator with CK0s of its own after 10 s:
    real initiators answer them (pymidi's scripted one that never syncs, node-rtpmidi), and one
    killed without BY is dropped in seconds, not after the 90 s idle timeout."""
    port = free_port_pair()
    d = daemons.start(port, name="resp")
    quiet = peers.pymidi_initiator((LOCAL, port), name="quiet", sync=False)
    d.expect_log(r'session opened: "quiet"')
    node = peers.node_peer("connect", free_port_pair(), target=(LOCAL, port), name="nodeini")
    d.expect_log(r'session opened: "nodeini"', timeout=SLOW)
    # The initiator that never syncs answered our probe: a clock sync is logged for it.
    d.expect_log(r"clock sync with quiet", timeout=SLOW)
    node.kill()
    killed_at = time.monotonic()
    d.expect_log(r"session closed: nodeini: Timeout", timeout=60)
    assert time.monotonic() - killed_at < 30
    # The quiet one, silent all along but answering, is still there.
    assert d.count(r"session closed: quiet") == 0
    assert d.stop() == 0


def test_session_limits_and_denied_networks_refuse_invitations(peers, daemons):
    port = free_port_pair()
    d = daemons.start(port, name="lim", args=["--max-sessions", "1", "--deny", "127.0.0.2"])
    first = peers.pymidi_initiator((LOCAL, port), name="first")
    d.expect_log(r'session opened: "first"')
    first.expect("send-ready")
    # Beyond the limit: NO, and the log says why once.
    for name in ("second", "third"):
        peers.pymidi_initiator((LOCAL, port), name=name).expect("rejected")
    d.expect_log(r"refusing invitations \(max_sessions reached\)")
    assert d.count(r"refusing invitations") == 1
    # From a denied address: no answer at all.
    denied = peers.pymidi_initiator((LOCAL, port), name="denied", host="127.0.0.2")
    denied.expect("timeout", timeout=SLOW)
    assert d.count(r'session opened: "(second|third|denied)"') == 0
    assert d.stop() == 0


def test_two_hubs_that_connect_to_each_other_keep_one_session_and_do_not_loop(peers, daemons):
    a_port, b_port = free_port_pair(), free_port_pair()
    a = daemons.start(a_port, name="A", args=["--hub", "-C", "%s:%d" % (LOCAL, b_port)])
    b = daemons.start(b_port, name="B", args=["--hub", "-C", "%s:%d" % (LOCAL, a_port)])
    for d in (a, b):
        d.expect_log(r"connected to each other: one session is kept", timeout=SLOW)
    sender = peers.pymidi_initiator((LOCAL, a_port), name="in")
    receiver = peers.pymidi_initiator((LOCAL, b_port), name="out")
    sender.expect("send-ready")
    receiver.expect("send-ready")
    # A loop would have delivered copies of the notes before the last one arrives.
    send_all(sender, NOTES + ["b0 7b 00"])
    assert_received_exactly(receiver, NOTES + ["b0 7b 00"])
    assert [e["bytes"] for e in sender.events("midi")] == []
    assert a.stop() == 0 and b.stop() == 0


def test_a_ring_of_three_hubs_delivers_each_note_once_and_goes_quiet(peers, daemons):
    ports = [free_port_pair() for _ in range(3)]
    hubs = []
    for i, name in enumerate("ABC"):
        nxt = ports[(i + 1) % 3]
        hubs.append(daemons.start(ports[i], name=name, args=["--hub", "-C", "%s:%d" % (LOCAL, nxt)]))
    for h in hubs:
        h.wait_count(r"session opened", 2, timeout=SLOW)
    sender = peers.pymidi_initiator((LOCAL, ports[0]), name="in")
    outs = [peers.pymidi_initiator((LOCAL, p), name="out%d" % i) for i, p in enumerate(ports[1:])]
    for p in [sender] + outs:
        p.expect("send-ready")
    # The marker last: copies from a loop would arrive before it.
    send_all(sender, NOTES + ["b0 7b 00"])
    for out in outs:
        assert_received_exactly(out, NOTES + ["b0 7b 00"])
    assert [e["bytes"] for e in sender.events("midi")] == []
    for h in hubs:
        assert h.stop() == 0


def test_an_initiator_that_behaves_as_the_cpp_rtpmidid(peers, daemons):
    """Where the C++ rtpmidid differs from other peers: CK rounds 2 s apart six times, then one
    every 25 s (longer than our responder waits before it probes); RS wanted on its control
    port; its own RS with a 32-bit sequence number for every packet with a journal."""
    port = free_port_pair()
    d = daemons.start(port, name="resp", args=["--hub"])
    cpp = peers.pymidi_initiator((LOCAL, port), name="cpp", upstream=True)
    other = peers.pymidi_initiator((LOCAL, port), name="other")
    cpp.expect("send-ready")
    other.expect("send-ready")
    # Both ways through the hub: our packets carry journals, which it confirms its way.
    send_all(other, NOTES)
    assert_received_exactly(cpp, NOTES)
    send_all(cpp, NOTES[:2])
    assert_received_exactly(other, NOTES[:2])
    # Our RS go to its control port, never to its data port.
    cpp.expect("feedback", socket="ctrl", timeout=SLOW)
    assert all(e["socket"] == "ctrl" for e in cpp.events("feedback"))
    # In its 25 s gap between CK rounds we probe it; it answers and the session stays.
    d.expect_log(r"clock sync with cpp", timeout=60)
    assert d.count(r"session closed: cpp") == 0
    assert d.stop() == 0
