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
/// keeps the config it has while it reconnects), its index, and the deltas to it from the
/// translations sidecars were pushed before (each computed once for every sidecar that makes
/// the same step).
#[derive(Debug)]
pub(crate) struct SharedConfig {
    pieces: Result<Pieces, String>,
    index: Arc<Index>,
    deltas: Mutex<Vec<DeltaFrom>>,
}

/// The keys of a translation's `services` and `clusters` and a digest of each entry: what a
/// session keeps of its last push to compute the next delta against (a few bytes an entry,
/// not the config).
#[derive(Debug, Default)]
pub(crate) struct Index {
    services: Vec<(String, u64)>,
    clusters: Vec<(String, u64)>,
}

/// The changes to a translation from a base index (held weakly: a base no session holds goes).
type DeltaFrom = (Weak<Index>, Arc<Option<Changes>>);

/// The deltas to one translation kept at once (sessions a push or two behind the rest).
const MAX_DELTAS: usize = 8;

#[derive(Debug, Hash)]
struct Pieces {
    /// `"apiVersion":…`
    head: Vec<u8>,
    /// `services`' entries in key order (the index's), each `"key":value`.
    services: Vec<Vec<u8>>,
    /// `clusters`' entries in key order (the index's), each `"key":value`.
    clusters: Vec<Vec<u8>>,
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

/// SipHash under this process's random keys, for every digest that decides what a sidecar
/// is sent: nobody who writes YAML can make two versions of an entry, or two configs,
/// collide on purpose (and by chance, one in 2^64).
fn keyed() -> &'static std::collections::hash_map::RandomState {
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// An entry's digest.
fn entry_digest(entry: &[u8]) -> u64 {
    std::hash::BuildHasher::hash_one(keyed(), entry)
}

/// A map's entries serialized, and their keys and digests.
type Entries = (Vec<Vec<u8>>, Vec<(String, u64)>);

/// A map's entries serialized one by one, in its (key) order, and their index.
fn entries<V: Serialize>(map: &std::collections::BTreeMap<String, V>) -> serde_json::Result<Entries> {
    let mut out = (Vec::with_capacity(map.len()), Vec::with_capacity(map.len()));
    for (k, v) in map {
        let mut e = serde_json::to_vec(k)?;
        e.push(b':');
        serde_json::to_writer(&mut e, v)?;
        out.1.push((k.clone(), entry_digest(&e)));
        out.0.push(e);
    }
    Ok(out)
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

/// Where a push applies: the index of the stream's push before and its number.
pub(crate) type Base<'a> = Option<(&'a Arc<Index>, u64)>;

impl SharedConfig {
    /// The config field by field as `ProxyConfig` serializes it (camelCase, optional fields
    /// skipped when empty). The destructuring names every field: a new one does not compile
    /// until it is written here.
    pub(crate) fn new(config: &ProxyConfig) -> Self {
        let (pieces, index) = match Pieces::new(config) {
            Ok((pieces, index)) => (Ok(pieces), index),
            Err(e) => (Err(format!("the config does not serialize: {e}")), Index::default()),
        };
        SharedConfig { pieces, index: Arc::new(index), deltas: Mutex::default() }
    }

    /// A digest of the shared config (decides, with the sidecar's own parts, whether it needs a push).
    pub(crate) fn digest(&self) -> u64 {
        std::hash::BuildHasher::hash_one(keyed(), &self.pieces)
    }

    /// What a session keeps of a push of this translation, to compute the next delta against.
    pub(crate) fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// One sidecar's push number `seq`, as the framed line it reads (`weft_model::stream::line`
    /// of its `Push`): the whole config, or, given the stream's push before (`base`), a
    /// `Delta` on it when that is shorter; and whether it is one.
    pub(crate) fn line(&self, base: Base<'_>, seq: u64, version: &str, own: &Own) -> Result<(Bytes, bool), String> {
        let pieces = self.pieces.as_ref().map_err(String::clone)?;
        let changes = base.and_then(|(index, n)| Some((self.changes_from(index)?, n)));
        let changes = changes.as_ref().and_then(|(c, n)| Some(((**c).as_ref()?, *n)));
        let line = pieces.line(changes, seq, version, own).map_err(|e| e.to_string())?;
        Ok((line, changes.is_some()))
    }

    /// What changed from `base` to this translation (`None` inside: a delta would not be
    /// shorter), computed once per pair; `None` when this translation did not serialize.
    fn changes_from(&self, base: &Arc<Index>) -> Option<Arc<Option<Changes>>> {
        let pieces = self.pieces.as_ref().ok()?;
        let mut deltas = self.deltas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = deltas.iter().find(|(b, _)| std::ptr::eq(b.as_ptr(), Arc::as_ptr(base))) {
            return Some(c.clone());
        }
        let changes = Arc::new(Changes::between(base, &self.index, pieces));
        // Entries whose base is gone are of no session any more; past the bound, the oldest goes.
        deltas.retain(|(b, _)| b.strong_count() > 0);
        if deltas.len() >= MAX_DELTAS {
            deltas.remove(0);
        }
        // The Weak keeps the base's allocation, so its address names no other index.
        deltas.push((Arc::downgrade(base), changes.clone()));
        Some(changes)
    }
}

impl Changes {
    /// From `base` to `next` (whose entries are `pieces`'); `None` when the delta would be no
    /// shorter than the whole maps.
    fn between(base: &Index, next: &Index, pieces: &Pieces) -> Option<Self> {
        let (services, removed_services) = diff(&base.services, &next.services);
        let (clusters, removed_clusters) = diff(&base.clusters, &next.clusters);
        let mut removed = Vec::new();
        for (name, keys) in [("removedServices", removed_services), ("removedClusters", removed_clusters)] {
            if !keys.is_empty() {
                removed.push(b',');
                field(&mut removed, name, &keys).ok()?;
            }
        }
        let whole: usize = pieces.services.iter().chain(&pieces.clusters).map(|e| e.len() + 1).sum();
        let mut changes = Changes { services: Vec::new(), clusters: Vec::new(), removed };
        object(&mut changes.services, services.into_iter().map(|i| &pieces.services[i]));
        object(&mut changes.clusters, clusters.into_iter().map(|i| &pieces.clusters[i]));
        let delta = changes.services.len() + changes.clusters.len() + changes.removed.len();
        (delta < whole).then_some(changes)
    }
}

/// The places in `next` of the entries `base` lacks or holds otherwise, and the keys `next`
/// dropped (both sorted by key, as a `BTreeMap` gives them).
fn diff<'a>(base: &'a [(String, u64)], next: &[(String, u64)]) -> (Vec<usize>, Vec<&'a str>) {
    use std::cmp::Ordering;
    let (mut set, mut removed) = (Vec::new(), Vec::new());
    let (mut b, mut n) = (base.iter().peekable(), next.iter().enumerate().peekable());
    loop {
        match (b.peek(), n.peek()) {
            (None, None) => return (set, removed),
            (Some((k, _)), None) => {
                removed.push(k.as_str());
                b.next();
            }
            (None, Some((i, _))) => {
                set.push(*i);
                n.next();
            }
            (Some((bk, bd)), Some((i, (nk, nd)))) => match bk.cmp(nk) {
                Ordering::Less => {
                    removed.push(bk.as_str());
                    b.next();
                }
                Ordering::Greater => {
                    set.push(*i);
                    n.next();
                }
                Ordering::Equal => {
                    if bd != nd {
                        set.push(*i);
                    }
                    b.next();
                    n.next();
                }
            },
        }
    }
}

impl Pieces {
    fn new(config: &ProxyConfig) -> serde_json::Result<(Self, Index)> {
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
        let (services, service_index) = entries(services)?;
        let (clusters, cluster_index) = entries(clusters)?;
        Ok((
            Pieces { head, services, clusters, rest, tail },
            Index { services: service_index, clusters: cluster_index },
        ))
    }

    /// `{"version":…,"seq":…,"config":{…}}`, or with `changes` on push `base`
    /// `{"version":…,"seq":…,"delta":{"base":…,"config":{…}[,"removedServices":…][,"removedClusters":…]}}`.
    fn line(&self, changes: Option<(&Changes, u64)>, seq: u64, version: &str, own: &Own) -> serde_json::Result<Bytes> {
        let own_len = 128 + own.workload.len() + own.trust.len();
        let maps = match changes {
            Some((c, _)) => c.services.len() + c.clusters.len() + c.removed.len(),
            None => self.services.iter().chain(&self.clusters).map(|e| e.len() + 1).sum(),
        };
        let mut v = Vec::with_capacity(self.head.len() + maps + self.rest.len() + self.tail.len() + own_len);
        v.push(b'{');
        field(&mut v, "version", &version)?;
        if seq != 0 {
            v.push(b',');
            field(&mut v, "seq", &seq)?;
        }
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
        v.extend_from_slice(&own.workload);
        v.extend_from_slice(b",\"services\":");
        match changes {
            Some((c, _)) => v.extend_from_slice(&c.services),
            None => object(&mut v, &self.services),
        }
        v.extend_from_slice(b",\"clusters\":");
        match changes {
            Some((c, _)) => v.extend_from_slice(&c.clusters),
            None => object(&mut v, &self.clusters),
        }
        v.push(b',');
        v.extend_from_slice(&self.rest);
        v.push(b',');
        v.extend_from_slice(&own.trust);
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

/// A sidecar's own fields, serialized once per stream and again when the trust changes:
/// what its pushes copy and, with the shared translation's digest, what decides whether it
/// needs a push.
#[derive(Debug)]
pub(crate) struct Own {
    /// `"workload":…`
    workload: Vec<u8>,
    /// `"trust":…,"pathNormalization":…`
    trust: Vec<u8>,
    digest: u64,
}

impl Own {
    pub(crate) fn new(
        workload: &Workload,
        trust: &Trust,
        path_normalization: PathNormalization,
    ) -> Result<Self, String> {
        let mut own = Own { workload: Vec::new(), trust: Vec::new(), digest: 0 };
        let written = field(&mut own.workload, "workload", workload)
            .and_then(|()| field(&mut own.trust, "trust", trust))
            .and_then(|()| {
                own.trust.push(b',');
                field(&mut own.trust, "pathNormalization", &path_normalization)
            });
        written.map_err(|e| format!("the sidecar's own fields do not serialize: {e}"))?;
        own.digest = std::hash::BuildHasher::hash_one(keyed(), (&own.workload, &own.trust));
        Ok(own)
    }

    /// What decides whether the sidecar needs a new push, given the shared translation's digest.
    pub(crate) fn digest(&self, shared: u64) -> u64 {
        std::hash::BuildHasher::hash_one(keyed(), (shared, self.digest))
    }
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
            let config = SharedConfig::new(&shared);
            let own_fields = &Own::new(&workload, &trust, PathNormalization::MergeSlashes).unwrap();
            let want = weft_model::stream::Push::full("42", own(&shared, "42", &workload, &trust));
            let pushed = config.line(None, 0, "42", own_fields).unwrap().0;
            assert_eq!(pushed, weft_model::stream::line(&want));
            let numbered = config.line(None, 5, "42", own_fields).unwrap().0;
            assert_eq!(numbered, weft_model::stream::line(&weft_model::stream::Push { seq: 5, ..want }));
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

    /// The framed line of `next` as a delta on push 41 of `before`, checked byte for byte
    /// against the model's `Delta` and read back into `next`'s config; and the delta.
    fn delta_line(before: &ProxyConfig, after: &ProxyConfig) -> (Bytes, weft_model::stream::Delta) {
        let workload =
            Workload { name: "mine".into(), namespace: "ns".into(), service_account: "sa".into(), labels: [].into() };
        let trust = Trust { roots: "ROOTS".into(), signer: "SIGNER".into() };
        let (base, next) = (SharedConfig::new(before), SharedConfig::new(after));
        let own_fields = &Own::new(&workload, &trust, PathNormalization::MergeSlashes).unwrap();
        let (pushed, delta) = next.line(Some((base.index(), 41)), 42, "v2", own_fields).unwrap();
        assert!(delta);
        let held = own(before, "v1", &workload, &trust);
        let want_config = own(after, "v2", &workload, &trust);
        let delta = weft_model::stream::Delta::between(41, &held, &want_config);
        let want = weft_model::stream::Push { version: "v2".into(), seq: 42, config: None, delta: Some(delta.clone()) };
        assert_eq!(
            std::str::from_utf8(&pushed).unwrap(),
            std::str::from_utf8(&weft_model::stream::line(&want)).unwrap()
        );
        let read: weft_model::stream::Push = serde_json::from_slice(&pushed).unwrap();
        assert_eq!(read.resolve(Some((41, &held))).unwrap(), want_config);
        (pushed, delta)
    }

    #[test]
    fn a_delta_push_is_the_delta_the_sidecar_reads_byte_for_byte_and_rebuilds_the_config() {
        let before = mesh(20, &[]);
        // One endpoint moved, one service gone, one new, and a field outside the maps changed.
        let mut after = mesh(20, &[3]);
        after.services.remove("s7.ns.svc.cluster.local");
        after.clusters.remove("c7");
        let extra = mesh(21, &[]);
        after.services.insert("s20.ns.svc.cluster.local".into(), extra.services["s20.ns.svc.cluster.local"].clone());
        after.access_log = Some(true);
        let (pushed, delta) = delta_line(&before, &after);
        assert_eq!(delta.config.services.len(), 1, "s20 only");
        assert_eq!(delta.config.clusters.len(), 1, "c3 only");
        assert_eq!((delta.removed_services.len(), delta.removed_clusters.len()), (1, 1));
        let trust = Trust { roots: "ROOTS".into(), signer: "SIGNER".into() };
        let own_fields = Own::new(&delta.config.workload, &trust, PathNormalization::MergeSlashes).unwrap();
        let whole = SharedConfig::new(&after).line(None, 42, "v2", &own_fields).unwrap().0;
        assert!(pushed.len() * 5 < whole.len(), "{} bytes against {}", pushed.len(), whole.len());
    }

    #[test]
    fn removals_only_and_keys_that_need_escaping_are_written_as_serde_writes_them() {
        let mut before = mesh(10, &[]);
        let odd = "q\"uo\\te\n.ns.svc.cluster.local";
        before.services.insert(odd.into(), before.services["s1.ns.svc.cluster.local"].clone());
        // Only removals: the maps' changes are empty objects.
        let mut after = before.clone();
        after.services.remove(odd);
        after.clusters.remove("c2");
        let (_, delta) = delta_line(&before, &after);
        assert!(delta.config.services.is_empty() && delta.config.clusters.is_empty());
        assert_eq!(delta.removed_services, [odd]);
        // An odd key added and changed.
        let (_, delta) = delta_line(&after, &before);
        assert_eq!(delta.config.services.keys().collect::<Vec<_>>(), [odd]);
        let mut changed = before.clone();
        changed.services.get_mut(odd).unwrap().routes[0].route[0].cluster = "c3".into();
        let (_, delta) = delta_line(&before, &changed);
        assert_eq!(delta.config.services.keys().collect::<Vec<_>>(), [odd]);
    }

    #[test]
    fn a_delta_is_computed_once_per_pair_and_forgotten_with_its_base() {
        let next = SharedConfig::new(&mesh(10, &[3]));
        let base = SharedConfig::new(&mesh(10, &[]));
        let once = next.changes_from(base.index()).unwrap();
        assert!(Arc::ptr_eq(&once, &next.changes_from(base.index()).unwrap()), "the same step, computed once");
        // A base no session holds goes with the next delta computed.
        drop(base);
        let other = SharedConfig::new(&mesh(10, &[5]));
        next.changes_from(other.index()).unwrap();
        assert_eq!(next.deltas.lock().unwrap().len(), 1, "the dropped base's delta is gone");
        // Past the bound the oldest goes.
        let bases: Vec<SharedConfig> = (0..MAX_DELTAS + 2).map(|i| SharedConfig::new(&mesh(10, &[i % 10]))).collect();
        for b in &bases {
            next.changes_from(b.index()).unwrap();
        }
        let kept = next.deltas.lock().unwrap();
        assert_eq!(kept.len(), MAX_DELTAS);
        assert!(kept.iter().all(|(b, _)| b.strong_count() == 1), "only live bases are kept");
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
        let (base, next) = (SharedConfig::new(&mesh(5, &[])), SharedConfig::new(&after));
        let own_fields = &Own::new(&workload, &trust, PathNormalization::MergeSlashes).unwrap();
        let pushed = next.line(Some((base.index(), 41)), 42, "v2", own_fields).unwrap();
        let whole = next.line(None, 42, "v2", own_fields).unwrap();
        assert_eq!(pushed, whole);
        assert!(!pushed.1, "not a delta");
    }
}
