//! Istio resources + the service registry → one workload's `ProxyConfig`.
//! Pure functions: no I/O, no clock, the same input gives the same output
//! (golden-tested). Semantics follow shared/ISTIO-SEMANTICS.md §1–§2.
//!
//! One module per resource kind. Each destructures every Istio struct it reads
//! with every field named (`let VirtualService { hosts, gateways, http, tls, tcp,
//! export_to } = vs;`, never `..`), so a field added to `istio::types` does not
//! compile until translation says what it does with it.

mod common;
mod destination_rule;
mod gateway;
mod locality;
mod security;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;

pub use security::{authorization, peer_authentication, request_authentication};
pub use sidecar::outbound_traffic_policy;
pub use telemetry::access_log;

pub use common::ROOT_NAMESPACE;

use crate::istio::Resource;
use crate::registry::Registry;
use common::Translator;
use std::collections::BTreeMap;
use weft_model as model;

/// The result, with what the user should know about (IST0109-like conflicts,
/// routes to hosts or subsets that do not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub config: model::ProxyConfig,
    pub warnings: Vec<String>,
}

/// Compiles the config of `workload` in the default trust domain (`cluster.local`).
pub fn translate(
    resources: &[Resource],
    registry: &Registry,
    workload: &model::Workload,
    version: &str,
) -> Translation {
    translate_in(resources, registry, workload, version, crate::ca::DEFAULT_TRUST_DOMAIN)
}

/// What the sidecar speaks to its own app: HTTP/2 when the workload's service port is
/// `http2`, `grpc` or `grpc-web` (by its name or `appProtocol`), else HTTP/1.1 — also for an
/// unnamed port, so an app that speaks only HTTP/1.1 keeps working when callers upgrade
/// the hop between sidecars (gRPC is recognised per request and stays HTTP/2).
fn app_protocol(registry: &Registry, workload: &model::Workload) -> model::UpstreamProtocol {
    let own = workload
        .labels
        .get("app")
        .and_then(|app| registry.service(&format!("{app}.{}.{}", workload.namespace, crate::registry::CLUSTER_DOMAIN)));
    match own.and_then(|s| s.protocol()) {
        Some(p) if p.is_http2() => model::UpstreamProtocol::Http2,
        _ => model::UpstreamProtocol::Http1,
    }
}

/// Keeps in `svc`'s clusters of `port` (every subset) only the instances that serve it: an
/// instance that does not would answer on its main port, or close a TCP connection.
fn only_serving(
    clusters: &mut BTreeMap<String, model::Cluster>,
    svc: &crate::registry::ServiceView<'_>,
    port: u16,
    serves: impl Fn(&crate::registry::Instance) -> bool,
) {
    let serving: Vec<&str> = svc.instances.iter().filter(|i| serves(i)).map(|i| i.address.as_str()).collect();
    let (prefix, suffix) = (format!("outbound|{port}|"), format!("|{}", svc.fqdn()));
    for (_, c) in clusters.iter_mut().filter(|(name, _)| name.starts_with(&prefix) && name.ends_with(&suffix)) {
        c.endpoints.retain(|e| serving.contains(&e.address.as_str()));
    }
}

/// The TCP ports, and the other HTTP ports, of the workload's own instances (its service's
/// instances with its labels and service account): the only ports its sidecar takes a
/// peer's connection to, beside the app's main one.
fn own_ports(registry: &Registry, workload: &model::Workload) -> (Vec<u16>, Vec<u16>) {
    let Some(app) = workload.labels.get("app") else { return Default::default() };
    let fqdn = format!("{app}.{}.{}", workload.namespace, crate::registry::CLUSTER_DOMAIN);
    let Some(own) = registry.service(&fqdn) else { return Default::default() };
    let mine = || {
        own.instances.iter().filter(|i| i.labels == workload.labels && i.service_account == workload.service_account)
    };
    let tcp: std::collections::BTreeSet<u16> = mine().flat_map(|i| i.tcp_ports()).collect();
    let http: std::collections::BTreeSet<u16> =
        mine().flat_map(|i| i.other_http_ports()).filter(|p| !tcp.contains(p)).collect();
    (tcp.into_iter().collect(), http.into_iter().collect())
}

/// Compiles the config of `workload`; server identities are SPIFFE IDs of `trust_domain`.
pub fn translate_in(
    resources: &[Resource],
    registry: &Registry,
    workload: &model::Workload,
    version: &str,
    trust_domain: &str,
) -> Translation {
    let selected = gateway::selecting(resources, workload);
    let mut t = Translator {
        resources,
        registry,
        workload,
        trust_domain,
        warnings: Vec::new(),
        clusters: BTreeMap::new(),
        gateways: selected.iter().map(|g| g.name.clone()).collect(),
        listener_port: None,
    };
    let mut services = BTreeMap::new();
    // A gateway routes only the hosts of the VirtualServices bound to its Gateways.
    let gateway_servers = t.gateway(&selected, &mut services);
    let mut tcp = Vec::new();
    for svc in registry.services().into_iter().filter(|_| selected.is_empty()) {
        let fqdn = svc.fqdn();
        // A service whose port is TCP has no HTTP routes on it (Istio: a `tcp_proxy` listener).
        let routes = match t.virtual_service_for(&fqdn) {
            _ if svc.protocol() == Some(model::AppProtocol::Tcp) => Vec::new(),
            Some((vs, ns)) => t.routes(vs, ns, svc.port),
            None => vec![t.default_route(&svc)],
        };
        // Each other HTTP port gets its own routes (Istio: a route configuration per port).
        let mut ports = BTreeMap::new();
        for port in svc.other_http_ports() {
            t.listener_port = Some(port);
            let on_port = match t.virtual_service_for(&fqdn) {
                Some((vs, ns)) => t.routes(vs, ns, port),
                None => vec![t.route_to(&fqdn, port)],
            };
            t.listener_port = None;
            if !on_port.is_empty() {
                ports.insert(port, on_port);
            }
        }
        if !routes.is_empty() || !ports.is_empty() {
            services.insert(fqdn.clone(), model::Service { routes, ports });
        }
        for port in svc.tcp_ports() {
            tcp.push(model::TcpService { port, cluster: t.cluster(&fqdn, port, None) });
        }
    }
    // A service's other ports, whoever's route made their clusters: only the instances serving them.
    for svc in registry.services() {
        for port in svc.other_http_ports() {
            only_serving(&mut t.clusters, &svc, port, |i| i.other_http_ports().any(|p| p == port));
        }
        for port in svc.tcp_ports() {
            only_serving(&mut t.clusters, &svc, port, |i| i.tcp_ports().any(|p| p == port));
        }
    }
    let egress = if selected.is_empty() { t.external(&mut services) } else { Vec::new() };
    let (tcp_ports, http_ports) = own_ports(registry, workload);
    let clusters = std::mem::take(&mut t.clusters);
    Translation {
        config: model::ProxyConfig {
            api_version: model::API_VERSION.into(),
            version: version.into(),
            workload: workload.clone(),
            services,
            clusters,
            inbound: model::Inbound {
                protocol: app_protocol(registry, workload),
                mtls: peer_authentication(resources, workload),
                authz: authorization(resources, workload),
                jwt: request_authentication(resources, workload, &mut t.warnings),
                tcp_ports,
                http_ports,
                ..Default::default()
            },
            outbound_traffic_policy: outbound_traffic_policy(resources, workload, &mut t.warnings),
            trust: None,
            path_normalization: None,
            access_log: access_log(resources, workload, &mut t.warnings),
            egress,
            tcp,
            gateway: gateway_servers,
        },
        warnings: t.warnings,
    }
}
