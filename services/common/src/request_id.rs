//! `x-request-id`: taken from the request (the gateway or the sidecar may have
//! set it) or minted, echoed on the response, attached to the request's log
//! span, and carried to every peer call made while serving it (a task-local,
//! so handlers need not thread it through).

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.clone()).ok()
}

/// Runs `f` as if serving a request with this id (background work that acts for one).
pub async fn scope<F: std::future::Future>(id: String, f: F) -> F::Output {
    CURRENT.scope(id, f).await
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
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let start = Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.run(req)).instrument(span.clone()).await;
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
