"""Self-test of the amidi2net rig: amidi2net-client <-> amidi2net-server on 127.0.0.1.

    python3 tests/peers/amidi2net/selftest.py [-k SUBSTRING]   # prints "N passed, M failed"
    python3 -m pytest -q tests/peers/amidi2net/selftest.py     # the same tests under pytest

Builds the rig first when needed (build.sh, cached). Each test starts its own processes on a
free port and stops them by PID.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import a2nlib  # noqa: E402
from a2nlib import midi1_note_off, midi1_note_on, midi2_note_on  # noqa: E402


def _pair(g, server_kw=None, client_kw=None):
    srv = g.server(**(server_kw or {}))
    cli = g.client(srv.port, **(client_kw or {}))
    cli.wait_session()
    srv.wait_session()
    return srv, cli


def _notes_both_ways(srv, cli):
    cli.send(midi1_note_on(0, 0, 60, 100), midi1_note_off(0, 0, 60))
    srv.expect(midi1_note_on(0, 0, 60, 100), midi1_note_off(0, 0, 60))
    srv.send(midi2_note_on(1, 9, 36, 0xFFFF), midi1_note_on(15, 15, 127, 1))
    cli.expect(midi2_note_on(1, 9, 36, 0xFFFF), midi1_note_on(15, 15, 127, 1))
    # a few more, interleaved, in order
    for i in range(20):
        cli.send(midi1_note_on(0, 1, i, 64))
        srv.send(midi1_note_on(2, 3, i, 65))
    srv.expect(*[midi1_note_on(0, 1, i, 64) for i in range(20)])
    cli.expect(*[midi1_note_on(2, 3, i, 65) for i in range(20)])
    srv.expect_nothing(0.3)
    cli.expect_nothing(0.1)


def _clean(*procs):
    for p in procs:
        assert not p.errors(), "%s logged errors: %s" % (p.label, p.errors())
        assert p.alive(), "%s exited (%s)" % (p.label, p.proc.poll())


def test_notes_no_auth():
    with a2nlib.Group() as g:
        srv, cli = _pair(g)
        srv.wait_log(r"^invitation accepted$", since_start=True)
        _notes_both_ways(srv, cli)
        _clean(srv, cli)
        assert cli.stop() == 0 and srv.stop() == 0


def test_notes_fec_off():
    with a2nlib.Group() as g:
        srv, cli = _pair(g, {"fec": 0}, {"fec": 0})
        _notes_both_ways(srv, cli)
        _clean(srv, cli)


def test_shared_secret_auth():
    with a2nlib.Group() as g:
        srv, cli = _pair(g, {"secret": "s3cret", "auth_forced": True}, {"secret": "s3cret"})
        srv.wait_log(r"^auth accepted$", since_start=True)
        _notes_both_ways(srv, cli)
        _clean(srv, cli)


def test_shared_secret_wrong():
    with a2nlib.Group() as g:
        srv = g.server(secret="s3cret", auth_forced=True)
        cli = g.client(srv.port, secret="wrong", extra=["--invitation-timeout=300"])
        assert cli.wait_exit(10) != 0
        cli.wait_log(r"Invalid auth: state = 1 \(Incorrect digest\)", since_start=True)
        cli.wait_log(r"Failed handshaking")
        assert not any("accepted" in l for l in srv.log), srv.log
        assert srv.alive()


def test_user_auth():
    with a2nlib.Group() as g:
        srv, cli = _pair(g, {"user": "alice", "secret": "pw"}, {"user": "alice", "secret": "pw"})
        srv.wait_log(r"^auth accepted$", since_start=True)
        _notes_both_ways(srv, cli)
        _clean(srv, cli)


def test_user_auth_wrong_password():
    with a2nlib.Group() as g:
        srv = g.server(user="alice", secret="pw")
        cli = g.client(srv.port, user="alice", secret="nope", extra=["--invitation-timeout=300"])
        assert cli.wait_exit(10) != 0
        cli.wait_log(r"Invalid user auth: state = 1", since_start=True)
        assert not any("accepted" in l for l in srv.log), srv.log


def test_ipv6_fixed_port():
    port = a2nlib.free_udp_port("::1")
    with a2nlib.Group() as g:
        srv, cli = _pair(g, {"port": port, "ipv6": True}, {"host": "::1", "ipv6": True})
        assert srv.port == port
        _notes_both_ways(srv, cli)
        _clean(srv, cli)


def test_raw_wire_and_128bit_ump():
    """A bare client (a2nlib.RawClient) checks the wire: invitation accepted (with the server's
    endpoint name), UMP words big-endian both ways, several UMPs in one UMP Data command, and
    128-bit UMPs (a Stream message, a SysEx8 packet) from the network come out intact.
    amidi2net cannot send 128-bit UMPs itself (A2nProc.send refuses them)."""
    stream = (0xF0010101, 0x00000000, 0x00000000, 0x00000000)
    sysex8 = (0x50000102, 0x03040506, 0x0708090A, 0x0B0C0D0E)
    with a2nlib.Group() as g:
        srv = g.server(ep_name="rig-server")
        raw = a2nlib.RawClient(srv.port)
        try:
            code, name_words, caps, payload = raw.invite()
            assert code == 0x10, "reply %02x" % code
            assert payload[:4 * name_words].rstrip(b"\0") == b"rig-server", payload
            srv.wait_session()
            raw.send_ump(midi1_note_on(0, 0, 60, 100), stream, sysex8)
            srv.expect(midi1_note_on(0, 0, 60, 100), stream, sysex8)
            srv.send(midi2_note_on(0, 1, 62, 0x1234))
            seqno, words = raw.recv_ump()
            assert words == list(midi2_note_on(0, 1, 62, 0x1234)), [hex(w) for w in words]
            try:
                srv.send(stream)
            except ValueError:
                pass
            else:
                raise AssertionError("send() took a 128-bit UMP")
            raw.bye()
            srv.wait_log(r"received bye message")
            _clean(srv)
        finally:
            raw.close()


def _sysex(size, seed):
    return bytes((i * 7 + seed) & 0x7F for i in range(size))


def test_sysex_10k_both_ways():
    data_up, data_down = _sysex(10240, 1), _sysex(10240, 2)
    up, down = a2nlib.sysex7_packets(data_up), a2nlib.sysex7_packets(data_down, group=3)
    assert len(up) == 1707
    with a2nlib.Group() as g:
        srv, cli = _pair(g)
        t0 = time.monotonic()
        cli.send_many(up)
        got = srv.recv_n(len(up), 30)
        assert a2nlib.sysex7_join(got) == data_up
        srv.send_many(down)
        got = cli.recv_n(len(down), 30)
        assert a2nlib.sysex7_join(got) == data_down
        assert all((w[0] >> 24) & 0xF == 3 for w in got)
        print("  2 x 10 kB SysEx (2 x %d UMPs) in %.2f s" % (len(up), time.monotonic() - t0))
        srv.expect_nothing(0.3)
        _clean(srv, cli)


def test_packet_loss_recovered():
    """amidi2net's own --fail-test drops 1 in 10 datagrams on the sender (mode 0, single
    drops): FEC must still deliver every note in order. (Mode 1, bursts of FEC+1 drops that
    need Retransmit Requests, loses data now and then in amidi2net itself: see README.)"""
    notes = [midi1_note_on(0, 0, i % 128, 1 + i // 128) for i in range(300)]
    with a2nlib.Group() as g:
        srv, cli = _pair(g, {}, {"extra": ["--fail-test=10", "--fail-test-mode=0"]})
        for n in notes:
            cli.send(n)
            time.sleep(0.002)
        srv.expect(*notes, timeout=30)
        assert any("simulate packet drop" in l for l in cli.log)
        _clean(srv, cli)


if __name__ == "__main__":
    sys.exit(a2nlib.run_tests(globals(), sys.argv[1:]))
