#!/usr/bin/env python3
"""Soak: one `--hub` daemon on loopback (`--no-alsa --no-mdns`) for MINUTES while peers join
and leave (with BY and without), one of them streams notes through the hub to the others,
floods of garbage, invitations and stray RTP come every few seconds, and the configuration
file changes (a listener added and removed) every 15 s. Every 10 s it samples the daemon's
memory (VmRSS) and open descriptors (the extra listener's two sockets come and go with it);
once a minute, and at the end, a daemon is sent SIGTERM
in the middle of a flood and timed. Prints the figures, one `key: value` a line, and exits 1
when memory grew, descriptors leaked, or a SIGTERM took a second or more.

    python3 soak.py --bin target/debug/rtpmidid [--minutes 5] [--peers 8]
"""

import argparse
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import Peer, note  # noqa: E402

HOST = "127.0.0.1"
# Memory may grow this much from the sample at a quarter of the run to the end (allocator
# noise; a leak of a few hundred bytes per session or per reload over minutes is more).
RSS_SLACK_KB = 1024
SIGTERM_LIMIT = 1.0


def config_text(port, extra_listener):
    text = "[general]\nname = Soak\n\n[hub]\nenabled = true\n"
    if extra_listener:
        text += "\n[listener Extra]\nport = %d\n" % (port + 10)
    return text


def write_config(path, port, extra_listener):
    """Replaces the file by renaming, as editors do."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(config_text(port, extra_listener))
    os.rename(tmp, path)


def start_daemon(binary, port, workdir, name):
    conf = os.path.join(workdir, name + ".conf")
    write_config(conf, port, False)
    log = open(os.path.join(workdir, name + ".log"), "w")
    proc = subprocess.Popen(
        [binary, "--no-alsa", "--no-mdns", "-p", str(port), "-b", HOST, "-c", conf,
         "--control", os.path.join(workdir, name + ".sock")],
        stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit("soak: the daemon did not start (see %s.log)" % name)
    return proc, conf


def sample(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def flood(port, count=2000):
    """Garbage on both ports, invitations with random tokens, RTP with random SSRCs."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent = 0
    for i in range(count):
        kind = i % 3
        if kind == 0:
            datagram, dst = os.urandom(random.randrange(1, 200)), port + (i & 1)
        elif kind == 1:
            datagram = (b"\xff\xffIN" + struct.pack("!III", 2, random.getrandbits(32),
                        random.getrandbits(32)) + b"flood\0")
            dst = port
        else:
            datagram = (struct.pack("!BBHII", 0x80, 0x61, i & 0xFFFF, i,
                                    random.getrandbits(32)) + b"\x03\x90\x3c\x40")
            dst = port + 1
        try:
            s.sendto(datagram, (HOST, dst))
            sent += 1
        except BlockingIOError:
            pass
    s.close()
    return sent


def time_sigterm(proc, port):
    """Sends SIGTERM in the middle of a flood; seconds until the daemon exited."""
    flood(port, 1000)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    flood(port, 1000)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return float("inf")
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--peers", type=int, default=8)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="rtpmidid-soak-")
    port = random.randrange(20000, 40000, 2)
    proc, conf = start_daemon(args.bin, port, workdir, "soak")
    peers = []
    talker = None
    stats = {"joined": 0, "left_with_by": 0, "left_silently": 0, "join_failures": 0,
             "notes_sent": 0, "notes_received": 0, "flood_datagrams": 0, "reloads": 0}
    samples = []
    sigterms = []
    extra = False
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = next_churn = start
    next_flood, next_reload, next_sigterm = start + 5, start + 15, start + 60
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if talker is None or not talker.connected:
                talker = Peer(HOST, port, "talker")
                talker.join()
            if now >= next_churn:
                next_churn = now + 1.0
                if len(peers) >= args.peers:
                    leaving = peers.pop(random.randrange(len(peers)))
                    bye = random.random() < 0.5
                    stats["left_with_by" if bye else "left_silently"] += 1
                    stats["notes_received"] += len(leaving.received)
                    leaving.leave(bye=bye)
                joining = Peer(HOST, port, "peer%d" % stats["joined"])
                if joining.join():
                    stats["joined"] += 1
                    peers.append(joining)
                else:
                    stats["join_failures"] += 1
                    joining.leave(bye=False)
            if now >= next_flood:
                next_flood = now + 5.0
                stats["flood_datagrams"] += flood(port)
            if now >= next_reload:
                next_reload = now + 15.0
                extra = not extra
                write_config(conf, port, extra)
                stats["reloads"] += 1
            if now >= next_sigterm:
                next_sigterm = now + 60.0
                side, _ = start_daemon(args.bin, port + 100, workdir, "side")
                sigterms.append(time_sigterm(side, port + 100))
            if now >= next_sample:
                next_sample = now + 10.0
                samples.append((now - start,) + sample(proc.pid))
            talker.send(note(stats["notes_sent"]))
            stats["notes_sent"] += 1
            talker.pump(0)
            for p in peers:
                p.pump(0)
            time.sleep(0.01)
        # The configuration of the start again, for a like-for-like count of descriptors.
        if extra:
            write_config(conf, port, False)
            stats["reloads"] += 1
            time.sleep(1.0)
        samples.append((time.monotonic() - start,) + sample(proc.pid))
        sigterms.append(time_sigterm(proc, port))
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in peers + ([talker] if talker else []):
            stats["notes_received"] += len(p.received)
            p.leave(bye=False)

    quarter = next(s for s in samples if s[0] >= samples[-1][0] / 4)
    last = samples[-1]
    rss_growth = last[1] - quarter[1]
    print("minutes: %.1f" % (samples[-1][0] / 60))
    for key, value in stats.items():
        print("%s: %d" % (key, value))
    print("rss_kb (start, quarter, end, max): %d, %d, %d, %d"
          % (samples[0][1], quarter[1], last[1], max(s[1] for s in samples)))
    print("fds (start, quarter, end, max): %d, %d, %d, %d"
          % (samples[0][2], quarter[2], last[2], max(s[2] for s in samples)))
    print("rss_kb every 10 s: %s" % " ".join(str(s[1]) for s in samples))
    print("sigterm_seconds: %s" % " ".join("%.3f" % t for t in sigterms))
    failures = []
    if rss_growth > RSS_SLACK_KB:
        failures.append("memory grew by %d kB after the first quarter" % rss_growth)
    if last[2] > samples[0][2]:
        failures.append("descriptors: %d at the start, %d at the end" % (samples[0][2], last[2]))
    if max(sigterms) >= SIGTERM_LIMIT:
        failures.append("a SIGTERM took %.3f s" % max(sigterms))
    if stats["notes_received"] == 0:
        failures.append("no note went through the hub")
    print("verdict: %s" % ("; ".join(failures) if failures else "ok"))
    if failures:
        print("logs: %s" % workdir)
        sys.exit(1)
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
