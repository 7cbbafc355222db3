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
    // The server the Host reaches; on TLS it must be the one the handshake reached, so a
    // client of a SIMPLE server's name cannot send a MUTUAL server's Host (domain fronting).
    let server = servers.as_deref().and_then(|p| {
        let by_host = p.server_for(Some(&host))?;
        match conn.tls {
            true => p.server_for(conn.sni.as_deref()).filter(|by_sni| std::ptr::eq(*by_sni, by_host)),
            false => Some(by_host),
        }
    });
    let Some(server) = server.filter(|s| s.serves(&host)) else {
        return Err(ProxyError::NoService { host });
    };
    // A server whose TLS changed since this connection was accepted (SIMPLE → MUTUAL, another
    // client CA) takes no more requests on it: 421, and the client connects again (RFC 9110
    // §15.5.20). A new certificate in the same files changes nothing here.
    if conn.tls && conn.accepted.as_deref() != server.spec.tls.as_ref() {
        return Err(ProxyError::Misdirected);
    }
    if server.spec.https_redirect {
        return Ok(Some(https_redirect(&record.authority, &record.path)));
    }
    if !server.spec.routes.iter().any(|r| weft_model::gateway::host_matches(r, &host)) {
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
        let peer = Some("192.0.2.5".parse().unwrap());
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
