//! Sidecar → the workload's outbound traffic policy.

use super::common::{by_precedence, several};
use crate::istio::types::{OutboundMode, OutboundTrafficPolicy, Sidecar};
use crate::istio::{Resource, Spec};
use weft_model as model;

/// The workload's Sidecar resource, as Istio picks it: the first level of
/// [`by_precedence`] that has one (ties go to the first by name, and are
/// reported: Istio calls them undefined, IST0110); then that resource's
/// `outboundTrafficPolicy.mode` (absent: REGISTRY_ONLY, the proto's zero value), with no
/// fallback to a lower level (as Istio).
/// `None`: the sidecar's own default (MeshConfig's, ALLOW_ANY).
pub fn outbound_traffic_policy(
    resources: &[Resource],
    workload: &model::Workload,
    warnings: &mut Vec<String>,
) -> Option<model::OutboundTrafficPolicy> {
    let levels = by_precedence(
        resources,
        workload,
        |s| match s {
            Spec::Sidecar(sc) => Some(sc),
            _ => None,
        },
        |sc| sc.workload_selector.as_ref().map(|s| &s.labels),
    );
    let found = levels.into_iter().find(|level| !level.is_empty())?;
    if let Some(w) =
        several(workload, found.iter().map(|(r, _)| *r), "is selected by several Sidecars", "Istio IST0110")
    {
        warnings.push(w);
    }
    // `workloadSelector` chose it; ingress, egress and inboundConnectionPool are refused by validation.
    let Sidecar { workload_selector: _, outbound_traffic_policy, ingress: _, egress: _, inbound_connection_pool: _ } =
        found[0].1;
    let OutboundTrafficPolicy { mode, egress_proxy: _ } = outbound_traffic_policy.as_ref()?;
    // An absent mode is the proto's zero value, REGISTRY_ONLY (Istio reads it so).
    Some(match mode.unwrap_or(OutboundMode::RegistryOnly) {
        OutboundMode::RegistryOnly => model::OutboundTrafficPolicy::RegistryOnly,
        OutboundMode::AllowAny => model::OutboundTrafficPolicy::AllowAny,
    })
}
