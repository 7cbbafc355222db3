//! The push server: each sidecar holds one HTTP/2 stream open; it gets its
//! own config, translated from the latest state, whenever that config
//! changes, and answers ACK or NACK. The control plane also registers the
//! sidecar's endpoint in etcd on a lease it keeps alive while the stream
//! lives, and publishes the sidecar's status for `weftctl status`.

use crate::store::{Store, REGISTRY_LEASE_SECONDS};
use crate::translate::translate_in;
use crate::watch::State;
use http::{Response, StatusCode};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_proxy::http::body::{full, Body};

mod peer;
mod server;
mod session;

pub use peer::{Peer, SpiffeId};
pub use server::{handle, serve};
pub use session::Lease;

/// The control plane's published figures.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub connected: IntGauge,
    pub pushes: IntCounter,
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
        let nacks = IntCounter::new("weft_cp_nacks_total", "Configs refused by a sidecar")?;
        let convergence = Histogram::with_opts(
            HistogramOpts::new("weft_cp_convergence_seconds", "From an etcd change to a sidecar's ACK")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(pushes.clone()))?;
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
        Ok(Metrics { registry, connected, pushes, nacks, convergence, certs_issued, csr_refused, translation_warnings })
    }
}

/// Hash of a config's JSON (its version left empty by the caller).
fn digest(config: &weft_model::ProxyConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(config).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Translations shared by sidecars that get the same config: same namespace,
/// service account and labels (the workload name only labels metrics). One
/// state revision at a time.
type Translated = (Arc<weft_model::ProxyConfig>, Arc<[String]>);

#[derive(Debug, Default)]
pub struct Translations {
    cache: std::sync::Mutex<(i64, std::collections::HashMap<String, Translated>)>,
}

impl Translations {
    fn get(&self, state: &State, w: &weft_model::Workload, trust_domain: &str, warned: &IntCounter) -> Translated {
        let key = format!("{}\n{}\n{:?}", w.namespace, w.service_account, w.labels);
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 == state.revision {
                if let Some(c) = cache.1.get(&key) {
                    return c.clone();
                }
            }
        }
        // Translated outside the lock; a racing session may translate the same key once more.
        let translation = translate_in(&state.resources, &state.registry, w, "", trust_domain);
        for warning in &translation.warnings {
            tracing::warn!(workload = %format!("{}/{}", w.namespace, w.name), revision = state.revision, "{warning}");
            warned.inc();
        }
        let translated: Translated = (Arc::new(translation.config), translation.warnings.into());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != state.revision {
            *cache = (state.revision, Default::default());
        }
        // Label sets come from Hellos: bounded, so no caller grows the cache without end.
        if cache.1.len() >= 4096 {
            cache.1.clear();
        }
        cache.1.insert(key, translated.clone());
        translated
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
    /// The lease status keys live on: they vanish with this instance.
    pub lease: i64,
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
    own_root: std::sync::Mutex<String>,
    /// Open config streams per SPIFFE identity.
    streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    translations: Arc<Translations>,
    _status_lease: Arc<Lease>,
}

/// Starts a control plane on `listener` with the default options: follows
/// etcd through `store`, publishes status on a lease of its own, serves
/// sidecars (TLS only) until dropped.
pub async fn start(
    store: Store,
    id: String,
    listener: tokio::net::TcpListener,
    ca: Arc<crate::ca::Ca>,
) -> Result<ControlPlane, crate::store::StoreError> {
    start_with(store, id, listener, ca, Options::default()).await
}

/// [`start`] with options.
pub async fn start_with(
    store: Store,
    id: String,
    listener: tokio::net::TcpListener,
    ca: Arc<crate::ca::Ca>,
    options: Options,
) -> Result<ControlPlane, crate::store::StoreError> {
    let corrupt = |message: String| crate::store::StoreError::Corrupt { key: "ca/bundle".into(), message };
    if ca.trust_domain() != options.trust_domain {
        return Err(corrupt(format!(
            "the CA is for trust domain {}, the control plane for {}",
            ca.trust_domain(),
            options.trust_domain
        )));
    }
    let published = crate::rotation::step(&ca, &store, options.rotation_min_step)
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .ok_or_else(|| corrupt("no trust published".into()))?;
    ca.follow(&published.0);
    let tls = own_tls(&ca, &options.trust_domain).map_err(corrupt)?;
    let ca_own_root = format!("{}\n{}", ca.own_root(), published.0.roots);
    let (trust_tx, trust) = watch::channel(Arc::new(published));
    let state = crate::watch::follow(store.clone()).await?;
    let lease = store.client().lease_client().grant(15, None).await?.id();
    let status_lease = Lease::keep_only(store.clone(), lease, Duration::from_secs(5));
    let metrics = Metrics::new()
        .map_err(|e| crate::store::StoreError::Corrupt { key: "metrics".into(), message: e.to_string() })?;
    let ctx = Arc::new(Context {
        store,
        state,
        metrics,
        id,
        lease,
        ca,
        options,
        tls: arc_swap::ArcSwap::new(tls),
        own_root: std::sync::Mutex::new(ca_own_root),
        trust,
        streams: Default::default(),
        translations: Arc::default(),
        _status_lease: Arc::new(status_lease),
    });
    let rotation = tokio::spawn(follow_trust(ctx.clone(), trust_tx));
    let task = tokio::spawn(serve(listener, ctx.clone()));
    Ok(ControlPlane { ctx, task, rotation })
}

/// How often a control plane looks at the CA directory, the published trust
/// and the sidecars' status to move a root rotation on.
pub const ROTATION_CHECK: Duration = Duration::from_millis(500);

/// Follows (and moves on) the root rotation: publishes each step, signs with
/// the published signer, rebuilds this control plane's own certificate from
/// it, and hands the trust to every session to push.
async fn follow_trust(ctx: Arc<Context>, tx: watch::Sender<Arc<(weft_model::Trust, i64)>>) {
    loop {
        tokio::time::sleep(ROTATION_CHECK).await;
        let published = match crate::rotation::step(&ctx.ca, &ctx.store, ctx.options.rotation_min_step).await {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("root rotation check failed: {e}");
                continue;
            }
        };
        ctx.ca.follow(&published.0);
        // Our own certificate comes from the oldest root in the bundle (every sidecar trusts it);
        // renewed when that changes, or when a lagging CA directory finally holds it.
        // Rebuilt too when the bundle changes: it is what client certificates are verified against.
        let own = format!("{}\n{}", ctx.ca.own_root(), published.0.roots);
        if *ctx.own_root.lock().unwrap_or_else(|p| p.into_inner()) != own {
            match own_tls(&ctx.ca, &ctx.options.trust_domain) {
                Ok(tls) => {
                    ctx.tls.store(tls);
                    *ctx.own_root.lock().unwrap_or_else(|p| p.into_inner()) = own;
                }
                Err(e) => tracing::error!("cannot renew the control plane's own certificate: {e}"),
            }
        }
        if tx.borrow().0 != published.0 {
            let _ = tx.send(Arc::new(published));
        }
    }
}

/// The names the Kubernetes API server uses to call the injection webhook.
pub const WEBHOOK_DNS: [&str; 3] =
    ["weft-control-plane", "weft-control-plane.weft-system", "weft-control-plane.weft-system.svc"];

/// This control plane's TLS config: a certificate for
/// `spiffe://<td>/ns/weft-system/sa/weft-control-plane` from the mesh CA
/// (issued at start for a year), client certificates verified when offered.
fn own_tls(ca: &crate::ca::Ca, trust_domain: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let csr =
        rcgen::CertificateParams::default().serialize_request(&key).and_then(|c| c.pem()).map_err(|e| e.to_string())?;
    let (ns, sa) = crate::ca::CONTROL_PLANE_IDENTITY;
    let cert = ca.sign_own(&csr, ns, sa, Duration::from_secs(365 * 86400), &WEBHOOK_DNS).map_err(|e| e.to_string())?;
    let leaf = weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &ca.trust().roots)
        .map_err(|e| e.to_string())?;
    debug_assert_eq!(leaf.id, weft_proxy::security::tls::control_plane_id(trust_domain));
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        leaf.roots.clone(),
        weft_proxy::security::tls::provider(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(weft_proxy::security::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A running control plane; dropping it stops it and cuts every stream, as a crash would.
#[derive(Debug)]
pub struct ControlPlane {
    pub ctx: Arc<Context>,
    task: tokio::task::JoinHandle<()>,
    rotation: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
        self.rotation.abort();
    }
}

/// A plain-text reply.
fn reply(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = status;
    r
}
