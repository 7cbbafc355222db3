//! Istio resources + the service registry → one workload's `ProxyConfig`.
//! Pure functions: no I/O, no clock, the same input gives the same output
//! (golden-tested). Semantics follow shared/ISTIO-SEMANTICS.md §1–§2.
//!
//! One module per resource kind. Each destructures every Istio struct it reads
//! with every field named (`let VirtualService { hosts, gateways, http, tls, tcp,
//! export_to } = vs;`, never `..`), so a field added to `istio::types` does not
//! compile until translation says what it does with it.

mod destination_rule;
mod security;
mod sidecar;
mod telemetry;
mod virtual_service;

pub use security::{authorization, peer_authentication};
pub use sidecar::outbound_traffic_policy;
pub use telemetry::access_log;

use crate::istio::{Resource, Spec};
use crate::registry::Registry;
use std::collections::BTreeMap;
use weft_model as model;

/// Istio's root namespace: DestinationRules there apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

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

/// Compiles the config of `workload`; server identities are SPIFFE IDs of `trust_domain`.
pub fn translate_in(
    resources: &[Resource],
    registry: &Registry,
    workload: &model::Workload,
    version: &str,
    trust_domain: &str,
) -> Translation {
    let mut t =
        Translator { resources, registry, workload, trust_domain, warnings: Vec::new(), clusters: BTreeMap::new() };
    let mut services = BTreeMap::new();
    for svc in registry.services() {
        let fqdn = svc.fqdn();
        let routes = match t.virtual_service_for(&fqdn) {
            Some((vs, ns)) => t.routes(vs, ns, &svc),
            None => vec![t.default_route(&svc)],
        };
        if !routes.is_empty() {
            services.insert(fqdn, model::Service { routes });
        }
    }
    let clusters = std::mem::take(&mut t.clusters);
    Translation {
        config: model::ProxyConfig {
            api_version: model::API_VERSION.into(),
            version: version.into(),
            workload: workload.clone(),
            services,
            clusters,
            inbound: model::Inbound {
                mtls: peer_authentication(resources, workload),
                authz: authorization(resources, workload),
                ..Default::default()
            },
            outbound_traffic_policy: outbound_traffic_policy(resources, workload, &mut t.warnings),
            trust: None,
            path_normalization: None,
            access_log: access_log(resources, workload, &mut t.warnings),
        },
        warnings: t.warnings,
    }
}

/// One workload's translation in progress: the clusters it has made so far and what to warn about.
struct Translator<'a> {
    trust_domain: &'a str,
    resources: &'a [Resource],
    registry: &'a Registry,
    workload: &'a model::Workload,
    warnings: Vec<String>,
    clusters: BTreeMap<String, model::Cluster>,
}

/// `exportTo` as Istio reads it: empty or `*` is everyone, `.` the resource's namespace.
fn visible(export_to: &[String], resource_ns: &str, viewer_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| e == "*" || e == viewer_ns || (e == "." && resource_ns == viewer_ns))
}

/// A duration as the model carries it.
fn duration(d: &Option<crate::istio::types::Duration>) -> Option<std::time::Duration> {
    d.map(|d| d.get())
}

/// The resources of one kind that may apply to `workload`, in Istio's order of
/// precedence: its namespace's whose selector matches it, its namespace's
/// without a selector, the root namespace's without one; each level by name.
type Levels<'a, T> = [Vec<(&'a Resource, &'a T)>; 3];

fn by_precedence<'a, T>(
    resources: &'a [Resource],
    workload: &model::Workload,
    spec: fn(&Spec) -> Option<&T>,
    selector: fn(&T) -> Option<&BTreeMap<String, String>>,
) -> Levels<'a, T> {
    let mut all: Vec<(&Resource, &T)> = resources.iter().filter_map(|r| Some((r, spec(&r.spec)?))).collect();
    all.sort_by(|a, b| a.0.name().cmp(b.0.name()));
    let ns = workload.namespace.as_str();
    let selects = |t: &T| selector(t).is_some_and(|l| l.iter().all(|(k, v)| workload.labels.get(k) == Some(v)));
    let level = |keep: &dyn Fn(&Resource, &T) -> bool| all.iter().copied().filter(|(r, t)| keep(r, t)).collect();
    [
        level(&|r, t| r.namespace() == ns && selects(t)),
        level(&|r, t| r.namespace() == ns && selector(t).is_none()),
        level(&|r, t| r.namespace() == ROOT_NAMESPACE && selector(t).is_none()),
    ]
}

/// The warning when several resources of one level apply to `workload`: the first by name is used.
fn several<'a>(
    workload: &model::Workload,
    found: impl Iterator<Item = &'a Resource>,
    what: &str,
    istio: &str,
) -> Option<String> {
    let names: Vec<String> = found.map(|r| format!("{}/{}", r.namespace(), r.name())).collect();
    (names.len() > 1).then(|| {
        format!(
            "workload {}/{} {what} ({}); {} is used ({istio})",
            workload.namespace,
            workload.name,
            names.join(", "),
            names[0]
        )
    })
}
