#!/usr/bin/env python3
"""A pymidi 0.5.0 listener (pymidi.server.Server) that reports in JSON lines.

Usage: venv/bin/python pymidi_listener.py PORT [--host 127.0.0.1|::1] [--name pymidi]
                                            [--same-ssrc] [-v]

stdout, one JSON object a line, flushed:
  {"event":"ready","port":P}
  {"event":"connected","name":N,"addr":"h:p"}      IN accepted on the control port
  {"event":"send-ready","name":N,"addr":"h:p"}     IN accepted on the data port
  {"event":"midi","name":N,"bytes":"90 3c 64"}     one per command pymidi parsed;
      "unknown":true when pymidi does not know the command (it then swallows
      the rest of the list into it)
  {"event":"disconnected","name":N}                BY on the control port
  {"event":"dropped","reason":...}                 a data packet pymidi ignored
  {"event":"malformed","error":...}                pymidi failed to parse a packet
  {"event":"sent","bytes":...,"peers":K}           after a `send` line
stdin lines: `send 90 3c 64 ...` sends that MIDI to every data-connected peer
(pymidi has no send API: the packet is built here, J=0); `quit` or EOF exits.

pymidi quirks kept on purpose: its control and data sockets answer with two
different random SSRCs (--same-ssrc makes them equal, for peers that key the
data channel by the control OK's SSRC, like node-rtpmidi), it answers CK only
on the data port, reads at most 1024 bytes a datagram, and ignores RS.
"""

import argparse
import json
import logging
import os
import random
import select
import sys
import time

from pymidi import server as pymidi_server

import midiwire


def emit(event, **fields):
    fields = dict(event=event, **fields)
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def addr_str(addr):
    host = "[%s]" % addr[0] if ":" in addr[0] else addr[0]
    return "%s:%d" % (host, addr[1])


def command_bytes(command):
    """Back to bytes from what pymidi's construct parser made of a command."""
    status = bytes([command.command_byte])
    params = command.params
    name = str(command.command) if command.command is not None else None
    if name in ("note_on", "note_off"):
        return status + bytes([int(params.key), params.velocity]), False
    if name == "aftertouch":
        return status + bytes([int(params.key), params.touch]), False
    if name == "control_mode_change":
        return status + bytes([params.controller, params.value]), False
    return status + bytes(params.unknown), True


class JsonHandler(pymidi_server.Handler):
    def on_peer_connected(self, peer):
        emit("connected", name=peer.name, addr=addr_str(peer.addr))

    def on_peer_disconnected(self, peer):
        emit("disconnected", name=peer.name)

    def on_midi_commands(self, peer, command_list):
        for command in command_list:
            data, unknown = command_bytes(command)
            fields = {"name": peer.name, "bytes": midiwire.to_hex(data)}
            if unknown:
                fields["unknown"] = True
            emit("midi", **fields)


class EventLogHandler(logging.Handler):
    """Turns pymidi's log records about dropped packets into events."""

    def emit(self, record):
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            exc = record.exc_info[1] if record.exc_info else None
            emit("malformed", error="%s: %s" % (msg, exc))
        elif msg.startswith("Ignoring message from unknown ssrc"):
            emit("dropped", reason="unknown-ssrc", detail=msg)


class Sender:
    """Builds RTP-MIDI packets from the data protocol's SSRC (pymidi can't send)."""

    def __init__(self, data_protocol):
        self.proto = data_protocol
        self.seq = random.randrange(0x10000)
        self.start = time.monotonic()

    def send(self, midi):
        commands = midiwire.split_midi(midi)
        peers = list(self.proto.peers_by_ssrc.values())
        for peer in peers:
            self.seq = (self.seq + 1) & 0xFFFF
            ts = int((time.monotonic() - self.start) * 10000)
            packet = midiwire.encode_rtp_midi(self.seq, ts, self.proto.ssrc, commands)
            self.proto.socket.sendto(packet, peer.addr)
        emit("sent", bytes=midiwire.to_hex(midi), peers=len(peers))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="pymidi")
    ap.add_argument("--same-ssrc", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="pymidi_listener %(name)s %(levelname)s %(message)s",
    )
    pymidi_log = logging.getLogger("pymidi")
    pymidi_log.setLevel(logging.DEBUG)  # so the debug-level drop records reach EventLogHandler
    pymidi_log.addHandler(EventLogHandler())
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.DEBUG if args.verbose else logging.WARNING)

    server = pymidi_server.Server([(args.host, args.port)])
    server.add_handler(JsonHandler())
    # serve_forever() would block without a way to read stdin: run the same
    # set-up and its per-datagram dispatch from our own select loop.
    server._init_protocols()
    ctrl, data = (
        server.ipv4_protocols if hasattr(server, "ipv4_protocols") else server.ipv6_protocols
    )
    ctrl.name = data.name = args.name
    if args.same_ssrc:
        data.ssrc = ctrl.ssrc
    data.connect_cb = lambda peer: emit("send-ready", name=peer.name, addr=addr_str(peer.addr))
    sender = Sender(data)
    emit("ready", port=args.port, ssrc=ctrl.ssrc, data_ssrc=data.ssrc)

    stdin = sys.stdin.fileno()
    watch = list(server.socket_map) + [stdin]
    pending = b""
    while True:
        readable, _, _ = select.select(watch, [], [])
        for s in readable:
            if s == stdin:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return 0
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if handle_line(line.decode().strip(), sender):
                        return 0
                continue
            buffer, addr = s.recvfrom(1024)  # pymidi's own limit
            try:
                server.socket_map[s].handle_message(bytes(buffer), addr)
            except Exception as exc:  # pymidi lets some parse errors escape
                emit("malformed", error="%s: %s" % (type(exc).__name__, exc))


def handle_line(line, sender):
    """Returns True to quit."""
    if not line:
        return False
    if line == "quit":
        return True
    cmd, _, rest = line.partition(" ")
    if cmd == "send":
        try:
            sender.send(midiwire.parse_hex(rest))
        except ValueError as exc:
            emit("error", error="bad send line %r: %s" % (line, exc))
    else:
        emit("error", error="unknown command %r" % line)
    return False


if __name__ == "__main__":
    sys.exit(main())
