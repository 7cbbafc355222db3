//! Istio's validation rules (pkg/config/validation in istio/istio), plus
//! Weft's own: a field Weft does not implement yet is refused by name. One
//! module per resource kind; shape errors (unknown fields, enum values,
//! durations) are refused earlier, when the YAML is parsed into `types`.

mod authorization_policy;
mod common;
mod destination_rule;
mod gateway;
mod request_authentication;
mod service_entry;
mod sidecar;
mod telemetry;
mod virtual_service;

use super::resource::{Diagnostic, Kind, Resource, Spec};
use super::types::*;
use common::{is_dns1123, unsupported, Problems};
use std::collections::BTreeMap;

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
            if port_level_mtls.as_ref().is_some_and(|v| v.as_mapping().is_some_and(|m| m.is_empty())) {
                // Istio: "port level mtls must have at least one element".
                p.push(("spec.portLevelMtls".into(), "must have at least one element".into()));
            }
            unsupported(&mut p, "spec.portLevelMtls".into(), port_level_mtls);
            if selector.is_some() && r.namespace() == crate::istio::ROOT_NAMESPACE {
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
        Spec::RequestAuthentication(ra) => request_authentication::check(ra, r, &mut p),
        Spec::ServiceEntry(se) => service_entry::check(se, &mut p),
        Spec::Gateway(gw) => gateway::check(gw, &mut p),
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
