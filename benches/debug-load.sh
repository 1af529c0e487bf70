#!/usr/bin/env bash
# /debug/proxies under load (issue 11, defect 8): 5,000 simulated proxies on the example mesh,
# then 1,000 concurrent requests for a debug page (benches/debug-load.py) while one new proxy
# connects. Prints the server's RSS before and its peak, the requests' status codes and
# latencies, and the new proxy's time to full config.
#
# Usage: benches/debug-load.sh [path]   (default /debug/proxies?limit=5000: every proxy)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin revplane
bin=./target/release/revplane
path=${1:-/debug/proxies?limit=5000}
port=$((20000 + RANDOM % 20000)); admin=$((port+1))
$bin serve --revision bench --source deploy/examples/mesh --xds-addr 127.0.0.1:$port --admin-addr 127.0.0.1:$admin 2>/dev/null &
spid=$!
lpid=
out=$(mktemp)
trap 'kill $spid $lpid 2>/dev/null || true; rm -f "$out"' EXIT
until curl -sf 127.0.0.1:$admin/ready >/dev/null; do sleep 0.2; done
$bin load --xds-addr 127.0.0.1:$port --revision bench --proxies 5000 --duration 150s > /dev/null 2>&1 &
lpid=$!
until [ "$(curl -s 127.0.0.1:$admin/metrics | awk '/^revplane_xds_connected_proxies/ {print $2}')" = "5000" ]; do sleep 1; done
sleep 3
before=$(awk '/VmRSS/ {print $2}' /proc/$spid/status)
python3 benches/debug-load.py 127.0.0.1 $admin 1000 "$path" > "$out" &
ppid=$!
sleep 1
newp=$($bin load --xds-addr 127.0.0.1:$port --revision bench --proxies 1 --duration 20s 2>&1 | grep -i "full config" | head -1)
wait $ppid
hwm=$(awk '/VmHWM/ {print $2}' /proc/$spid/status)
echo "server RSS $((before/1024)) MiB before, peak $((hwm/1024)) MiB; $(cat "$out"); new proxy during it: $newp"
