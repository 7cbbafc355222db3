#!/usr/bin/env bash
# The mesh on one host: a private etcd, the control plane, order-service v1 and
# v2 (tiny hello apps) each behind a sidecar, and an api-gateway sidecar in
# front. Then `weftctl apply -f policies/` turns on the seed's canary, live.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p weft-proxy -p weft-control-plane
cargo build --release -q -p weft-proxy --example hello
demo=$(mktemp -d /tmp/weft-demo.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$demo"; }
trap cleanup EXIT INT TERM
for port in 23790 23800 15012 18181 18182 15000 15001 15006 16000 16001 16006 17000 17001 17006; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is already in use (another demo still running?); stop it first" >&2; exit 1
  fi
done
ETCD=http://127.0.0.1:23790
CP=http://127.0.0.1:15012
export WEFT_ETCD=$ETCD

/usr/bin/etcd --name demo --data-dir "$demo/etcd" --listen-client-urls $ETCD --advertise-client-urls $ETCD \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster demo=http://127.0.0.1:23800 >"$demo/etcd.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/23790) 2>/dev/null && break; sleep 0.1; done
"$bin/weft-control-plane" --listen 127.0.0.1:15012 --id cp-demo >"$demo/cp.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/15012) 2>/dev/null && break; sleep 0.1; done
# Identity: the mesh root every sidecar trusts, and a bootstrap token per service account.
"$bin/weftctl" root-cert >"$demo/root.pem"
"$bin/weftctl" token -n production --service-account order-service >"$demo/order.token"
"$bin/weftctl" token -n production --service-account api-gateway >"$demo/gateway.token"
"$bin/examples/hello" 127.0.0.1:18181 order-service-v1 2>/dev/null & pids+=($!)
"$bin/examples/hello" 127.0.0.1:18182 order-service-v2 2>/dev/null & pids+=($!)
sidecar() { # name version app inbound outbound admin
  "$bin/weft-proxy" --control-plane $CP --workload "$1" --namespace production --service-account order-service \
    --service order-service --labels "app=order-service,version=$2" --app "$3" \
    --token-file "$demo/order.token" --ca-file "$demo/root.pem" \
    --inbound "$4" --outbound "$5" --admin "$6" --no-access-log >"$demo/$1.log" 2>&1 & pids+=($!)
}
sidecar order-service-v1 v1 127.0.0.1:18181 127.0.0.1:16006 127.0.0.1:16001 127.0.0.1:16000
sidecar order-service-v2 v2 127.0.0.1:18182 127.0.0.1:17006 127.0.0.1:17001 127.0.0.1:17000
"$bin/weft-proxy" --control-plane $CP --workload api-gateway --namespace production --labels app=api-gateway \
  --service-account api-gateway --token-file "$demo/gateway.token" --ca-file "$demo/root.pem" \
  --inbound 127.0.0.1:15006 --outbound 127.0.0.1:15001 --admin 127.0.0.1:15000 >"$demo/access.log" 2>"$demo/api-gateway.log" & pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:15000/ready >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:15000/ready >/dev/null || { echo "the gateway sidecar did not become ready; logs in $demo" >&2; cat "$demo"/*.log >&2; exit 1; }
# Both order-service instances registered and pushed to the gateway:
for _ in $(seq 100); do curl -s http://127.0.0.1:15000/clusters | grep -q 17006 && break; sleep 0.1; done

calls() { for _ in $(seq "$1"); do curl -s -H 'Host: order-service' "${@:2}" http://127.0.0.1:15001/orders; done | sort | uniq -c; }
echo "== no policy yet: the gateway balances over both versions (least request)"
calls 20
echo "== weftctl apply -f policies/   (the seed's VirtualService + DestinationRule, made valid)"
"$bin/weftctl" apply -f policies/
sleep 1
echo "== 100 calls: about 90 v1 / 10 v2"
calls 100
echo "== x-canary: true always reaches v2"
calls 5 -H 'x-canary: true'
echo "== weftctl explain --workload api-gateway -n production --host order-service -H 'x-canary: true'"
"$bin/weftctl" explain --workload api-gateway -n production --host order-service -H 'x-canary: true'
echo "== mTLS between the sidecars: the series order-service v1 recorded (caller identity, connection security)"
curl -s http://127.0.0.1:16000/stats/prometheus | grep '^istio_requests_total{' | grep -o 'source_principal="[^"]*"\|connection_security_policy="[^"]*"' | sort | uniq -c
echo "== PeerAuthentication STRICT: plaintext to a sidecar is refused, the mesh keeps working"
printf 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: production}\nspec:\n  mtls: {mode: STRICT}\n' >"$demo/strict.yaml"
"$bin/weftctl" apply -f "$demo/strict.yaml"; sleep 1
code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H 'Host: order-service' http://127.0.0.1:16006/ || true)
echo "plaintext straight to order-service v1's sidecar: $([ "$code" = 000 ] && echo 'connection closed (refused)' || echo "$code")"
calls 5
echo "== the seed's AuthorizationPolicy (only user-service and product-service may call order-service)"
"$bin/weftctl" apply -f deploy/seed-authz.yaml; sleep 1
echo -n "api-gateway -> order-service: "; curl -s -H 'Host: order-service' http://127.0.0.1:15001/orders; echo
"$bin/weftctl" delete ap order-service-auth -n production
echo "== weftctl status"
"$bin/weftctl" status
echo "== the seed's original YAML is refused, with file, line and field:"
"$bin/weftctl" validate -f control-plane/tests/fixtures/seed-istio.yaml || true
echo
echo "Running: gateway sidecar outbound 127.0.0.1:15001 (Host: order-service), admin http://127.0.0.1:15000"
echo "(/config_dump /clusters /stats/prometheus); control plane metrics http://127.0.0.1:15012/metrics."
echo "Edit policies/ and run: WEFT_ETCD=$ETCD $bin/weftctl apply -f policies/     Ctrl-C stops everything."
wait
