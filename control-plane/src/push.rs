//! The push server: each sidecar holds one HTTP/2 stream open; it gets its
//! own config, translated from the latest state, whenever that config
//! changes, and answers ACK or NACK. The control plane also registers the
//! sidecar's endpoint in etcd on a lease it keeps alive while the stream
//! lives, and publishes the sidecar's status for `weftctl status`.

use crate::registry::Instance;
use crate::store::{SidecarStatus, Store, REGISTRY_LEASE_SECONDS};
use crate::translate::translate;
use crate::watch::State;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_model::stream::{Ack, Hello, Push, STREAM_PATH};
use weft_proxy::body::{full, Body};
use weft_proxy::stream::{line, ChannelBody, Lines};

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
    fn get(&self, state: &State, w: &weft_model::Workload) -> Arc<weft_model::ProxyConfig> {
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
        let config = Arc::new(translate(&state.resources, &state.registry, w, "").config);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != state.revision {
            *cache = (state.revision, Default::default());
        }
        cache.1.insert(key, config.clone());
        config
    }
}

/// What every session shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Store,
    pub state: watch::Receiver<Arc<State>>,
    pub metrics: Metrics,
    /// This control plane's id (status keys).
    pub id: String,
    /// The lease status keys live on: they vanish with this instance.
    pub lease: i64,
    /// The mesh CA, shared by every instance through etcd.
    pub ca: Arc<crate::ca::Ca>,
    /// Lifetime of the certificates it signs.
    pub cert_ttl: Duration,
    /// TLS for sidecars that connect with `--ca-file`: this control plane's own
    /// certificate from the mesh CA; a client certificate is verified when offered.
    pub tls: Arc<rustls::ServerConfig>,
    translations: Arc<Translations>,
    _status_lease: Arc<Lease>,
}

/// Starts a control plane on `listener`: follows etcd through `store`,
/// publishes status on a lease of its own, serves sidecars until dropped.
pub async fn start(
    store: Store,
    id: String,
    listener: tokio::net::TcpListener,
) -> Result<ControlPlane, crate::store::StoreError> {
    start_with(store, id, listener, crate::ca::DEFAULT_TRUST_DOMAIN, crate::ca::DEFAULT_CERT_TTL).await
}

/// [`start`] with a trust domain and certificate lifetime.
pub async fn start_with(
    store: Store,
    id: String,
    listener: tokio::net::TcpListener,
    trust_domain: &str,
    cert_ttl: Duration,
) -> Result<ControlPlane, crate::store::StoreError> {
    let ca = crate::ca::Ca::load_or_create(&store, trust_domain)
        .await
        .map_err(|e| crate::store::StoreError::Corrupt { key: "ca/root".into(), message: e.to_string() })?;
    let tls = own_tls(&ca, trust_domain)
        .map_err(|e| crate::store::StoreError::Corrupt { key: "ca/root".into(), message: e })?;
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
        ca: Arc::new(ca),
        cert_ttl,
        tls,
        translations: Arc::default(),
        _status_lease: Arc::new(status_lease),
    });
    let task = tokio::spawn(serve(listener, ctx.clone()));
    Ok(ControlPlane { ctx, task })
}

/// The names the Kubernetes API server uses to call the injection webhook.
pub const WEBHOOK_DNS: [&str; 3] =
    ["weft-control-plane", "weft-control-plane.weft-system", "weft-control-plane.weft-system.svc"];

/// This control plane's TLS config: a certificate for
/// `spiffe://<td>/ns/weft-system/sa/weft-control-plane` from the mesh CA
/// (issued at start for a year), client certificates optional.
fn own_tls(ca: &crate::ca::Ca, trust_domain: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let csr =
        rcgen::CertificateParams::default().serialize_request(&key).and_then(|c| c.pem()).map_err(|e| e.to_string())?;
    let cert = ca
        .sign_with_dns(&csr, "weft-system", "weft-control-plane", Duration::from_secs(365 * 86400), &WEBHOOK_DNS)
        .map_err(|e| e.to_string())?;
    let leaf = weft_proxy::identity::Leaf::new(key.serialize_der(), &cert, ca.root_pem()).map_err(|e| e.to_string())?;
    debug_assert_eq!(leaf.id, weft_proxy::tls::control_plane_id(trust_domain));
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(leaf.roots.clone(), weft_proxy::tls::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(weft_proxy::tls::provider())
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
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts sidecar connections (HTTP/2, or HTTP/1.1 for /metrics and /healthz).
/// Connections live in a set owned by this task: stopping it cuts them all.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let tls_config = ctx.tls.clone();
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(ctx, req).await) }
            });
            // TLS (sidecars with --ca-file) and plaintext on one port, told apart by the first byte.
            let mut first = [0u8; 2];
            let n = match tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            if weft_proxy::tls::looks_like_tls(&first[..n]) {
                let Ok(Ok(tls)) = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_rustls::TlsAcceptor::from(tls_config).accept(stream),
                )
                .await
                else {
                    return;
                };
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
            } else {
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            }
        });
    }
}

/// Routes the control plane's HTTP requests.
pub async fn handle(ctx: Arc<Context>, req: Request<Incoming>) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("POST", STREAM_PATH) => stream(ctx, req.into_body()),
        ("POST", weft_model::stream::SIGN_PATH) => sign(&ctx, req.into_body()).await,
        ("POST", crate::inject::WEBHOOK_PATH) => admission(req.into_body()).await,
        ("GET", "/healthz") | ("GET", "/ready") => Response::new(full("ok\n")),
        ("GET", "/metrics") => {
            let mut out = String::new();
            let _ = prometheus::TextEncoder::new().encode_utf8(&ctx.metrics.registry.gather(), &mut out);
            Response::new(full(out))
        }
        _ => {
            let mut r = Response::new(full("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

/// The mutating admission webhook: an AdmissionReview for a pod in, the same
/// review with a JSON patch that injects the sidecar out.
async fn admission(body: Incoming) -> Response<Body> {
    use http_body_util::BodyExt;
    let answer = match http_body_util::Limited::new(body, 4 << 20).collect().await {
        Ok(c) => crate::inject::admission_review(&c.to_bytes(), &crate::inject::InjectOptions::default()),
        Err(_) => Err("unreadable request".to_string()),
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

/// Signs a workload certificate for the identity the bootstrap token proves.
async fn sign(ctx: &Context, body: Incoming) -> Response<Body> {
    use http_body_util::BodyExt;
    let reply = |status: StatusCode, text: String| {
        let mut r = Response::new(full(text));
        *r.status_mut() = status;
        r
    };
    let Ok(bytes) = http_body_util::Limited::new(body, 64 * 1024).collect().await.map(|c| c.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, "unreadable request\n".into());
    };
    let req: weft_model::stream::SignRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
    };
    let claims = match ctx.ca.verify_token(&req.token, std::time::SystemTime::now()) {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics.csr_refused.inc();
            return reply(StatusCode::UNAUTHORIZED, format!("{e}\n"));
        }
    };
    match ctx.ca.sign(&req.csr, &claims.ns, &claims.sa, ctx.cert_ttl) {
        Ok(certificate) => {
            ctx.metrics.certs_issued.inc();
            let resp = weft_model::stream::SignResponse {
                certificate,
                root: ctx.ca.root_pem().to_string(),
                identity: ctx.ca.spiffe_id(&claims.ns, &claims.sa),
            };
            Response::new(full(serde_json::to_vec(&resp).unwrap_or_default()))
        }
        Err(e) => {
            ctx.metrics.csr_refused.inc();
            reply(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

fn stream(ctx: Arc<Context>, body: Incoming) -> Response<Body> {
    let (tx, out) = ChannelBody::new(4);
    tokio::spawn(async move {
        let mut lines = Lines::new(body);
        let hello = match lines.next::<Hello>().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("bad hello: {e}");
                return;
            }
        };
        ctx.metrics.connected.inc();
        let result = session(&ctx, &hello, lines, tx).await;
        ctx.metrics.connected.dec();
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
            let mut lease = client.lease_client();
            let Ok((mut keeper, mut responses)) = lease.keep_alive(id).await else { return };
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                let _ = responses.message().await;
                tokio::time::sleep(every).await;
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

async fn session(
    ctx: &Context,
    hello: &Hello,
    mut lines: Lines<Incoming>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), String> {
    let w = &hello.workload;
    // Register the instance for as long as its stream lives.
    let mut registration = match (&hello.service, &hello.address) {
        (Some(service), Some(address)) => {
            let inst = Instance {
                address: address.clone(),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
                port: hello.port.unwrap_or(80),
            };
            let lease = ctx
                .store
                .register(&w.namespace, service, &hello.instance, &inst, REGISTRY_LEASE_SECONDS)
                .await
                .map_err(|e| e.to_string())?;
            Some(Lease::keep(ctx.store.clone(), lease))
        }
        _ => None,
    };
    let mut status = SidecarStatus {
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        instance: hello.instance.clone(),
        control_plane: ctx.id.clone(),
        acked_version: hello.applied_version.clone(),
        ..Default::default()
    };
    let _ = ctx.store.put_status(&status, ctx.lease).await;
    let mut state_rx = ctx.state.clone();
    // A digest of the last config sent (without its version): sessions keep no config copies.
    let mut last_sent: Option<u64> = None;
    let mut pending: Option<(String, Option<std::time::Instant>)> = None;
    let mut state_changed = true; // Push the current state at once.
    loop {
        if state_changed {
            let state = state_rx.borrow_and_update().clone();
            let version = state.revision.to_string();
            let shared = ctx.translations.get(&state, w);
            let mut config = (*shared).clone();
            config.workload = w.clone();
            let digest = digest(&config);
            if last_sent != Some(digest) {
                config.version = version.clone();
                tx.send(line(&Push { version: version.clone(), config }))
                    .await
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
            msg = lines.next::<Ack>() => {
                state_changed = false;
                let Some(ack) = msg.map_err(|e| e.to_string())? else {
                    // A clean goodbye: deregister at once.
                    if let Some(r) = registration.as_mut() {
                        r.revoke = true;
                    }
                    let _ = ctx.store.delete_status(&ctx.id, &w.namespace, &hello.instance).await;
                    return Ok(());
                };
                match &ack.error {
                    None => {
                        if let Some((v, Some(at))) = &pending {
                            if *v == ack.version {
                                ctx.metrics.convergence.observe(at.elapsed().as_secs_f64());
                            }
                        }
                        status.acked_version = Some(ack.version.clone());
                    }
                    Some(reason) => {
                        ctx.metrics.nacks.inc();
                        tracing::warn!(instance = %hello.instance, version = %ack.version, "sidecar NACKed: {reason}");
                        status.last_rejection = Some((ack.version.clone(), reason.clone()));
                    }
                }
                let _ = ctx.store.put_status(&status, ctx.lease).await;
            }
        }
    }
}
