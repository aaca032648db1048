#!/usr/bin/env python3
"""A minimal AppleMIDI initiator on raw sockets (standard library only), for the soak and for
the mDNS flood stage test: join a session, keep it alive with CK, send and receive notes,
leave with or without BY.

    python3 peer.py latency HOST:PORT [--seconds S] [--rate R] [--bind ADDR]

joins a `--hub` daemon twice, a sender and a receiver, sends R notes a second for S seconds
through it and prints how late they arrived, one JSON object:
{"sent": N, "received": M, "p50_ms": .., "p99_ms": .., "max_ms": ..}.
"""

import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
import midiwire  # noqa: E402

SIGNATURE = b"\xff\xff"
CK = struct.Struct("!2s2sIB3xQQQ")
# CK0 this often: the daemon ends a responder session that hears nothing from its initiator.
KEEPALIVE = 2.0


def ticks():
    """AppleMIDI time: 100 us units."""
    return int(time.monotonic() * 10000)


def bind_pair(host):
    """Two UDP sockets on ports P and P+1 (P even) of `host`."""
    for _ in range(100):
        port = random.randrange(20000, 60000, 2)
        ctrl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            ctrl.bind((host, port))
            data.bind((host, port + 1))
            return ctrl, data
        except OSError:
            ctrl.close()
            data.close()
    raise OSError("no free port pair")


class Peer:
    def __init__(self, host, port, name, bind="127.0.0.1"):
        self.host, self.port, self.name = host, port, name
        self.token = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ctrl, self.data = bind_pair(bind)
        self.received = []  # (monotonic time, command bytes)
        self.connected = False
        self.next_ck = 0.0

    def sockets(self):
        return [self.ctrl, self.data]

    def join(self, timeout=5.0):
        """IN on the control port, then on the data port; True once both are accepted."""
        invitation = (
            SIGNATURE + b"IN" + struct.pack("!III", 2, self.token, self.ssrc)
            + self.name.encode() + b"\0"
        )
        deadline = time.monotonic() + timeout
        for sock, port in ((self.ctrl, self.port), (self.data, self.port + 1)):
            accepted = False
            while not accepted and time.monotonic() < deadline:
                sock.sendto(invitation, (self.host, port))
                retry = min(deadline, time.monotonic() + 0.5)
                while not accepted and time.monotonic() < retry:
                    ready, _, _ = select.select([sock], [], [], retry - time.monotonic())
                    if not ready:
                        break
                    datagram = sock.recv(65536)
                    accepted = (
                        datagram[2:4] == b"OK"
                        and struct.unpack_from("!I", datagram, 8)[0] == self.token
                    )
            if not accepted:
                return False
        self.connected = True
        self.next_ck = time.monotonic()
        return True

    def pump(self, timeout=0.0):
        """Handles what arrived within `timeout` seconds, and keeps the session alive."""
        if self.connected and time.monotonic() >= self.next_ck:
            self.next_ck = time.monotonic() + KEEPALIVE
            self.data.sendto(CK.pack(SIGNATURE, b"CK", self.ssrc, 0, ticks(), 0, 0),
                             (self.host, self.port + 1))
        ready, _, _ = select.select(self.sockets(), [], [], timeout)
        for sock in ready:
            self.handle(sock)

    def handle(self, sock):
        while True:
            try:
                datagram = sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if datagram[:2] == SIGNATURE:
                self.command(sock, datagram)
                continue
            try:
                _, commands = midiwire.decode_rtp_midi(datagram)
            except ValueError:
                continue
            now = time.monotonic()
            self.received.extend((now, c) for c in commands)

    def command(self, sock, datagram):
        if datagram[2:4] == b"BY":
            self.connected = False
        elif datagram[2:4] == b"CK" and len(datagram) >= CK.size:
            _, _, _, count, t1, t2, _ = CK.unpack_from(datagram)
            if count == 0:
                reply = CK.pack(SIGNATURE, b"CK", self.ssrc, 1, t1, ticks(), 0)
            elif count == 1:
                reply = CK.pack(SIGNATURE, b"CK", self.ssrc, 2, t1, t2, ticks())
            else:
                return
            sock.sendto(reply, (self.host, self.port + 1))

    def send(self, *commands):
        self.seq = (self.seq + 1) & 0xFFFF
        packet = midiwire.encode_rtp_midi(self.seq, ticks(), self.ssrc, list(commands))
        self.data.sendto(packet, (self.host, self.port + 1))

    def leave(self, bye=True):
        if bye and self.connected:
            by = SIGNATURE + b"BY" + struct.pack("!III", 2, self.token, self.ssrc)
            self.ctrl.sendto(by, (self.host, self.port))
        self.connected = False
        self.ctrl.close()
        self.data.close()


def note(i):
    """Note-on number `i` (mod 128 * 127), to match what is received with what was sent."""
    return bytes([0x90, i % 128, 1 + (i // 128) % 127])


def latency(host, port, seconds, rate, bind):
    sender = Peer(host, port, "latency-tx", bind)
    receiver = Peer(host, port, "latency-rx", bind)
    if not (sender.join() and receiver.join()):
        raise SystemExit("latency: the daemon did not accept the sessions")
    # Let both sessions settle (the hub routes to the receiver once it is up).
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        sender.pump(0.01)
        receiver.pump(0.01)
    receiver.received.clear()
    sent = {}
    i = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + i / rate
        if time.monotonic() >= due:
            sent[i % (128 * 127)] = time.monotonic()
            sender.send(note(i))
            i += 1
        sender.pump(0)
        receiver.pump(max(0.0, min(0.002, due - time.monotonic())))
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        receiver.pump(0.01)
    delays = []
    for at, command in receiver.received:
        if len(command) == 3 and command[0] == 0x90 and command[2] > 0:
            key = command[1] + 128 * (command[2] - 1)
            if key in sent:
                delays.append((at - sent.pop(key)) * 1000)
    sender.leave()
    receiver.leave()
    delays.sort()

    def pct(p):
        return round(delays[min(len(delays) - 1, int(len(delays) * p))], 2) if delays else None

    return {"sent": i, "received": len(delays), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": round(delays[-1], 2) if delays else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("target", help="HOST:PORT of a --hub daemon")
    lat.add_argument("--seconds", type=float, default=3.0)
    lat.add_argument("--rate", type=float, default=200.0)
    lat.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    print(json.dumps(latency(host, int(port), args.seconds, args.rate, args.bind)), flush=True)


if __name__ == "__main__":
    main()
