//! Istio's locality load balancing, decided for one client as istiod decides it per
//! proxy: a workload's locality is its `topology.kubernetes.io/region`, `…/zone` and
//! `topology.istio.io/subzone` labels. With `distribute`, the first rule whose `from`
//! matches the client gives each endpoint locality its share (endpoints in localities it
//! does not name get none). Otherwise, when the cluster has `outlierDetection` (as in
//! Istio: failover needs health), endpoints get failover priorities: the same subzone 0,
//! the same zone 1, the same region 2, elsewhere 3 — or 4 when a `failover` rule from the
//! client's region names another region — or, with `failoverPriority`, by how many of the
//! listed labels they share with the client, in order. `enabled: false` turns it all off.

use crate::istio::types::{LocalityDistribute, LocalityFailover, LocalityLbSetting};
use std::collections::BTreeMap;
use weft_model as model;

pub const REGION: &str = "topology.kubernetes.io/region";
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const SUBZONE: &str = "topology.istio.io/subzone";

/// Region, zone, subzone (empty when unlabelled).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Locality<'a>([&'a str; 3]);

impl<'a> Locality<'a> {
    fn of(labels: &'a BTreeMap<String, String>) -> Self {
        let get = |k: &str| labels.get(k).map_or("", String::as_str);
        Locality([get(REGION), get(ZONE), get(SUBZONE)])
    }

    /// `region/zone/subzone`, as the sidecar groups endpoints; `None` when unlabelled.
    fn key(&self) -> Option<String> {
        (!self.0.iter().all(|p| p.is_empty())).then(|| self.0.join("/"))
    }

    /// Istio's `LocalityMatch`: a rule `region[/zone[/subzone]]`, `*` for any part.
    fn matches(&self, rule: &str) -> bool {
        let mut parts = rule.split('/');
        let (r, z, s) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        (r == "*" || r == self.0[0])
            && (z.is_empty() || z == "*" || z == self.0[1])
            && (s.is_empty() || s == "*" || s == self.0[2])
    }

    /// Istio's `LbPriority`.
    fn priority_from(&self, client: &Locality<'_>) -> u32 {
        match (self.0[0] == client.0[0], self.0[1] == client.0[1], self.0[2] == client.0[2]) {
            (true, true, true) => 0,
            (true, true, false) => 1,
            (true, false, _) => 2,
            (false, _, _) => 3,
        }
    }
}

/// Sets each endpoint's `priority` and `locality` (endpoint `i` is the instance with
/// `labels[i]`) and returns the cluster's locality weights (`Some`, maybe empty, when a
/// `distribute` rule applies to this client).
pub(super) fn apply(
    setting: Option<&LocalityLbSetting>,
    outlier_detection: bool,
    client: &BTreeMap<String, String>,
    labels: &[&BTreeMap<String, String>],
    endpoints: &mut [model::Endpoint],
) -> Option<BTreeMap<String, u32>> {
    for (e, l) in endpoints.iter_mut().zip(labels) {
        e.locality = Locality::of(l).key();
    }
    let default = LocalityLbSetting::default();
    let LocalityLbSetting { distribute, failover, failover_priority, enabled } = setting.unwrap_or(&default);
    if *enabled == Some(false) {
        return None;
    }
    let me = Locality::of(client);
    if !distribute.is_empty() {
        return weights(distribute, &me, labels);
    }
    if !outlier_detection {
        return None;
    }
    for (e, l) in endpoints.iter_mut().zip(labels) {
        e.priority = if failover_priority.is_empty() {
            by_locality(&Locality::of(l), &me, failover)
        } else {
            let shared =
                failover_priority.iter().take_while(|k| l.get(*k).is_some() && l.get(*k) == client.get(*k)).count();
            (failover_priority.len() - shared) as u32
        };
    }
    None
}

fn by_locality(endpoint: &Locality<'_>, me: &Locality<'_>, failover: &[LocalityFailover]) -> u32 {
    let priority = endpoint.priority_from(me);
    match failover.iter().find(|f| f.from == me.0[0]) {
        Some(f) if priority == 3 && f.to != endpoint.0[0] => 4,
        _ => priority,
    }
}

/// Istio's `applyLocalityWeights`: each `to` entry claims the endpoint localities it
/// matches that no entry claimed before, and shares its weight among them by their size.
fn weights(
    distribute: &[LocalityDistribute],
    me: &Locality<'_>,
    labels: &[&BTreeMap<String, String>],
) -> Option<BTreeMap<String, u32>> {
    let rule = distribute.iter().find(|d| me.matches(&d.from))?;
    let mut sizes: BTreeMap<String, u32> = BTreeMap::new();
    let mut by_key: BTreeMap<String, Locality<'_>> = BTreeMap::new();
    for l in labels {
        let loc = Locality::of(l);
        if let Some(k) = loc.key() {
            *sizes.entry(k.clone()).or_default() += 1;
            by_key.entry(k).or_insert(loc);
        }
    }
    let mut out = BTreeMap::new();
    for (to, weight) in &rule.to {
        let claimed: Vec<&String> = sizes.keys().filter(|k| !out.contains_key(*k) && by_key[*k].matches(to)).collect();
        let total: u32 = claimed.iter().map(|k| sizes[*k]).sum();
        for k in claimed {
            let share = (f64::from(*weight) * f64::from(sizes[k]) / f64::from(total.max(1))).ceil() as u32;
            out.insert(k.clone(), share.max(1));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(region: &str, zone: &str) -> BTreeMap<String, String> {
        [(REGION.to_string(), region.to_string()), (ZONE.to_string(), zone.to_string())].into()
    }

    fn endpoints(n: usize) -> Vec<model::Endpoint> {
        (0..n)
            .map(|i| model::Endpoint {
                address: format!("10.0.0.{i}:80"),
                labels: Default::default(),
                priority: 0,
                locality: None,
            })
            .collect()
    }

    /// istio.io's locality failover task: from region1/zone1, zone2 is 2, region2 (the
    /// failover target) 3, region3 4.
    #[test]
    fn failover_priorities_as_the_istio_task_lists_them() {
        let setting: LocalityLbSetting = serde_yaml::from_str("failover: [{from: region1, to: region2}]").unwrap();
        let eps = [
            labels("region1", "zone1"),
            labels("region1", "zone2"),
            labels("region2", "zone3"),
            labels("region3", "zone4"),
        ];
        let refs: Vec<&BTreeMap<String, String>> = eps.iter().collect();
        let mut out = endpoints(4);
        let w = apply(Some(&setting), true, &labels("region1", "zone1"), &refs, &mut out);
        assert_eq!(w, None);
        assert_eq!(out.iter().map(|e| e.priority).collect::<Vec<_>>(), [0, 2, 3, 4]);
        assert_eq!(out[2].locality.as_deref(), Some("region2/zone3/"));
        // Without outlier detection there is no failover (Istio's rule).
        let mut out = endpoints(4);
        apply(Some(&setting), false, &labels("region1", "zone1"), &refs, &mut out);
        assert!(out.iter().all(|e| e.priority == 0));
        // enabled: false turns it off.
        let off: LocalityLbSetting = serde_yaml::from_str("enabled: false").unwrap();
        let mut out = endpoints(4);
        apply(Some(&off), true, &labels("region1", "zone1"), &refs, &mut out);
        assert!(out.iter().all(|e| e.priority == 0));
    }

    #[test]
    fn distribute_shares_weights_among_matched_localities() {
        let setting: LocalityLbSetting =
            serde_yaml::from_str("distribute: [{from: 'us/a/*', to: {'us/a/*': 80, 'us/b/*': 20}}]").unwrap();
        let eps = [labels("us", "a"), labels("us", "a"), labels("us", "b"), labels("eu", "c")];
        let refs: Vec<&BTreeMap<String, String>> = eps.iter().collect();
        let w = apply(Some(&setting), false, &labels("us", "a"), &refs, &mut endpoints(4));
        assert_eq!(w, Some([("us/a/".to_string(), 80), ("us/b/".to_string(), 20)].into()));
        // A client the rule is not from: no weights.
        assert_eq!(apply(Some(&setting), false, &labels("eu", "c"), &refs, &mut endpoints(4)), None);
        // A rule whose localities are empty leaves nothing (Istio: 503), not everything.
        let empty: LocalityLbSetting = serde_yaml::from_str("distribute: [{from: 'us/*', to: {'ap/*': 100}}]").unwrap();
        assert_eq!(apply(Some(&empty), false, &labels("us", "a"), &refs, &mut endpoints(4)), Some(BTreeMap::new()));
    }

    #[test]
    fn failover_priority_counts_the_labels_shared_in_order() {
        let setting: LocalityLbSetting =
            serde_yaml::from_str("failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region]")
                .unwrap();
        let with = |net: &str, region: &str| -> BTreeMap<String, String> {
            [("topology.istio.io/network".to_string(), net.to_string()), (REGION.to_string(), region.to_string())]
                .into()
        };
        let eps = [with("n1", "r1"), with("n1", "r2"), with("n2", "r1")];
        let refs: Vec<&BTreeMap<String, String>> = eps.iter().collect();
        let mut out = endpoints(3);
        apply(Some(&setting), true, &with("n1", "r1"), &refs, &mut out);
        assert_eq!(out.iter().map(|e| e.priority).collect::<Vec<_>>(), [0, 1, 2]);
    }
}
