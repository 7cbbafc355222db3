//! The outbound listener's request path: service by `Host`, route by Istio's
//! rules, fault injection, weighted destination, then [`crate::http::forward`]
//! under the route timeout.

use crate::config::snapshot::Snapshot;
use crate::gateway::Gateway;
use crate::http::answer::{Action, Origin};
use crate::http::body::{self, Body};
use crate::http::cors::Verdict;
use crate::http::forward::{forward, Outgoing, RequestBody};
use crate::http::headers::strip_hop_by_hop;
use crate::http::reply::{Flags, ProxyError};
use crate::http::route::{fault_hits, MatchRule, RequestView};
use crate::net::intercept::OutboundTrafficPolicy;
use crate::net::listen::Conn;
use crate::ops::telemetry::{Record, Reporter};
use crate::state::Shared;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use rand::Rng;
use std::sync::Arc;

/// Handles one request from the local app.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    serve(shared, req, conn, None).await
}

/// Handles one request from the local app, or from outside the mesh on a gateway's
/// `port` (then the edge's checks come first: [`crate::gateway::edge`]).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    conn: Arc<Conn>,
    edge: Option<(Arc<Gateway>, u16)>,
) -> Response<Body> {
    let snap = shared.snapshot();
    let (mut parts, incoming) = req.into_parts();
    let admitted = crate::http::hygiene::admit(&mut parts, shared.path_normalization(&snap.config));
    if let Some((gateway, _)) = &edge {
        crate::gateway::edge::sanitize(&mut parts, &conn, gateway.num_trusted_proxies());
    }
    let mut record = Record::begin(&shared, &snap, Reporter::Source, &mut parts);
    if let Err(e) = admitted {
        return record.reply(&e, Default::default());
    }
    if let Some((gateway, port)) = &edge {
        match crate::gateway::edge::admit(&shared, &snap, gateway, *port, &conn, &mut parts, &mut record) {
            Ok(None) => {}
            Ok(Some(answer)) => return record.respond(answer),
            Err(e) => {
                let mut reply = record.reply(&e, Default::default());
                if matches!(e, ProxyError::Misdirected) {
                    reply.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                return reply;
            }
        }
    }
    let mut cors = None;
    let mut response = match route_and_forward(&shared, &snap, &mut record, &conn, parts, incoming, &mut cors).await {
        Ok(response) => record.respond(response),
        Err((err, flags)) => record.reply(&err, flags),
    };
    // An allowed origin's answer carries the CORS headers, local replies too (503, 504, a
    // fault's abort), as Envoy's filter adds them: else the browser hides the status.
    if let Some((policy, origin)) = cors {
        policy.decorate(origin, response.headers_mut());
    }
    response
}

type Failed = (ProxyError, Flags);

/// Sends one captured request, unchanged, to its original destination.
async fn passthrough(
    dst: std::net::SocketAddr,
    parts: http::request::Parts,
    incoming: Incoming,
) -> Result<Response<Body>, String> {
    let response = crate::net::client::send_to(dst, Request::from_parts(parts, incoming)).await?;
    Ok(response.map(body::incoming))
}

/// A ServiceEntry with resolution NONE: the request, routed and rewritten, goes
/// where the app was going (Envoy's ORIGINAL_DST), on a connection of its own,
/// under the route timeout; not retried.
#[allow(clippy::too_many_arguments)]
async fn original_destination(
    conn: &Conn,
    cluster: &crate::config::snapshot::Cluster,
    route: &crate::http::route::Route,
    mut parts: http::request::Parts,
    incoming: Incoming,
    rewritten: Option<String>,
    authority: HeaderValue,
    flags: Flags,
) -> Result<Response<Body>, Failed> {
    let Some(dst) = conn.original_dst else {
        return Err((ProxyError::NoOriginalDestination { cluster: cluster.name.to_string() }, flags));
    };
    // A Host naming the entry does not open other addresses or ports (Istio matches the
    // entry's port; Weft its addresses too, when it has any).
    if cluster.original_dst.as_ref().is_some_and(|m| !m.admits(dst)) {
        let host = authority.to_str().unwrap_or_default().to_string();
        return Err((ProxyError::NotTheEntrysDestination { host, dst }, flags));
    }
    if let Some(uri) = rewritten.and_then(|p| p.parse::<http::Uri>().ok()) {
        parts.uri = uri;
    }
    parts.headers.insert(http::header::HOST, authority);
    let sent = passthrough(dst, parts, incoming);
    let result = match route.timeout {
        Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| (ProxyError::Timeout, flags | Flags::UT))?,
        None => sent.await,
    };
    result.map_err(|error| (ProxyError::Passthrough { dst, error }, flags | Flags::UF))
}

/// Routes and forwards; `cors` is set when the route's CORS policy allows the request's origin.
async fn route_and_forward<'s>(
    shared: &Arc<Shared>,
    snap: &'s Arc<Snapshot>,
    record: &mut Record,
    conn: &Conn,
    mut parts: http::request::Parts,
    incoming: Incoming,
    cors: &mut Option<(&'s crate::http::cors::Policy, HeaderValue)>,
) -> Result<Response<Body>, Failed> {
    let none = Flags::NONE;
    let Some(vhost) = snap.vhost(&record.authority) else {
        // A host the mesh does not know: nowhere under REGISTRY_ONLY (Istio's `block_all`
        // virtual host, 502), captured or not; under ALLOW_ANY captured traffic goes where it
        // was going, and a request to the explicit listener has nowhere to go (404 NR).
        if shared.outbound_policy(&snap.config) == OutboundTrafficPolicy::RegistryOnly {
            return Err((ProxyError::BlackHole { host: record.authority.to_string() }, none));
        }
        let Some(dst) = conn.original_dst else {
            return Err((ProxyError::NoService { host: record.authority.to_string() }, none));
        };
        record.cluster = Some(crate::net::intercept::PASSTHROUGH_CLUSTER.into());
        return passthrough(dst, parts, incoming)
            .await
            .map_err(|error| (ProxyError::Passthrough { dst, error }, Flags::UF));
    };
    let view = RequestView {
        method: parts.method.as_str(),
        path_and_query: &record.path,
        authority: &record.authority,
        headers: &parts.headers,
    };
    // The port the request is for: its authority's, else where a captured connection was going.
    // Read only for a service with other ports: most requests pay nothing for it.
    let port = match vhost.ports.is_empty() {
        true => None,
        false => crate::http::headers::split_port(&record.authority)
            .1
            .and_then(|p| p.parse().ok())
            .or(conn.original_dst.map(|d| d.port())),
    };
    let (route, hit) =
        vhost.select(port, &view).ok_or_else(|| (ProxyError::NoRoute { service: vhost.name.to_string() }, none))?;
    record.route = Some(route.name.clone());

    // CORS first, as Envoy's filter chain runs it: an allowed preflight never reaches faults or the app.
    if let Some(policy) = &route.cors {
        match policy.check(&parts.method, &parts.headers) {
            Verdict::Pass => {}
            Verdict::Allowed(origin) => *cors = Some((policy, origin)),
            Verdict::Answer(response) => return Ok(response),
        }
    }
    let finish = |response: &mut Response<Body>| route.response_headers.apply(response.headers_mut());
    let answered = match &route.action {
        Action::Forward => None,
        Action::Redirect(r) => {
            let matched_prefix = hit.and_then(MatchRule::uri_prefix);
            Some(r.respond(&Origin { authority: &record.authority, path_and_query: &record.path, matched_prefix }))
        }
        Action::Respond(d) => Some(d.respond()),
    };
    if let Some(mut response) = answered {
        finish(&mut response);
        return Ok(response);
    }

    let mut flags = Flags::NONE;
    if let Some(fault) = &route.fault {
        let (delay_draw, abort_draw) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(0..1_000_000), rng.gen_range(0..1_000_000))
        };
        if let Some((delay, per_million)) = fault.delay {
            if fault_hits(per_million, delay_draw) {
                tokio::time::sleep(delay).await;
                flags |= Flags::DI;
            }
        }
        if let Some((status, per_million)) = fault.abort {
            if fault_hits(per_million, abort_draw) {
                return Err((ProxyError::FaultAbort(status), flags));
            }
        }
    }

    let dest = &route.destinations[route.pick.pick(&mut rand::thread_rng())];
    let cluster = snap
        .cluster(&dest.cluster)
        .ok_or_else(|| (ProxyError::ClusterNotFound { cluster: dest.cluster.to_string() }, flags))?;
    record.cluster = Some(cluster.name.clone());
    record.service = Some(cluster.service.clone());

    route.request_headers.apply(&mut parts.headers);
    dest.request_headers.apply(&mut parts.headers);
    let rewritten = route.rewritten_path(hit, &record.path);
    if rewritten.is_some() {
        if let Ok(original) = HeaderValue::from_str(&record.path) {
            parts.headers.insert("x-envoy-original-path", original);
        }
    }
    let authority = match dest.authority.as_ref().or(route.rewrite_authority.as_ref()) {
        Some(a) => a.clone(),
        None => record
            .authority
            .to_header_value()
            .map_err(|_| (ProxyError::BadRequest("invalid authority".into()), flags))?,
    };
    strip_hop_by_hop(&mut parts.headers);
    if cluster.original_dst.is_some() {
        return original_destination(conn, cluster, route, parts, incoming, rewritten, authority, flags).await;
    }
    // gRPC: the client's `grpc-timeout` is the route timeout, never beyond the route's own
    // (Istio sets Envoy's `max_grpc_timeout` to the route timeout; 0, no cap, without one).
    let client_deadline = if record.grpc { crate::http::headers::grpc_timeout(&parts.headers) } else { None };
    let timeout = match (route.timeout, client_deadline) {
        (Some(route), Some(client)) => Some(route.min(client)),
        (route, client) => route.or(client),
    };
    let hashed = cluster
        .hash
        .as_ref()
        .map(|h| crate::upstream::hash::request_hash(h, &parts.headers, &record.path, conn.remote, conn.original_dst));
    let mut body = RequestBody::prepare(incoming).await.map_err(|e| (e, flags))?;
    record.request_bytes += body.len_hint();
    let protocol = cluster.protocol_for(parts.version, record.grpc);
    let mut out = Outgoing::new(parts, rewritten, authority, protocol).map_err(|e| (e, flags))?;
    let set_cookie = hashed.and_then(|h| {
        out.hash = h.hash;
        h.set_cookie
    });
    if !route.mirrors.is_empty() {
        crate::http::mirror::send(&route.mirrors, snap, &out, &body, timeout, record.grpc, shared);
    }

    let sent = forward(&out, &mut body, cluster, &route.retry, &shared.metrics);
    // The route timeout covers the whole response, its body too (Envoy's).
    let deadline = timeout.map(|limit| tokio::time::Instant::now() + limit);
    let result = match deadline {
        Some(at) => tokio::time::timeout_at(at, sent).await.map_err(|_| (ProxyError::Timeout, flags))?,
        None => sent.await,
    };
    match result {
        Ok(done) => {
            record.upstream = Some(done.endpoint);
            record.guard = Some(done.guard);
            record.permit = Some(done.permit);
            record.attempts = done.tries;
            record.flags |= flags | done.flags;
            let mut response = done.response.map(|b| match deadline {
                Some(at) => body::until(body::incoming(b), at),
                None => body::incoming(b),
            });
            dest.response_headers.apply(response.headers_mut());
            finish(&mut response);
            if let Some(cookie) = set_cookie {
                response.headers_mut().append(http::header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
        Err(failed) => {
            record.upstream = failed.endpoint;
            record.attempts = failed.tries;
            Err((failed.error, flags | failed.flags))
        }
    }
}
