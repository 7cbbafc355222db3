//! A request's end user and its authorization, checked where a workload receives
//! calls: the inbound listener and the gateway. End-user authentication first
//! (RequestAuthentication: an invalid token is 401), then AuthorizationPolicy
//! (403), Envoy's filter order.

use crate::config::snapshot::Snapshot;
use crate::http::reply::ProxyError;
use crate::net::listen::Conn;
use crate::ops::telemetry::Record;
use crate::state::Shared;

/// Verifies the request's tokens and decides its authorization; `port` is the
/// workload port the caller was going to (Istio's `ports`, `destination.port`).
pub(crate) fn admit(
    shared: &Shared,
    snap: &Snapshot,
    conn: &Conn,
    parts: &mut http::request::Parts,
    record: &mut Record,
    port: u16,
) -> Result<(), ProxyError> {
    let end_user = snap.jwt.authenticate(parts).map_err(ProxyError::Unauthenticated)?;
    if snap.authz.is_empty() {
        return Ok(());
    }
    // `::ffff:a.b.c.d` (a dual-stack listener) is the IPv4 address it carries.
    let remote = conn.remote.map(|r| r.ip().to_canonical());
    let path = record.path.split('?').next().unwrap_or("/");
    let peer = conn.peer.as_deref();
    let req = crate::security::authz::Request {
        principal: peer,
        source_ip: remote,
        host: &record.authority,
        port,
        method: parts.method.as_str(),
        path,
        headers: &parts.headers,
        end_user: end_user.as_ref(),
    };
    if let crate::security::authz::Decision::Deny(why) = crate::security::authz::decide(&snap.authz, &req) {
        shared.metrics.authz_denied.with_label_values(&[why.as_str(), peer.unwrap_or("unknown")]).inc();
        record.route = Some(why.as_str().into());
        return Err(ProxyError::Denied(why));
    }
    Ok(())
}
