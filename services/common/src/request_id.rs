//! `x-request-id` and the trace context: the id taken from the request (the
//! gateway or the sidecar may have set it) or minted, echoed on the response,
//! attached to the request's log span with the trace id, and both carried to
//! every peer call made while serving it (a task-local, so handlers need not
//! thread them through). Carrying `traceparent`, `tracestate` and `x-b3-*` on
//! is what Istio asks of an app: the sidecars then join its calls into one trace.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// The trace headers an app passes on (W3C and B3, as Istio's sidecars write them).
pub const TRACE_HEADERS: [&str; 7] =
    ["traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "b3"];

#[derive(Debug, Clone)]
struct Current {
    id: String,
    trace: Vec<(&'static str, HeaderValue)>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// The trace headers of the request being served on this task.
pub fn trace_headers() -> Vec<(&'static str, HeaderValue)> {
    CURRENT.try_with(|c| c.trace.clone()).unwrap_or_default()
}

/// Runs `f` as if serving a request with this id (background work that acts for one).
pub async fn scope<F: std::future::Future>(id: String, f: F) -> F::Output {
    CURRENT.scope(Current { id, trace: Vec::new() }, f).await
}

/// The trace id a request carries (`traceparent`'s, else `x-b3-traceid`), for the log.
fn trace_id(req: &Request) -> String {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    h("traceparent").and_then(|tp| tp.split('-').nth(1)).or_else(|| h("x-b3-traceid")).unwrap_or("-").to_string()
}

/// The middleware: accept or mint the id, log one line per request with status and duration.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(HEADER, v);
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let trace: Vec<(&'static str, HeaderValue)> =
        TRACE_HEADERS.iter().filter_map(|n| req.headers().get(*n).map(|v| (*n, v.clone()))).collect();
    let span = tracing::info_span!("request", request_id = %id, trace_id = %trace_id(&req), %method, %path);
    let start = Instant::now();
    let current = Current { id: id.clone(), trace };
    let mut response = CURRENT.scope(current, next.run(req)).instrument(span.clone()).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if path != "/health" && path != "/ready" {
            tracing::info!(status = response.status().as_u16(), ms = format!("{ms:.1}"), "served");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}
