#!/usr/bin/env bash
# Every decoder's fuzz target, each for a bounded time.
exec bash "$(dirname "$0")/../fuzz/run.sh"
