#!/usr/bin/env bash
# Memory of the load generator (`revplane load`) on a large catalog: 5,000 Services x 2
# ports (10,000 clusters, 4 endpoints each) in a manifest directory, P simulated proxies.
# Prints the generator's RSS 3 s before the end (every proxy configured, nothing changing)
# and its peak (VmHWM). Figures: docs/benchmarks.md, "Load generator memory".
#
# Usage: benches/load-mem.sh [proxies] [seconds] [load-binary]
#   The server is always target/release/revplane (built first); pass another build as the
#   load binary (e.g. one of an older commit) to compare.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin revplane
server=./target/release/revplane
proxies=${1:-200}
secs=${2:-40}
loadbin=${3:-$server}
mesh=$(mktemp -d)
spid=
trap 'kill $spid 2>/dev/null || true; rm -rf "$mesh"' EXIT
python3 - "$mesh" <<'PY'
import sys
d = sys.argv[1]
for i in range(5000):
    ns = f"ns{i % 20}"
    eps = "".join(f"- addresses: [10.{(i >> 8) & 255}.{i & 255}.{e + 1}]\n" for e in range(4))
    open(f"{d}/svc{i}.yaml", "w").write(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\n"
        f"spec: {{ports: [{{name: http, port: 80}}, {{name: grpc, port: 9090}}]}}\n---\n"
        f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: svc{i}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: grpc, port: 9090}}]\n"
        f"endpoints:\n{eps}")
PY
port=$((20000 + RANDOM % 20000))
"$server" serve --revision bench --source "$mesh" --xds-addr 127.0.0.1:$port \
  --admin-addr 127.0.0.1:$((port + 1)) 2>/dev/null &
spid=$!
until curl -sf "127.0.0.1:$((port + 1))/ready" >/dev/null; do sleep 0.2; done
out=$(mktemp)
"$loadbin" load --xds-addr 127.0.0.1:$port --revision bench --proxies "$proxies" \
  --duration "${secs}s" >"$out" 2>&1 &
lpid=$!
sleep $((secs - 3))
rss=$(awk '/VmRSS/ {print $2}' /proc/$lpid/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$lpid/status)
wait $lpid || true
printf 'load: %d proxies, RSS at end %d MiB (%d KiB per proxy), peak %d MiB\n' \
  "$proxies" $((rss / 1024)) $((rss / proxies)) $((hwm / 1024))
head -2 "$out"
rm -f "$out"
