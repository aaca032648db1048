#!/usr/bin/env python3
"""A scripted AppleMIDI initiator (pymidi 0.5.0's own Client is a stub).

Usage: venv/bin/python pymidi_initiator.py HOST:PORT [--name NAME] [--host 127.0.0.1|::1]
                                          [--port EVEN_PORT] [--no-sync] [--upstream] [-v]
HOST may be [::1]; --host is the local address (its family must match HOST's).

Session packets are built and parsed with pymidi.packets; RTP-MIDI with
midiwire. It binds an even control port and the next odd one (--port, or a
free pair), invites on the remote control port, then on the data port (PORT+1),
runs the CK exchange as initiator (count 0 -> 1 -> 2, again every 10 s), answers
the remote's own CK, and sends BY on the control port when it exits.

stdout, one JSON object a line:
  {"event":"ready","port":P,"ssrc":S}
  {"event":"connected","name":N,"ssrc":S,"data_ssrc":S2}   both OKs received
  {"event":"send-ready","latency":L}                        first CK exchange done (L in 100 us)
  {"event":"midi","bytes":"90 3c 64"}                       one per received command
  {"event":"disconnected","name":N,"local":bool}            BY received / sent
  {"event":"rejected","port":P}                             NO received
  {"event":"malformed","error":E}                           an RTP-MIDI packet we could not parse
  {"event":"feedback","socket":"ctrl"|"data","seq":N}       an RS received on that socket
  {"event":"sent","bytes":B}
  {"event":"timeout","stage":...}                           no answer to IN; exits 1
stdin: `send 90 3c 64` (one packet, delta 0 between commands);
`raw ctrl|data HEX [COUNT]` sends the datagram HEX (COUNT times) from the control
or data socket to the remote's (garbage and flood tests); `quit`; EOF, SIGINT
and SIGTERM send BY and exit 0.
"""

import argparse
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import time

from pymidi import packets

import midiwire

INVITE_RETRY_S = 1.0
INVITE_TRIES = 10
SYNC_INTERVAL_S = 10.0
# The C++ rtpmidid's schedule (--upstream): six CK rounds 2 s apart, then one every 25 s.
UPSTREAM_SYNC_S = [2.0] * 6 + [25.0]

log = logging.getLogger("pymidi_initiator")


def emit(event, **fields):
    sys.stdout.write(json.dumps(dict(event=event, **fields)) + "\n")
    sys.stdout.flush()


def bind_pair(host, port):
    """Control and data sockets on PORT and PORT+1 (an even free pair if PORT is None)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        ctrl = socket.socket(family, socket.SOCK_DGRAM)
        try:
            ctrl.bind((host, port or 0))
        except OSError:
            ctrl.close()
            raise
        p = ctrl.getsockname()[1]
        if port is None and (p % 2 or p >= 65535):
            ctrl.close()
            continue
        data = socket.socket(family, socket.SOCK_DGRAM)
        try:
            data.bind((host, p + 1))
        except OSError:
            ctrl.close()
            data.close()
            if port is not None:
                raise
            continue
        return ctrl, data
    raise OSError("no free even port pair")


class Initiator:
    def __init__(self, remote, name, ctrl, data, sync, upstream=False):
        self.remote_ctrl = remote
        self.remote_data = (remote[0], remote[1] + 1)
        self.name = name
        self.ctrl = ctrl
        self.data = data
        self.sync = sync
        # Behave as the C++ rtpmidid where it differs: its CK schedule, and an RS (32-bit
        # sequence number) to the control port for every packet that carries a journal.
        self.upstream = upstream
        self.syncs = 0
        self.ssrc = random.randrange(1, 2**32)
        self.token = random.randrange(1, 2**32)
        self.seq = random.randrange(0x10000)
        self.epoch = time.monotonic()
        self.stage = "ctrl"  # ctrl -> data -> up -> closed
        self.tries = 0
        self.next_invite = 0.0
        self.next_sync = None
        self.peer_name = None
        self.peer_ssrc = None
        self.latency = None
        self.exit_status = 0

    def now_ticks(self):
        """AppleMIDI time: 100 us units."""
        return int((time.monotonic() - self.epoch) * 10000)

    # --- session packets ------------------------------------------------------

    def exchange(self, command):
        return packets.AppleMIDIExchangePacket.build(dict(
            command=command, protocol_version=2, initiator_token=self.token,
            ssrc=self.ssrc, name=self.name))

    def ck(self, count, t1, t2, t3):
        return packets.AppleMIDITimestampPacket.build(dict(
            command=b"CK", ssrc=self.ssrc, count=count,
            timestamp_1=t1, timestamp_2=t2, timestamp_3=t3))

    def timeout(self):
        """Seconds until the next timer, or None."""
        now = time.monotonic()
        times = []
        if self.stage in ("ctrl", "data"):
            times.append(self.next_invite)
        if self.stage == "up" and self.next_sync is not None:
            times.append(self.next_sync)
        return max(0.0, min(times) - now) if times else None

    def on_timer(self):
        now = time.monotonic()
        if self.stage in ("ctrl", "data") and now >= self.next_invite:
            if self.tries >= INVITE_TRIES:
                emit("timeout", stage=self.stage)
                return False
            self.tries += 1
            sock, dest = (self.ctrl, self.remote_ctrl) if self.stage == "ctrl" else (
                self.data, self.remote_data)
            sock.sendto(self.exchange(b"IN"), dest)
            self.next_invite = now + INVITE_RETRY_S
        if self.stage == "up" and self.next_sync is not None and now >= self.next_sync:
            self.data.sendto(self.ck(0, self.now_ticks(), 0, 0), self.remote_data)
            interval = SYNC_INTERVAL_S
            if self.upstream:
                interval = UPSTREAM_SYNC_S[min(self.syncs, len(UPSTREAM_SYNC_S) - 1)]
            self.syncs += 1
            self.next_sync = now + interval
        return True

    def on_session_packet(self, sock, buf, addr):
        """Returns False when the session is over."""
        command = buf[2:4]
        if command in (b"OK", b"NO", b"BY", b"IN"):
            try:
                p = packets.AppleMIDIExchangePacket.parse(buf)
            except Exception as exc:  # construct errors
                emit("malformed", error="%s: %s" % (type(exc).__name__, exc))
                return True
            if p.initiator_token != self.token and command != b"BY":
                log.warning("%s with a foreign token from %s", command, addr)
                return True
            if command == b"NO":
                emit("rejected", port=addr[1])
                self.stage = "closed"
                self.exit_status = 1
                return False
            if command == b"BY":
                if p.ssrc != self.peer_ssrc:
                    log.warning("BY from unknown ssrc %d", p.ssrc)
                    return True
                emit("disconnected", name=self.peer_name, local=False)
                self.stage = "closed"
                return False
            if command == b"OK" and self.stage == "ctrl" and sock is self.ctrl:
                self.peer_name, self.peer_ssrc = p.name, p.ssrc
                self.stage, self.tries, self.next_invite = "data", 0, 0.0
            elif command == b"OK" and self.stage == "data" and sock is self.data:
                self.stage = "up"
                emit("connected", name=self.peer_name, ssrc=self.peer_ssrc, data_ssrc=p.ssrc)
                self.next_sync = time.monotonic() if self.sync else None
            return True
        if command == b"CK":
            try:
                p = packets.AppleMIDITimestampPacket.parse(buf)
            except Exception as exc:
                emit("malformed", error="%s: %s" % (type(exc).__name__, exc))
                return True
            if p.count == 0:  # the remote's own exchange: answer
                sock.sendto(self.ck(1, p.timestamp_1, self.now_ticks(), 0), addr)
            elif p.count == 1:  # answer to ours: latency, then count 2
                t3 = self.now_ticks()
                sock.sendto(self.ck(2, p.timestamp_1, p.timestamp_2, t3), addr)
                first = self.latency is None
                self.latency = (t3 - p.timestamp_1) // 2
                if first:
                    emit("send-ready", latency=self.latency)
            return True
        if command == b"RS" and len(buf) >= 10:
            seq = struct.unpack("!H", buf[8:10])[0]
            emit("feedback", socket="ctrl" if sock is self.ctrl else "data", seq=seq)
            return True
        log.info("ignoring session command %r from %s", command, addr)
        return True

    def on_data(self, buf):
        if self.upstream and len(buf) > 12 and buf[12] & 0x40:
            seq = struct.unpack("!H", buf[2:4])[0]
            self.ctrl.sendto(b"\xff\xffRS" + struct.pack("!II", self.ssrc, seq), self.remote_ctrl)
        try:
            header, commands = midiwire.decode_rtp_midi(buf)
        except ValueError as exc:
            emit("malformed", error=str(exc), packet=midiwire.to_hex(buf))
            return
        for c in commands:
            emit("midi", bytes=midiwire.to_hex(c))
        log.debug("rtp %s", header)

    def send(self, midi):
        commands = midiwire.split_midi(midi)
        self.seq = (self.seq + 1) & 0xFFFF
        packet = midiwire.encode_rtp_midi(self.seq, self.now_ticks(), self.ssrc, commands)
        self.data.sendto(packet, self.remote_data)
        emit("sent", bytes=midiwire.to_hex(midi))

    def raw(self, which, datagram, count):
        sock, dest = (self.ctrl, self.remote_ctrl) if which == "ctrl" else (
            self.data, self.remote_data)
        for _ in range(count):
            sock.sendto(datagram, dest)
        emit("sent-raw", port=dest[1], count=count, size=len(datagram))

    def bye(self):
        if self.stage in ("data", "up"):
            self.ctrl.sendto(self.exchange(b"BY"), self.remote_ctrl)
            emit("disconnected", name=self.peer_name, local=True)
        self.stage = "closed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT of the listener's control port")
    ap.add_argument("--name", default="pymidi-initiator")
    ap.add_argument("--host", default="127.0.0.1", help="local address to bind")
    ap.add_argument("--port", type=int, help="local control port (even)")
    ap.add_argument("--no-sync", action="store_true", help="do not start CK exchanges")
    ap.add_argument("--upstream", action="store_true",
                    help="behave as the C++ rtpmidid: its CK schedule, its RS layout")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="pymidi_initiator %(levelname)s %(message)s")
    host, _, port = args.target.rpartition(":")
    host = host.strip("[]")
    ctrl, data = bind_pair(args.host, args.port)
    remote = socket.getaddrinfo(host, int(port), ctrl.family, socket.SOCK_DGRAM)[0][4][:2]

    ini = Initiator(remote, args.name, ctrl, data, sync=not args.no_sync,
                    upstream=args.upstream)
    emit("ready", port=ctrl.getsockname()[1], ssrc=ini.ssrc)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    stdin = sys.stdin.fileno()
    watch = [ctrl, data, stdin]
    pending = b""
    status = 0
    while not stop:
        try:
            readable, _, _ = select.select(watch, [], [], ini.timeout())
        except InterruptedError:
            continue
        if not ini.on_timer():
            status = 1
            break
        for s in readable:
            if s == stdin:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    stop.append(1)
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if handle_line(line.decode().strip(), ini):
                        stop.append(1)
                continue
            buf, addr = s.recvfrom(65535)
            if buf[:2] == b"\xff\xff":
                if not ini.on_session_packet(s, buf, addr):
                    return ini.exit_status
            elif s is data:
                ini.on_data(buf)
            else:
                log.info("non-session packet on the control port from %s", addr)
    ini.bye()
    return status


def handle_line(line, ini):
    """Returns True to quit."""
    if not line:
        return False
    if line == "quit":
        return True
    cmd, _, rest = line.partition(" ")
    if cmd == "raw":
        parts = rest.split()
        try:
            if len(parts) not in (2, 3) or parts[0] not in ("ctrl", "data"):
                raise ValueError("want: raw ctrl|data HEX [COUNT]")
            count = int(parts[2]) if len(parts) == 3 else 1
            ini.raw(parts[0], midiwire.parse_hex(parts[1]), count)
        except ValueError as exc:
            emit("error", error="bad raw line %r: %s" % (line, exc))
    elif cmd == "send":
        if ini.stage != "up":
            emit("error", error="not connected")
            return False
        try:
            ini.send(midiwire.parse_hex(rest))
        except ValueError as exc:
            emit("error", error="bad send line %r: %s" % (line, exc))
    else:
        emit("error", error="unknown command %r" % line)
    return False


if __name__ == "__main__":
    sys.exit(main())
