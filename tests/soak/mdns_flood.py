#!/usr/bin/env python3
"""Announces COUNT made-up `_apple-midi._udp` services (PTR, SRV, TXT and A each, one
message per service) on the IPv4 mDNS group from ADDR:5353, RATE messages a second, over and
over for SECONDS: a flood for a daemon's mDNS browser to survive. Run it only inside a
network namespace of a test.

    python3 mdns_flood.py ADDR [--count 10000] [--rate 10000] [--seconds 5]

Prints {"sent": N} at the end.
"""

import argparse
import json
import socket
import struct
import time

GROUP = ("224.0.0.251", 5353)
SERVICE = [b"_apple-midi", b"_udp", b"local"]
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_SRV = 1, 12, 16, 33
CLASS_IN, CACHE_FLUSH = 1, 0x8000


def name(labels):
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def record(owner, rtype, rclass, ttl, rdata):
    return name(owner) + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def announcement(i, addr):
    instance = [b"Flood %d" % i] + SERVICE
    host = [b"flood%d" % i, b"local"]
    records = [
        record(SERVICE, TYPE_PTR, CLASS_IN, 4500, name(instance)),
        record(instance, TYPE_SRV, CLASS_IN | CACHE_FLUSH, 120,
               struct.pack("!HHH", 0, 0, 5004) + name(host)),
        record(instance, TYPE_TXT, CLASS_IN | CACHE_FLUSH, 4500, b"\0"),
        record(host, TYPE_A, CLASS_IN | CACHE_FLUSH, 120, socket.inet_aton(addr)),
    ]
    # A response (QR, AA), four answers.
    return struct.pack("!HHHHHH", 0, 0x8400, 0, len(records), 0, 0) + b"".join(records)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=10000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # RFC 6762 §11: from port 5353 with TTL 255, or receivers ignore it.
    sock.bind((args.addr, 5353))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.addr))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    messages = [announcement(i, args.addr) for i in range(args.count)]
    sent = 0
    start = time.monotonic()
    while time.monotonic() < start + args.seconds:
        # Bursts of 100 at the average rate.
        for _ in range(100):
            sock.sendto(messages[sent % len(messages)], GROUP)
            sent += 1
        time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    print(json.dumps({"sent": sent}), flush=True)


if __name__ == "__main__":
    main()
