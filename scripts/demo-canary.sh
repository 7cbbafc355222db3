#!/usr/bin/env bash
# The seed's canary on one host: order-service v1 and v2 (tiny hello apps) and
# one weft-proxy sidecar in front, configured by proxy/examples/canary.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p weft-proxy --example hello
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$target/examples/hello" 127.0.0.1:18181 order-service-v1 & pids+=($!)
"$target/examples/hello" 127.0.0.1:18182 order-service-v2 & pids+=($!)
"$target/weft-proxy" --config proxy/examples/canary.yaml >/tmp/weft-demo-access.log & pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:15000/ready >/dev/null && break; sleep 0.1; done

echo "== 100 requests to order-service: expect about 90 v1 / 10 v2"
for _ in $(seq 100); do curl -s -H 'Host: order-service' http://127.0.0.1:15001/orders; done | sort | uniq -c
echo "== x-canary: true always goes to v2"
for _ in $(seq 5); do curl -s -H 'Host: order-service' -H 'x-canary: true' http://127.0.0.1:15001/orders; done | sort | uniq -c
echo "== unknown host: 404 with the reason"
curl -si -H 'Host: nowhere' http://127.0.0.1:15001/ | grep -iE '^(HTTP|x-weft-error)'
echo
echo "Sidecar running: outbound 127.0.0.1:15001, admin http://127.0.0.1:15000 (/config_dump /clusters /stats/prometheus)."
echo "Access log: /tmp/weft-demo-access.log. Edit proxy/examples/canary.yaml to reload it live. Ctrl-C stops."
wait
