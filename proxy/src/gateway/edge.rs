//! What the gateway does to a request from outside the mesh before routing it, as
//! Envoy does at an edge (`use_remote_address: true`): headers only the mesh may set
//! are dropped, `x-forwarded-for`, `x-forwarded-proto` and `x-envoy-external-address`
//! are written, the request must be for a host of the server it reached, a server
//! with `httpsRedirect` answers 301, and the gateway's own RequestAuthentication and
//! AuthorizationPolicy are checked.

use super::Gateway;
use crate::config::snapshot::Snapshot;
use crate::http::body::{self, Body};
use crate::http::reply::ProxyError;
use crate::net::listen::Conn;
use crate::ops::telemetry::Record;
use crate::state::Shared;
use http::{HeaderValue, Response, StatusCode};
use std::net::IpAddr;

/// Cleans an outside request's headers and writes the forwarding ones. Call before the
/// request's telemetry record reads `x-request-id` and the trace headers.
pub(crate) fn sanitize(parts: &mut http::request::Parts, conn: &Conn, num_trusted_proxies: usize) {
    let h = &mut parts.headers;
    // Envoy's sanitizing of an external request: its `x-envoy-*` (retry and timeout
    // overrides, `x-envoy-internal` …) and the client-certificate header are the mesh's,
    // and its request id is replaced (`preserve_external_request_id: false`).
    let internal: Vec<http::HeaderName> = h.keys().filter(|k| k.as_str().starts_with("x-envoy-")).cloned().collect();
    for k in internal {
        h.remove(k);
    }
    h.remove("x-forwarded-client-cert");
    h.remove("x-request-id");

    let remote = conn.remote.map(|r| r.ip().to_canonical());
    let mut forwarded: Vec<String> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    let client = trusted_client(&forwarded, remote, num_trusted_proxies);
    if let Some(remote) = remote {
        forwarded.push(remote.to_string());
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded.join(", ")) {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    if let Some(client) = client.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("x-envoy-external-address", client);
    }
}

/// Envoy's trusted client address with `xff_num_trusted_hops`: the connection's peer when
/// no proxy is trusted, else the `n`th address from the right of `x-forwarded-for` (as the
/// last trusted proxy saw it); the peer when the header is shorter than that.
fn trusted_client(forwarded: &[String], remote: Option<IpAddr>, n: usize) -> Option<String> {
    if n == 0 || forwarded.len() < n {
        return remote.map(|r| r.to_string());
    }
    let candidate = &forwarded[forwarded.len() - n];
    // Only an address: anything else in the header is the client's word, not an address.
    match candidate.parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => remote.map(|r| r.to_string()),
    }
}

/// The request must be for a host of the server it reached (on TLS, the server its
/// ClientHello chose; else 404, as Istio's per-server routes give). A redirecting server
/// answers here; then the gateway's own authentication and authorization.
pub(crate) fn admit(
    shared: &Shared,
    snap: &Snapshot,
    gateway: &Gateway,
    port: u16,
    conn: &Conn,
    parts: &mut http::request::Parts,
    record: &mut Record,
) -> Result<Option<Response<Body>>, ProxyError> {
    let host = crate::http::headers::split_port(&record.authority).0.to_ascii_lowercase();
    let servers = gateway.port(port);
    let Some(by_host) = servers.as_deref().and_then(|p| p.server_for(Some(&host))) else {
        return Err(ProxyError::NoService { host });
    };
    // On TLS the Host must be a name of the server the handshake reached: another server's
    // name is 421 (HTTP/2 clients reusing a connection for another name connect again), so a
    // client of a SIMPLE server's name never reaches a MUTUAL server's hosts (fronting).
    if conn.tls {
        let by_sni = servers.as_deref().and_then(|p| p.server_for(conn.sni.as_deref()));
        if !by_sni.is_some_and(|s| std::ptr::eq(s, by_host)) {
            return Err(ProxyError::Misdirected);
        }
    }
    // A server whose TLS policy changed since this connection was accepted (plaintext → TLS,
    // SIMPLE → MUTUAL, another client CA, the credential withdrawn) takes no more requests on
    // it: 421, and the client connects again. A new certificate in the same files changes
    // nothing here.
    if conn.accepted != by_host.policy() {
        return Err(ProxyError::Misdirected);
    }
    if by_host.spec.https_redirect {
        return Ok(Some(https_redirect(&record.authority, &record.path)));
    }
    // The route table is the gateway's: the service the request would take must be one the
    // VirtualServices bound to this server's own Gateway route (exactly that key).
    let key = snap.vhost(&record.authority).map(|v| &*v.name);
    if !key.is_some_and(|k| by_host.spec.routes.iter().any(|r| r == k)) {
        return Err(ProxyError::NoService { host });
    }
    crate::http::policy::admit(shared, snap, conn, parts, record, port)?;
    Ok(None)
}

/// Envoy's `https_redirect`: the same authority (without `:80`) and path, scheme https, 301.
fn https_redirect(authority: &str, path_and_query: &str) -> Response<Body> {
    let authority = authority.strip_suffix(":80").unwrap_or(authority);
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(location) = HeaderValue::from_str(&format!("https://{authority}{path_and_query}")) {
        response.headers_mut().insert(http::header::LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_trusted_client_is_envoys() {
        let peer = Some(IpAddr::from([192, 0, 2, 5]));
        let chain = xff(&["203.0.113.128", "203.0.113.10", "192.0.2.1"]);
        // Envoy's documented example: one trusted hop → the last address in the header.
        assert_eq!(trusted_client(&chain, peer, 1).as_deref(), Some("192.0.2.1"));
        assert_eq!(trusted_client(&chain, peer, 2).as_deref(), Some("203.0.113.10"));
        assert_eq!(trusted_client(&chain, peer, 0).as_deref(), Some("192.0.2.5"));
        // Fewer entries than trusted hops, or garbage: the peer.
        assert_eq!(trusted_client(&chain, peer, 4).as_deref(), Some("192.0.2.5"));
        assert_eq!(trusted_client(&xff(&["<script>"]), peer, 1).as_deref(), Some("192.0.2.5"));
    }

    #[test]
    fn a_redirect_keeps_host_and_path() {
        let r = https_redirect("shop.example:80", "/a?b=1");
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "https://shop.example/a?b=1");
        let r = https_redirect("shop.example:8080", "/");
        assert_eq!(r.headers()["location"], "https://shop.example:8080/");
    }
}
