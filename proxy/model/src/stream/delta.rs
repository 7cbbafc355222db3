//! A push of what changed: the config's outbound `services` and `clusters` — what
//! grows with the mesh — carry only the entries added or changed since the base,
//! and name the ones removed; every other field comes whole (they are the
//! sidecar's own: its workload, inbound policy, trust).

use crate::ProxyConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What changed between the config a sidecar holds (`base`, a push of its stream) and the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delta {
    /// The number of the push this applies on (`Push::seq`): the one the stream pushed
    /// before. A sidecar holding another one (it refused that push) refuses this.
    pub base: u64,
    /// The next config, whose `services` and `clusters` hold only the entries added or changed.
    pub config: ProxyConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_services: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_clusters: Vec<String>,
}

impl Delta {
    /// The delta from `base` (push number `seq`) to `next`: the reference the control
    /// plane's encoder, which compares serialized entries, is tested against.
    pub fn between(seq: u64, base: &ProxyConfig, next: &ProxyConfig) -> Self {
        let mut config = next.clone();
        let (services, removed_services) = changed(&base.services, &next.services);
        let (clusters, removed_clusters) = changed(&base.clusters, &next.clusters);
        config.services = services;
        config.clusters = clusters;
        Delta { base: seq, config, removed_services, removed_clusters }
    }

    /// The next config: `held` with this delta's entries set, its removals gone and every
    /// other field this delta's (the version is the push's to set).
    pub fn apply_to(self, held: &ProxyConfig) -> ProxyConfig {
        let Delta { base: _, mut config, removed_services, removed_clusters } = self;
        config.services = merged(&held.services, config.services, &removed_services);
        config.clusters = merged(&held.clusters, config.clusters, &removed_clusters);
        config
    }
}

/// The entries of `next` that `base` lacks or holds otherwise, and the keys `next` dropped.
fn changed<V: Clone + PartialEq>(
    base: &BTreeMap<String, V>,
    next: &BTreeMap<String, V>,
) -> (BTreeMap<String, V>, Vec<String>) {
    let set = next.iter().filter(|(k, v)| base.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let removed = base.keys().filter(|k| !next.contains_key(*k)).cloned().collect();
    (set, removed)
}

fn merged<V: Clone>(held: &BTreeMap<String, V>, set: BTreeMap<String, V>, removed: &[String]) -> BTreeMap<String, V> {
    let mut out = held.clone();
    for k in removed {
        out.remove(k);
    }
    out.extend(set);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Push;

    fn config(yaml: &str) -> ProxyConfig {
        serde_yaml::from_str(yaml).expect("config")
    }

    const BASE: &str = r#"
apiVersion: weft.dev/v1alpha1
version: "8"
workload: {name: w, namespace: ns}
services:
  a.ns.svc.cluster.local: { routes: [ { route: [ { cluster: a } ] } ] }
  b.ns.svc.cluster.local: { routes: [ { route: [ { cluster: b } ] } ] }
clusters:
  a: { service: a.ns.svc.cluster.local, endpoints: [ { address: "10.0.0.1:15006" } ] }
  b: { service: b.ns.svc.cluster.local, endpoints: [ { address: "10.0.0.2:15006" } ] }
"#;

    const NEXT: &str = r#"
apiVersion: weft.dev/v1alpha1
version: "ignored"
workload: {name: w, namespace: ns}
services:
  a.ns.svc.cluster.local: { routes: [ { route: [ { cluster: a } ] } ] }
  c.ns.svc.cluster.local: { routes: [ { route: [ { cluster: c } ] } ] }
clusters:
  a: { service: a.ns.svc.cluster.local, endpoints: [ { address: "10.0.0.9:15006" } ] }
  c: { service: c.ns.svc.cluster.local, endpoints: [ { address: "10.0.0.3:15006" } ] }
accessLog: true
"#;

    #[test]
    fn a_delta_carries_only_what_changed_and_rebuilds_the_next_config() {
        let (base, next) = (config(BASE), config(NEXT));
        let delta = Delta::between(3, &base, &next);
        assert_eq!(delta.base, 3);
        assert_eq!(delta.config.services.keys().collect::<Vec<_>>(), ["c.ns.svc.cluster.local"], "a is unchanged");
        assert_eq!(delta.config.clusters.keys().collect::<Vec<_>>(), ["a", "c"], "a's endpoint moved");
        assert_eq!(delta.removed_services, ["b.ns.svc.cluster.local"]);
        assert_eq!(delta.removed_clusters, ["b"]);
        let push = Push { version: "8".into(), seq: 4, config: None, delta: Some(delta) };
        let mut want = next.clone();
        want.version = "8".into();
        assert_eq!(push.resolve(Some((3, &base))).unwrap(), want);
    }

    #[test]
    fn a_delta_on_another_version_or_on_nothing_is_refused() {
        let (base, next) = (config(BASE), config(NEXT));
        let delta = Delta::between(3, &base, &next);
        let push = Push { version: "8".into(), seq: 4, config: None, delta: Some(delta) };
        // The same version, another push: the number tells them apart.
        let e = push.clone().resolve(Some((2, &base))).unwrap_err();
        assert!(e.contains("a delta on push 3, but this sidecar holds push 2"), "{e}");
        let e = push.clone().resolve(None).unwrap_err();
        assert!(e.contains("this stream gave no config yet"), "{e}");
        let mut unnumbered = push.clone();
        unnumbered.delta.as_mut().unwrap().base = 0;
        assert!(unnumbered.resolve(Some((0, &base))).is_err(), "an unnumbered push is no base");
        let both = Push { config: Some(next), ..push };
        assert!(both.resolve(Some((3, &base))).unwrap_err().contains("both"));
        let neither = Push { version: "8".into(), seq: 4, config: None, delta: None };
        assert!(neither.resolve(Some((3, &base))).unwrap_err().contains("neither"));
    }
}
