//! The push server: each sidecar holds one HTTP/2 stream open; it gets its
//! own config, translated from the latest state, whenever that config
//! changes, and answers ACK or NACK. The control plane also registers the
//! sidecar's endpoint in etcd on a lease it keeps alive while the stream
//! lives, and publishes the sidecar's status for `weftctl status`.

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

mod context;
mod encode;
mod lease;
mod peer;
mod server;
mod session;

pub use context::{
    Context, Metrics, Options, Translations, HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, MAX_STREAMS_PER_CONNECTION,
    MAX_WEBHOOK_BODIES,
};
pub use lease::Lease;
pub use peer::{Peer, SpiffeId};
pub use server::{handle, serve};

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
    let state = crate::jwks::resolve(crate::watch::follow(store.clone()).await?, options.jwks_refresh).await;
    let metrics = Metrics::new()
        .map_err(|e| crate::store::StoreError::Corrupt { key: "metrics".into(), message: e.to_string() })?;
    let status_batch = context::StatusBatch::start(store.clone()).await?;
    let ctx = Arc::new(Context {
        store,
        state,
        metrics,
        id,
        ca,
        options,
        tls: arc_swap::ArcSwap::new(tls),
        own_root: std::sync::Mutex::new(ca_own_root),
        trust,
        streams: Default::default(),
        translations: Arc::default(),
        status_batch,
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
