//! Istio's validation rules (pkg/config/validation in istio/istio), plus
//! Weft's own: a field Weft does not implement yet is refused by name. One
//! module per resource kind; shape errors (unknown fields, enum values,
//! durations) are refused earlier, when the YAML is parsed into `types`.

mod authorization_policy;
mod destination_rule;
mod sidecar;
mod telemetry;
mod virtual_service;

use super::types::*;
use super::{Diagnostic, Kind, Resource, Spec};
use std::collections::BTreeMap;

type Problems = Vec<(String, String)>;

const NOT_YET: &str = "not supported yet by Weft";

/// Checks one resource; returns (field path, message) for each problem.
pub fn resource(r: &Resource) -> Problems {
    let mut p = Problems::new();
    let name = &r.metadata.name;
    if !is_dns1123(name, 253, true) {
        p.push(("metadata.name".into(), format!("{name:?} is not a valid name (lowercase letters, digits, '-', '.')")));
    }
    if let Some(ns) = &r.metadata.namespace {
        if !is_dns1123(ns, 63, false) {
            p.push(("metadata.namespace".into(), format!("{ns:?} is not a valid namespace")));
        }
    }
    match &r.spec {
        Spec::VirtualService(vs) => virtual_service::check(vs, &mut p),
        Spec::DestinationRule(dr) => destination_rule::check(dr, &mut p),
        Spec::PeerAuthentication(pa) => {
            let PeerAuthentication { selector, mtls: _, port_level_mtls } = pa;
            unsupported(&mut p, "spec.portLevelMtls".into(), port_level_mtls);
            if selector.is_some() && r.namespace() == crate::translate::ROOT_NAMESPACE {
                p.push((
                    "spec.selector".into(),
                    "a mesh-wide PeerAuthentication (root namespace) cannot have a selector".into(),
                ));
            }
        }
        Spec::AuthorizationPolicy(ap) => authorization_policy::check(ap, r, &mut p),
        Spec::Sidecar(sc) => sidecar::sidecar(sc, r, &mut p),
        Spec::WorkloadGroup(wg) => sidecar::workload_group(wg, &mut p),
        Spec::Telemetry(t) => telemetry::check(t, r, &mut p),
    }
    p
}

/// The same kind/namespace/name twice in one apply is an error.
pub fn unique(resources: &[Resource]) -> Result<(), Vec<Diagnostic>> {
    let mut seen: BTreeMap<(Kind, &str, &str), &Resource> = BTreeMap::new();
    let mut diags = Vec::new();
    for r in resources {
        if let Some(first) = seen.insert((r.kind, r.namespace(), r.name()), r) {
            diags.push(Diagnostic {
                file: r.source.file.clone(),
                line: r.source.line,
                field: "metadata.name".into(),
                message: format!(
                    "{} {}/{} is defined twice (first at {}:{})",
                    r.kind,
                    r.namespace(),
                    r.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}

/// A field Weft lacks is refused, unless it is set to what leaving it out means
/// (`false`, `null`, empty): then it asks for nothing Weft does not do.
pub(super) fn unsupported(p: &mut Problems, path: String, value: &Unsupported) {
    if is_set(value) {
        p.push((path, NOT_YET.into()));
    }
}

/// Whether a field is present with something other than what leaving it out means.
pub(super) fn is_set(value: &Unsupported) -> bool {
    use serde_yaml::Value;
    value.as_ref().is_some_and(|v| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        _ => true,
    })
}

/// Istio's minimum for most durations: 1ms.
pub(super) fn at_least_1ms(p: &mut Problems, path: String, value: &Option<Duration>) {
    let min = std::time::Duration::from_millis(1);
    if let Some(d) = value.filter(|d| d.get() < min) {
        p.push((path, format!("{:?} is shorter than the minimum 1ms", weft_model::duration::format(d.get()))));
    }
}

pub(super) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 1123 names: lowercase alphanumerics and '-', and '.' when `dots`.
pub(super) fn is_dns1123(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// `exportTo` entries: `.`, `*` or a namespace.
pub(super) fn export_to(p: &mut Problems, export_to: &[String]) {
    for (i, e) in export_to.iter().enumerate() {
        if e != "." && e != "*" && !is_dns1123(e, 63, false) {
            p.push((format!("spec.exportTo[{i}]"), format!("{e:?} is not `.`, `*` or a namespace")));
        }
    }
}
