"""Small RTP-MIDI helpers shared by the scripted Python peers.

Only what the test peers need: split a MIDI byte stream into commands, and
encode/decode an RTP-MIDI packet (RFC 6295 section 3, MIDI command section)
without a recovery journal. Errors are ValueError.
"""

import struct

RTP_VERSION = 2
PAYLOAD_TYPE = 97  # the dynamic payload type AppleMIDI peers use
RTP_HEADER = struct.Struct("!BBHII")


def parse_hex(text):
    """'90 3c 64' (spaces optional) -> bytes."""
    return bytes.fromhex(text.replace(",", " "))


def to_hex(data):
    return " ".join("%02x" % b for b in data)


def _data_len(status):
    """Data bytes after a status byte; None for SysEx (variable)."""
    high = status & 0xF0
    if high in (0xC0, 0xD0):
        return 1
    if high < 0xF0:
        return 2
    return {0xF0: None, 0xF1: 1, 0xF2: 2, 0xF3: 1}.get(status, 0)


def split_midi(data):
    """Split a plain MIDI byte stream into whole commands with full status.

    Running status in the input is expanded, so every command starts with
    its status byte. Raises ValueError on a truncated or orphan command.
    """
    commands = []
    running = None
    i = 0
    while i < len(data):
        status = data[i]
        if status & 0x80:
            i += 1
        elif running is not None:
            status = running
        else:
            raise ValueError("data byte %02x without a status byte" % status)
        if status == 0xF0:
            end = data.find(b"\xf7", i)
            if end < 0:
                raise ValueError("SysEx without F7")
            commands.append(bytes([status]) + data[i : end + 1])
            i = end + 1
            running = None
            continue
        n = _data_len(status)
        body = data[i : i + n]
        if len(body) != n or any(b & 0x80 for b in body):
            raise ValueError("truncated command %02x" % status)
        commands.append(bytes([status]) + body)
        i += n
        if status < 0xF0:
            running = status
        elif status < 0xF8:
            running = None  # system common cancels running status
    return commands


def encode_command_section(commands):
    """MIDI command section (RFC 6295 3.1): J=0, Z=0, P=0, delta 0 between."""
    body = b"\x00".join(commands)
    if len(body) <= 0x0F:
        return bytes([len(body)]) + body
    if len(body) > 0x0FFF:
        raise ValueError("command list too long")
    return struct.pack("!H", 0x8000 | len(body)) + body


def encode_rtp_midi(seq, timestamp, ssrc, commands):
    """A whole RTP-MIDI packet; M=1 when the command list is not empty (RFC 6295 2.1)."""
    marker = 0x80 if commands else 0
    header = RTP_HEADER.pack(
        RTP_VERSION << 6, marker | PAYLOAD_TYPE, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
    )
    return header + encode_command_section(commands)


def decode_rtp_midi(packet):
    """-> (header dict, list of commands as bytes). Ignores the journal."""
    if len(packet) < RTP_HEADER.size:
        raise ValueError("short RTP header")
    b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(packet)
    if b0 >> 6 != RTP_VERSION:
        raise ValueError("RTP version %d" % (b0 >> 6))
    pos = RTP_HEADER.size + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(packet) < pos + 4:
            raise ValueError("short RTP extension")
        pos += 4 + 4 * struct.unpack_from("!H", packet, pos + 2)[0]
    if len(packet) < pos + 1:
        raise ValueError("no MIDI command section")
    flags = packet[pos]
    if flags & 0x80:
        if len(packet) < pos + 2:
            raise ValueError("short long-LEN header")
        length = ((flags & 0x0F) << 8) | packet[pos + 1]
        pos += 2
    else:
        length = flags & 0x0F
        pos += 1
    body = packet[pos : pos + length]
    if len(body) != length:
        raise ValueError("command list truncated")
    header = {
        "seq": seq,
        "timestamp": ts,
        "ssrc": ssrc,
        "marker": bool(b1 & 0x80),
        "pt": b1 & 0x7F,
        "journal": bool(flags & 0x40),
    }
    return header, _decode_list(body, first_has_delta=bool(flags & 0x20))


def _decode_list(body, first_has_delta):
    commands = []
    running = None
    i = 0
    while i < len(body):
        if commands or first_has_delta:
            for _ in range(4):  # delta time: up to 4 bytes, high bit = more
                if i >= len(body):
                    raise ValueError("truncated delta time")
                i += 1
                if not body[i - 1] & 0x80:
                    break
            if i >= len(body):
                raise ValueError("delta time without a command")
        status = body[i]
        if status & 0x80:
            i += 1
        elif running is not None:
            status = running
        else:
            raise ValueError("running status without a previous status")
        if status in (0xF0, 0xF7):  # SysEx or a SysEx segment: up to F0/F4/F7
            end = i
            while end < len(body) and body[end] not in (0xF0, 0xF4, 0xF7):
                end += 1
            if end >= len(body):
                raise ValueError("unterminated SysEx")
            commands.append(bytes([status]) + body[i : end + 1])
            i = end + 1
            running = None
            continue
        n = _data_len(status)
        data = body[i : i + n]
        if len(data) != n:
            raise ValueError("truncated command %02x" % status)
        commands.append(bytes([status]) + data)
        i += n
        if status < 0xF0:
            running = status
        elif status < 0xF8:
            running = None
    return commands
