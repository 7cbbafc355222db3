//! Weft's `istioctl analyze`: what a set of Istio resources does to every
//! workload in the registry, before it is written. `weftctl apply` translates
//! every registered workload's config with the resources it is about to store
//! and refuses the set when any sidecar would refuse (NACK) its config, naming
//! the workload and the field; translation's warnings (IST0109-like conflicts,
//! missing subsets, unknown hosts, ignored fields) are printed either way.

use crate::istio::Resource;
use crate::registry::Registry;
use std::collections::BTreeSet;

/// What applying would do to the registered workloads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    /// Worth knowing, not blocking (each once).
    pub warnings: Vec<String>,
    /// Configs a sidecar would refuse: the set must not be applied.
    pub refusals: Vec<String>,
}

/// The resources stored after `new` is applied over `stored` (same kind, namespace and name replaced).
pub fn merged(stored: &[Resource], new: &[Resource]) -> Vec<Resource> {
    let key = |r: &Resource| (r.kind, r.namespace().to_string(), r.name().to_string());
    let replaced: BTreeSet<_> = new.iter().map(key).collect();
    stored.iter().filter(|r| !replaced.contains(&key(r))).cloned().chain(new.iter().cloned()).collect()
}

/// Translates the config of every distinct workload of `registry` under `resources`.
pub fn analyze(resources: &[Resource], registry: &Registry, trust_domain: &str) -> Analysis {
    let mut warnings = BTreeSet::new();
    let mut refusals = Vec::new();
    let mut seen = BTreeSet::new();
    for svc in registry.services() {
        for inst in &svc.instances {
            let workload = weft_model::Workload {
                name: svc.name.to_string(),
                namespace: svc.namespace.to_string(),
                service_account: inst.service_account.clone(),
                labels: inst.labels.clone(),
            };
            if !seen.insert((workload.namespace.clone(), workload.service_account.clone(), workload.labels.clone())) {
                continue;
            }
            let t = crate::translate::translate_in(resources, registry, &workload, "analyze", trust_domain);
            warnings.extend(t.warnings);
            if let Err(e) = t.config.validate() {
                refusals.push(format!(
                    "workload {}/{} ({}) would refuse its config: {e}",
                    workload.namespace,
                    workload.name,
                    workload.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
                ));
            }
        }
    }
    Analysis { warnings: warnings.into_iter().collect(), refusals }
}
