//! The status listener the kubelet probes (Istio's pilot-agent on 15020, with
//! 15021's readiness folded in): `/healthz/ready` says ready only when the
//! sidecar holds a config and, if it has an identity, a certificate; and
//! `/app-health/<container>/{livez,readyz,startupz}` runs the app's own HTTP
//! probes from inside the pod, so they keep working under STRICT mTLS, where the
//! kubelet (outside the mesh) could not reach the app. `weftctl inject` rewrites
//! the app's probes to these paths and passes the originals in `WEFT_APP_PROBES`
//! (Istio's `ISTIO_KUBE_APP_PROBERS`, same JSON). `POST /quitquitquit` from
//! inside the pod stops the sidecar, as Istio's does.

use crate::http::body::{full, Body};
use crate::state::Shared;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The app's original probes, by the path the kubelet now calls.
#[derive(Debug, Default, Deserialize)]
pub struct AppProbes(pub(crate) HashMap<String, AppProbe>);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppProbe {
    pub(crate) http_get: HttpGet,
    /// Kubernetes' default is 1 s.
    #[serde(default)]
    pub(crate) timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpGet {
    #[serde(default)]
    pub path: Option<String>,
    /// A number: `weftctl inject` resolves named ports.
    pub port: u16,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub(crate) http_headers: Vec<Header>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub name: String,
    pub value: String,
}

impl AppProbes {
    pub fn parse(json: &str) -> Result<Self, String> {
        let probes: AppProbes = serde_json::from_str(json).map_err(|e| format!("WEFT_APP_PROBES: {e}"))?;
        for (path, p) in &probes.0 {
            if !path.starts_with("/app-health/") {
                return Err(format!("WEFT_APP_PROBES: {path:?} must start with /app-health/"));
            }
            if p.http_get.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("http")) {
                return Err(format!("WEFT_APP_PROBES: {path:?}: only HTTP probes are forwarded"));
            }
        }
        Ok(probes)
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}

/// Opens the status listeners on `addrs` (each address on every family it names), serving
/// [`handle`] for `running`'s sidecar until the returned sender is dropped or set.
/// `quit` is notified on `POST /quitquitquit`.
#[must_use = "the listeners stop when the returned sender is dropped"]
pub async fn serve_status(
    running: &crate::Running,
    addrs: &[std::net::SocketAddr],
    probes: AppProbes,
    quit: Arc<tokio::sync::Notify>,
) -> std::io::Result<tokio::sync::watch::Sender<bool>> {
    use crate::net::listen;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probes = Arc::new(probes);
    for addr in addrs {
        let bound = listen::bind(*addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("the status listener {addr}: {e}")))?;
        for listener in bound {
            let (shared, probes, quit) = (running.shared.clone(), probes.clone(), quit.clone());
            let gauges = (
                running.shared.metrics.downstream_active.with_label_values(&["status"]),
                running.shared.metrics.downstream_total.with_label_values(&["status"]),
            );
            tokio::spawn(listen::serve(
                listener,
                move |req, conn| handle(shared.clone(), probes.clone(), quit.clone(), req, conn),
                stopped.clone(),
                listen::Timeouts::new(Duration::from_secs(1)),
                gauges,
                listen::Guard::Open,
            ));
        }
    }
    Ok(stop)
}

/// Ready: a config from the control plane, and a certificate when the sidecar has an identity.
pub(crate) fn ready(shared: &Shared) -> Result<(), &'static str> {
    if !shared.is_ready() {
        return Err("no config from the control plane yet");
    }
    match &shared.identity {
        Some(id) if id.current().is_none() => Err("no workload certificate yet"),
        _ => Ok(()),
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    probes: Arc<AppProbes>,
    quit: Arc<tokio::sync::Notify>,
    req: Request<Incoming>,
    conn: Arc<crate::net::listen::Conn>,
) -> Response<Body> {
    let path = req.uri().path();
    if path == "/quitquitquit" {
        // Only from inside the pod: the app's last act, so a Job's pod completes.
        let local = conn.remote.is_some_and(|r| r.ip().is_loopback());
        return match (req.method() == http::Method::POST, local) {
            (true, true) => {
                quit.notify_one();
                text(StatusCode::OK, "bye\n".into())
            }
            (false, _) => text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n".into()),
            (true, false) => text(StatusCode::FORBIDDEN, "only from inside the pod\n".into()),
        };
    }
    if path == "/healthz/ready" {
        return match ready(&shared) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        };
    }
    let Some(probe) = probes.0.get(path) else {
        return text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz/ready or /app-health/<container>/livez|readyz|startupz\n".into(),
        );
    };
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1));
    match tokio::time::timeout(timeout, call(probe)).await {
        Ok(Ok(status)) => text(status, format!("app answered {}\n", status.as_u16())),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("app probe failed: {e}\n")),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, format!("app probe timed out after {timeout:?}\n")),
    }
}

/// The app's probe, from inside the pod (the sidecar's uid is never captured).
async fn call(probe: &AppProbe) -> Result<StatusCode, String> {
    let g = &probe.http_get;
    let mut req = Request::get(g.path.clone().unwrap_or_else(|| "/".into()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let headers = req.headers_mut();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&format!("127.0.0.1:{}", g.port)).map_err(|e| e.to_string())?,
    );
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("kube-probe (via weft-proxy)"));
    for h in &g.http_headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            headers.insert(n, v);
        }
    }
    Ok(crate::net::client::send_to(std::net::SocketAddr::from(([127, 0, 0, 1], g.port)), req).await?.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_shaped_probes_parse_and_bad_ones_are_refused() {
        let p = AppProbes::parse(r#"{"/app-health/web/livez":{"httpGet":{"path":"/health","port":3000,"scheme":"HTTP"},"timeoutSeconds":3}}"#).unwrap();
        assert_eq!(p.0["/app-health/web/livez"].http_get.port, 3000);
        assert!(AppProbes::parse(r#"{"/health":{"httpGet":{"port":1}}}"#).is_err());
        assert!(AppProbes::parse(r#"{"/app-health/a/livez":{"httpGet":{"port":1,"scheme":"HTTPS"}}}"#).is_err());
        assert!(AppProbes::parse("{").is_err());
    }
}
