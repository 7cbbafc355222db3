#!/usr/bin/env bash
# Writes proxy/layout/hot-functions.txt: the symbols of every function the
# sidecar build runs at start-up, on a config reload and on its request paths
# (plaintext HTTP/1.1, HTTP/2 between sidecars, mutual TLS, the gateway), found
# with callgrind. proxy/build.rs lays them out first in the binary. Run it after
# a dependency or toolchain upgrade (`make layout-check` says when).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
bin="$target/sidecar/weft-proxy"
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; [ -n "${LAYOUT_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT INT TERM
command -v valgrind >/dev/null || { echo "layout: needs valgrind (apt-get install valgrind)"; exit 1; }
cargo build -q --profile sidecar -p weft-proxy
cargo build -q --release -p weft-proxy --example hello
cargo build -q --release -p weft-bench --bin weft-bench-sidecar
[ -n "${LAYOUT_KEEP:-}" ] && echo "layout: working in $work"
cp "$bin" "$work/weft-proxy"
# Every callgrind run dumps each million basic blocks: the bench kills its proxies.
grind=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" --dump-every-bb=1000000
  --compress-strings=no --compress-pos=no --demangle=no)

# 1. The static-config sidecar of proxy/examples/canary.yaml: start-up, requests, a reload.
"$target/release/examples/hello" 127.0.0.1:18181 order-service-v1 >/dev/null & pids+=($!)
"$target/release/examples/hello" 127.0.0.1:18182 order-service-v2 >/dev/null & pids+=($!)
cp proxy/examples/canary.yaml "$work/canary.yaml"
"${grind[@]}" "$work/weft-proxy" --config "$work/canary.yaml" --workers 1 >/dev/null 2>&1 & grinder=$!
for _ in $(seq 300); do curl -sf http://127.0.0.1:15000/ready >/dev/null && break; sleep 0.2; done
for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: order-service' http://127.0.0.1:15001/orders; done
for _ in $(seq 5); do
  curl -s -o /dev/null -H 'Host: nowhere' http://127.0.0.1:15001/
  curl -s -o /dev/null http://127.0.0.1:15000/stats/prometheus
  curl -s -o /dev/null http://127.0.0.1:15000/config_dump
done
echo "# reloaded" >> "$work/canary.yaml"; sleep 3
for _ in $(seq 50); do curl -s -o /dev/null -H 'Host: order-service' -H 'x-canary: true' http://127.0.0.1:15001/orders; done
kill -TERM $grinder; wait $grinder 2>/dev/null || true  # callgrind dumps the rest as it exits

# 2. The bench's sidecar paths, each proxy under callgrind.
printf '#!/bin/sh\nexec %s %s/weft-proxy "$@"\n' "${grind[*]}" "$work" > "$work/grind-proxy"
chmod +x "$work/grind-proxy"
"$target/release/weft-bench-sidecar" --proxy-bin "$work/grind-proxy" --scenarios sidecar,pair-h1,pair-h2,mesh,ingress \
  --rates 200 --duration 3s --warmup 2s --rounds 1 --out "$work/bench.json" --plot "$work/bench.png" >/dev/null

# The Rust functions run (only the sidecar's object has them: the rest is libc,
# libm, libgcc and the loader; callgrind names the object of a function already
# in the hot section `???`), first seen first, without callgrind's recursion
# marks ('2).
out=proxy/layout/hot-functions.txt
{
  sed -n '1,/^# longer in the binary/p' "$out"
  for f in "$work"/cg.*; do cat "$f"; done | awk '
    /^fn=_ZN/ { n = substr($0, 4); sub(/'"'"'[0-9]+$/, "", n); if (!(n in seen)) { seen[n] = 1; print n } }'
} > "$work/hot.txt"
mv "$work/hot.txt" "$out"
echo "layout: $(grep -vc '^#' "$out") functions in $out"
