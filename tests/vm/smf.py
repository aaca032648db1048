"""What the VM tests play and compare, written on the host: type 0 Standard MIDI Files for
aplaymidi (96 ticks a quarter) and hex dumps as seq_probe and the checks print them."""
import struct


def varlen(n):
    """A MIDI file's variable-length quantity."""
    b = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        b.insert(0, 0x80 | (n & 0x7F))
    return bytes(b)


def write_smf(path, track):
    """A type 0 file of `track` (delta times and events); the end-of-track event is added."""
    track = track + bytes([0, 0xFF, 0x2F, 0x00])
    with open(path, "wb") as f:
        f.write(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 96))
        f.write(b"MTrk" + struct.pack(">I", len(track)) + track)


def at_tick_zero(messages):
    """Track bytes of MIDI 1.0 messages (a SysEx with F0 and F7), all at tick 0."""
    track = b""
    for m in messages:
        track += b"\x00" + (b"\xF0" + varlen(len(m) - 1) + m[1:] if m[0] == 0xF0 else m)
    return track


def sysex(n):
    """A SysEx of `n` bytes on the wire, F0 and F7 included, as `seq_probe --sysex n` sends."""
    big = bytearray(i % 128 for i in range(n))
    big[0], big[-1] = 0xF0, 0xF7
    return bytes(big)


def write_hex(path, messages):
    """One line a message, its bytes as upper-case hex pairs."""
    with open(path, "w") as f:
        f.writelines(" ".join("%02X" % b for b in m) + "\n" for m in messages)
