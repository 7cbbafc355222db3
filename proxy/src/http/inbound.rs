//! The inbound listener's request path: deliver to the local app, with
//! Istio's inbound retry of requests that never reached it.
//! (Plain HTTP for now; mTLS and authorization come with the identity work.)

use crate::http::body::{self, Body};
use crate::http::forward::{forward, Outgoing, RequestBody};
use crate::http::reply::ProxyError;
use crate::net::listen::Conn;
use crate::ops::telemetry::{Record, Reporter};
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

/// Istio's cluster name for inbound traffic to a port the workload does not declare.
pub(crate) const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";

/// Handles one request from a peer.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    let snap = shared.snapshot();
    let (mut parts, incoming) = req.into_parts();
    // First: the client's hop-by-hop stripping, the request line, the normalized path.
    let admitted = crate::http::hygiene::admit(&mut parts, shared.path_normalization(&snap.config));
    // The identity headers toward the app come only from the verified peer
    // certificate, never from the caller.
    parts.headers.remove("x-forwarded-client-cert");
    let peer = conn.peer.clone();
    if let (Some(peer), Some(own)) = (&peer, shared.identity.as_ref().and_then(|i| i.current())) {
        if let Ok(v) = http::HeaderValue::from_str(&format!("By={};URI={peer}", own.id)) {
            parts.headers.insert("x-forwarded-client-cert", v);
        }
    }
    let mut record = Record::begin(&shared, &snap, Reporter::Destination, &mut parts);
    record.peer = peer.clone();
    if let Err(e) = admitted {
        return record.reply(&e, Default::default());
    }
    // One of the app's other HTTP ports, named by a mesh peer's SNI (Istio's client names
    // the port there) on a connection made to the inbound listener itself; any other name is
    // the app's main port. A captured connection goes by where it was going, never by a name.
    let named = conn
        .sni
        .as_deref()
        .filter(|_| conn.original_dst.is_none() && !snap.config.inbound.http_ports.is_empty())
        .and_then(crate::net::tcp::port_of_sni)
        .filter(|p| snap.config.inbound.http_ports.contains(p));
    // The port the peer was going to (captured, or named), else the app's: Istio's `ports`
    // and `destination.port` name the workload port the connection was for.
    let port = match (conn.original_dst, named) {
        (Some(dst), _) => dst.port(),
        (None, Some(port)) => port,
        (None, None) => snap.inbound.as_ref().and_then(|c| c.balancer.endpoints().first()).map_or(0, |e| e.addr.port()),
    };
    if let Err(e) = crate::http::policy::admit(&shared, &snap, &conn, &mut parts, &mut record, port) {
        return record.reply(&e, Default::default());
    }
    // The app's other port is a cluster of its own (`inbound|PORT||`), the main one `inbound|app`.
    let Some(app) = named.and_then(|p| snap.inbound_port(p)).or(snap.inbound.as_ref()) else {
        return record.reply(&ProxyError::NoApp, Default::default());
    };
    // A captured port other than the app's goes where it was going (Istio's inbound
    // passthrough), never to the app's port: authorization judged the port it was going to.
    let app_port = app.balancer.endpoints().first().map(|e| e.addr.port());
    if let Some(dst) = conn.original_dst.filter(|d| Some(d.port()) != app_port) {
        record.cluster = Some(INBOUND_PASSTHROUGH.into());
        let req = Request::from_parts(parts, incoming);
        return match crate::net::client::send_to(dst, req).await {
            Ok(response) => record.respond(response.map(body::incoming)),
            Err(error) => record.reply(&ProxyError::Passthrough { dst, error }, crate::http::reply::Flags::UF),
        };
    }
    record.cluster = Some(app.name.clone());
    let authority = match record.authority.to_header_value() {
        Ok(a) => a,
        Err(_) => return record.reply(&ProxyError::BadRequest("invalid authority".into()), Default::default()),
    };
    let mut body = match RequestBody::prepare(incoming).await {
        Ok(b) => b,
        Err(e) => return record.reply(&e, Default::default()),
    };
    record.request_bytes += body.len_hint();
    let protocol = app.protocol_for(parts.version, record.grpc);
    let out = match Outgoing::new(parts, None, authority, protocol) {
        Ok(out) => out,
        Err(e) => return record.reply(&e, Default::default()),
    };
    let policy = &shared.inbound_retry;
    match forward(&out, &mut body, app, policy, &shared.metrics).await {
        Ok(done) => {
            record.upstream = Some(done.endpoint);
            record.guard = Some(done.guard);
            record.permit = Some(done.permit);
            record.attempts = done.tries;
            record.flags |= done.flags;
            record.respond(done.response.map(body::incoming))
        }
        Err(failed) => {
            record.upstream = failed.endpoint;
            record.attempts = failed.tries;
            record.reply(&failed.error, failed.flags)
        }
    }
}
