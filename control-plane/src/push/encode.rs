//! A push as the sidecar reads it (weft-model's `Push`), written from the
//! translation every sidecar with the same config shares and this sidecar's own
//! parts (its workload, the trust bundle, the mesh's path normalization).
//!
//! The shared part is serialized once per translation, in the three pieces that
//! sit around the per-sidecar fields in `ProxyConfig`'s field order; a push
//! copies them and serializes only the sidecar's own fields. With ten thousand
//! sidecars, serializing the whole config once per sidecar was most of a
//! change's cost on the control plane (the bytes are the same either way:
//! `a_session_push_is_the_push_the_sidecar_reads_byte_for_byte`).

use bytes::Bytes;
use serde::Serialize;
use weft_model::{PathNormalization, ProxyConfig, Trust, Workload};

/// A translation serialized once for every sidecar that shares it (or why it could not be:
/// then no sidecar gets a push of it — each one's stream ends with the error and the sidecar
/// keeps the config it has while it reconnects).
#[derive(Debug)]
pub(crate) struct SharedConfig(Result<Pieces, String>);

#[derive(Debug, Hash)]
struct Pieces {
    /// `"apiVersion":…`
    head: Vec<u8>,
    /// `"services":…,"clusters":…,"inbound":…[,"outboundTrafficPolicy":…]`
    middle: Vec<u8>,
    /// `[,"accessLog":…][,"egress":…][,"tcp":…][,"gateway":…]`
    tail: Vec<u8>,
}

/// `"name":value` (names here are literals with nothing to escape).
fn field(out: &mut Vec<u8>, name: &str, value: &impl Serialize) -> serde_json::Result<()> {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value)
}

impl SharedConfig {
    /// The config field by field as `ProxyConfig` serializes it (camelCase, optional fields
    /// skipped when empty). The destructuring names every field: a new one does not compile
    /// until it is written here.
    pub(crate) fn new(config: &ProxyConfig) -> Self {
        SharedConfig(Pieces::new(config).map_err(|e| format!("the config does not serialize: {e}")))
    }

    /// A digest of the shared config (decides, with the sidecar's own parts, whether it needs a push).
    pub(crate) fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.0.hash(&mut h);
        h.finish()
    }

    /// One sidecar's push, as the framed line it reads (`weft_model::stream::line` of its `Push`).
    pub(crate) fn line(
        &self,
        version: &str,
        workload: &Workload,
        trust: &Trust,
        path_normalization: PathNormalization,
    ) -> Result<Bytes, String> {
        let pieces = self.0.as_ref().map_err(String::clone)?;
        pieces.line(version, workload, trust, path_normalization).map_err(|e| e.to_string())
    }
}

impl Pieces {
    fn new(config: &ProxyConfig) -> serde_json::Result<Self> {
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
        } = config;
        let mut head = Vec::new();
        field(&mut head, "apiVersion", api_version)?;
        let mut middle = Vec::new();
        field(&mut middle, "services", services)?;
        middle.push(b',');
        field(&mut middle, "clusters", clusters)?;
        middle.push(b',');
        field(&mut middle, "inbound", inbound)?;
        if let Some(o) = outbound_traffic_policy {
            middle.push(b',');
            field(&mut middle, "outboundTrafficPolicy", o)?;
        }
        let mut tail = Vec::new();
        if let Some(a) = access_log {
            tail.push(b',');
            field(&mut tail, "accessLog", a)?;
        }
        if !egress.is_empty() {
            tail.push(b',');
            field(&mut tail, "egress", egress)?;
        }
        if !tcp.is_empty() {
            tail.push(b',');
            field(&mut tail, "tcp", tcp)?;
        }
        if !gateway.is_empty() {
            tail.push(b',');
            field(&mut tail, "gateway", gateway)?;
        }
        Ok(Pieces { head, middle, tail })
    }

    fn line(
        &self,
        version: &str,
        workload: &Workload,
        trust: &Trust,
        path_normalization: PathNormalization,
    ) -> serde_json::Result<Bytes> {
        let own = 256 + trust.roots.len() + trust.signer.len();
        let mut v = Vec::with_capacity(self.head.len() + self.middle.len() + self.tail.len() + own);
        v.push(b'{');
        field(&mut v, "version", &version)?;
        v.extend_from_slice(b",\"config\":{");
        v.extend_from_slice(&self.head);
        v.push(b',');
        field(&mut v, "version", &version)?;
        v.push(b',');
        field(&mut v, "workload", workload)?;
        v.push(b',');
        v.extend_from_slice(&self.middle);
        v.push(b',');
        field(&mut v, "trust", trust)?;
        v.push(b',');
        field(&mut v, "pathNormalization", &path_normalization)?;
        v.extend_from_slice(&self.tail);
        v.extend_from_slice(b"}}\n");
        Ok(Bytes::from(v))
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
            // A Hello's labels are the sidecar's to say: quotes, braces and newlines stay inside their string.
            labels: [("app".to_string(), "a".to_string()), ("x\"}\n".to_string(), "\"},\"services\":{}\n".to_string())]
                .into(),
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
            let pushed =
                SharedConfig::new(&shared).line("42", &workload, &trust, PathNormalization::MergeSlashes).unwrap();
            let mut config = shared.clone();
            config.version = "42".into();
            config.workload = workload.clone();
            config.trust = Some(trust.clone());
            config.path_normalization = Some(PathNormalization::MergeSlashes);
            let want = weft_model::stream::Push { version: "42".into(), config };
            assert_eq!(pushed, weft_model::stream::line(&want));
            assert_eq!(pushed.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        }
    }
}
