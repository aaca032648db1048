#!/usr/bin/env bash
# Wireshark's dissectors decode the packets we emit, with the fields we meant.
exec bash "$(dirname "$0")/../tshark.sh"
