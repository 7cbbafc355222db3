//! What every resource kind's translation shares: the translation in progress,
//! Istio's visibility (`exportTo`) and precedence rules, and the root namespace.

use crate::istio::{Resource, Spec};
use crate::registry::Registry;
use std::collections::BTreeMap;
use weft_model as model;

pub use crate::istio::ROOT_NAMESPACE;

/// One workload's translation in progress: the clusters it has made so far and what to warn about.
pub(super) struct Translator<'a> {
    pub(super) trust_domain: &'a str,
    pub(super) resources: &'a [Resource],
    pub(super) registry: &'a Registry,
    pub(super) workload: &'a model::Workload,
    pub(super) warnings: Vec<String>,
    pub(super) clusters: BTreeMap<String, model::Cluster>,
    /// The Gateways (`namespace/name`) that make this workload an ingress gateway; empty
    /// for a sidecar.
    pub(super) gateways: Vec<String>,
    /// The other port of a multi-port service whose routes are being made: a destination
    /// without `port` whose service serves it takes it (Istio's listener port).
    pub(super) listener_port: Option<u16>,
}

/// `exportTo` as Istio reads it: empty or `*` is everyone, `.` the resource's namespace.
pub(super) fn visible(export_to: &[String], resource_ns: &str, viewer_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| e == "*" || e == viewer_ns || (e == "." && resource_ns == viewer_ns))
}

/// A duration as the model carries it.
pub(super) fn duration(d: &Option<crate::istio::types::Duration>) -> Option<std::time::Duration> {
    d.map(|d| d.get())
}

/// The resources of one kind that may apply to `workload`, in Istio's order of
/// precedence: its namespace's whose selector matches it, its namespace's
/// without a selector, the root namespace's without one; each level by name.
pub(super) type Levels<'a, T> = [Vec<(&'a Resource, &'a T)>; 3];

pub(super) fn by_precedence<'a, T>(
    resources: &'a [Resource],
    workload: &model::Workload,
    spec: fn(&Spec) -> Option<&T>,
    selector: fn(&T) -> Option<&BTreeMap<String, String>>,
) -> Levels<'a, T> {
    let mut all: Vec<(&Resource, &T)> = resources.iter().filter_map(|r| Some((r, spec(&r.spec)?))).collect();
    all.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
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
pub(super) fn several<'a>(
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
