#!/usr/bin/env bash
# `make demo`: the seed's shop on the mesh, on one host. A private etcd, the
# control plane, the five services (order-service v1 twice, v2 once) each behind
# its own sidecar, on the real MariaDB, Redis and RabbitMQ; `weftctl apply -f
# policies/`; then weft-demo drives a user journey and a traffic mix through the
# gateway and prints what it saw. Stays up until Ctrl-C; `--once` exits after the
# report (for scripts and the end-to-end test). Everything it starts, it stops.
#
# PROFILE=debug uses debug builds (faster to build; the end-to-end test does).
set -euo pipefail
cd "$(dirname "$0")/.."
once=false
for arg in "$@"; do
  case "$arg" in
    --once) once=true ;;
    *) echo "usage: $0 [--once]" >&2; exit 2 ;;
  esac
done
profile=${PROFILE:-release}
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = release ] && echo release || echo debug)
t0=$(date +%s)
step() { printf '[%3ss] %s\n' $(( $(date +%s) - t0 )) "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 300); do port_open "$1" && return 0; sleep 0.1; done; return 1; }
wait_http() { for _ in $(seq 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# Ports: the ingress gateway (8443, the public entry over TLS; its admin 15100), the apps
# (api-gateway's 3000 stays open on the host for the demo's driver), then each sidecar's
# inbound/outbound/admin.
INGRESS=8443 INGRESS_ADMIN=15100
GATEWAY=3000 USERS=3001 PRODUCTS=3003 NOTIFY=3004 ORDER_V1A=3012 ORDER_V1B=3022 ORDER_V2=3032
declare -A SIDECAR=(
  [api-gateway]="15006 15001 15000" [user-service]="16106 16101 16100"
  [order-service-v1-a]="16206 16201 16200" [order-service-v1-b]="16216 16211 16210" [order-service-v2]="16226 16221 16220"
  [product-service]="16306 16301 16300" [notification-service]="16406 16401 16400")
PROMETHEUS=19090 DASHBOARD=15014 MAIL=2525
ports="23790 23800 15012 $MAIL $INGRESS $INGRESS_ADMIN $DASHBOARD $PROMETHEUS $GATEWAY $USERS $PRODUCTS $NOTIFY $ORDER_V1A $ORDER_V1B $ORDER_V2 ${SIDECAR[*]}"
for port in $ports; do
  if port_open "$port"; then echo "port $port is already in use (another demo still running?); stop it first" >&2; exit 1; fi
done
for b in "MariaDB 3306 mariadb" "Redis 6379 redis-server" "RabbitMQ 5672 rabbitmq-server"; do
  set -- $b
  port_open "$2" || { echo "$1 is not answering on 127.0.0.1:$2; start it (service $3 start)" >&2; exit 1; }
done

step "building ($profile): the sidecar, the control plane, the five services and the demo driver"
if [ "$profile" = release ]; then
  cargo build --release -p weft-proxy -p weft-control-plane -p api-gateway -p user-service -p order-service \
    -p product-service -p notification-service -p weft-demo
else
  # The whole workspace with its tests, as `make test` builds it: the same features everywhere, so
  # under the end-to-end test nothing is compiled twice (a second copy of 50 crates costs ~1 GB of disk).
  cargo build --workspace --bins --tests
fi

demo=$(mktemp -d /tmp/weft-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  step "stopping everything"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh shop each run: the demo's own databases, keys and queue.
mariadb -h 127.0.0.1 -u root -e 'DROP DATABASE IF EXISTS weft_demo_users; DROP DATABASE IF EXISTS weft_demo_products; DROP DATABASE IF EXISTS weft_demo_notifications'
redis-cli --scan --pattern 'weft-demo:*' | xargs -r redis-cli del >/dev/null

ETCD=https://127.0.0.1:23790
CP=http://127.0.0.1:15012
export WEFT_ETCD=$ETCD
step "starting etcd locked down (TLS with client certificates, RBAC) and the control plane"
# etcd's own CA and certificates: a server certificate, and one client certificate per etcd user.
certs=$demo/etcd-certs
"$bin/weftctl" etcd certs --dir "$certs" --hosts 127.0.0.1,localhost >/dev/null
/usr/bin/etcd --name demo --data-dir "$demo/etcd" --listen-client-urls $ETCD --advertise-client-urls $ETCD \
  --listen-peer-urls https://127.0.0.1:23800 --initial-advertise-peer-urls https://127.0.0.1:23800 \
  --initial-cluster demo=https://127.0.0.1:23800 \
  --client-cert-auth --trusted-ca-file "$certs/ca.pem" --cert-file "$certs/server.pem" --key-file "$certs/server-key.pem" \
  --peer-client-cert-auth --peer-trusted-ca-file "$certs/ca.pem" --peer-cert-file "$certs/server.pem" \
  --peer-key-file "$certs/server-key.pem" >"$demo/etcd.log" 2>&1 & pids+=($!)
wait_port 23790 || { echo "etcd did not start; see $demo/etcd.log" >&2; exit 1; }
export WEFT_ETCD_CA=$certs/ca.pem
# etcd's RBAC, as root: weft-control-plane and weft-admin get their roles, nobody else anything.
until WEFT_ETCD_CERT=$certs/root.pem WEFT_ETCD_KEY=$certs/root-key.pem "$bin/weftctl" etcd lockdown >/dev/null 2>&1; do
  sleep 0.1
done
# weftctl below is the policy writer.
export WEFT_ETCD_CERT=$certs/weft-admin.pem WEFT_ETCD_KEY=$certs/weft-admin-key.pem
# The mesh CA: a root and its key in files only the control plane reads (mode 0600), never in etcd.
"$bin/weftctl" ca init --dir "$demo/ca" >/dev/null
WEFT_ETCD_CERT=$certs/weft-control-plane.pem WEFT_ETCD_KEY=$certs/weft-control-plane-key.pem \
  "$bin/weft-control-plane" --listen 127.0.0.1:15012 --id cp-demo --ca-dir "$demo/ca" \
  --dashboard 127.0.0.1:$DASHBOARD --prometheus http://127.0.0.1:$PROMETHEUS >"$demo/control-plane.log" 2>&1 & pids+=($!)
wait_port 15012 || { echo "the control plane did not start" >&2; cat "$demo/control-plane.log" >&2; exit 1; }
until "$bin/weftctl" root-cert >"$demo/root.pem" 2>/dev/null; do sleep 0.1; done

# app NAME BINARY PORT ENV... : one service process, logging to $demo/NAME.log.
app() {
  local name=$1 binary=$2 port=$3; shift 3
  env LISTEN=127.0.0.1:$port RUST_LOG=${RUST_LOG:-info} "$@" "$bin/$binary" >"$demo/$name.log" 2>&1 & pids+=($!)
}
# sidecar NAME SERVICE VERSION APP_PORT : the workload's sidecar, with a certificate for its service account.
sidecar() {
  local name=$1 service=$2 version=$3 app_port=$4
  read -r inbound outbound admin <<<"${SIDECAR[$name]}"
  "$bin/weftctl" token -n production --service-account "$service" --ttl 1h >"$demo/$name.token" 2>/dev/null
  "$bin/weft-proxy" --control-plane $CP --workload "$name" --namespace production --service-account "$service" \
    --service "$service" --labels "app=$service,version=$version" --app 127.0.0.1:$app_port \
    --token-file "$demo/$name.token" --ca-file "$demo/root.pem" --inbound 127.0.0.1:$inbound \
    --outbound 127.0.0.1:$outbound --admin 127.0.0.1:$admin --access-log >"$demo/$name.sidecar.log" 2>&1 & pids+=($!)
}
outbound() { read -r _ o _ <<<"${SIDECAR[$1]}"; echo "127.0.0.1:$o"; }

step "starting the five services (order-service: v1 twice, v2 once) on MariaDB, Redis and RabbitMQ"
MQ=(EVENTS_EXCHANGE=weft-demo.orders)
# Secrets of this run only: user-service's token signing key (Ed25519; user-service refuses to
# start without one, and nothing else reads it: the others check tokens against its public key
# set) and the staff member user-service creates at start-up (nobody becomes staff by registering).
openssl genpkey -algorithm ed25519 -out "$demo/jwt-signing-key.pem" 2>/dev/null
chmod 0600 "$demo/jwt-signing-key.pem"
export WEFT_DEMO_STAFF_EMAIL=staff@shop.example WEFT_DEMO_STAFF_PASSWORD=$(head -c 18 /dev/urandom | base64)
app user-service user-service $USERS DATABASE_URL=mysql://root@127.0.0.1:3306/weft_demo_users MESH_OUTBOUND="$(outbound user-service)" \
  JWT_SIGNING_KEY_FILE="$demo/jwt-signing-key.pem" STAFF_EMAIL=$WEFT_DEMO_STAFF_EMAIL STAFF_PASSWORD="$WEFT_DEMO_STAFF_PASSWORD" STAFF_NAME="Demo Staff"
app product-service product-service $PRODUCTS DATABASE_URL=mysql://root@127.0.0.1:3306/weft_demo_products MESH_OUTBOUND="$(outbound product-service)"
# The partner's mail API, outside the mesh (policies/notification-service-egress.yaml lets
# notification-service reach it as mail.partner.example and nothing else outside).
"$bin/weft-demo" --mail-api 127.0.0.1:$MAIL >"$demo/mail-api.log" 2>&1 & pids+=($!)
app notification-service notification-service $NOTIFY DATABASE_URL=mysql://root@127.0.0.1:3306/weft_demo_notifications \
  "${MQ[@]}" QUEUE=weft-demo.notifications MESH_OUTBOUND="$(outbound notification-service)" MAIL_URL=http://mail.partner.example/send
for o in "order-service-v1-a v1 $ORDER_V1A" "order-service-v1-b v1 $ORDER_V1B" "order-service-v2 v2 $ORDER_V2"; do
  set -- $o
  app "$1" order-service "$3" VERSION="$2" INSTANCE="$1" FAULT_INJECTION=true REDIS_PREFIX=weft-demo: "${MQ[@]}" \
    MESH_OUTBOUND="$(outbound "$1")"
done
app api-gateway api-gateway $GATEWAY RATE_LIMIT_RPS=1000 RATE_LIMIT_BURST=1000 RATE_LIMIT_PREFIX=weft-demo:ratelimit: MESH_OUTBOUND="$(outbound api-gateway)"

step "starting a sidecar next to each (identity: a SPIFFE certificate from the control plane)"
# The ingress gateway's certificate: a CA of this run only, and a certificate for 127.0.0.1 and
# localhost, mounted as a Kubernetes TLS Secret would be (credentialName shop-cert).
ingress=$demo/ingress
mkdir -p "$ingress/credentials/shop-cert"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=Weft demo ingress CA" \
  -keyout "$ingress/ca.key" -out "$ingress/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=shop.localhost" \
  -keyout "$ingress/credentials/shop-cert/tls.key" -out "$ingress/shop.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:shop.localhost\n' >"$ingress/san.ext"
openssl x509 -req -in "$ingress/shop.csr" -CA "$ingress/ca.crt" -CAkey "$ingress/ca.key" -CAcreateserial -days 1 \
  -extfile "$ingress/san.ext" -out "$ingress/credentials/shop-cert/tls.crt" 2>/dev/null
chmod 0600 "$ingress/credentials/shop-cert/tls.key" "$ingress/ca.key"
"$bin/weftctl" token -n production --service-account shop-ingress --ttl 1h >"$demo/ingress.token" 2>/dev/null
"$bin/weft-proxy" gateway --control-plane $CP --workload shop-ingress --namespace production \
  --service-account shop-ingress --token-file "$demo/ingress.token" --ca-file "$demo/root.pem" \
  --admin 127.0.0.1:$INGRESS_ADMIN --gateway-address 127.0.0.1 --credentials-dir "$ingress/credentials" \
  --access-log >"$demo/ingress.sidecar.log" 2>&1 & pids+=($!)
sidecar api-gateway api-gateway v1 $GATEWAY
sidecar user-service user-service v1 $USERS
sidecar product-service product-service v1 $PRODUCTS
sidecar notification-service notification-service v1 $NOTIFY
sidecar order-service-v1-a order-service v1 $ORDER_V1A
sidecar order-service-v1-b order-service v1 $ORDER_V1B
sidecar order-service-v2 order-service v2 $ORDER_V2

for name in "${!SIDECAR[@]}" ingress; do
  if [ "$name" = ingress ]; then admin=$INGRESS_ADMIN; else read -r _ _ admin <<<"${SIDECAR[$name]}"; fi
  wait_http "http://127.0.0.1:$admin/ready" || { echo "the sidecar of $name did not become ready; logs in $demo" >&2; tail -5 "$demo/$name.sidecar.log" >&2; exit 1; }
done
for port in $GATEWAY $USERS $PRODUCTS $NOTIFY $ORDER_V1A $ORDER_V1B $ORDER_V2; do
  wait_http "http://127.0.0.1:$port/ready" || { echo "the service on port $port is not ready; logs in $demo:" >&2; tail -n 3 "$demo"/*.log >&2; exit 1; }
done
step "all seven workloads and the ingress gateway ready"

step "Prometheus scraping every sidecar's /stats/prometheus (found in the mesh registry) and the control plane's /metrics (http://127.0.0.1:$PROMETHEUS)"
# Service discovery from the mesh registry: the control plane answers Prometheus's HTTP SD with
# every registered sidecar's /stats/prometheus (the dashboard's listener, /api/prometheus-sd).
cp demo/prometheus/rules.yml "$demo/prometheus-rules.yml"
sed -e "s|@DASHBOARD@|127.0.0.1:$DASHBOARD|" -e "s|@RULES@|$demo/prometheus-rules.yml|" -e "s|@ROOT@|$demo/root.pem|" \
  demo/prometheus/prometheus.yml >"$demo/prometheus.yml"
prometheus --config.file="$demo/prometheus.yml" --storage.tsdb.path="$demo/prometheus" \
  --web.listen-address=127.0.0.1:$PROMETHEUS >"$demo/prometheus.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$PROMETHEUS/-/ready" || { echo "Prometheus did not start; log in $demo/prometheus.log" >&2; tail -5 "$demo/prometheus.log" >&2; exit 1; }
# Prometheus asks for its targets when it starts (then every 5 s): wait until it has
# scraped every one, so the traffic below is all in its series.
want=$(( ${#SIDECAR[@]} + 2 ))   # the sidecars, the ingress gateway (by its stream's status) and the control plane
for _ in $(seq 300); do
  up=$(curl -s "http://127.0.0.1:$PROMETHEUS/api/v1/query?query=count(up==1)" | grep -o '"value":\[[^]]*"[0-9]*"' | grep -o '"[0-9]*"$' | tr -d '"' || true)
  [ "${up:-0}" -ge "$want" ] && break
  sleep 0.1
done
[ "${up:-0}" -ge "$want" ] || { echo "Prometheus scraped ${up:-0} of $want targets; log in $demo/prometheus.log" >&2; exit 1; }

step "weftctl apply -f policies/   (canary, connection pools, outlier detection, STRICT mTLS, authorization)"
"$bin/weftctl" apply -f policies/ | sed 's/^/        /'
step "the call graph the mesh enforces (weftctl explain --access): deny by default, one ALLOW per service"
"$bin/weftctl" explain --access | sed 's/^/        /'
step "the ingress gateway (weft-proxy gateway; policies/ingress.yaml: an Istio Gateway and the VirtualService bound to it)"
wait_port $INGRESS || { echo "the ingress gateway did not open $INGRESS; log in $demo/ingress.sidecar.log" >&2; exit 1; }
# The route arrives with the push that opened the port; api-gateway's sidecar may take its ALLOW a moment later.
for _ in $(seq 100); do
  code=$(curl -sv --cacert "$ingress/ca.crt" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$INGRESS/api/products" 2>"$demo/ingress.curl" || true)
  [ "$code" = 200 ] && break
  sleep 0.1
done
tls=$(grep -o 'SSL connection using [^ ]*' "$demo/ingress.curl" | awk '{print $4}' | head -1 || true)
subject=$(grep -o 'subject: .*' "$demo/ingress.curl" | head -1 | sed 's/^subject: //' || true)
echo "        GET https://127.0.0.1:$INGRESS/api/products → $code over ${tls:-?}, certificate ${subject:-?} (verified against the demo's ingress CA)"
[ "$code" = 200 ] || status_ingress=1
plain=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$INGRESS/api/products" 2>/dev/null || true)
echo "        plaintext HTTP to $INGRESS: ${plain:-000} (the connection is closed: the port speaks TLS only)"

step "end users at the gateway (policies/ingress.yaml: a RequestAuthentication; the control plane fetched user-service's key set)"
https() { curl -s --cacert "$ingress/ca.crt" -o /dev/null -w '%{http_code}' "$@" || true; }
# The password goes on stdin, not in curl's arguments (which any local user can read in ps).
token=$(curl -s --cacert "$ingress/ca.crt" -H 'content-type: application/json' -d @- \
  "https://127.0.0.1:$INGRESS/api/users/login" <<<"{\"email\":\"$WEFT_DEMO_STAFF_EMAIL\",\"password\":\"$WEFT_DEMO_STAFF_PASSWORD\"}" \
  | grep -o '"token":"[^"]*"' | cut -d'"' -f4 || true)
# The key set reaches the gateway with the push after the control plane's fetch: wait for it.
for _ in $(seq 100); do
  code=$(https -H "authorization: Bearer $token" "https://127.0.0.1:$INGRESS/api/orders")
  [ "$code" = 200 ] && break
  sleep 0.1
done
echo "        GET /api/orders with the token user-service issued at login (EdDSA) → $code"
[ "$code" = 200 ] || status_ingress=1
code=$(https "https://127.0.0.1:$INGRESS/api/orders")
echo "        GET /api/orders without a token → $code (RBAC: the gateway's AuthorizationPolicy wants a request principal)"
[ "$code" = 403 ] || status_ingress=1
# A forgery: the same claims and key id, signed with a key of the attacker's own.
openssl genpkey -algorithm ed25519 -out "$demo/attacker.pem" 2>/dev/null
b64url() { basenc --base64url -w0 | tr -d '='; }
signed="$(cut -d. -f1 <<<"$token").$(cut -d. -f2 <<<"$token")"
printf '%s' "$signed" >"$demo/forged.msg"   # Ed25519 signs in one shot: from a file, not a pipe
signature=$(openssl pkeyutl -sign -inkey "$demo/attacker.pem" -rawin -in "$demo/forged.msg" 2>/dev/null | b64url) || true
forged="$signed.$signature"
[ -n "$signature" ] || { echo "        (openssl could not sign the forgery: needs OpenSSL 3's pkeyutl -rawin)"; status_ingress=1; }
code=$(https -H "authorization: Bearer $forged" "https://127.0.0.1:$INGRESS/api/orders")
echo "        GET /api/orders with a token signed by another key under user-service's key id → $code (Jwt verification fails)"
[ "$code" = 401 ] || status_ingress=1
# The gateway's sidecar holds the canary subsets once the push has arrived.
for _ in $(seq 100); do curl -s http://127.0.0.1:15000/clusters | grep -q '|v2|order-service' && break; sleep 0.1; done
sleep 1
echo
"$bin/weft-demo" --logs "$demo" && status=0 || status=$?
echo
step "egress (policies/notification-service-egress.yaml): a ServiceEntry for the partner's mail API, REGISTRY_ONLY for the rest"
for _ in $(seq 100); do grep -q '^mail ' "$demo/mail-api.log" && break; sleep 0.1; done
mails=$(grep -c '^mail ' "$demo/mail-api.log" || true)
echo "        notification-service → http://mail.partner.example/send (ServiceEntry partner-mail, outside the mesh): $mails mails delivered"
sed -n 's/^mail [^ ]* /          /p' "$demo/mail-api.log" | head -3
blocked=$(curl -s -o /dev/null -w '%{http_code}' -H 'host: api.github.com' "http://$(outbound notification-service)/" || true)
echo "        notification-service → http://api.github.com/: $blocked (no ServiceEntry names it: BlackHoleCluster)"
{ [ "${mails:-0}" -ge 1 ] && [ "$blocked" = 502 ]; } || status_egress=1
echo
step "weftctl top: the mesh's edges from Prometheus (rate over the last minute)"
# Rates need two scrapes after the traffic: wait for the edge the journey used, not for time.
for _ in $(seq 100); do
  "$bin/weftctl" top --prometheus http://127.0.0.1:$PROMETHEUS 2>/dev/null | grep -q 'api-gateway → order-service' && break
  sleep 0.2
done
"$bin/weftctl" top --prometheus http://127.0.0.1:$PROMETHEUS | sed 's/^/        /' || status=1
echo
step "weftctl tap: the gateway sidecar's requests live (the next 3 GETs of /products)"
timeout 20 "$bin/weftctl" tap --admin 127.0.0.1:15000 --method GET --path /products --max 3 >"$demo/tap.out" 2>&1 &
tap=$!
for _ in $(seq 200); do grep -q '^# tapping' "$demo/tap.out" && break; sleep 0.05; done
for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$GATEWAY/api/products"; done
wait $tap || status=1
sed 's/^/        /' "$demo/tap.out"
echo
[ "${status_ingress:-0}" = 0 ] || { echo "demo: the ingress gateway did not answer as expected (above)"; status=1; }
[ "${status_egress:-0}" = 0 ] || { echo "demo: egress did not behave as expected (above)"; status=1; }
if $once; then exit $status; fi
"$bin/weft-demo" --live >"$demo/live.log" 2>&1 & pids+=($!)
step "live traffic (weft-demo --live): orders through the canary, the catalogue, a refused call; the dashboard shows it"
[ $status = 0 ] || echo "demo: a step above failed (status $status)"
cat <<INFO
Dashboard: http://127.0.0.1:$DASHBOARD/   (the graph, the canary split, each sidecar's config and certificate; click an edge to explain it)
The shop is running. Try it (through the ingress gateway, TLS with the demo's own CA):
  curl -s --cacert $ingress/ca.crt https://127.0.0.1:$INGRESS/api/products
  curl -s http://127.0.0.1:$GATEWAY/api/products      (api-gateway's own port on the host)
  curl -s -XPOST -H 'content-type: application/json' http://127.0.0.1:$GATEWAY/api/users/login -d '{"email":"...","password":"..."}'
Staff (made by user-service at start-up): $WEFT_DEMO_STAFF_EMAIL / $WEFT_DEMO_STAFF_PASSWORD
Sidecar admin (/clusters /config_dump /stats/prometheus): ingress gateway http://127.0.0.1:$INGRESS_ADMIN, api-gateway http://127.0.0.1:15000, order-service-v1-a http://127.0.0.1:16200
Prometheus: http://127.0.0.1:$PROMETHEUS (recording rules weft:edge_*; try: $bin/weftctl top --prometheus http://127.0.0.1:$PROMETHEUS)
Edit policies/ and run: WEFT_ETCD=$ETCD WEFT_ETCD_CA=$WEFT_ETCD_CA WEFT_ETCD_CERT=$WEFT_ETCD_CERT WEFT_ETCD_KEY=$WEFT_ETCD_KEY $bin/weftctl apply -f policies/      weftctl status | explain work too.
Logs: $demo        Ctrl-C stops everything.
INFO
wait
