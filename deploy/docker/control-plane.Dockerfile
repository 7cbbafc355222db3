# The control plane and weftctl:
#   docker build -f deploy/docker/control-plane.Dockerfile -t weft/control-plane:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft-control-plane \
 && cp target/release/weft-control-plane target/release/weftctl /

FROM debian:bookworm-slim
RUN groupadd --gid 1337 weft && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin weft
COPY --from=build /weft-control-plane /weftctl /usr/local/bin/
USER 1337
EXPOSE 15012
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/15012"]
ENTRYPOINT ["/usr/local/bin/weft-control-plane"]
