# One image per shop service, built from the workspace root:
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=order-service -t weft/order-service:0.1.0 .
FROM rust:1.95-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p "${SERVICE}" && cp "target/release/${SERVICE}" /service

FROM debian:bookworm-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /service /usr/local/bin/service
USER 10001
ENV LISTEN=0.0.0.0:3000 LOG_FORMAT=json
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["/usr/local/bin/service"]
