//! Serving: `/health` on every service, the request-id layer, and a graceful
//! shutdown on SIGINT or SIGTERM (in-flight requests finish, new connections
//! are refused).

use std::future::Future;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// Adds `/health` (the process is alive) and the request-id layer to `app`.
pub fn finish(app: Router) -> Router {
    app.route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .layer(axum::middleware::from_fn(crate::request_id::layer))
}

/// The `/ready` answer: 200 when every dependency answered, else 503 naming the first that did not.
pub fn ready(checks: &[Result<(), String>]) -> Response {
    match checks.iter().find_map(|c| c.as_ref().err()) {
        None => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "not ready", "reason": reason})))
                .into_response()
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains. Handlers may
/// extract `ConnectInfo<SocketAddr>` (the client's address).
pub async fn run(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received, draining");
}
