//! What the dashboard shows, put together from two sources: the control plane's
//! own state (the registry's workloads and versions, each sidecar's config and
//! certificate status) and Prometheus's view of the traffic (the sidecars' Istio
//! metrics). Gathering ([`gather`]) is separate from assembling ([`assemble`]),
//! which is pure and tested on its own.
//!
//! Size: about 430 lines of gathering and assembling that share the graph's types; the
//! rest is tests of the assembly.

use crate::promql::{query, Sample};
use crate::registry::Registry;
use crate::store::SidecarStatus;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The window rates and quantiles are taken over.
pub const WINDOW: &str = "1m";

/// The whole picture, as `/api/mesh` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Mesh {
    /// The etcd revision of the policies and registry shown.
    pub revision: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// The traffic share of each version, for every service called on more than one.
    pub splits: Vec<Split>,
    pub sidecars: Vec<Sidecar>,
    pub ejections: Vec<Ejection>,
    /// What could not be read (Prometheus down, etcd unreachable): shown on the page.
    pub problems: Vec<String>,
}

/// One workload version: `order-service` `v1` with its instance count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Node {
    pub id: String,
    pub service: String,
    pub version: String,
    pub namespace: String,
    pub instances: usize,
}

/// Who calls whom, as the calling sidecar reports it, with what the destination
/// sidecar adds: the connection's security and its authorization denials.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub rps: f64,
    /// Share of answers that were not 5xx (Istio's success), 0–1; `None` without requests.
    pub success: Option<f64>,
    /// Answers that were 4xx or 5xx, per second.
    pub error_rps: f64,
    pub p99_ms: Option<f64>,
    /// Every request the destination saw on this edge came over mutual TLS.
    pub mtls: bool,
    /// Requests refused by the destination's AuthorizationPolicy, per second.
    pub denied_rps: f64,
    /// Some request on this edge got an answer other than 4xx since the caller's sidecar
    /// started: a call the mesh lets through, not only a refused one (the graph's layout
    /// follows these).
    pub answered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub service: String,
    pub versions: Vec<Share>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub version: String,
    pub rps: f64,
    pub percent: f64,
}

/// One sidecar's config and certificate as its control plane last wrote them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sidecar {
    pub workload: String,
    pub namespace: String,
    pub instance: String,
    pub control_plane: String,
    pub sent: Option<String>,
    pub acked: Option<String>,
    /// The last config it refused, and why.
    pub nack: Option<String>,
    pub warnings: usize,
    /// When its certificate expires (Unix seconds).
    pub cert_expires: Option<i64>,
}

/// Endpoints a sidecar holds out of a cluster now (outlier detection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ejection {
    /// The ejecting sidecar: its scrape target's `workload` or `service` label, else the target.
    pub sidecar: String,
    pub cluster: String,
    pub endpoints: f64,
}

/// The edge labels: caller app and version, called service and version.
const EDGE: &str = "source_app, source_version, destination_service_name, destination_version";

/// Prometheus's answers [`assemble`] reads.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Request rate by [`EDGE`] and `response_code` (reporter source).
    pub requests: Vec<Sample>,
    /// p99 latency by [`EDGE`] (reporter source).
    pub p99: Vec<Sample>,
    /// Series the destinations hold, by caller, destination and `connection_security_policy`.
    pub security: Vec<Sample>,
    /// Denial rate by scrape target and `source_principal`.
    pub denied: Vec<Sample>,
    /// Which service and version each scrape target serves.
    pub served: Vec<Sample>,
    /// `weft_outlier_ejections_active` above zero.
    pub ejected: Vec<Sample>,
    /// The [`EDGE`]s with a series of an answer other than 4xx (reporter source).
    pub answered: Vec<Sample>,
}

/// Reads Prometheus; a failed query leaves its part empty and says so in `problems`.
pub async fn traffic(prometheus: &str, problems: &mut Vec<String>) -> Traffic {
    let requests =
        format!("sum by ({EDGE}, response_code) (rate(istio_requests_total{{reporter=\"source\"}}[{WINDOW}]))");
    let p99 = format!(
        "histogram_quantile(0.99, sum by ({EDGE}, le) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"source\"}}[{WINDOW}])))"
    );
    let security = "count by (source_app, source_principal, destination_service_name, destination_version, connection_security_policy) (istio_requests_total{reporter=\"destination\"})".to_string();
    let denied = format!("sum by (instance, source_principal) (rate(weft_authz_denied_total[{WINDOW}]))");
    let served = "count by (instance, destination_service_name, destination_version) (istio_requests_total{reporter=\"destination\"})".to_string();
    let ejected = "weft_outlier_ejections_active > 0".to_string();
    let answered = format!("count by ({EDGE}) (istio_requests_total{{reporter=\"source\",response_code!~\"4..\"}})");
    let (a, b, c, d, e, f, g) = tokio::join!(
        query(prometheus, &requests),
        query(prometheus, &p99),
        query(prometheus, &security),
        query(prometheus, &denied),
        query(prometheus, &served),
        query(prometheus, &ejected),
        query(prometheus, &answered),
    );
    let mut take = |r: Result<Vec<Sample>, String>| {
        r.unwrap_or_else(|e| {
            if !problems.contains(&e) {
                problems.push(e);
            }
            Vec::new()
        })
    };
    Traffic {
        requests: take(a),
        p99: take(b),
        security: take(c),
        denied: take(d),
        served: take(e),
        ejected: take(f),
        answered: take(g),
    }
}

/// Nodes the metrics may add beyond the registry's (a caller naming hosts the mesh does not
/// know, a ServiceEntry's): past this, more are left out and the page says so.
pub const MAX_NODES: usize = 256;

/// The id of `service` at `version`; a caller's unknown version lands on the service's only
/// version when it has one.
fn resolve(nodes: &BTreeMap<String, Node>, service: &str, version: &str) -> String {
    if version == "unknown" {
        let mut versions = nodes.range(node_id(service, "")..).take_while(|(_, n)| n.service == service);
        if let (Some((id, _)), None) = (versions.next(), versions.next()) {
            return id.clone();
        }
    }
    node_id(service, version)
}

/// The node of `service` at `version`, made when the registry lacks it (none past [`MAX_NODES`]).
fn node_for(nodes: &mut BTreeMap<String, Node>, service: &str, version: &str) -> Option<String> {
    let id = resolve(nodes, service, version);
    if !nodes.contains_key(&id) {
        if nodes.len() >= MAX_NODES {
            return None;
        }
        let version = id.rsplit_once('@').map_or(version, |(_, v)| v).to_string();
        nodes.insert(
            id.clone(),
            Node { id: id.clone(), service: service.to_string(), version, namespace: String::new(), instances: 0 },
        );
    }
    Some(id)
}

/// The (source, destination) nodes of a series with the [`EDGE`] labels.
fn edge_of(nodes: &mut BTreeMap<String, Node>, m: &BTreeMap<String, String>) -> Option<(String, String)> {
    let src = node_for(nodes, label(m, "source_app"), label(m, "source_version"))?;
    let dst = node_for(nodes, label(m, "destination_service_name"), label(m, "destination_version"))?;
    Some((src, dst))
}

/// The edge a series names, when it is drawn already.
fn edge_key(nodes: &BTreeMap<String, Node>, m: &BTreeMap<String, String>) -> (String, String) {
    (
        resolve(nodes, label(m, "source_app"), label(m, "source_version")),
        resolve(nodes, label(m, "destination_service_name"), label(m, "destination_version")),
    )
}

fn label<'a>(m: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    m.get(k).map(String::as_str).filter(|v| !v.is_empty()).unwrap_or("unknown")
}

/// Node ids: `service@version`.
fn node_id(service: &str, version: &str) -> String {
    format!("{service}@{version}")
}

/// The picture from the registry, the sidecars' status and the traffic.
pub fn assemble(registry: &Registry, revision: i64, statuses: &[SidecarStatus], traffic: &Traffic) -> Mesh {
    // Nodes: every registered service and version, whether it has traffic or not.
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    // Service account → the services that run as it (to name a destination's caller by its identity).
    let mut by_account: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for svc in registry.services() {
        for inst in &svc.instances {
            let version = inst.labels.get("version").map_or("unknown", String::as_str);
            let id = node_id(svc.name, version);
            nodes
                .entry(id.clone())
                .or_insert_with(|| Node {
                    id,
                    service: svc.name.to_string(),
                    version: version.to_string(),
                    namespace: svc.namespace.to_string(),
                    instances: 0,
                })
                .instances += 1;
            by_account
                .entry((svc.namespace.to_string(), inst.service_account.clone()))
                .or_default()
                .insert(svc.name.to_string());
        }
    }
    let service_of_principal = |principal: &str| -> Option<String> {
        // spiffe://<td>/ns/<ns>/sa/<sa>
        let path = principal.strip_prefix("spiffe://")?.split_once('/')?.1;
        let mut parts = path.split('/');
        let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let apps = by_account.get(&(ns.to_string(), sa.to_string()))?;
        (apps.len() == 1).then(|| apps.iter().next().cloned()).flatten()
    };
    let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
    let mut left_out = 0usize;
    // Answers that were not 5xx, per edge: its success.
    let mut ok: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (m, rps) in &traffic.requests {
        let Some(key) = edge_of(&mut nodes, m) else {
            left_out += 1;
            continue;
        };
        let e = edges.entry(key.clone()).or_insert_with(|| Edge {
            source: key.0.clone(),
            destination: key.1.clone(),
            ..Edge::default()
        });
        let rps = if rps.is_finite() { *rps } else { 0.0 };
        e.rps += rps;
        let code = label(m, "response_code");
        if code.starts_with('4') || code.starts_with('5') {
            e.error_rps += rps;
        }
        if !code.starts_with('5') {
            *ok.entry(key).or_default() += rps;
        }
    }
    for (key, e) in edges.iter_mut() {
        // Two series extrapolate separately: a ratio a hair over 1 is 1.
        e.success = (e.rps > 0.0).then(|| (ok.get(key).copied().unwrap_or(0.0) / e.rps).min(1.0));
    }
    for (m, _) in &traffic.answered {
        if let Some(e) = edges.get_mut(&edge_key(&nodes, m)) {
            e.answered = true;
        }
    }
    for (m, p99) in &traffic.p99 {
        if let Some(e) = edges.get_mut(&edge_key(&nodes, m)) {
            e.p99_ms = p99.is_finite().then_some(*p99);
        }
    }
    // Security, as the destinations saw it: a lock only when every series is mutual TLS. A
    // plaintext caller has no identity to name it by: it takes the lock off every edge into
    // that destination.
    let mut security: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
    let mut plain_into: BTreeSet<String> = BTreeSet::new();
    for (m, _) in &traffic.security {
        let dst = resolve(&nodes, label(m, "destination_service_name"), label(m, "destination_version"));
        let mutual = label(m, "connection_security_policy") == "mutual_tls";
        let app = match label(m, "source_app") {
            "unknown" => service_of_principal(label(m, "source_principal")),
            app => Some(app.to_string()),
        };
        let Some(app) = app else {
            if !mutual {
                plain_into.insert(dst);
            }
            continue;
        };
        // Every version of the caller: the destination does not see which one called.
        for src in nodes.values().filter(|n| n.service == app).map(|n| n.id.clone()).collect::<Vec<_>>() {
            let s = security.entry((src, dst.clone())).or_insert((false, false));
            if mutual {
                s.0 = true;
            } else {
                s.1 = true;
            }
        }
    }
    for (key, e) in edges.iter_mut() {
        e.mtls = !plain_into.contains(&key.1) && security.get(key).is_some_and(|&(mutual, plain)| mutual && !plain);
    }
    // Denials: a target's authorization refusals by caller identity, on the service it serves.
    let mut served: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for (m, _) in &traffic.served {
        served.insert(
            label(m, "instance"),
            (label(m, "destination_service_name").to_string(), label(m, "destination_version").to_string()),
        );
    }
    for (m, rate) in &traffic.denied {
        if !(rate.is_finite() && *rate > 0.0) {
            continue;
        }
        let Some((service, version)) = served.get(label(m, "instance")) else { continue };
        let Some(app) = service_of_principal(label(m, "source_principal")) else { continue };
        let Some(dst) = node_for(&mut nodes, service, version) else { continue };
        // Shared among the caller's versions that reported calls to it (the destination
        // cannot tell them apart); unseen from the caller's side, on its first version.
        let callers: Vec<(String, String)> = edges
            .keys()
            .filter(|(s, d)| d == &dst && nodes.get(s).is_some_and(|n| n.service == app))
            .cloned()
            .collect();
        for key in &callers {
            if let Some(e) = edges.get_mut(key) {
                e.denied_rps += rate / callers.len() as f64;
            }
        }
        if callers.is_empty() {
            if let Some(src) = nodes.values().find(|n| n.service == app).map(|n| n.id.clone()) {
                edges.insert(
                    (src.clone(), dst.clone()),
                    Edge { source: src, destination: dst, denied_rps: *rate, ..Edge::default() },
                );
            }
        }
    }
    // Canary splits: each service's traffic by version, where it has more than one.
    let mut by_version: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for e in edges.values() {
        if let Some(n) = nodes.get(&e.destination) {
            *by_version.entry(n.service.clone()).or_default().entry(n.version.clone()).or_default() += e.rps;
        }
    }
    let splits = by_version
        .into_iter()
        .map(|(service, mut v)| {
            // A version the metrics could not name is no canary.
            v.remove("unknown");
            (service, v)
        })
        .filter(|(_, v)| v.len() > 1)
        .filter_map(|(service, versions)| {
            let total: f64 = versions.values().sum();
            (total > 0.0).then(|| Split {
                service,
                versions: versions
                    .into_iter()
                    .map(|(version, rps)| Share { version, rps, percent: 100.0 * rps / total })
                    .collect(),
            })
        })
        .collect();
    let sidecars = statuses
        .iter()
        .map(|s| Sidecar {
            workload: s.workload.clone(),
            namespace: s.namespace.clone(),
            instance: s.instance.clone(),
            control_plane: s.control_plane.clone(),
            sent: s.sent_version.clone(),
            acked: s.acked_version.clone(),
            nack: s.last_rejection.as_ref().map(|(v, why)| format!("{v}: {why}")),
            warnings: s.warnings.len(),
            cert_expires: s.cert_expires,
        })
        .collect();
    let ejections = traffic
        .ejected
        .iter()
        .map(|(m, n)| Ejection {
            sidecar: m
                .get("workload")
                .or_else(|| m.get("service"))
                .map(|w| format!("{w} ({})", m.get("instance").map_or("-", String::as_str)))
                .or_else(|| m.get("instance").cloned())
                .unwrap_or_default(),
            cluster: label(m, "cluster").to_string(),
            endpoints: *n,
        })
        .collect();
    let problems = if left_out > 0 {
        vec![format!("{left_out} series left out: more than {MAX_NODES} nodes")]
    } else {
        Vec::new()
    };
    Mesh {
        revision,
        nodes: nodes.into_values().collect(),
        edges: edges.into_values().collect(),
        splits,
        sidecars,
        ejections,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        serde_yaml::from_str(
            r#"
production:
  api-gateway:
    gw-1: {address: "127.0.0.1:1", labels: {app: api-gateway, version: v1}, serviceAccount: api-gateway}
  order-service:
    o1a: {address: "127.0.0.1:2", labels: {app: order-service, version: v1}, serviceAccount: order-service}
    o1b: {address: "127.0.0.1:3", labels: {app: order-service, version: v1}, serviceAccount: order-service}
    o2: {address: "127.0.0.1:4", labels: {app: order-service, version: v2}, serviceAccount: order-service}
  notification-service:
    n1: {address: "127.0.0.1:5", labels: {app: notification-service, version: v1}, serviceAccount: notification-service}
"#,
        )
        .expect("registry")
    }

    fn sample(labels: &[(&str, &str)], v: f64) -> Sample {
        (labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), v)
    }

    fn call(src: &str, dst: &str, version: &str, code: &str, rps: f64) -> Sample {
        sample(
            &[
                ("source_app", src),
                ("source_version", "v1"),
                ("destination_service_name", dst),
                ("destination_version", version),
                ("response_code", code),
            ],
            rps,
        )
    }

    #[test]
    fn nodes_edges_locks_denials_and_the_split_come_from_the_registry_and_the_traffic() {
        let gw = "spiffe://cluster.local/ns/production/sa/api-gateway";
        let intruder = "spiffe://cluster.local/ns/production/sa/notification-service";
        let traffic = Traffic {
            requests: vec![
                call("api-gateway", "order-service", "v1", "200", 9.0),
                call("api-gateway", "order-service", "v2", "200", 0.9),
                call("api-gateway", "order-service", "v2", "503", 0.1),
                call("notification-service", "order-service", "v1", "403", 0.5),
            ],
            p99: vec![(call("api-gateway", "order-service", "v1", "", 0.0).0, 4.5)],
            security: vec![
                sample(
                    &[
                        ("source_principal", gw),
                        ("destination_service_name", "order-service"),
                        ("destination_version", "v1"),
                        ("connection_security_policy", "mutual_tls"),
                    ],
                    1.0,
                ),
                // v2 saw one plaintext series (no identity to name the caller by): no lock there.
                sample(
                    &[
                        ("source_principal", "unknown"),
                        ("destination_service_name", "order-service"),
                        ("destination_version", "v2"),
                        ("connection_security_policy", "none"),
                    ],
                    1.0,
                ),
                sample(
                    &[
                        ("source_principal", gw),
                        ("destination_service_name", "order-service"),
                        ("destination_version", "v2"),
                        ("connection_security_policy", "mutual_tls"),
                    ],
                    1.0,
                ),
            ],
            denied: vec![sample(&[("instance", "127.0.0.1:16200"), ("source_principal", intruder)], 0.5)],
            served: vec![sample(
                &[
                    ("instance", "127.0.0.1:16200"),
                    ("destination_service_name", "order-service"),
                    ("destination_version", "v1"),
                ],
                1.0,
            )],
            ejected: vec![sample(&[("workload", "api-gateway"), ("cluster", "outbound|80|v1|order-service")], 1.0)],
            answered: vec![call("api-gateway", "order-service", "v1", "", 1.0)],
        };
        let m = assemble(&registry(), 7, &[], &traffic);
        let ids: Vec<&str> = m.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["api-gateway@v1", "notification-service@v1", "order-service@v1", "order-service@v2"],
            "every registered version is a node, with or without traffic"
        );
        assert_eq!(m.nodes.iter().find(|n| n.id == "order-service@v1").map(|n| n.instances), Some(2));
        let edge = |s: &str, d: &str| m.edges.iter().find(|e| e.source == s && e.destination == d).expect(d).clone();
        let v1 = edge("api-gateway@v1", "order-service@v1");
        assert!(v1.mtls && v1.denied_rps == 0.0 && v1.success == Some(1.0) && v1.p99_ms == Some(4.5), "{v1:?}");
        assert!(v1.answered);
        let v2 = edge("api-gateway@v1", "order-service@v2");
        assert!(!v2.mtls, "a plaintext series on the edge takes the lock away");
        assert!((v2.success.unwrap() - 0.9).abs() < 1e-9 && (v2.error_rps - 0.1).abs() < 1e-9, "{v2:?}");
        let denied = edge("notification-service@v1", "order-service@v1");
        assert_eq!(denied.denied_rps, 0.5, "the destination's denials by the caller's identity");
        assert!(!denied.answered, "only refused so far");
        assert_eq!(m.splits.len(), 1);
        let shares: Vec<(String, f64)> =
            m.splits[0].versions.iter().map(|s| (s.version.clone(), (s.percent * 10.0).round() / 10.0)).collect();
        // 9 + 0.5 (the denied calls reached v1's sidecar) against 1.0 on v2.
        assert_eq!(shares, [("v1".to_string(), 90.5), ("v2".to_string(), 9.5)]);
        assert_eq!(m.ejections[0].sidecar, "api-gateway (-)");
        assert_eq!(m.revision, 7);
    }

    #[test]
    fn a_denial_from_a_caller_whose_sidecar_reported_nothing_still_draws_the_edge() {
        let traffic = Traffic {
            denied: vec![sample(
                &[
                    ("instance", "x:1"),
                    ("source_principal", "spiffe://cluster.local/ns/production/sa/notification-service"),
                ],
                0.2,
            )],
            served: vec![sample(
                &[("instance", "x:1"), ("destination_service_name", "order-service"), ("destination_version", "v2")],
                1.0,
            )],
            ..Traffic::default()
        };
        let m = assemble(&registry(), 1, &[], &traffic);
        assert_eq!(m.edges.len(), 1);
        assert_eq!(
            (m.edges[0].source.as_str(), m.edges[0].destination.as_str()),
            ("notification-service@v1", "order-service@v2")
        );
        // An identity no registered service runs as names no edge.
        let stranger = Traffic {
            denied: vec![sample(&[("instance", "x:1"), ("source_principal", "spiffe://cluster.local/ns/x/sa/y")], 1.0)],
            served: traffic.served.clone(),
            ..Traffic::default()
        };
        assert!(assemble(&registry(), 1, &[], &stranger).edges.is_empty());
    }
}
