# Weft: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# What a fresh Debian 12 machine lacks: protoc (etcd-client), etcd (tests start
# their own), iptables and iproute2 (the pod tests: network namespaces), the shop's backends
# (MariaDB, Redis, RabbitMQ: the services' tests and the demo use the real ones;
# the tests also start private mariadbd and redis-server instances), curl and Prometheus (demo),
# Chromium and chromedriver (the dashboard's browser test).
DEB_PACKAGES := protobuf-compiler etcd-server iptables iproute2 mariadb-server redis-server rabbitmq-server curl openssl prometheus chromium chromium-driver

.PHONY: test deps build demo demo-static bench bench-quick bench-instructions bench-deps fuzz soak layout layout-check clean

## Installs missing Debian packages (only those missing; idempotent).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v cargo-nextest >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest

## The whole test suite.
test: deps
	$(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc --quiet

build:
	$(CARGO) build --release -p weft-proxy

## The seed's shop on the mesh, on one host: etcd, the control plane, the five services each behind
## its sidecar (order-service v1 x2, v2 x1) on MariaDB, Redis and RabbitMQ; applies policies/, drives
## a journey and a traffic mix through the gateway, prints what it saw, stays up until Ctrl-C.
## `make demo ARGS=--once` exits after the report.
demo: deps
	@./scripts/demo.sh $(ARGS)

## The sidecar alone on a static config file (proxy/examples/canary.yaml).
demo-static: build
	@./scripts/demo-canary.sh

## Fuzzing on stable Rust (benches/src/bin/weft-fuzz.rs): request paths, the push-stream framing,
## the Istio and sidecar YAML loaders, injection, and crafted requests to a running sidecar.
## FUZZ_SECONDS per target (9 targets: 100 s each is 15 minutes); fails on any panic, hang or
## broken invariant, writing the input to target/fuzz/crashes/.
FUZZ_SECONDS ?= 100
fuzz:
	$(CARGO) build --release -p weft-bench --bin weft-fuzz
	$(RELEASE)/weft-fuzz --seconds $(FUZZ_SECONDS)

## The soak (not in CI): SOAK_MINUTES (30) at 1000 rps through the mesh path (client sidecar →
## mutual TLS, HTTP/2 → server sidecar → app) from a real control plane on a private etcd, a
## policy change every 10 s, workload certificates rotating about every minute; each minute's
## requests, failures, latency, RSS, open fds and certificates; target/soak/ (soak.md, soak-rss.png).
SOAK_MINUTES ?= 30
soak: deps
	$(CARGO) build --profile sidecar -p weft-proxy
	$(CARGO) build --release -p weft-control-plane
	$(CARGO) build --release -p weft-bench --bin weft-soak
	$(RELEASE)/weft-soak --minutes $(SOAK_MINUTES) --proxy-bin $(SIDECAR_BIN) --cp-bin $(RELEASE)/weft-control-plane --out target/soak

## The sidecar's code layout (proxy/build.rs): the functions it runs, found with callgrind, laid
## out first in the binary so fewer code pages are resident. `layout` writes the list again
## (proxy/layout/hot-functions.txt; about 6 minutes); `layout-check` counts how many of its
## symbols the shipped binary still has (a dependency or toolchain upgrade renames them).
layout: deps
	@command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind; }
	./scripts/layout.sh
	$(CARGO) build --profile sidecar -p weft-proxy

layout-check:
	@nm $(SIDECAR_BIN) | awk 'NR == FNR { if ($$0 !~ /^#/ && $$0 != "") want[$$0] = 1; next } \
	  ($$3 in want) { found[$$3] = 1 } \
	  END { t = length(want); f = length(found); printf "layout: %d of %d listed functions are in $(SIDECAR_BIN)", f, t; \
	        if (f * 10 < t * 9) printf " (fewer than 90%%: run make layout)"; print "" }' proxy/layout/hot-functions.txt -

clean:
	$(CARGO) clean

BENCH_OUT ?= target/bench
# Where cargo puts release binaries (CARGO_TARGET_DIR is honoured, as cargo does).
RELEASE := $(or $(CARGO_TARGET_DIR),target)/release
# The sidecar as shipped: the `sidecar` profile (fat LTO, one codegen unit; Cargo.toml says why).
SIDECAR_BIN := $(or $(CARGO_TARGET_DIR),target)/sidecar/weft-proxy
# The floor under it: hyper and tokio alone, the same profile (benches/floor).
FLOOR_BIN := $(or $(CARGO_TARGET_DIR),target)/sidecar/weft-bench-floor

## The contestants (HAProxy, nginx from Debian's packages, only when missing) and release builds.
bench-deps:
	@dpkg -s haproxy nginx-light fonts-dejavu-core >/dev/null 2>&1 || { echo "installing haproxy nginx-light fonts-dejavu-core"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy nginx-light fonts-dejavu-core; }
	$(CARGO) build --release -p weft-bench
	$(CARGO) build --profile sidecar -p weft-proxy
	$(CARGO) build --profile sidecar -p weft-bench-floor
	@mkdir -p $(BENCH_OUT)

## Sidecar overhead next to HAProxy and nginx from Debian's packages (installed when missing; run as
## child processes on generated configs, never as system services), interleaved rounds, Istio's method;
## a PNG of the latency percentiles at 1000 rps (also copied to docs/), then the micro-benchmarks (~30 min).
## The ingress path (load → TLS → weft-proxy gateway → mTLS → sidecar → app) beside HAProxy's and nginx's.
bench: bench-deps
	set -o pipefail; $(RELEASE)/weft-bench-sidecar --proxy-bin $(SIDECAR_BIN) --floor-bin $(FLOOR_BIN) \
	  --scenarios direct,sidecar,hyper-floor,httparse-floor,httparse-http-floor,pair-h1,pair-h2,mesh,haproxy-pair,nginx-pair,haproxy-tls-pair,nginx-tls-pair,ingress,haproxy-ingress,nginx-ingress \
	  --rates 200,1000,2000 --max --duration 10s --rounds 3 \
	  --out $(BENCH_OUT)/sidecar.json --plot $(BENCH_OUT)/latency.png | tee $(BENCH_OUT)/sidecar.md
	@mkdir -p docs && cp $(BENCH_OUT)/latency.png docs/bench-latency.png && echo "copied $(BENCH_OUT)/latency.png to docs/bench-latency.png"
	$(CARGO) bench -p weft-bench --bench route_match

## Instructions and malloc calls per request, Weft next to nginx and HAProxy, each proxy under
## valgrind's callgrind (installed when missing): counters zeroed after a warm-up, closed-loop load for
## a fixed window, the dump divided by the requests answered. Deterministic where latency is not: the
## figure to steer by (issue 17). One hop plaintext (Weft with its access log off, the default, and on;
## hyper and tokio alone, the floor under it) and the two-hop mutual-TLS path. About three minutes after the build.
bench-instructions: bench-deps
	@command -v valgrind >/dev/null 2>&1 || { echo "installing valgrind"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind; }
	set -o pipefail; $(RELEASE)/weft-bench-sidecar --proxy-bin $(SIDECAR_BIN) --floor-bin $(FLOOR_BIN) --callgrind \
	  --scenarios sidecar,sidecar-access-log,hyper-floor,httparse-floor,httparse-http-floor,pair-h1,mesh,haproxy-pair,nginx-pair,haproxy-tls-pair,nginx-tls-pair \
	  --out $(BENCH_OUT)/instructions.json | tee $(BENCH_OUT)/instructions.md

## The same in about two minutes after the build, a smoke test for CI (asserts no timing): one rate
## plus max, one short round, short criterion windows. The plot goes to $(BENCH_OUT)/latency.png only.
bench-quick: bench-deps layout-check
	set -o pipefail; $(RELEASE)/weft-bench-sidecar --proxy-bin $(SIDECAR_BIN) --floor-bin $(FLOOR_BIN) \
	  --scenarios direct,sidecar,hyper-floor,httparse-floor,httparse-http-floor,pair-h1,pair-h2,mesh,haproxy-pair,nginx-pair,haproxy-tls-pair,nginx-tls-pair,ingress,haproxy-ingress,nginx-ingress \
	  --rates 1000 --max --duration 4s --warmup 1s --rounds 1 \
	  --out $(BENCH_OUT)/sidecar-quick.json --plot $(BENCH_OUT)/latency.png | tee $(BENCH_OUT)/sidecar-quick.md
	$(CARGO) bench -p weft-bench --bench route_match -- --warm-up-time 0.5 --measurement-time 1
