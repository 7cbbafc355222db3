//! The push server: each sidecar holds one HTTP/2 stream open; it gets its
//! own config, translated from the latest state, whenever that config
//! changes, and answers ACK or NACK. The control plane also registers the
//! sidecar's endpoint in etcd on a lease it keeps alive while the stream
//! lives, and publishes the sidecar's status for `weftctl status`.

use crate::registry::Instance;
use crate::store::{SidecarStatus, Store, REGISTRY_LEASE_SECONDS};
use crate::translate::translate_in;
use crate::watch::State;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_model::stream::{Ack, Hello, Push, STREAM_PATH};
use weft_proxy::config::stream::{line, ChannelBody, Lines};
use weft_proxy::http::body::{full, Body};

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
        Ok(Metrics { registry, connected, pushes, nacks, convergence, certs_issued, csr_refused })
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
#[derive(Debug, Default)]
pub struct Translations {
    cache: std::sync::Mutex<(i64, std::collections::HashMap<String, Arc<weft_model::ProxyConfig>>)>,
}

impl Translations {
    fn get(&self, state: &State, w: &weft_model::Workload, trust_domain: &str) -> Arc<weft_model::ProxyConfig> {
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
        let config = Arc::new(translate_in(&state.resources, &state.registry, w, "", trust_domain).config);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != state.revision {
            *cache = (state.revision, Default::default());
        }
        // Label sets come from Hellos: bounded, so no caller grows the cache without end.
        if cache.1.len() >= 4096 {
            cache.1.clear();
        }
        cache.1.insert(key, config.clone());
        config
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

/// A SPIFFE identity a caller proved with a certificate chained to the mesh root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>`, nothing more and nothing less.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_tag, ns, sa_tag, sa) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || ns_tag != "ns"
            || sa_tag != "sa"
            || td.is_empty()
            || !crate::registry::name_ok(ns)
            || !crate::registry::name_ok(sa)
        {
            return None;
        }
        Some(SpiffeId { trust_domain: td.into(), namespace: ns.into(), service_account: sa.into() })
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// An instance id (pod name or `<workload>-<pid>`): letters, digits, `-`, `_`, `.`.
fn instance_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// From the client certificate, when one was presented (and verified).
    pub identity: Option<SpiffeId>,
    /// The root (fingerprint) that issued that certificate.
    pub issuer: Option<String>,
}

/// Accepts connections: TLS only (a plaintext caller is told so and closed),
/// HTTP/2 for sidecars, HTTP/1.1 for /metrics, /healthz, signing and the webhook.
/// Connections live in a set owned by this task: stopping it cuts them all.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(16 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %addr, "connection refused: {MAX_CONNECTIONS} connections open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut first = [0u8; 2];
            let n = match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            if !weft_proxy::security::tls::looks_like_tls(&first[..n]) {
                tracing::warn!(peer = %addr, "plaintext connection refused: this port speaks TLS only");
                let mut stream = stream;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 72\r\n\r\nthe Weft control plane speaks TLS only: connect with the mesh root (--ca-file)\n",
                )
                .await;
                return;
            }
            let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(ctx.tls.load_full()).accept(stream))
                    .await
            else {
                return;
            };
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
            let identity =
                leaf.as_ref().and_then(|c| weft_proxy::security::tls::spiffe_id(c)).and_then(|uri| SpiffeId::parse(&uri));
            let issuer = leaf.as_ref().and_then(|c| crate::ca::issuer_of(c, &ctx.ca.trust().roots));
            let peer = Peer { addr, identity, issuer };
            let svc = hyper::service::service_fn(move |req| {
                let (ctx, peer) = (ctx.clone(), peer.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(ctx, peer, req).await) }
            });
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
        });
    }
}

fn reply(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = status;
    r
}

/// Routes the control plane's HTTP requests.
pub async fn handle(ctx: Arc<Context>, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("POST", STREAM_PATH) => stream(ctx, peer, req.into_body()).await,
        ("POST", weft_model::stream::SIGN_PATH) => sign(&ctx, &peer, req.into_body()).await,
        ("POST", crate::inject::WEBHOOK_PATH) => admission(req.into_body()).await,
        ("GET", "/healthz") | ("GET", "/ready") => Response::new(full("ok\n")),
        ("GET", "/metrics") => {
            let mut out = String::new();
            let _ = prometheus::TextEncoder::new().encode_utf8(&ctx.metrics.registry.gather(), &mut out);
            Response::new(full(out))
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The mutating admission webhook: an AdmissionReview for a pod in, the same
/// review with a JSON patch that injects the sidecar out.
async fn admission(body: Incoming) -> Response<Body> {
    use http_body_util::BodyExt;
    static BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_WEBHOOK_BODIES);
    let Ok(_reading) = tokio::time::timeout(HANDSHAKE_TIMEOUT, BODIES.acquire()).await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "too many admission reviews at once\n");
    };
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, http_body_util::Limited::new(body, 4 << 20).collect()).await;
    let answer = match read {
        Ok(Ok(c)) => crate::inject::admission_review(&c.to_bytes(), &crate::inject::InjectOptions::default()),
        _ => Err("unreadable request".to_string()),
    };
    match answer {
        Ok(review) => {
            let mut r = Response::new(full(serde_json::to_vec(&review).unwrap_or_default()));
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            let mut r = Response::new(full(format!("{e}\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}

/// Signs a workload certificate. A caller with a certificate renews it for
/// the identity it proves; a caller without one proves its identity with a
/// bootstrap token (first start).
async fn sign(ctx: &Context, peer: &Peer, body: Incoming) -> Response<Body> {
    use http_body_util::BodyExt;
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, http_body_util::Limited::new(body, 64 * 1024).collect()).await;
    let Ok(Ok(bytes)) = read.map(|r| r.map(|c| c.to_bytes())) else {
        return reply(StatusCode::BAD_REQUEST, "unreadable request\n");
    };
    let req: weft_model::stream::SignRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
    };
    let (ns, sa) = match &peer.identity {
        Some(id)
            if !peer.issuer.as_ref().is_some_and(|i| crate::ca::fingerprints(&ctx.ca.trust().roots).contains(i)) =>
        {
            ctx.metrics.csr_refused.inc();
            return reply(
                StatusCode::UNAUTHORIZED,
                format!("{id}: the certificate is from a root no longer trusted\n"),
            );
        }
        Some(id) if id.trust_domain == ctx.options.trust_domain => (id.namespace.clone(), id.service_account.clone()),
        Some(id) => {
            ctx.metrics.csr_refused.inc();
            return reply(StatusCode::FORBIDDEN, format!("{id} is not of trust domain {}\n", ctx.options.trust_domain));
        }
        None => {
            match crate::token::verify(
                &ctx.store,
                &req.token,
                &ctx.options.token_audience,
                std::time::SystemTime::now(),
            )
            .await
            {
                Ok(c) => (c.ns, c.sa),
                Err(e) => {
                    ctx.metrics.csr_refused.inc();
                    tracing::warn!(peer = %peer.addr, "certificate request refused: {e}");
                    return reply(StatusCode::UNAUTHORIZED, format!("{e}\n"));
                }
            }
        }
    };
    if (ns.as_str(), sa.as_str()) == crate::ca::CONTROL_PLANE_IDENTITY {
        ctx.metrics.csr_refused.inc();
        return reply(StatusCode::FORBIDDEN, "the control plane's identity is never signed for a caller\n");
    }
    let trust = ctx.ca.trust();
    match ctx.ca.sign_workload(&req.csr, &ns, &sa, ctx.options.cert_ttl) {
        Ok((certificate, signer)) => {
            ctx.metrics.certs_issued.inc();
            let resp = weft_model::stream::SignResponse {
                certificate,
                root: trust.roots,
                identity: ctx.ca.spiffe_id(&ns, &sa),
                signer: Some(signer),
            };
            Response::new(full(serde_json::to_vec(&resp).unwrap_or_default()))
        }
        Err(e) => {
            ctx.metrics.csr_refused.inc();
            reply(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

/// One open stream of an identity; dropping it frees the slot.
struct StreamSlot {
    ctx: Arc<Context>,
    id: String,
}

impl StreamSlot {
    fn take(ctx: &Arc<Context>, id: &SpiffeId) -> Option<Self> {
        let id = id.to_string();
        let mut streams = ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = streams.entry(id.clone()).or_default();
        if *n >= ctx.options.max_streams_per_identity {
            return None;
        }
        *n += 1;
        Some(StreamSlot { ctx: ctx.clone(), id })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.id);
            }
        }
    }
}

/// A Hello the caller's identity allows, and where to register it.
#[derive(Debug)]
struct Admitted {
    /// The registry and status key of the instance: `<service account>:<instance>`,
    /// so no identity can overwrite, shadow or delete another's.
    key: String,
    /// The address peers will be sent to.
    address: Option<String>,
}

/// Checks a Hello against the identity that sent it.
fn admit(ctx: &Context, peer: &Peer, id: &SpiffeId, hello: &Hello) -> Result<Admitted, String> {
    let w = &hello.workload;
    if id.trust_domain != ctx.options.trust_domain {
        return Err(format!("{id} is not of trust domain {}", ctx.options.trust_domain));
    }
    if w.namespace != id.namespace || w.service_account != id.service_account {
        return Err(format!(
            "the Hello claims namespace {:?} and service account {:?}, the certificate proves {id}",
            w.namespace, w.service_account
        ));
    }
    if !instance_ok(&hello.instance) {
        return Err(format!("bad instance id {:?} (letters, digits, '-', '_', '.')", hello.instance));
    }
    let address = match (&hello.service, &hello.address) {
        (Some(service), Some(address)) => {
            if !crate::registry::name_ok(service) {
                return Err(format!("bad service name {service:?}"));
            }
            let state = ctx.state.borrow().clone();
            if !crate::registry::may_serve(&state.resources, &id.namespace, &id.service_account, service, &w.labels) {
                return Err(format!(
                    "{id} may not register as an endpoint of {service}.{}: only the service account named like the service, or one a WorkloadGroup binds to it (with its labels), may",
                    id.namespace
                ));
            }
            let said: std::net::SocketAddr =
                address.parse().map_err(|_| format!("bad address {address:?} (want IP:port)"))?;
            Some(if ctx.options.trust_advertised_address {
                said.to_string()
            } else {
                // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`: registered as IPv4.
                std::net::SocketAddr::new(peer.addr.ip().to_canonical(), said.port()).to_string()
            })
        }
        _ => None,
    };
    Ok(Admitted { key: format!("{}:{}", id.service_account, hello.instance), address })
}

/// Opens a config stream: a client certificate from the mesh CA is required,
/// the Hello must come within [`HANDSHAKE_TIMEOUT`] and claim exactly the
/// identity the certificate proves; then the session runs.
async fn stream(ctx: Arc<Context>, peer: Peer, body: Incoming) -> Response<Body> {
    let Some(id) = peer.identity.clone() else {
        tracing::warn!(peer = %peer.addr, "config stream refused: no client certificate");
        return reply(
            StatusCode::UNAUTHORIZED,
            "the config stream needs a client certificate from the mesh CA (start the sidecar with --token-file)\n",
        );
    };
    let mut lines = Lines::with_max(body, weft_proxy::config::stream::MAX_CLIENT_LINE);
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, lines.next::<Hello>()).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return reply(StatusCode::BAD_REQUEST, "the stream ended before the Hello\n"),
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer.addr, %id, "bad hello: {e}");
            return reply(StatusCode::BAD_REQUEST, format!("bad Hello: {e}\n"));
        }
        Err(_) => {
            tracing::warn!(peer = %peer.addr, %id, "no hello in time");
            return reply(StatusCode::REQUEST_TIMEOUT, "no Hello within 10 s\n");
        }
    };
    let admitted = match admit(&ctx, &peer, &id, &hello) {
        Ok(a) => a,
        Err(why) => {
            tracing::warn!(peer = %peer.addr, %id, instance = %hello.instance, "config stream refused: {why}");
            return reply(StatusCode::FORBIDDEN, format!("{why}\n"));
        }
    };
    // While a rotation signs with the next root, a new stream needs a certificate from it: the
    // sidecar is told to renew first (its current certificate still renews), so nobody can hold
    // the rotation back by reconnecting with an old certificate.
    let trust = ctx.ca.trust();
    let roots = crate::ca::fingerprints(&trust.roots);
    if roots.len() > 1 && roots.first() != Some(&trust.signer) && peer.issuer.as_ref() != Some(&trust.signer) {
        let mut r =
            reply(StatusCode::FORBIDDEN, "the certificate is from a root that no longer signs: renew it first\n");
        r.headers_mut().insert(weft_model::stream::RENEW_HEADER, http::HeaderValue::from_static("true"));
        return r;
    }
    let Some(slot) = StreamSlot::take(&ctx, &id) else {
        tracing::warn!(peer = %peer.addr, %id, "config stream refused: too many streams for this identity");
        return reply(StatusCode::TOO_MANY_REQUESTS, format!("{id} holds too many config streams\n"));
    };
    // One push in flight: a sidecar that does not read holds one config, not a queue of them.
    let (tx, out) = ChannelBody::new(1);
    tokio::spawn(async move {
        let _slot = slot;
        ctx.metrics.connected.inc();
        let result = session(&ctx, &peer, &hello, &admitted, lines, tx).await;
        ctx.metrics.connected.dec();
        // Whatever ended the stream, its status goes (unless a newer stream of the same sidecar
        // rewrote it): a rotation counts live sidecars only.
        if let Err(status) = &result {
            let _ = ctx.store.delete_status_if(&status.1).await;
        }
        let result = result.map_err(|(e, _)| e);
        if let Err(e) = result {
            tracing::info!(instance = %hello.instance, "sidecar stream ended: {e}");
        }
    });
    Response::new(http_body_util::BodyExt::boxed(out))
}

/// Keeps an etcd lease alive until dropped, then revokes it.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    id: i64,
    task: tokio::task::JoinHandle<()>,
    /// Revoke on drop (a clean goodbye). Otherwise the lease just stops being
    /// renewed: if the sidecar is alive it re-registers through another
    /// control plane long before the lease runs out, and traffic never notices.
    revoke: bool,
}

impl Lease {
    fn keep(store: Store, id: i64) -> Self {
        Self::keep_only(store, id, Duration::from_secs((REGISTRY_LEASE_SECONDS / 3) as u64))
    }

    fn keep_only(store: Store, id: i64, every: Duration) -> Self {
        let client = store.client();
        let task = tokio::spawn(async move {
            // An etcd hiccup does not end the renewals: the keeper is opened again.
            loop {
                let mut lease = client.lease_client();
                if let Ok((mut keeper, mut responses)) = lease.keep_alive(id).await {
                    while keeper.keep_alive().await.is_ok() && responses.message().await.is_ok() {
                        tokio::time::sleep(every).await;
                    }
                }
                tracing::warn!(lease = id, "etcd lease renewal interrupted; retrying");
                tokio::time::sleep(every.min(Duration::from_secs(1))).await;
            }
        });
        Lease { store, id, task, revoke: false }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
        if !self.revoke {
            return;
        }
        let (store, id) = (self.store.clone(), self.id);
        tokio::spawn(async move {
            let _ = store.revoke(id).await;
        });
    }
}

/// How long a stream whose certificate comes from a root that no longer signs may stay
/// (its sidecar renews within moments of being told): then it is cut, so nobody holding an
/// old certificate can hold a root rotation back.
fn renew_grace(ctx: &Context) -> Duration {
    ctx.options.rotation_min_step + Duration::from_secs(5)
}

async fn session(
    ctx: &Context,
    peer: &Peer,
    hello: &Hello,
    admitted: &Admitted,
    lines: Lines<Incoming>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), (String, SidecarStatus)> {
    let mut written = None;
    stream_session(ctx, peer, hello, admitted, lines, tx, &mut written)
        .await
        .map_err(|e| (e, written.unwrap_or_default()))
}

async fn stream_session(
    ctx: &Context,
    peer: &Peer,
    hello: &Hello,
    admitted: &Admitted,
    mut lines: Lines<Incoming>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    last_written: &mut Option<SidecarStatus>,
) -> Result<(), String> {
    let w = &hello.workload;
    // Register the instance for as long as its stream lives.
    let mut registration = match (&hello.service, &admitted.address) {
        (Some(service), Some(address)) => {
            let inst = Instance {
                address: address.clone(),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
                port: hello.port.unwrap_or(80),
            };
            let lease = ctx
                .store
                .register(&w.namespace, service, &admitted.key, &inst, REGISTRY_LEASE_SECONDS)
                .await
                .map_err(|e| e.to_string())?;
            Some(Lease::keep(ctx.store.clone(), lease))
        }
        _ => None,
    };
    let mut status = SidecarStatus {
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        instance: admitted.key.clone(),
        control_plane: ctx.id.clone(),
        acked_version: hello.applied_version.clone(),
        // The root of the certificate this connection proved, never what the sidecar says.
        issuer: peer.issuer.clone(),
        ..Default::default()
    };
    let _ = ctx.store.put_status(&status, ctx.lease).await;
    let mut written = status.clone();
    *last_written = Some(written.clone());
    let mut stale: Option<tokio::time::Instant> = None;
    let mut state_rx = ctx.state.clone();
    let mut trust_rx = ctx.trust.clone();
    // A digest of the last config sent (without its version): sessions keep no config copies.
    let mut last_sent: Option<u64> = None;
    let mut pending: Option<(String, Option<std::time::Instant>)> = None;
    let mut state_changed = true; // Push the current state at once.
    loop {
        if state_changed {
            let state = state_rx.borrow_and_update().clone();
            let trust = trust_rx.borrow_and_update().clone();
            // The version counts etcd revisions of both policies and trust: an ACK of a version at
            // or after the trust's revision proves the sidecar holds that trust (rotation waits on it).
            let version = state.revision.max(trust.1).to_string();
            let shared = ctx.translations.get(&state, w, &ctx.options.trust_domain);
            let mut config = (*shared).clone();
            config.workload = w.clone();
            config.trust = Some(trust.0.clone());
            config.path_normalization = Some(ctx.options.path_normalization);
            let digest = digest(&config);
            if last_sent != Some(digest) {
                config.version = version.clone();
                // A sidecar that does not read its stream is not waited for forever.
                tokio::time::timeout(renew_grace(ctx), tx.send(line(&Push { version: version.clone(), config })))
                    .await
                    .map_err(|_| "the sidecar does not read its stream".to_string())?
                    .map_err(|_| "sidecar went away".to_string())?;
                ctx.metrics.pushes.inc();
                status.sent_version = Some(version.clone());
                pending = Some((version, state.changed_at));
                last_sent = Some(digest);
            }
        }
        tokio::select! {
            changed = state_rx.changed() => {
                changed.map_err(|_| "control plane stopping".to_string())?;
                state_changed = true;
            }
            () = async { match stale { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                return Err("a new trust was not followed in time (no ACK, or no certificate from the root that signs)".into());
            }
            changed = trust_rx.changed() => {
                changed.map_err(|_| "control plane stopping".to_string())?;
                // A certificate from a root that left the bundle holds no stream any more:
                // the sidecar comes back with its current one (or not at all).
                let roots = crate::ca::fingerprints(&trust_rx.borrow().0.roots);
                if !peer.issuer.as_ref().is_some_and(|i| roots.contains(i)) {
                    return Err("the stream's certificate is from a root no longer trusted".into());
                }
                // The sidecar has a grace to ACK a config carrying the new trust and hold a
                // certificate from its signer: nobody can hold a root rotation back.
                stale.get_or_insert_with(|| tokio::time::Instant::now() + renew_grace(ctx));
                state_changed = true;
            }
            msg = lines.next::<Ack>() => {
                state_changed = false;
                let Some(ack) = msg.map_err(|e| e.to_string())? else {
                    // A clean goodbye: deregister at once.
                    if let Some(r) = registration.as_mut() {
                        r.revoke = true;
                    }
                    let _ = ctx.store.delete_status(&ctx.id, &w.namespace, &admitted.key).await;
                    return Ok(());
                };
                // Only versions this control plane sent are recorded; NACK reasons are cut to
                // 1 KiB; an unchanged status is not written again (etcd is not a sidecar's log).
                if status.sent_version.as_deref() != Some(ack.version.as_str()) {
                    continue;
                }
                match &ack.error {
                    None => {
                        if let Some((v, Some(at))) = &pending {
                            if *v == ack.version {
                                ctx.metrics.convergence.observe(at.elapsed().as_secs_f64());
                            }
                        }
                        status.acked_version = Some(ack.version.clone());
                        let (revision, signer) = {
                            let t = trust_rx.borrow();
                            (t.1, t.0.signer.clone())
                        };
                        let followed = ack.version.parse::<i64>().is_ok_and(|v| v >= revision);
                        if followed && peer.issuer.as_deref() == Some(signer.as_str()) {
                            stale = None;
                        }
                    }
                    Some(reason) => {
                        ctx.metrics.nacks.inc();
                        let mut reason = reason.clone();
                        if reason.len() > 1024 {
                            let mut cut = 1024;
                            while !reason.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            reason.truncate(cut);
                        }
                        tracing::warn!(instance = %hello.instance, version = %ack.version, "sidecar NACKed: {reason}");
                        status.last_rejection = Some((ack.version.clone(), reason));
                    }
                }
                if status != written {
                    let _ = ctx.store.put_status(&status, ctx.lease).await;
                    written = status.clone();
                    *last_written = Some(written.clone());
                }
            }
        }
    }
}
