#!/usr/bin/env bash
# RSS of a revplane holding N Services with one EndpointSlice each (default 10,000), read
# from a manifest directory. Prints one line per run and the median.
#
# Usage: benches/rss-catalog.sh [services] [runs]     (builds the release binary first)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-10000}
runs=${2:-3}
cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"; kill $pid 2>/dev/null || true' EXIT
python3 - "$dir" "$n" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/mesh.yaml", "w") as f:
    for i in range(n):
        ns = f"ns{i % 100}"
        a, b = (i >> 8) & 255, i & 255
        f.write(f"""apiVersion: v1
kind: Service
metadata: {{name: svc{i}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc{i}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- addresses: [10.{a}.{b}.1]
- addresses: [10.{a}.{b}.2]
---
""")
PY
rss=()
for run in $(seq "$runs"); do
  port=$((20000 + RANDOM % 20000))
  ./target/release/revplane serve --revision bench --source "$dir" \
    --xds-addr 127.0.0.1:$port --admin-addr 127.0.0.1:$((port + 1)) 2>/dev/null &
  pid=$!
  start=$(date +%s.%N)
  until curl -sf "127.0.0.1:$((port + 1))/ready" >/dev/null; do sleep 0.05; done
  ready=$(echo "$(date +%s.%N) - $start" | bc)
  sleep 1
  kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  echo "run $run: $n services, ready in ${ready}s, RSS ${kb} KiB (peak ${hwm} KiB)"
  rss+=("$kb")
  kill $pid; wait $pid 2>/dev/null || true
done
printf '%s\n' "${rss[@]}" | sort -n | awk '{a[NR]=$1} END {print "median RSS: " a[int((NR+1)/2)] " KiB, min " a[1] ", max " a[NR]}'
