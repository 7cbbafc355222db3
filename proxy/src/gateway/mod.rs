//! The ingress gateway (`weft-proxy gateway`): a standalone proxy, not a sidecar.
//! It listens on every port its config's servers name (Istio's `Gateway`), terminates
//! TLS with the certificate the ClientHello's SNI selects, keeps each request to the
//! hosts of its server, and hands it to the outbound request path, which routes it by
//! the VirtualServices bound to the gateway and forwards it into the mesh with the
//! gateway's own workload certificate.
//!
//! Listeners follow the config: a port a new config names is bound, one it no longer
//! names is drained and closed. Certificates are read again when their files change.

pub(crate) mod edge;
mod tls;

use crate::http::body::Body;
use crate::net::listen::{self, Conn, EdgeTls};
use crate::state::Shared;
use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_model::gateway::Server;

/// How often credential files are checked for changes.
pub(crate) const CREDENTIAL_POLL: Duration = Duration::from_secs(1);

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where servers' ports are bound (`--gateway-address`, all interfaces by default).
    pub address: IpAddr,
    /// Where `credentialName`s are found: `<dir>/<name>/tls.crt` … (`--credentials-dir`).
    pub credentials_dir: PathBuf,
    /// Proxies in front of the gateway whose `x-forwarded-for` entries are trusted
    /// (Istio's `gatewayTopology.numTrustedProxies`, 0 by default).
    pub num_trusted_proxies: usize,
}

/// The gateway's live servers, by port.
#[derive(Debug)]
pub(crate) struct Gateway {
    options: GatewayOptions,
    ports: ArcSwap<BTreeMap<u16, Arc<Port>>>,
}

/// The servers on one port.
#[derive(Debug, Default)]
pub(crate) struct Port {
    pub servers: Vec<Served>,
}

/// One server, its TLS read.
#[derive(Debug)]
pub(crate) struct Served {
    pub spec: Server,
    /// Its TLS config and the fingerprint of its policy; `None` on a plaintext server, or
    /// while its credential cannot be read (handshakes for it are refused until it can).
    pub tls: Option<(Arc<rustls::ServerConfig>, u64)>,
}

impl Served {
    /// The policy a connection must have been accepted under to be served here (`None`:
    /// plaintext; a TLS server whose credential is withdrawn matches no connection).
    pub(crate) fn policy(&self) -> Option<u64> {
        match (&self.spec.tls, &self.tls) {
            (None, _) => None,
            (Some(_), Some((_, fingerprint))) => Some(*fingerprint),
            (Some(_), None) => Some(WITHDRAWN),
        }
    }
}

/// The policy of a TLS server without a certificate: no connection was accepted under it.
const WITHDRAWN: u64 = u64::MAX;

impl Port {
    fn is_tls(&self) -> bool {
        self.servers.first().is_some_and(|s| s.spec.tls.is_some())
    }

    /// The server a name reaches ([`weft_model::gateway::server_for`], Envoy's filter-chain
    /// order); TLS without SNI reaches only a `*` server.
    pub(crate) fn server_for(&self, name: Option<&str>) -> Option<&Served> {
        let spec = weft_model::gateway::server_for(self.servers.iter().map(|s| &s.spec), name)?;
        self.servers.iter().find(|s| std::ptr::eq(&s.spec, spec))
    }
}

impl Gateway {
    pub(crate) fn new(options: GatewayOptions) -> Self {
        Gateway { options, ports: Default::default() }
    }

    pub(crate) fn port(&self, port: u16) -> Option<Arc<Port>> {
        self.ports.load().get(&port).cloned()
    }

    pub(crate) fn num_trusted_proxies(&self) -> usize {
        self.options.num_trusted_proxies
    }
}

/// One port's handshakes: the TLS config of the server the ClientHello names.
struct PortGuard {
    gateway: Arc<Gateway>,
    shared: Arc<Shared>,
    port: u16,
}

impl EdgeTls for PortGuard {
    fn plaintext(&self) -> bool {
        self.gateway.port(self.port).is_some_and(|p| !p.is_tls())
    }

    fn config_for(&self, sni: Option<&str>) -> Option<(Arc<rustls::ServerConfig>, u64)> {
        let port = self.gateway.port(self.port)?;
        port.server_for(sni)?.tls.clone()
    }

    fn refused(&self, reason: &'static str) {
        self.shared.metrics.inbound_refused.with_label_values(&[reason]).inc();
    }
}

/// Credentials read, by their files and TLS settings: the stamp they were last read at and
/// the last config (with its policy's fingerprint) that could be built from them (kept while
/// the files are broken).
type Loaded =
    HashMap<(tls::Files, weft_model::gateway::ServerTls), (tls::Stamp, Option<(Arc<rustls::ServerConfig>, u64)>)>;

/// A bound port: its listeners stop when this is dropped.
struct Bound {
    _stop: watch::Sender<bool>,
}

/// Keeps listeners and certificates in step with the config until `stop`: after every
/// applied config and every [`CREDENTIAL_POLL`], servers are rebuilt (reading changed
/// credential files again), new ports bound and ports no server names closed.
/// `handler` serves a request that arrived on a port (the outbound request path, wired by
/// `server`).
pub(crate) async fn run<H, F>(
    shared: Arc<Shared>,
    gateway: Arc<Gateway>,
    handler: H,
    timeouts: listen::Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Arc<Conn>, u16) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut bound: BTreeMap<u16, Bound> = BTreeMap::new();
    let mut loaded: Loaded = HashMap::new();
    let mut bind_errors: BTreeMap<u16, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(CREDENTIAL_POLL);
    // The ports' serving loops: on shutdown each drains before `run` returns.
    let mut serving = tokio::task::JoinSet::new();
    loop {
        while serving.try_join_next().is_some() {}
        let servers = shared.snapshot().config.gateway.clone();
        let ports = rebuild(&servers, &gateway.options, &mut loaded, &shared.metrics.gateway_credential_loads);
        gateway.ports.store(Arc::new(ports));
        let wanted: Vec<u16> = gateway.ports.load().keys().copied().collect();
        bound.retain(|port, _| wanted.contains(port));
        bind_errors.retain(|port, _| wanted.contains(port));
        for port in wanted {
            if bound.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(gateway.options.address, port);
            match listen::bind(addr).await {
                Ok(listeners) => {
                    bind_errors.remove(&port);
                    let (tx, rx) = watch::channel(false);
                    for l in listeners {
                        serving.spawn(serve_port(&shared, &gateway, handler.clone(), port, l, rx.clone(), timeouts));
                    }
                    tracing::info!(%addr, "gateway listening");
                    bound.insert(port, Bound { _stop: tx });
                }
                Err(e) => {
                    let e = e.to_string();
                    if bind_errors.get(&port) != Some(&e) {
                        tracing::error!(%addr, "gateway cannot listen: {e}; trying again");
                        bind_errors.insert(port, e);
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => {
                drop(bound);
                while serving.join_next().await.is_some() {}
                return;
            }
            _ = shared.applied.notified() => {}
            _ = tick.tick() => {}
        }
    }
}

fn serve_port<H, F>(
    shared: &Arc<Shared>,
    gateway: &Arc<Gateway>,
    handler: H,
    port: u16,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
    timeouts: listen::Timeouts,
) -> impl Future<Output = ()> + Send + 'static
where
    H: Fn(Request<Incoming>, Arc<Conn>, u16) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let guard = PortGuard { gateway: gateway.clone(), shared: shared.clone(), port };
    let m = &shared.metrics;
    let gauges =
        (m.downstream_active.with_label_values(&["gateway"]), m.downstream_total.with_label_values(&["gateway"]));
    listen::serve(
        listener,
        move |req, conn| handler(req, conn, port),
        stop,
        timeouts,
        gauges,
        listen::Guard::Edge(Arc::new(guard)),
    )
}

/// The servers of `servers` by port, each with its TLS config: read again when its files
/// changed, kept from `loaded` when they did not (a credential that cannot be read is
/// logged once per change and its server refuses handshakes).
/// Each read is counted in `loads` by result.
fn rebuild(
    servers: &[Server],
    options: &GatewayOptions,
    loaded: &mut Loaded,
    loads: &prometheus::IntCounterVec,
) -> BTreeMap<u16, Arc<Port>> {
    let mut ports: BTreeMap<u16, Port> = BTreeMap::new();
    let mut used = std::collections::HashSet::new();
    for spec in servers {
        let tls = spec.tls.as_ref().and_then(|t| {
            let files = tls::Files::of(&t.credential, t.mode, &options.credentials_dir);
            let stamp = files.stamp();
            let key = (files, t.clone());
            used.insert(key.clone());
            let fresh = loaded.get(&key).is_some_and(|(s, _)| *s == stamp);
            if !fresh {
                let last = loaded.remove(&key).and_then(|(_, config)| config);
                let config = match tls::server_config(t, &key.0).map(|(c, f)| (c, f.min(WITHDRAWN - 1))) {
                    Ok(config) => {
                        loads.with_label_values(&["loaded"]).inc();
                        tracing::info!(server = %spec.name, "gateway certificate loaded");
                        Some(config)
                    }
                    // A certificate deleted is withdrawn; one being rewritten (or broken) keeps
                    // the last good one.
                    Err(e) if stamp.certificate_gone() => {
                        loads.with_label_values(&["failed"]).inc();
                        tracing::error!(server = %spec.name, "gateway certificate gone: {e}; the server refuses handshakes");
                        None
                    }
                    Err(e) => {
                        loads.with_label_values(&["failed"]).inc();
                        let kept = if last.is_some() { "; the last good one stays" } else { "" };
                        tracing::error!(server = %spec.name, "gateway certificate not loaded: {e}{kept}");
                        last
                    }
                };
                loaded.insert(key.clone(), (stamp, config));
            }
            loaded.get(&key).and_then(|(_, config)| config.clone())
        });
        ports.entry(spec.port).or_default().servers.push(Served { spec: spec.clone(), tls });
    }
    loaded.retain(|key, _| used.contains(key));
    ports.into_iter().map(|(port, p)| (port, Arc::new(p))).collect()
}
