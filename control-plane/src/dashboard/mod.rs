//! The Weft dashboard: one page served by the control plane that shows the mesh
//! live — the service graph with each edge's rate, success and p99, a lock on
//! mutual-TLS edges, red on edges with errors or authorization denials, the canary
//! split per version, each sidecar's config ACK/NACK and certificate expiry, the
//! endpoints held out by outlier detection — and, for any edge, the route and the
//! authorization decision (`weftctl explain`, run on the policies in etcd).
//!
//! Read-only and without a login, so it is bound to loopback only (reach it from
//! elsewhere with a port-forward, as `istioctl dashboard` and `linkerd viz dashboard`
//! do). Requests naming another host are refused (a DNS-rebinding page cannot read
//! it); the page runs only its own script (Content-Security-Policy) and puts every
//! name it shows in as text, never as markup.

pub mod mesh;

use crate::push::Context;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use weft_proxy::http::body::{full, Body};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Time to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest query parameter the explain form takes.
const MAX_FIELD: usize = 2048;

/// How long one picture of the mesh is served before it is gathered again: however many
/// pages poll, Prometheus and etcd are asked at most once a second.
const FRESH: Duration = Duration::from_secs(1);
/// Explanations computed at once (each translates two workloads' configs).
const EXPLAINS: usize = 2;

/// What the dashboard reads: the control plane's state and, when given, Prometheus.
#[derive(Debug)]
pub struct Dashboard {
    pub ctx: Arc<Context>,
    /// Prometheus's base URL (`http://127.0.0.1:9090`); without it the page shows no traffic.
    pub prometheus: Option<String>,
    /// The last picture, as JSON, and when it was gathered; one gathering at a time.
    last: tokio::sync::Mutex<Option<(std::time::Instant, bytes::Bytes)>>,
    explains: tokio::sync::Semaphore,
}

impl Dashboard {
    pub fn new(ctx: Arc<Context>, prometheus: Option<String>) -> Self {
        Dashboard { ctx, prometheus, last: Default::default(), explains: tokio::sync::Semaphore::new(EXPLAINS) }
    }

    /// The picture as JSON, gathered again when older than [`FRESH`].
    async fn mesh_json(&self) -> bytes::Bytes {
        let mut last = self.last.lock().await;
        if let Some((_, json)) = last.as_ref().filter(|(at, _)| at.elapsed() < FRESH) {
            return json.clone();
        }
        let json = bytes::Bytes::from(serde_json::to_vec(&mesh(self).await).unwrap_or_default());
        *last = Some((std::time::Instant::now(), json.clone()));
        json
    }
}

/// Refuses any address but loopback: the dashboard has no login.
pub fn check_address(addr: std::net::SocketAddr) -> Result<(), String> {
    let ip = addr.ip();
    if ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST {
        Ok(())
    } else {
        Err(format!(
            "the dashboard shows the mesh's topology and policies and has no login: bind it to 127.0.0.1 or [::1], not {addr}, and reach it through a port-forward"
        ))
    }
}

/// Serves the dashboard on `listener` (plain HTTP/1.1) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, dashboard: Dashboard) {
    let dashboard = Arc::new(dashboard);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("dashboard accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let dashboard = dashboard.clone();
        connections.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&dashboard, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Routes one request.
pub async fn handle(dashboard: &Dashboard, req: Request<Incoming>) -> Response<Body> {
    if !local_host(req.headers().get(header::HOST)) {
        return text(StatusCode::MISDIRECTED_REQUEST, "the dashboard answers only to localhost and 127.0.0.1\n");
    }
    // A page of another site can send requests here (it cannot read the answers): it gets
    // none, so it cannot make the control plane query Prometheus and translate at its pace.
    let cross_site =
        req.headers().get("sec-fetch-site").is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"))
            || req.headers().get(header::ORIGIN).is_some_and(|o| !origin_is_local(o));
    if cross_site {
        return text(StatusCode::FORBIDDEN, "the dashboard answers only its own page\n");
    }
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "the dashboard is read-only\n");
    }
    match req.uri().path() {
        "/" => asset(INDEX, "text/html; charset=utf-8"),
        "/app.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/app.css" => asset(STYLE, "text/css; charset=utf-8"),
        "/api/prometheus-sd" => {
            // Unregistered sidecars (a gateway, a workload that only calls) by their stream's status.
            let statuses = dashboard.ctx.store.statuses().await.unwrap_or_default();
            let registry = dashboard.ctx.state.borrow().registry.clone();
            json(&prometheus_targets(&registry, &statuses))
        }
        "/api/mesh" => secured(Response::new(full(dashboard.mesh_json().await)), "application/json"),
        "/api/explain" => {
            let Ok(_slot) = dashboard.explains.acquire().await else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            };
            let state = dashboard.ctx.state.borrow().clone();
            let trust_domain = dashboard.ctx.options.trust_domain.clone();
            let query = req.uri().query().unwrap_or("").to_string();
            // Translation is CPU work: off the runtime's threads.
            match tokio::task::spawn_blocking(move || explain(&state, &trust_domain, &query)).await {
                Ok(Ok(v)) => json(&v),
                Ok(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "explain failed\n"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The picture now: the state the control plane follows, the sidecars' status in etcd, Prometheus.
pub async fn mesh(dashboard: &Dashboard) -> mesh::Mesh {
    let state = dashboard.ctx.state.borrow().clone();
    let mut problems = Vec::new();
    let statuses = dashboard.ctx.store.statuses().await.unwrap_or_else(|e| {
        problems.push(format!("etcd: {e}"));
        Vec::new()
    });
    let traffic = match &dashboard.prometheus {
        Some(p) => mesh::traffic(p, &mut problems).await,
        None => {
            problems.push("no Prometheus given (--prometheus): traffic is not shown".into());
            mesh::Traffic::default()
        }
    };
    let mut m = mesh::assemble(&state.registry, state.revision, &statuses, &traffic);
    m.problems = problems;
    m
}

/// Prometheus's HTTP service discovery (`http_sd_configs`): every registered sidecar that
/// serves `/stats/prometheus` where it is registered, labelled with its namespace, service
/// and version; then every other connected sidecar (an ingress gateway, a workload that
/// only calls) by its stream's status, labelled with its namespace and workload. The host
/// is always the one the control plane saw the connection come from (unless
/// `--trust-advertised-address` for registered ones): a sidecar can point the scraper
/// only at itself.
pub fn prometheus_targets(
    registry: &crate::registry::Registry,
    statuses: &[crate::store::SidecarStatus],
) -> serde_json::Value {
    let mut groups = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for svc in registry.services() {
        for inst in &svc.instances {
            let Some(port) = inst.metrics_port.filter(|p| *p != 0) else { continue };
            let Ok(addr) = inst.address.parse::<std::net::SocketAddr>() else { continue };
            let target = std::net::SocketAddr::new(addr.ip(), port);
            listed.insert(target);
            groups.push(serde_json::json!({
                "targets": [target.to_string()],
                "labels": {
                    "namespace": svc.namespace,
                    "service": svc.name,
                    "version": inst.labels.get("version").map_or("unknown", String::as_str),
                },
            }));
        }
    }
    for s in statuses {
        let Some(target) = s.metrics.as_deref().and_then(|t| t.parse::<std::net::SocketAddr>().ok()) else { continue };
        if target.port() == 0 || !listed.insert(target) {
            continue;
        }
        groups.push(serde_json::json!({
            "targets": [target.to_string()],
            "labels": {"namespace": s.namespace, "workload": s.workload},
        }));
    }
    serde_json::Value::Array(groups)
}

/// `GET /api/explain?source=api-gateway&service=order-service&method=GET&path=/orders`:
/// the route and authorization a call from `source` (as its identity) to `service` meets.
fn explain(state: &crate::watch::State, trust_domain: &str, query: &str) -> Result<serde_json::Value, String> {
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if v.len() > MAX_FIELD {
            return Err(format!("{k}: longer than {MAX_FIELD} bytes"));
        }
        fields.insert(k.into_owned(), v.into_owned());
    }
    let get = |k: &str| fields.get(k).cloned().filter(|v| !v.is_empty());
    let source = get("source").ok_or("source: required")?;
    let service = get("service").ok_or("service: required")?;
    let method = get("method").unwrap_or_else(|| "GET".into());
    let path = get("path").unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err("path: must start with /".into());
    }
    let caller = state
        .registry
        .services()
        .into_iter()
        .find(|s| s.name == source)
        .and_then(|s| crate::explain::workload_of(&s))
        .ok_or_else(|| format!("source: no registered service {source:?}"))?;
    let principal = format!("spiffe://{}/ns/{}/sa/{}", trust_domain, caller.namespace, caller.service_account);
    let req = crate::explain::Request { host: service, method, path, headers: Vec::new() };
    let explained = crate::explain::call(&state.resources, &state.registry, &caller, &principal, &req)?;
    Ok(serde_json::json!({
        "caller": principal,
        "text": explained.to_string(),
        "explanation": explained,
    }))
}

/// `http://` and a local host (see [`local_host`]).
fn origin_is_local(origin: &HeaderValue) -> bool {
    origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://"))
        .is_some_and(|h| local_host(HeaderValue::from_str(h).ok().as_ref()))
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn local_host(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => h,
            Some((h, port)) if port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) => h,
            _ => "",
        },
        None => host
            .rsplit_once(':')
            .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { "" }),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The headers every answer carries: no framing, no sniffing, only the page's own script.
fn secured(mut r: Response<Body>, content_type: &'static str) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    secured(Response::new(full(body)), content_type)
}

fn json(v: &impl serde::Serialize) -> Response<Body> {
    secured(Response::new(full(serde_json::to_vec(v).unwrap_or_default())), "application/json")
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = secured(Response::new(full(body.into())), "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_served() {
        for ok in ["localhost", "localhost:15014", "127.0.0.1:15014", "[::1]:15014", "[::1]"] {
            assert!(local_host(Some(&HeaderValue::from_static(ok))), "{ok}");
        }
        for bad in [
            "evil.example:15014",
            "127.0.0.1.evil.example",
            "localhost.evil:1",
            "",
            "[::2]:1",
            "localhost:x",
            "[::1]junk",
        ] {
            assert!(!local_host(Some(&HeaderValue::from_static(bad))), "{bad}");
        }
        assert!(!local_host(None));
    }

    #[test]
    fn prometheus_finds_each_registered_sidecar_that_serves_its_stats_on_its_own_host() {
        let registry: crate::registry::Registry = serde_yaml::from_str(
            r#"
production:
  order-service:
    a: {address: "10.0.0.7:15006", labels: {version: v2}, serviceAccount: order-service, metricsPort: 15020}
    b: {address: "10.0.0.8:15006", serviceAccount: order-service}
"#,
        )
        .unwrap();
        assert_eq!(
            prometheus_targets(&registry, &[]),
            serde_json::json!([{
                "targets": ["10.0.0.7:15020"],
                "labels": {"namespace": "production", "service": "order-service", "version": "v2"},
            }]),
            "a sidecar without a metrics port is not a target; the host is always the registered one"
        );
        let status = |workload: &str, metrics: Option<&str>| crate::store::SidecarStatus {
            workload: workload.into(),
            namespace: "production".into(),
            metrics: metrics.map(String::from),
            ..Default::default()
        };
        let statuses = [
            status("shop-ingress", Some("10.0.0.9:15000")),
            status("order-service-a", Some("10.0.0.7:15020")),
            status("quiet", None),
            status("zero", Some("10.0.0.10:0")),
        ];
        assert_eq!(
            prometheus_targets(&registry, &statuses)[1],
            serde_json::json!({
                "targets": ["10.0.0.9:15000"],
                "labels": {"namespace": "production", "workload": "shop-ingress"},
            }),
            "an unregistered sidecar (the gateway) by its status; a registered one is listed once"
        );
        assert_eq!(prometheus_targets(&registry, &statuses).as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn the_dashboard_refuses_to_listen_beyond_loopback() {
        assert!(check_address("127.0.0.1:15014".parse().unwrap()).is_ok());
        assert!(check_address("[::1]:15014".parse().unwrap()).is_ok());
        for bad in ["0.0.0.0:15014", "[::]:15014", "127.0.0.2:15014", "[::ffff:127.0.0.1]:15014"] {
            let e = check_address(bad.parse().unwrap()).unwrap_err();
            assert!(e.contains("no login"), "{e}");
        }
    }
}
