#!/usr/bin/env bash
# Server RSS under the memory-pinning attack (issue 11, defect 1): streams that each send a
# gRPC length prefix and 90% of that body, then stall, as `revplane load --stall-bytes` does.
#
#   A  2 connections x 100 streams, prefix near --max-request-bytes (4 MiB): the issue's attack
#   B  20 connections x 100 streams, prefix just under --max-first-request-bytes (64 KiB)
#   C  2 connections x 100 streams past the revision gate (a valid first request first),
#      then a prefix near 4 MiB
#
# Each scenario starts a fresh server, holds the attack for 7 s and prints the server's RSS
# before, its peak (VmHWM) and what the attacker saw.
#
# Usage: benches/rss-pin.sh [server-binary]
#   The attacker is always target/release/revplane (built first); the server defaults to it
#   too. Pass another build (e.g. one of main before the limits) to compare.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
attacker=./target/release/revplane
server=${1:-$attacker}
pid=
trap 'kill $pid 2>/dev/null || true' EXIT

scenario() {
  local name=$1 connections=$2 streams=$3 bytes=$4 extra=${5:-}
  local port=$((20000 + RANDOM % 20000))
  "$server" serve --revision bench --source deploy/examples/mesh \
    --xds-addr 127.0.0.1:$port --admin-addr 127.0.0.1:$((port + 1)) 2>/dev/null &
  pid=$!
  until curl -sf "127.0.0.1:$((port + 1))/ready" >/dev/null; do sleep 0.05; done
  sleep 1
  local base
  base=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  local report
  report=$("$attacker" load --xds-addr 127.0.0.1:$port --revision bench \
    --proxies "$streams" --connections "$connections" --stall-bytes "$bytes" $extra \
    --duration 7s | tr '\n' ';')
  local rss hwm
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  printf '%s: %d x %d streams, prefix %d B: RSS %.1f MiB before, peak %.1f MiB, %.1f MiB after; attacker: %s\n' \
    "$name" "$connections" "$((streams / connections))" "$bytes" \
    "$(echo "$base / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$report"
  kill $pid; wait $pid 2>/dev/null || true
}

scenario A 2 200 $((4 * 1024 * 1024 - 1024))
scenario B 20 2000 $((64 * 1024 - 64))
scenario C 2 200 $((4 * 1024 * 1024 - 1024)) --stall-after-gate
