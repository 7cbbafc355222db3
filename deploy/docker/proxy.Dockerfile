# The sidecar, and its init container (`weft-proxy init-iptables`, run as root
# with NET_ADMIN by the injected weft-init; the sidecar itself runs as 1337):
#   docker build -f deploy/docker/proxy.Dockerfile -t weft/proxy:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The `sidecar` profile: fat LTO, one codegen unit (Cargo.toml says what it saves).
RUN cargo build --profile sidecar --locked -p weft-proxy && cp target/sidecar/weft-proxy /weft-proxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1337 weft && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin weft
COPY --from=build /weft-proxy /usr/local/bin/weft-proxy
USER 1337
EXPOSE 15001 15006 15020
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/15000 && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["/usr/local/bin/weft-proxy"]
