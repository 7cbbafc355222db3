//! Calling another service: plain HTTP/1.1 to `http://<service>`. With
//! `MESH_OUTBOUND` set, every call goes to the local sidecar's outbound port
//! with `Host: <service>` and the mesh picks the instance (canary weights,
//! outlier ejection, mTLS); otherwise straight to the service's own address.
//! Each call carries the current `x-request-id` and has a deadline; connections
//! are kept alive and reused (`pool`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};

pub use crate::pool::PeerResponse;
use crate::pool::Pool;

/// How long one peer call may take, connect to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Peers {
    /// The sidecar's outbound listener; when set, every peer is reached through it.
    pub mesh_outbound: Option<SocketAddr>,
    /// Direct addresses by service name, used without a sidecar.
    pub direct: HashMap<String, SocketAddr>,
    pub timeout: Duration,
    /// Keep-alive connections, shared by the clones of this value.
    pub pool: Arc<Pool>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no address for service {0}")]
    Unknown(String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}: {1}")]
    Io(String, String),
}

/// The shop's services and the ports they listen on when run on one host.
pub const DEFAULT_PORTS: [(&str, u16); 5] = [
    ("api-gateway", 3000),
    ("user-service", 3001),
    ("order-service", 3002),
    ("product-service", 3003),
    ("notification-service", 3004),
];

impl Peers {
    /// From the environment: `MESH_OUTBOUND=host:port`, or `<SERVICE>_ADDR`
    /// (`ORDER_SERVICE_ADDR=127.0.0.1:3002`) with the defaults above.
    pub fn from_env() -> anyhow::Result<Self> {
        let mesh_outbound = match std::env::var("MESH_OUTBOUND").ok().filter(|v| !v.is_empty()) {
            Some(v) => Some(v.parse().map_err(|e| anyhow::anyhow!("MESH_OUTBOUND={v:?}: {e}"))?),
            None => None,
        };
        let mut direct = HashMap::new();
        for (name, port) in DEFAULT_PORTS {
            let key = format!("{}_ADDR", name.to_uppercase().replace('-', "_"));
            let addr = crate::env::parse(&key, SocketAddr::from(([127, 0, 0, 1], port)))?;
            direct.insert(name.to_string(), addr);
        }
        Ok(Peers { mesh_outbound, direct, timeout: DEFAULT_TIMEOUT, pool: Arc::default() })
    }

    /// Straight to the given addresses (tests).
    pub fn direct(addrs: impl IntoIterator<Item = (&'static str, SocketAddr)>) -> Self {
        let direct = addrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect();
        Peers { mesh_outbound: None, direct, timeout: DEFAULT_TIMEOUT, pool: Arc::default() }
    }

    /// `method http://<service><path>` with these headers and body.
    pub async fn call(
        &self,
        service: &str,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<PeerResponse, PeerError> {
        let addr = match self.mesh_outbound {
            Some(a) => a,
            None => *self.direct.get(service).ok_or_else(|| PeerError::Unknown(service.to_string()))?,
        };
        let body = body.unwrap_or_default();
        let make = || request(service, method.clone(), path_and_query, headers.clone(), body.clone());
        let call = self.pool.send(addr, make);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(|e| PeerError::Io(service.to_string(), e)),
            Err(_) => Err(PeerError::Timeout(service.to_string(), self.timeout)),
        }
    }

    /// A JSON request; the body is serialised here.
    pub async fn call_json<T: serde::Serialize>(
        &self,
        service: &str,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: &T,
    ) -> Result<PeerResponse, PeerError> {
        let mut headers = headers;
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body =
            Bytes::from(serde_json::to_vec(body).map_err(|e| PeerError::Io(service.to_string(), e.to_string()))?);
        self.call(service, method, path_and_query, headers, Some(body)).await
    }
}

/// One request on a fresh HTTP/1.1 connection to `addr`, with `Host: <host>` (no pool).
pub async fn send(
    addr: SocketAddr,
    host: &str,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Result<PeerResponse, String> {
    let mut sender = crate::pool::connect(addr).await?;
    let req = request(host, method, path_and_query, headers, body.unwrap_or_default())?;
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(PeerResponse { status: parts.status, headers: parts.headers, body })
}

/// `method path_and_query` with `Host: <host>`, these headers, the current request id, and `body`.
fn request(
    host: &str,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut req = Request::builder().method(method).uri(path_and_query);
    if let Some(h) = req.headers_mut() {
        *h = headers;
        h.insert(http::header::HOST, HeaderValue::from_str(host).map_err(|e| e.to_string())?);
        if !h.contains_key(crate::request_id::HEADER) {
            if let Some(id) = crate::request_id::current().and_then(|id| HeaderValue::from_str(&id).ok()) {
                h.insert(crate::request_id::HEADER, id);
            }
        }
        // The trace context goes on with the call (unless the caller set its own).
        if !h.contains_key("traceparent") && !h.contains_key("x-b3-traceid") {
            for (name, value) in crate::request_id::trace_headers() {
                h.insert(name, value);
            }
        }
    }
    req.body(Full::new(body)).map_err(|e| e.to_string())
}
