#!/usr/bin/env bash
# Instructions per request of one server process under callgrind: a figure that does not move with the
# machine's load the way CPU time does (noisy neighbours, steal), for comparing two builds of a hot path.
#
#   bench/instructions.sh URL -- COMMAND...     e.g.
#   bench/instructions.sh http://127.0.0.1:5078/v2/app/manifests/v1 -- \
#     node --max-semi-space-size=2 --heap-growing-percent=30 dist/cli/main.js serve one-process.yml
#
# Starts COMMAND under valgrind, waits until URL answers, sends WARMUP requests (JIT tiers settle), zeroes the
# counters, sends COUNT requests with hey (16 connections), dumps and prints user-space instructions per request.
# The kernel's share (socket reads and writes) is not counted. How many requests one event-loop turn handles
# depends on timing, so the same build can read 10-20% apart at different hours: compare builds in alternating
# runs, never against a figure from another time. Env: WARMUP (3000), COUNT (4992: hey sends COUNT / 16 per connection), ACCEPT (OCI manifest).
set -euo pipefail
url=$1
shift
[ "${1:-}" = "--" ] && shift
warmup=${WARMUP:-3000}
count=${COUNT:-4992}
accept=${ACCEPT:-application/vnd.oci.image.manifest.v1+json}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$out/cg" "$@" >"$out/log" 2>&1 &
pid=$!
for _ in $(seq 120); do curl -s -o /dev/null "$url" && break; sleep 1; done
hey -n "$warmup" -c 16 -t 60 -H "Accept: $accept" "$url" >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
ok=$(hey -n "$count" -c 16 -t 60 -H "Accept: $accept" "$url" | awk '/\[2[0-9][0-9]\]/ {s += $2} END {print s + 0}')
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 2
kill "$pid"
wait "$pid" 2>/dev/null || true
total=$(grep -h '^summary:' "$out"/cg.* | awk '{s += $2} END {print s}')
echo "$((total / ok)) instructions per request ($ok answered 2xx of $count)"
