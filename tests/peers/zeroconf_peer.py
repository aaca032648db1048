#!/usr/bin/env python3
"""An mDNS peer for interop tests, built on python-zeroconf.

Registers an `_apple-midi._udp` service and/or browses for that type, printing one JSON object
per line on stdout:

  {"event": "registered", "instance": "Studio", "port": 5004}
  {"event": "added",   "instance": "Laptop", "host": "b.local.", "port": 5008,
   "addresses": ["169.254.0.2"]}
  {"event": "updated", ...same fields as added...}
  {"event": "removed", "instance": "Laptop"}
  {"event": "unregistered", "instance": "Studio"}

It only ever uses the interfaces given with --interface (an IPv4 or IPv6 address of the test
interface, or an interface index for IPv6), so run it with a loopback address or inside a
test network namespace, never on a real interface. It stops after --duration seconds or on
SIGTERM/SIGINT, sending goodbyes for what it registered.
"""
import argparse
import ipaddress
import json
import queue
import signal
import socket
import sys
import threading

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

SERVICE = "_apple-midi._udp.local."  # --service replaces it


def emit(**fields):
    print(json.dumps(fields), flush=True)


def instance_of(name):
    return name[: -len(SERVICE) - 1] if name.endswith("." + SERVICE) else name


def parse_interface(text):
    try:
        return int(text)
    except ValueError:
        return str(ipaddress.ip_address(text))


def ip_version(interfaces):
    kinds = set()
    for i in interfaces:
        kinds.add(6 if isinstance(i, int) or ":" in i else 4)
    if kinds == {4}:
        return IPVersion.V4Only
    if kinds == {6}:
        return IPVersion.V6Only
    return IPVersion.All


def main():
    global SERVICE  # --service: every use below, instance_of included
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interface", action="append", required=True,
                    help="address (or IPv6 interface index) to use; repeatable")
    ap.add_argument("--register", metavar="INSTANCE", help="register INSTANCE._apple-midi._udp")
    ap.add_argument("--port", type=int, default=5004)
    ap.add_argument("--host", default="zeroconf-peer", help="host label for the SRV target")
    ap.add_argument("--address", action="append", default=[],
                    help="address to announce (default: the --interface addresses)")
    ap.add_argument("--browse", action="store_true", help="browse for _apple-midi._udp")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds to run")
    ap.add_argument("--service", default=SERVICE,
                    help="service type to register and browse (e.g. _midi2._udp.local.)")
    args = ap.parse_args()
    SERVICE = args.service

    interfaces = [parse_interface(i) for i in args.interface]
    zc = Zeroconf(interfaces=interfaces, ip_version=ip_version(interfaces))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    info = None
    if args.register:
        announced = args.address or [i for i in interfaces if isinstance(i, str)]
        info = ServiceInfo(
            SERVICE,
            f"{args.register}.{SERVICE}",
            port=args.port,
            server=f"{args.host}.local.",
            addresses=[socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET,
                                        a.split("%")[0]) for a in announced],
            properties={},
        )
        zc.register_service(info, allow_name_change=True)
        emit(event="registered", instance=instance_of(info.name), port=args.port)

    # Browser callbacks run on zeroconf's thread: resolve on this one.
    changes = queue.Queue()
    known = {}
    if args.browse:
        def on_change(zeroconf, service_type, name, state_change):
            changes.put((name, state_change))
        ServiceBrowser(zc, SERVICE, handlers=[on_change])

    deadline = threading.Timer(args.duration, stop.set)
    deadline.daemon = True
    deadline.start()
    while not stop.is_set():
        try:
            name, change = changes.get(timeout=0.1)
        except queue.Empty:
            continue
        instance = instance_of(name)
        if change is ServiceStateChange.Removed:
            if known.pop(name, None) is not None:
                emit(event="removed", instance=instance)
            continue
        resolved = zc.get_service_info(SERVICE, name, timeout=3000)
        if resolved is None:
            continue
        fields = dict(instance=instance, host=resolved.server, port=resolved.port,
                      addresses=sorted(resolved.parsed_addresses()))
        txt = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
               for k, v in resolved.properties.items() if k}
        if txt:
            fields["txt"] = txt
        if known.get(name) != fields:
            emit(event="added" if name not in known else "updated", **fields)
            known[name] = fields

    if info is not None:
        zc.unregister_service(info)
        emit(event="unregistered", instance=instance_of(info.name))
    zc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
