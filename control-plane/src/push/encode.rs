//! A push as the sidecar reads it (weft-model's `Push`), written straight from the
//! translation every sidecar with the same config shares and this sidecar's own
//! parts (its workload, the trust bundle, the mesh's path normalization) — without
//! a copy of the shared config per sidecar. With a thousand sidecars, that copy and
//! a second serialization for the digest were most of a push's cost.

use serde::ser::{Serialize, SerializeStruct, Serializer};
use weft_model::{PathNormalization, ProxyConfig, Trust, Workload};

/// One sidecar's push.
pub(super) struct SessionPush<'a> {
    pub version: &'a str,
    pub shared: &'a ProxyConfig,
    pub workload: &'a Workload,
    pub trust: &'a Trust,
    pub path_normalization: PathNormalization,
}

impl Serialize for SessionPush<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut push = s.serialize_struct("Push", 2)?;
        push.serialize_field("version", self.version)?;
        push.serialize_field("config", &SessionConfig(self))?;
        push.end()
    }
}

/// The config field by field as `ProxyConfig` serializes it (camelCase, optional fields
/// skipped when empty), the per-sidecar fields from the session. The destructuring below
/// names every field: a new one does not compile until it is written here.
struct SessionConfig<'a>(&'a SessionPush<'a>);

impl Serialize for SessionConfig<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ProxyConfig {
            api_version,
            version: _,
            workload: _,
            services,
            clusters,
            inbound,
            outbound_traffic_policy,
            trust: _,
            path_normalization: _,
            access_log,
            egress,
            tcp,
            gateway,
        } = self.0.shared;
        let mut c = s.serialize_struct("ProxyConfig", 13)?;
        c.serialize_field("apiVersion", api_version)?;
        c.serialize_field("version", self.0.version)?;
        c.serialize_field("workload", self.0.workload)?;
        c.serialize_field("services", services)?;
        c.serialize_field("clusters", clusters)?;
        c.serialize_field("inbound", inbound)?;
        match outbound_traffic_policy {
            Some(o) => c.serialize_field("outboundTrafficPolicy", o)?,
            None => c.skip_field("outboundTrafficPolicy")?,
        }
        c.serialize_field("trust", self.0.trust)?;
        c.serialize_field("pathNormalization", &self.0.path_normalization)?;
        match access_log {
            Some(a) => c.serialize_field("accessLog", a)?,
            None => c.skip_field("accessLog")?,
        }
        if egress.is_empty() {
            c.skip_field("egress")?;
        } else {
            c.serialize_field("egress", egress)?;
        }
        if tcp.is_empty() {
            c.skip_field("tcp")?;
        } else {
            c.serialize_field("tcp", tcp)?;
        }
        if gateway.is_empty() {
            c.skip_field("gateway")?;
        } else {
            c.serialize_field("gateway", gateway)?;
        }
        c.end()
    }
}

/// What decides whether a sidecar needs a new push: the shared translation's digest
/// (computed once per translation) and the sidecar's own parts.
pub(super) fn session_digest(shared: u64, workload: &Workload, trust: &Trust, pn: PathNormalization) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    shared.hash(&mut h);
    serde_json::to_vec(&(workload, trust, pn)).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_push_is_the_push_the_sidecar_reads_byte_for_byte() {
        let mut shared: ProxyConfig = serde_yaml::from_str(
            r#"
apiVersion: weft/v1
version: "ignored"
workload: {name: shared, namespace: ns}
services:
  a.ns.svc.cluster.local:
    routes: [ { route: [ { cluster: a } ] } ]
clusters:
  a:
    service: a.ns.svc.cluster.local
    endpoints: [ { address: "10.0.0.1:15006" } ]
outboundTrafficPolicy: REGISTRY_ONLY
accessLog: true
"#,
        )
        .expect("config");
        let workload = Workload {
            name: "mine".into(),
            namespace: "ns".into(),
            service_account: "sa".into(),
            labels: [("app".to_string(), "a".to_string())].into(),
        };
        let trust = Trust { roots: "ROOTS".into(), signer: "SIGNER".into() };
        for egress in [false, true] {
            if egress {
                shared.egress = vec![weft_model::TcpEgress {
                    cluster: "a".into(),
                    port: 5432,
                    addresses: vec![],
                    sni_hosts: vec![],
                }];
                shared.outbound_traffic_policy = None;
                shared.access_log = None;
            }
            let push = SessionPush {
                version: "42",
                shared: &shared,
                workload: &workload,
                trust: &trust,
                path_normalization: PathNormalization::MergeSlashes,
            };
            let mut config = shared.clone();
            config.version = "42".into();
            config.workload = workload.clone();
            config.trust = Some(trust.clone());
            config.path_normalization = Some(PathNormalization::MergeSlashes);
            let want = weft_model::stream::Push { version: "42".into(), config };
            assert_eq!(serde_json::to_string(&push).unwrap(), serde_json::to_string(&want).unwrap());
        }
    }
}
