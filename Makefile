# Weft: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# What a fresh Debian 12 machine lacks: protoc (etcd-client), etcd (tests start
# their own), iptables (transparent interception tests).
DEB_PACKAGES := protobuf-compiler etcd-server iptables

.PHONY: test deps build demo bench bench-quick clean

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

## Runs the seed's canary: two demo upstreams (v1, v2) and one sidecar in front.
demo: build
	@./scripts/demo-canary.sh

clean:
	$(CARGO) clean
