//! The admin listener (127.0.0.1:15000 by default): readiness, the live
//! config, the clusters with their endpoint state, the metrics, and the tap.

use crate::config::snapshot::Cluster;
use crate::http::body::{full, Body};
use crate::state::Shared;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let snap = shared.snapshot();
    match req.uri().path() {
        "/ready" if shared.is_ready() => text(StatusCode::OK, "LIVE\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "NOT READY: no config from the control plane yet\n"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/config_dump" => json_response(&json!({
            "version": snap.config.version,
            "generation": shared.metrics.config_applied.get(),
            "config": &*snap.config,
        })),
        "/clusters" => {
            let mut clusters: Vec<serde_json::Value> = snap.clusters().map(cluster_json).collect();
            clusters.extend(snap.inbound.as_ref().map(cluster_json));
            json_response(&json!({ "clusters": clusters }))
        }
        "/tap" => {
            let (filter, max) = crate::ops::tap::Filter::from_query(req.uri().query().unwrap_or(""));
            let mut resp = Response::new(shared.tap.watch(filter, max));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            resp
        }
        "/stats/prometheus" | "/metrics" => {
            set_cluster_gauges(&shared, &snap);
            let mut resp = Response::new(full(shared.metrics.render()));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready /healthz /config_dump /clusters /stats/prometheus /tap\n",
        ),
    }
}

fn cluster_json(c: &Cluster) -> serde_json::Value {
    let endpoints: Vec<_> = c
        .balancer
        .endpoints()
        .iter()
        .map(|e| {
            let od = e.outlier.view(c.balancer.outlier_settings());
            let now = std::time::Instant::now();
            json!({
                "ejected": e.outlier.is_ejected(),
                "consecutive_5xx": od.consecutive_5xx,
                "consecutive_gateway_errors": od.consecutive_gateway,
                "times_ejected": od.times_ejected,
                "ejected_for_seconds": od.ejected_until.map(|t| t.saturating_duration_since(now).as_secs_f64()),
                "address": e.addr.to_string(),
                "labels": e.labels,
                "active_requests": e.active(),
                "open_connections": e.pool.open_connections(),
                "idle_connections": e.pool.idle_connections(),
                "connections_opened": e.pool.opened_connections(),
            })
        })
        .collect();
    json!({
        "name": &*c.name,
        "service": &*c.service,
        "active_requests": c.limits.active_requests(),
        "pending_requests": c.limits.pending_requests(),
        "active_retries": c.limits.active_retries(),
        "connections": c.limits.connections(),
        "endpoints": endpoints,
    })
}

/// Gauges that describe live state are read at scrape time, for the live clusters only.
fn set_cluster_gauges(shared: &Shared, snap: &crate::config::snapshot::Snapshot) {
    let m = &shared.metrics;
    for g in [&m.upstream_pending, &m.upstream_active, &m.upstream_connections, &m.outlier_ejected] {
        g.reset();
    }
    for c in snap.clusters().chain(snap.inbound.as_ref()) {
        let name = [&*c.name];
        m.upstream_pending.with_label_values(&name).set(c.limits.pending_requests() as i64);
        m.upstream_active.with_label_values(&name).set(c.limits.active_requests() as i64);
        m.upstream_connections.with_label_values(&name).set(c.limits.connections() as i64);
        let ejected = c.balancer.endpoints().iter().filter(|e| e.outlier.is_ejected()).count();
        m.outlier_ejected.with_label_values(&name).set(ejected as i64);
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec_pretty(value).unwrap_or_default()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
