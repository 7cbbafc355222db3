//! What every part of the push server shares: its options and limits, its
//! metrics, the translations cache, the per-process context, and plain replies.

use super::lease::Lease;
use crate::store::{Store, REGISTRY_LEASE_SECONDS};
use crate::translate::translate_in;
use crate::watch::State;
use http::{Response, StatusCode};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_proxy::http::body::{full, Body};

/// The control plane's published figures.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub connected: IntGauge,
    pub pushes: IntCounter,
    /// Pushes that carried only what changed since the stream's previous one (counted in `pushes` too).
    pub delta_pushes: IntCounter,
    pub nacks: IntCounter,
    /// From the etcd change reaching the control plane to each sidecar's ACK.
    pub convergence: Histogram,
    pub certs_issued: IntCounter,
    /// CSRs refused: bad or expired token, bad CSR.
    pub csr_refused: IntCounter,
    /// Translation warnings (conflicts, missing subsets, ignored fields), counted once
    /// per workload and state revision, each also logged.
    pub translation_warnings: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let connected = IntGauge::new("weft_cp_sidecars_connected", "Sidecars with an open stream")?;
        let pushes = IntCounter::new("weft_cp_pushes_total", "Configs pushed")?;
        let delta_pushes = IntCounter::new(
            "weft_cp_delta_pushes_total",
            "Configs pushed as what changed since the stream's previous push (also in weft_cp_pushes_total)",
        )?;
        let nacks = IntCounter::new("weft_cp_nacks_total", "Configs refused by a sidecar")?;
        let convergence = Histogram::with_opts(
            HistogramOpts::new("weft_cp_convergence_seconds", "From an etcd change to a sidecar's ACK")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(delta_pushes.clone()))?;
        registry.register(Box::new(nacks.clone()))?;
        registry.register(Box::new(convergence.clone()))?;
        let certs_issued = IntCounter::new("weft_cp_certificates_issued_total", "Workload certificates signed")?;
        let csr_refused = IntCounter::new("weft_cp_csr_refused_total", "Certificate requests refused")?;
        registry.register(Box::new(certs_issued.clone()))?;
        registry.register(Box::new(csr_refused.clone()))?;
        let translation_warnings = IntCounter::new(
            "weft_cp_translation_warnings_total",
            "Translation warnings (per workload and state revision; each is logged)",
        )?;
        registry.register(Box::new(translation_warnings.clone()))?;
        Ok(Metrics {
            registry,
            connected,
            pushes,
            delta_pushes,
            nacks,
            convergence,
            certs_issued,
            csr_refused,
            translation_warnings,
        })
    }
}

/// The config serialized for every sidecar that shares it, its translation warnings, and
/// its digest (computed once, not per sidecar).
type Translated = (Arc<super::encode::SharedConfig>, Arc<[String]>, u64);

/// The state (revision and keys) a generation of the cache is of, and a cell per key, filled once.
type Generation = ((i64, u64), std::collections::HashMap<String, Arc<std::sync::OnceLock<Translated>>>);

/// Translations shared by sidecars that get the same config: same namespace, service
/// account and labels (the workload name only labels metrics).
#[derive(Debug, Default)]
pub struct Translations {
    /// The newest state's translations and the one's before (sessions that read their state
    /// just before a newer one came still share theirs).
    cache: std::sync::Mutex<[Generation; 2]>,
}

impl Translations {
    /// The translation for `w` at `state`: made once per key and state, however many sessions
    /// ask at once (the others wait for it, so its warnings are logged and counted once and
    /// every session shares one translation — and one base for the deltas after it).
    pub(super) fn get(
        &self,
        state: &State,
        w: &weft_model::Workload,
        trust_domain: &str,
        warned: &IntCounter,
    ) -> Translated {
        let key = format!("{}\n{}\n{:?}", w.namespace, w.service_account, w.labels);
        let of = (state.revision, state.keys);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if of > cache[0].0 {
                cache[1] = std::mem::replace(&mut cache[0], (of, Default::default()));
            }
            match cache.iter_mut().find(|g| g.0 == of) {
                Some(generation) => {
                    // Label sets come from Hellos: bounded, so no caller grows the cache without end.
                    if generation.1.len() >= 4096 && !generation.1.contains_key(&key) {
                        generation.1.clear();
                    }
                    generation.1.entry(key).or_default().clone()
                }
                // Older still (both only grow): translated for this session alone.
                None => Arc::default(),
            }
        };
        // Translated outside the cache's lock: sessions of other workloads do not wait for it.
        cell.get_or_init(|| {
            let translation = translate_in(&state.resources, &state.registry, w, "", trust_domain);
            for warning in &translation.warnings {
                tracing::warn!(workload = %format!("{}/{}", w.namespace, w.name), revision = state.revision, "{warning}");
                warned.inc();
            }
            let shared = super::encode::SharedConfig::new(&translation.config);
            let digest = shared.digest();
            (Arc::new(shared), translation.warnings.into(), digest)
        })
        .clone()
    }
}

/// How a control plane is run; the defaults are the safe ones.
#[derive(Debug, Clone)]
pub struct Options {
    /// SPIFFE trust domain of the mesh.
    pub trust_domain: String,
    /// Lifetime of the certificates it signs.
    pub cert_ttl: Duration,
    /// The audience bootstrap tokens must carry.
    pub token_audience: String,
    /// Register the `address` a sidecar says instead of its connection's
    /// source IP (with the advertised port). Off: one pod cannot register
    /// another host's address. On only behind NAT you control.
    pub trust_advertised_address: bool,
    /// Open config streams one identity may hold (every replica of a
    /// workload shares its identity): a leaked certificate cannot make the
    /// control plane hold unbounded sessions.
    pub max_streams_per_identity: usize,
    /// The least time each step of a root rotation stands (see `rotation`).
    pub rotation_min_step: Duration,
    /// The mesh's path normalization (MeshConfig `pathNormalization`), pushed to every sidecar.
    pub path_normalization: weft_model::PathNormalization,
    /// How often the key sets RequestAuthentications name by `jwksUri` are fetched again.
    pub jwks_refresh: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trust_domain: crate::ca::DEFAULT_TRUST_DOMAIN.into(),
            cert_ttl: crate::ca::DEFAULT_CERT_TTL,
            token_audience: crate::token::DEFAULT_AUDIENCE.into(),
            trust_advertised_address: false,
            max_streams_per_identity: 256,
            rotation_min_step: Duration::from_secs(REGISTRY_LEASE_SECONDS as u64),
            path_normalization: Default::default(),
            jwks_refresh: crate::jwks::REFRESH,
        }
    }
}

/// How long a caller may take to finish the TLS handshake, send its request
/// head, or send its Hello once the stream is open.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams on one connection (a sidecar needs one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4;
/// Connections open at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 16384;
/// Admission reviews read at once (each up to 4 MiB): memory for bodies stays bounded.
pub const MAX_WEBHOOK_BODIES: usize = 8;

/// What every session shares.
#[derive(Debug)]
pub struct Context {
    pub store: Store,
    pub state: watch::Receiver<Arc<State>>,
    pub metrics: Metrics,
    /// This control plane's id (status keys).
    pub id: String,
    /// The mesh CA (from the files every control plane mounts).
    pub ca: Arc<crate::ca::Ca>,
    pub options: Options,
    /// This control plane's TLS: its own certificate from the mesh CA; a
    /// client certificate is verified against the trust bundle when offered
    /// (the config stream requires one; the signing endpoint takes a token
    /// instead). Rebuilt when a root rotation moves on.
    pub tls: arc_swap::ArcSwap<rustls::ServerConfig>,
    /// The published trust (bundle, signer) and its etcd revision; pushed with every config.
    pub trust: watch::Receiver<Arc<(weft_model::Trust, i64)>>,
    /// The root this control plane's own certificate comes from, and the bundle its TLS verifies against.
    pub(super) own_root: std::sync::Mutex<String>,
    /// Open config streams per SPIFFE identity.
    pub(super) streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    pub(super) translations: Arc<Translations>,
    /// Every stream's status writes, gathered into transactions, on this instance's lease.
    pub(super) status_batch: StatusBatch,
}

/// The control plane's status writes, gathered: every stream's writer hands its status over
/// and waits; one task writes what has gathered in transactions of up to
/// [`crate::store::MAX_TXN_OPS`]. A thousand sidecars ACKing one change are eight etcd
/// writes, not a thousand.
///
/// The statuses live on a lease of this task's ([`STATUS_LEASE_SECONDS`], renewed every
/// third of it), so they vanish with this instance. A lease etcd no longer knows (this
/// process starved of CPU past its TTL, etcd restored) is replaced by a new one and the
/// write tried again: statuses are never written into a lease that is gone.
#[derive(Debug, Clone)]
pub struct StatusBatch {
    tx: tokio::sync::mpsc::Sender<(crate::store::SidecarStatus, tokio::sync::oneshot::Sender<()>)>,
}

impl StatusBatch {
    /// Starts the writer with a lease granted now (an error when etcd cannot grant one).
    pub async fn start(store: Store) -> Result<Self, crate::store::StoreError> {
        let mut lease = Some(status_lease(&store).await?);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(crate::store::SidecarStatus, tokio::sync::oneshot::Sender<()>)>(
            4 * crate::store::MAX_TXN_OPS,
        );
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(crate::store::MAX_TXN_OPS);
            while rx.recv_many(&mut batch, crate::store::MAX_TXN_OPS).await > 0 {
                let statuses: Vec<_> = batch.iter().map(|(s, _)| s.clone()).collect();
                for _attempt in 0..2 {
                    let id = match &lease {
                        Some((id, _)) => *id,
                        None => match status_lease(&store).await {
                            Ok(granted) => lease.insert(granted).0,
                            Err(e) => {
                                tracing::warn!("granting a lease for sidecar statuses: {e}");
                                break;
                            }
                        },
                    };
                    match store.put_statuses(&statuses, id).await {
                        Ok(()) => break,
                        Err(e) if e.to_string().contains("lease not found") => {
                            tracing::warn!(lease = id, "the status lease expired; granting a new one");
                            lease = None;
                        }
                        Err(e) => {
                            tracing::warn!("writing {} sidecar statuses: {e}", statuses.len());
                            break;
                        }
                    }
                }
                for (_, done) in batch.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        Ok(StatusBatch { tx })
    }

    /// Writes `status` with the others gathered now; returns once written (or failed).
    pub async fn put(&self, status: crate::store::SidecarStatus) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.send((status, done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// How long statuses outlive a control plane that stopped renewing their lease.
pub const STATUS_LEASE_SECONDS: i64 = 15;

/// A lease for statuses, and its keeper.
async fn status_lease(store: &Store) -> Result<(i64, Lease), crate::store::StoreError> {
    let id = store.client().lease_client().grant(STATUS_LEASE_SECONDS, None).await?.id();
    let every = std::time::Duration::from_secs((STATUS_LEASE_SECONDS / 3) as u64);
    Ok((id, Lease::keep_only(store.clone(), id, every)))
}

/// A plain-text reply.
pub(super) fn reply(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_asking_at_once_share_one_translation_and_its_warnings_count_once() {
        // Two Sidecars for one workload: a translation warning.
        let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a, namespace: production}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: b, namespace: production}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n";
        let resources = crate::istio::load_str(std::path::Path::new("sidecars.yaml"), yaml).expect("resources");
        let state = State { resources, registry: Default::default(), revision: 7, keys: 0, changed_at: None };
        let w = weft_model::Workload {
            name: "api-gateway".into(),
            namespace: "production".into(),
            service_account: "api-gateway".into(),
            labels: [("app".to_string(), "api-gateway".to_string())].into(),
        };
        let (translations, warned) = (Translations::default(), IntCounter::new("w", "w").unwrap());
        let barrier = std::sync::Barrier::new(8);
        let got: Vec<Translated> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        translations.get(&state, &w, "cluster.local", &warned)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(!got[0].1.is_empty(), "the two Sidecars warn");
        assert_eq!(warned.get(), got[0].1.len() as u64, "each warning counted once");
        assert!(got.iter().all(|t| Arc::ptr_eq(&t.0, &got[0].0)), "one translation for all");
        // A new state translates anew; a session still on the one before shares its
        // translation, without throwing the newer state's away; one older still is served alone.
        let next = State { revision: 8, resources: state.resources.clone(), ..Default::default() };
        let newer = translations.get(&next, &w, "cluster.local", &warned).0;
        assert!(!Arc::ptr_eq(&newer, &got[0].0));
        assert!(Arc::ptr_eq(&translations.get(&state, &w, "cluster.local", &warned).0, &got[0].0));
        assert!(Arc::ptr_eq(&translations.get(&next, &w, "cluster.local", &warned).0, &newer));
        let third = State { revision: 9, resources: state.resources.clone(), ..Default::default() };
        translations.get(&third, &w, "cluster.local", &warned);
        let oldest = translations.get(&state, &w, "cluster.local", &warned).0;
        assert!(!Arc::ptr_eq(&oldest, &got[0].0), "translated anew, not cached");
        assert!(Arc::ptr_eq(&translations.get(&next, &w, "cluster.local", &warned).0, &newer));
    }
}
