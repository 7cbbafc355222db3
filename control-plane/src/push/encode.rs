//! A push as the sidecar reads it (weft-model's `Push`), written from the
//! translation every sidecar with the same config shares and this sidecar's own
//! parts (its workload, the trust bundle, the mesh's path normalization).
//!
//! The shared part is serialized once per translation, in the pieces that sit
//! around the per-sidecar fields in `ProxyConfig`'s field order, `services` and
//! `clusters` entry by entry; a push copies them and serializes only the
//! sidecar's own fields. With ten thousand sidecars, serializing the whole config
//! once per sidecar was most of a change's cost on the control plane (the bytes
//! are the same either way:
//! `a_session_push_is_the_push_the_sidecar_reads_byte_for_byte`).
//!
//! A sidecar that ACKed the stream's previous push gets a `Delta` on it instead:
//! the entries whose serialized bytes differ, computed once per pair of
//! translations, so one changed service is one entry to every sidecar rather than
//! the whole mesh.
//!
//! Size: one wire format's writer — the whole push, the delta and the diff behind it
//! share the pieces — and the tests that hold it byte for byte to the model's `Push`.

use bytes::Bytes;
use serde::Serialize;
use std::sync::{Arc, Mutex, Weak};
use weft_model::{PathNormalization, ProxyConfig, Trust, Workload};

/// A translation serialized once for every sidecar that shares it (or why it could not be:
/// then no sidecar gets a push of it — each one's stream ends with the error and the sidecar
/// keeps the config it has while it reconnects), and the deltas to it from the translations
/// sidecars held before (each computed once for every sidecar that makes the same step).
#[derive(Debug)]
pub(crate) struct SharedConfig {
    pieces: Result<Pieces, String>,
    deltas: Mutex<Vec<DeltaFrom>>,
}

/// The changes to a translation from a base (held weakly: a base no sidecar holds any more goes).
type DeltaFrom = (Weak<SharedConfig>, Arc<Option<Changes>>);

/// The deltas to one translation kept at once (sidecars a push or two behind the rest).
const MAX_DELTAS: usize = 8;

#[derive(Debug, Hash)]
struct Pieces {
    /// `"apiVersion":…`
    head: Vec<u8>,
    /// `services`' entries in key order, each `"key":value`.
    services: Vec<(String, Vec<u8>)>,
    /// `clusters`' entries in key order, each `"key":value`.
    clusters: Vec<(String, Vec<u8>)>,
    /// `"inbound":…[,"outboundTrafficPolicy":…]`
    rest: Vec<u8>,
    /// `[,"accessLog":…][,"egress":…][,"tcp":…][,"gateway":…]`
    tail: Vec<u8>,
}

/// What one translation changed from an earlier one: the entries of `services` and `clusters`
/// added or changed (`{…}` each), and `[,"removedServices":[…]][,"removedClusters":[…]]`.
#[derive(Debug)]
struct Changes {
    services: Vec<u8>,
    clusters: Vec<u8>,
    removed: Vec<u8>,
}

/// `"name":value` (names here are literals with nothing to escape).
fn field(out: &mut Vec<u8>, name: &str, value: &impl Serialize) -> serde_json::Result<()> {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value)
}

/// A map's entries serialized one by one, in its (key) order.
fn entries<V: Serialize>(map: &std::collections::BTreeMap<String, V>) -> serde_json::Result<Vec<(String, Vec<u8>)>> {
    map.iter()
        .map(|(k, v)| {
            let mut e = serde_json::to_vec(k)?;
            e.push(b':');
            serde_json::to_writer(&mut e, v)?;
            Ok((k.clone(), e))
        })
        .collect()
}

/// `{entry,entry…}`, as serde_json writes the map.
fn object<'a>(out: &mut Vec<u8>, entries: impl IntoIterator<Item = &'a Vec<u8>>) {
    out.push(b'{');
    for (i, e) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b'}');
}

impl SharedConfig {
    /// The config field by field as `ProxyConfig` serializes it (camelCase, optional fields
    /// skipped when empty). The destructuring names every field: a new one does not compile
    /// until it is written here.
    pub(crate) fn new(config: &ProxyConfig) -> Self {
        SharedConfig {
            pieces: Pieces::new(config).map_err(|e| format!("the config does not serialize: {e}")),
            deltas: Mutex::default(),
        }
    }

    /// A digest of the shared config (decides, with the sidecar's own parts, whether it needs a push).
    pub(crate) fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.pieces.hash(&mut h);
        h.finish()
    }

    /// One sidecar's push, as the framed line it reads (`weft_model::stream::line` of its `Push`):
    /// the whole config, or, given the translation of the push before (`base`, with its version)
    /// which the sidecar has ACKed, a `Delta` on it when that is shorter; and whether it is one.
    pub(crate) fn line(
        &self,
        base: Option<(&Arc<SharedConfig>, &str)>,
        version: &str,
        workload: &Workload,
        trust: &Trust,
        path_normalization: PathNormalization,
    ) -> Result<(Bytes, bool), String> {
        let pieces = self.pieces.as_ref().map_err(String::clone)?;
        let changes = base.and_then(|(config, v)| Some((self.changes_from(config)?, v)));
        let changes = changes.as_ref().and_then(|(c, v)| Some(((**c).as_ref()?, *v)));
        let line = pieces.line(changes, version, workload, trust, path_normalization).map_err(|e| e.to_string())?;
        Ok((line, changes.is_some()))
    }

    /// What changed from `base` to this translation (`None` inside: a delta would not be shorter),
    /// computed once per pair; `None` when either did not serialize.
    fn changes_from(&self, base: &Arc<SharedConfig>) -> Option<Arc<Option<Changes>>> {
        let mut deltas = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = deltas.iter().find(|(b, _)| std::ptr::eq(b.as_ptr(), Arc::as_ptr(base))) {
            return Some(c.clone());
        }
        let changes = Arc::new(Changes::between(base.pieces.as_ref().ok()?, self.pieces.as_ref().ok()?));
        // Entries whose base is gone are of no sidecar any more; past the bound, the oldest goes.
        deltas.retain(|(b, _)| b.strong_count() > 0);
        if deltas.len() >= MAX_DELTAS {
            deltas.remove(0);
        }
        // The Weak keeps the base's allocation, so its address names no other translation.
        deltas.push((Arc::downgrade(base), changes.clone()));
        Some(changes)
    }
}

impl Changes {
    /// From `base` to `next`; `None` when the delta would be no shorter than the whole maps.
    fn between(base: &Pieces, next: &Pieces) -> Option<Self> {
        let (services, removed_services) = diff(&base.services, &next.services);
        let (clusters, removed_clusters) = diff(&base.clusters, &next.clusters);
        let mut removed = Vec::new();
        for (name, keys) in [("removedServices", removed_services), ("removedClusters", removed_clusters)] {
            if !keys.is_empty() {
                removed.push(b',');
                field(&mut removed, name, &keys).ok()?;
            }
        }
        let whole: usize = next.services.iter().chain(&next.clusters).map(|(_, e)| e.len() + 1).sum();
        let mut changes = Changes { services: Vec::new(), clusters: Vec::new(), removed };
        object(&mut changes.services, services);
        object(&mut changes.clusters, clusters);
        let delta = changes.services.len() + changes.clusters.len() + changes.removed.len();
        (delta < whole).then_some(changes)
    }
}

/// The entries of `next` that `base` lacks or holds otherwise, and the keys `next` dropped
/// (both sorted by key, as a `BTreeMap` gives them).
fn diff<'a>(base: &'a [(String, Vec<u8>)], next: &'a [(String, Vec<u8>)]) -> (Vec<&'a Vec<u8>>, Vec<&'a str>) {
    use std::cmp::Ordering;
    let (mut set, mut removed) = (Vec::new(), Vec::new());
    let (mut b, mut n) = (base.iter().peekable(), next.iter().peekable());
    loop {
        match (b.peek(), n.peek()) {
            (None, None) => return (set, removed),
            (Some((k, _)), None) => {
                removed.push(k.as_str());
                b.next();
            }
            (None, Some((_, e))) => {
                set.push(e);
                n.next();
            }
            (Some((bk, be)), Some((nk, ne))) => match bk.cmp(nk) {
                Ordering::Less => {
                    removed.push(bk.as_str());
                    b.next();
                }
                Ordering::Greater => {
                    set.push(ne);
                    n.next();
                }
                Ordering::Equal => {
                    if be != ne {
                        set.push(ne);
                    }
                    b.next();
                    n.next();
                }
            },
        }
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
        let mut rest = Vec::new();
        field(&mut rest, "inbound", inbound)?;
        if let Some(o) = outbound_traffic_policy {
            rest.push(b',');
            field(&mut rest, "outboundTrafficPolicy", o)?;
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
        Ok(Pieces { head, services: entries(services)?, clusters: entries(clusters)?, rest, tail })
    }

    /// `{"version":…,"config":{…}}`, or with `changes` on the base version
    /// `{"version":…,"delta":{"base":…,"config":{…}[,"removedServices":…][,"removedClusters":…]}}`.
    fn line(
        &self,
        changes: Option<(&Changes, &str)>,
        version: &str,
        workload: &Workload,
        trust: &Trust,
        path_normalization: PathNormalization,
    ) -> serde_json::Result<Bytes> {
        let own = 256 + trust.roots.len() + trust.signer.len();
        let maps = match changes {
            Some((c, _)) => c.services.len() + c.clusters.len() + c.removed.len(),
            None => self.services.iter().chain(&self.clusters).map(|(_, e)| e.len() + 1).sum(),
        };
        let mut v = Vec::with_capacity(self.head.len() + maps + self.rest.len() + self.tail.len() + own);
        v.push(b'{');
        field(&mut v, "version", &version)?;
        if let Some((_, base)) = changes {
            v.extend_from_slice(b",\"delta\":{");
            field(&mut v, "base", &base)?;
            v.push(b',');
        } else {
            v.push(b',');
        }
        v.extend_from_slice(b"\"config\":{");
        v.extend_from_slice(&self.head);
        v.push(b',');
        field(&mut v, "version", &version)?;
        v.push(b',');
        field(&mut v, "workload", workload)?;
        v.extend_from_slice(b",\"services\":");
        match changes {
            Some((c, _)) => v.extend_from_slice(&c.services),
            None => object(&mut v, self.services.iter().map(|(_, e)| e)),
        }
        v.extend_from_slice(b",\"clusters\":");
        match changes {
            Some((c, _)) => v.extend_from_slice(&c.clusters),
            None => object(&mut v, self.clusters.iter().map(|(_, e)| e)),
        }
        v.push(b',');
        v.extend_from_slice(&self.rest);
        v.push(b',');
        field(&mut v, "trust", trust)?;
        v.push(b',');
        field(&mut v, "pathNormalization", &path_normalization)?;
        v.extend_from_slice(&self.tail);
        v.push(b'}');
        if let Some((c, _)) = changes {
            v.extend_from_slice(&c.removed);
            v.push(b'}');
        }
        v.extend_from_slice(b"}\n");
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
            let pushed = Arc::new(SharedConfig::new(&shared))
                .line(None, "42", &workload, &trust, PathNormalization::MergeSlashes)
                .unwrap()
                .0;
            let want = weft_model::stream::Push::full("42", own(&shared, "42", &workload, &trust));
            assert_eq!(pushed, weft_model::stream::line(&want));
            assert_eq!(pushed.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        }
    }

    /// `shared` with a sidecar's own fields, as it reads them.
    fn own(shared: &ProxyConfig, version: &str, workload: &Workload, trust: &Trust) -> ProxyConfig {
        let mut config = shared.clone();
        config.version = version.into();
        config.workload = workload.clone();
        config.trust = Some(trust.clone());
        config.path_normalization = Some(PathNormalization::MergeSlashes);
        config
    }

    /// `n` services, each with its cluster; `moved` names the ones whose endpoint moves.
    fn mesh(n: usize, moved: &[usize]) -> ProxyConfig {
        let mut yaml = String::from("apiVersion: weft/v1\nworkload: {name: shared, namespace: ns}\nservices:\n");
        for i in 0..n {
            yaml += &format!("  s{i}.ns.svc.cluster.local: {{ routes: [ {{ route: [ {{ cluster: c{i} }} ] }} ] }}\n");
        }
        yaml += "clusters:\n";
        for i in 0..n {
            let host = if moved.contains(&i) { 99 } else { i };
            yaml += &format!(
                "  c{i}: {{ service: s{i}.ns.svc.cluster.local, endpoints: [ {{ address: \"10.0.0.{host}:15006\" }} ] }}\n"
            );
        }
        serde_yaml::from_str(&yaml).expect("config")
    }

    #[test]
    fn a_delta_push_is_the_delta_the_sidecar_reads_byte_for_byte_and_rebuilds_the_config() {
        let workload =
            Workload { name: "mine".into(), namespace: "ns".into(), service_account: "sa".into(), labels: [].into() };
        let trust = Trust { roots: "ROOTS".into(), signer: "SIGNER".into() };
        let before = mesh(20, &[]);
        // One endpoint moved, one service gone, one new, and a field outside the maps changed.
        let mut after = mesh(20, &[3]);
        after.services.remove("s7.ns.svc.cluster.local");
        after.clusters.remove("c7");
        let extra = mesh(21, &[]);
        after.services.insert("s20.ns.svc.cluster.local".into(), extra.services["s20.ns.svc.cluster.local"].clone());
        after.access_log = Some(true);
        let (base, next) = (Arc::new(SharedConfig::new(&before)), Arc::new(SharedConfig::new(&after)));
        let (pushed, delta) =
            next.line(Some((&base, "41")), "42", &workload, &trust, PathNormalization::MergeSlashes).unwrap();
        assert!(delta);
        let held = own(&before, "41", &workload, &trust);
        let want_config = own(&after, "42", &workload, &trust);
        let delta = weft_model::stream::Delta::between(&held, &want_config);
        assert_eq!(delta.config.services.len(), 1, "s20 only");
        assert_eq!(delta.config.clusters.len(), 1, "c3 only");
        let want = weft_model::stream::Push { version: "42".into(), config: None, delta: Some(delta) };
        assert_eq!(
            std::str::from_utf8(&pushed).unwrap(),
            std::str::from_utf8(&weft_model::stream::line(&want)).unwrap()
        );
        let read: weft_model::stream::Push = serde_json::from_slice(&pushed).unwrap();
        assert_eq!(read.resolve(Some(&held)).unwrap(), want_config);
        let (whole, _) = next.line(None, "42", &workload, &trust, PathNormalization::MergeSlashes).unwrap();
        assert!(pushed.len() * 5 < whole.len(), "{} bytes against {}", pushed.len(), whole.len());

        // Computed once for every sidecar that makes the same step.
        let again = next.changes_from(&base).unwrap();
        assert!(Arc::ptr_eq(&again, &next.changes_from(&base).unwrap()));
    }

    #[test]
    fn when_everything_changed_the_whole_config_goes() {
        let workload =
            Workload { name: "mine".into(), namespace: "ns".into(), service_account: "sa".into(), labels: [].into() };
        let trust = Trust { roots: "ROOTS".into(), signer: "SIGNER".into() };
        let all: Vec<usize> = (0..5).collect();
        let mut after = mesh(5, &all);
        for (i, s) in after.services.values_mut().enumerate() {
            s.routes[0].route[0].cluster = format!("c{}", (i + 1) % 5);
        }
        let (base, next) = (Arc::new(SharedConfig::new(&mesh(5, &[]))), Arc::new(SharedConfig::new(&after)));
        let pushed = next.line(Some((&base, "41")), "42", &workload, &trust, PathNormalization::MergeSlashes).unwrap();
        let whole = next.line(None, "42", &workload, &trust, PathNormalization::MergeSlashes).unwrap();
        assert_eq!(pushed, whole);
        assert!(!pushed.1, "not a delta");
    }
}
