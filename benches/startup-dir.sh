#!/usr/bin/env bash
# Start-up on a large manifest directory: N services (default 10,000), one file each with a
# Service and an EndpointSlice of 2-10 endpoints (benches/common's Shape::realistic), as
# `revplane serve --source <dir>` reads them. Per run: the time from process start to the
# first published snapshot (the server's log), to /ready, and to the first full config a
# client gets (`revplane load --proxies 1 --types cds,eds`, started with the server and
# retrying its connection); then the medians.
#
# Usage: benches/startup-dir.sh [services] [runs] [binary]
#        (builds the release binary first unless a binary is given)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-10000}
runs=${2:-5}
bin=${3:-}
if [[ -z $bin ]]; then
  cargo build --release --quiet
  bin=./target/release/revplane
fi
dir=$(mktemp -d)
log=$(mktemp)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir" "$log"' EXIT
python3 - "$dir" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    ns = f"ns{i % 10}"
    a, b = (i >> 8) & 255, i & 255
    eps = "".join(f"- addresses: [10.{a}.{b}.{e % 250 + 1}]\n" for e in range(2 + (i * 7) % 9))
    with open(os.path.join(d, f"svc{i}.yaml"), "w") as f:
        f.write(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\n"
            f"spec: {{ports: [{{name: http, port: 80}}]}}\n---\n"
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata: {{name: svc{i}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\n"
            f"addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}"
        )
PY
ms() { date +%s%3N; }
published=() ready=() config=()
for run in $(seq "$runs"); do
  port=$((20000 + RANDOM % 20000))
  # Warm the page cache as a restarted pod's node would have it: read every file once.
  cat "$dir"/*.yaml >/dev/null
  start=$(ms)
  RUST_LOG=info "$bin" serve --revision bench --source "$dir" \
    --xds-addr 127.0.0.1:$port --admin-addr 127.0.0.1:$((port + 1)) >"$log" 2>&1 &
  pid=$!
  # The client: it connects as soon as the port is open and reports when its first full
  # config (CDS and EDS ACKed) arrived.
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.002; done
  first=$("$bin" load --xds-addr 127.0.0.1:$port --revision bench --proxies 1 \
    --types cds,eds --duration 3s --json 2>/dev/null |
    python3 -c '
import json, sys
first = {}
for v in json.load(sys.stdin)["versions"]:
    first[v["type"]] = min(first.get(v["type"], v["first_ack_unix_ms"]), v["first_ack_unix_ms"])
print(max(first.values()))')
  until curl -sf "127.0.0.1:$((port + 1))/ready" >/dev/null; do sleep 0.005; done
  up=$(python3 - "$log" "$start" <<'PY'
import re, sys, datetime
start = int(sys.argv[2])
for line in open(sys.argv[1]):
    if "snapshot published" in line:
        stamp = re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0]
        t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        print(round(t * 1000 - start)); break
PY
)
  kill $pid; wait $pid 2>/dev/null || true
  published+=("$up") config+=($((first - start)))
  echo "run $run: $n services, first snapshot published at ${up} ms, first full config at $((first - start)) ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " ms (min " a[1] ", max " a[NR] ")"}'; }
echo "median first snapshot: $(median "${published[@]}")"
echo "median first full config: $(median "${config[@]}")"
