//! The control plane's listener: TLS only, HTTP/2 streams for sidecars, HTTP/1.1
//! for metrics, health, certificate signing and the injection webhook.

use super::context::{
    reply, Context, HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, MAX_STREAMS_PER_CONNECTION, MAX_WEBHOOK_BODIES,
};
use super::peer::{Peer, SpiffeId};
use super::session::stream;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use weft_model::stream::STREAM_PATH;
use weft_proxy::http::body::{full, Body};

/// Accepts connections: TLS only (a plaintext caller is told so and closed),
/// HTTP/2 for sidecars, HTTP/1.1 for /metrics, /healthz, signing and the webhook.
/// Connections live in a set owned by this task: stopping it cuts them all.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(16 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %addr, "connection refused: {MAX_CONNECTIONS} connections open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut first = [0u8; 2];
            let n = match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            if !weft_proxy::security::tls::looks_like_tls(&first[..n]) {
                tracing::warn!(peer = %addr, "plaintext connection refused: this port speaks TLS only");
                let mut stream = stream;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 72\r\n\r\nthe Weft control plane speaks TLS only: connect with the mesh root (--ca-file)\n",
                )
                .await;
                return;
            }
            let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(ctx.tls.load_full()).accept(stream))
                    .await
            else {
                return;
            };
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
            let identity =
                leaf.as_ref().and_then(|c| weft_proxy::security::tls::spiffe_id(c)).and_then(|uri| SpiffeId::parse(&uri));
            let issuer = leaf.as_ref().and_then(|c| crate::ca::issuer_of(c, &ctx.ca.trust().roots));
            let expires = leaf.as_ref().and_then(|c| crate::ca::not_after(c));
            let peer = Peer { addr, identity, issuer, expires };
            let svc = hyper::service::service_fn(move |req| {
                let (ctx, peer) = (ctx.clone(), peer.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(ctx, peer, req).await) }
            });
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
        });
    }
}

/// Routes the control plane's HTTP requests.
pub async fn handle(ctx: Arc<Context>, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("POST", STREAM_PATH) => stream(ctx, peer, req).await,
        ("POST", weft_model::stream::SIGN_PATH) => sign(&ctx, &peer, req.into_body()).await,
        ("POST", crate::inject::WEBHOOK_PATH) => admission(req.into_body()).await,
        ("GET", "/healthz") | ("GET", "/ready") => Response::new(full("ok\n")),
        ("GET", "/metrics") => {
            let mut out = String::new();
            let _ = prometheus::TextEncoder::new().encode_utf8(&ctx.metrics.registry.gather(), &mut out);
            Response::new(full(out))
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The mutating admission webhook: an AdmissionReview for a pod in, the same
/// review with a JSON patch that injects the sidecar out.
async fn admission(body: Incoming) -> Response<Body> {
    use http_body_util::BodyExt;
    static BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_WEBHOOK_BODIES);
    let Ok(_reading) = tokio::time::timeout(HANDSHAKE_TIMEOUT, BODIES.acquire()).await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "too many admission reviews at once\n");
    };
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, http_body_util::Limited::new(body, 4 << 20).collect()).await;
    let answer = match read {
        Ok(Ok(c)) => crate::inject::admission_review(&c.to_bytes(), &crate::inject::InjectOptions::default()),
        _ => Err("unreadable request".to_string()),
    };
    match answer {
        Ok(review) => {
            let mut r = Response::new(full(serde_json::to_vec(&review).unwrap_or_default()));
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            let mut r = Response::new(full(format!("{e}\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}

/// Signs a workload certificate. A caller with a certificate renews it for
/// the identity it proves; a caller without one proves its identity with a
/// bootstrap token (first start).
async fn sign(ctx: &Context, peer: &Peer, body: Incoming) -> Response<Body> {
    use http_body_util::BodyExt;
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, http_body_util::Limited::new(body, 64 * 1024).collect()).await;
    let Ok(Ok(bytes)) = read.map(|r| r.map(|c| c.to_bytes())) else {
        return reply(StatusCode::BAD_REQUEST, "unreadable request\n");
    };
    let req: weft_model::stream::SignRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
    };
    let (ns, sa) = match &peer.identity {
        Some(id)
            if !peer.issuer.as_ref().is_some_and(|i| crate::ca::fingerprints(&ctx.ca.trust().roots).contains(i)) =>
        {
            ctx.metrics.csr_refused.inc();
            return reply(
                StatusCode::UNAUTHORIZED,
                format!("{id}: the certificate is from a root no longer trusted\n"),
            );
        }
        Some(id) if id.trust_domain == ctx.options.trust_domain => (id.namespace.clone(), id.service_account.clone()),
        Some(id) => {
            ctx.metrics.csr_refused.inc();
            return reply(StatusCode::FORBIDDEN, format!("{id} is not of trust domain {}\n", ctx.options.trust_domain));
        }
        None => {
            match crate::token::verify(
                &ctx.store,
                &req.token,
                &ctx.options.token_audience,
                std::time::SystemTime::now(),
            )
            .await
            {
                Ok(c) => (c.ns, c.sa),
                Err(e) => {
                    ctx.metrics.csr_refused.inc();
                    tracing::warn!(peer = %peer.addr, "certificate request refused: {e}");
                    return reply(StatusCode::UNAUTHORIZED, format!("{e}\n"));
                }
            }
        }
    };
    if (ns.as_str(), sa.as_str()) == crate::ca::CONTROL_PLANE_IDENTITY {
        ctx.metrics.csr_refused.inc();
        return reply(StatusCode::FORBIDDEN, "the control plane's identity is never signed for a caller\n");
    }
    let trust = ctx.ca.trust();
    match ctx.ca.sign_workload(&req.csr, &ns, &sa, ctx.options.cert_ttl) {
        Ok((certificate, signer)) => {
            ctx.metrics.certs_issued.inc();
            let resp = weft_model::stream::SignResponse {
                certificate,
                root: trust.roots,
                identity: ctx.ca.spiffe_id(&ns, &sa),
                signer: Some(signer),
            };
            Response::new(full(serde_json::to_vec(&resp).unwrap_or_default()))
        }
        Err(e) => {
            ctx.metrics.csr_refused.inc();
            reply(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}
