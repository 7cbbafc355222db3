//! Sidecar and WorkloadGroup: the workload's outbound policy and the registration rule.

use super::common::{is_set, unsupported, Problems};
use crate::istio::types::*;
use crate::istio::Resource;

pub(super) fn workload_group(wg: &WorkloadGroup, p: &mut Problems) {
    unsupported(p, "spec.probe".into(), &wg.probe);
    let t = &wg.template;
    for (field, value) in [
        ("address", &t.address),
        ("ports", &t.ports),
        ("labels", &t.labels),
        ("network", &t.network),
        ("locality", &t.locality),
        ("weight", &t.weight),
    ] {
        unsupported(p, format!("spec.template.{field}"), value);
    }
    match t.service_account.as_deref() {
        None => p.push((
            "spec.template.serviceAccount".into(),
            "required: the service account of the group's workloads".into(),
        )),
        Some(sa) if !crate::istio::name_ok(sa) => {
            p.push(("spec.template.serviceAccount".into(), format!("{sa:?} is not a valid service account name")))
        }
        Some(_) => {}
    }
    match wg.metadata.labels.get("app") {
        None => p.push((
            "spec.metadata.labels".into(),
            "an `app` label is required: it names the service the group's workloads serve".into(),
        )),
        Some(app) if !crate::istio::name_ok(app) => {
            p.push(("spec.metadata.labels.app".into(), format!("{app:?} is not a valid service name")))
        }
        Some(_) => {}
    }
}

pub(super) fn sidecar(sc: &Sidecar, r: &Resource, p: &mut Problems) {
    // Istio's ValidateSidecar: a Sidecar must configure something.
    if !is_set(&sc.ingress)
        && !is_set(&sc.egress)
        && sc.outbound_traffic_policy.is_none()
        && !is_set(&sc.inbound_connection_pool)
    {
        p.push(("spec".into(), "sidecar: empty configuration provided".into()));
    }
    unsupported(p, "spec.ingress".into(), &sc.ingress);
    unsupported(p, "spec.egress".into(), &sc.egress);
    unsupported(p, "spec.inboundConnectionPool".into(), &sc.inbound_connection_pool);
    if let Some(otp) = &sc.outbound_traffic_policy {
        unsupported(p, "spec.outboundTrafficPolicy.egressProxy".into(), &otp.egress_proxy);
    }
    if sc.workload_selector.is_some() && r.namespace() == crate::istio::ROOT_NAMESPACE {
        p.push((
            "spec.workloadSelector".into(),
            "the mesh-wide Sidecar (root namespace) cannot have a workloadSelector".into(),
        ));
    }
}
