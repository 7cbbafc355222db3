//! Putting the sidecar together: the shared state, the three listeners, and
//! shutdown.

use crate::access_log::AccessLog;
use crate::endpoint::Registry;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::{admin, inbound, listen, outbound};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use weft_model::{ProxyConfig, ValidationError};

/// How to run a sidecar.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// Overrides `inbound.app` of the config.
    pub app: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after shutdown starts.
    /// Istio's `terminationDrainDuration` default is 5 s.
    pub drain_timeout: Duration,
    /// Write the JSON access log to stdout.
    pub access_log: bool,
    /// Not ready until a config is applied (the one given at start is a placeholder):
    /// the control-plane mode.
    pub wait_for_config: bool,
    /// The workload certificate (kept current by `identity::run`): mTLS in and out.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Captured traffic to destinations outside the mesh: passed through (Istio's default) or
    /// refused, unless the config says otherwise (a Sidecar resource's `outboundTrafficPolicy`).
    pub outbound_traffic_policy: crate::intercept::OutboundTrafficPolicy,
    /// The mesh-wide path normalization, unless the config says otherwise.
    pub path_normalization: weft_model::PathNormalization,
    /// Downstream connections idle this long are closed (Envoy's `idle_timeout`, 1 h).
    pub idle_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            outbound: ([127, 0, 0, 1], 15001).into(),
            inbound: ([0, 0, 0, 0], 15006).into(),
            admin: ([127, 0, 0, 1], 15000).into(),
            app: None,
            drain_timeout: Duration::from_secs(5),
            access_log: true,
            wait_for_config: false,
            identity: None,
            outbound_traffic_policy: Default::default(),
            path_normalization: Default::default(),
            idle_timeout: crate::listen::IDLE_TIMEOUT,
        }
    }
}

/// State every request and the admin server read.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    endpoints: Registry,
    app_override: Option<SocketAddr>,
    apply_lock: Mutex<()>,
    ready: std::sync::atomic::AtomicBool,
    pub identity: Option<Arc<crate::identity::Identity>>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    /// The mesh-wide default (`--outbound-traffic-policy`); a config may override it.
    pub outbound_traffic_policy: crate::intercept::OutboundTrafficPolicy,
    /// The mesh-wide default (`--path-normalization`); a config may override it.
    pub path_normalization: weft_model::PathNormalization,
}

impl Shared {
    /// The path normalization under `config`.
    pub fn path_normalization(&self, config: &weft_model::ProxyConfig) -> weft_model::PathNormalization {
        config.path_normalization.unwrap_or(self.path_normalization)
    }

    /// The policy for captured traffic outside the mesh under `config`.
    pub fn outbound_policy(&self, config: &weft_model::ProxyConfig) -> crate::intercept::OutboundTrafficPolicy {
        config.outbound_traffic_policy.unwrap_or(self.outbound_traffic_policy)
    }

    /// The live config; a request loads it once and finishes on it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether the sidecar holds a real config (readiness).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Validates and compiles `config` beside the live one, then swaps it in.
    /// On error nothing changes. Returns the applied version.
    pub fn apply(&self, config: ProxyConfig) -> Result<String, ValidationError> {
        let _one_at_a_time = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = Snapshot::compile(config, &self.endpoints, self.app_override)?;
        let version = snapshot.config.version.clone();
        let snapshot = Arc::new(snapshot);
        snapshot.start_outlier_reviews();
        self.snapshot.store(snapshot);
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        self.metrics.config_reloads.with_label_values(&["applied"]).inc();
        self.metrics.config_applied.inc();
        Ok(version)
    }
}

impl crate::listen::InboundSecurity for Shared {
    fn mode(&self) -> weft_model::MtlsMode {
        self.snapshot().config.inbound.mtls
    }

    fn server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.identity.as_ref()?.current().map(|leaf| leaf.server.clone())
    }

    fn refused(&self, reason: &'static str) {
        self.metrics.inbound_refused.with_label_values(&[reason]).inc();
    }

    fn trusts(&self, peer: &str) -> bool {
        let Some(own) = self.identity.as_ref().and_then(|i| i.current()) else { return false };
        let domain = |id: &str| id.strip_prefix("spiffe://").and_then(|r| r.split('/').next()).map(str::to_string);
        domain(&own.id).is_some_and(|d| domain(peer).as_deref() == Some(d.as_str()))
    }
}

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid config: {0}")]
    Config(#[from] ValidationError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The entry point of the library.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds the three listeners and starts serving `config`.
    pub async fn start(
        options: ProxyOptions,
        config: ProxyConfig,
        registry: prometheus::Registry,
    ) -> Result<Running, StartError> {
        let metrics = Metrics::new(registry)?;
        let access_log = if options.access_log {
            AccessLog::stdout(metrics.access_log_dropped.clone())
        } else {
            AccessLog::disabled(metrics.access_log_dropped.clone())
        };
        let endpoints = Registry::with_identity(options.identity.clone());
        let snapshot = Arc::new(Snapshot::compile(config, &endpoints, options.app)?);
        snapshot.start_outlier_reviews();
        metrics.config_applied.inc();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::new(snapshot),
            endpoints,
            app_override: options.app,
            apply_lock: Mutex::new(()),
            ready: std::sync::atomic::AtomicBool::new(!options.wait_for_config),
            identity: options.identity.clone(),
            metrics,
            access_log,
            outbound_traffic_policy: options.outbound_traffic_policy,
            path_normalization: options.path_normalization,
        });

        let bind = |addr: SocketAddr| async move {
            listen::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
        };
        let (out_l, in_l, admin_l) =
            (bind(options.outbound).await?, bind(options.inbound).await?, bind(options.admin).await?);
        let local =
            |l: &[TcpListener], fallback: SocketAddr| l.first().and_then(|l| l.local_addr().ok()).unwrap_or(fallback);
        let addrs = (local(&out_l, options.outbound), local(&in_l, options.inbound), local(&admin_l, options.admin));

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let gauge = |name: &str| {
            let m = &shared.metrics;
            (m.downstream_active.with_label_values(&[name]), m.downstream_total.with_label_values(&[name]))
        };
        let drain = listen::Timeouts { drain: options.drain_timeout, idle: options.idle_timeout };
        for l in out_l {
            let s = shared.clone();
            tasks.spawn(listen::serve(
                l,
                move |req| outbound::handle(s.clone(), req),
                stop_rx.clone(),
                drain,
                gauge("outbound"),
                listen::Guard::Outbound(shared.clone() as Arc<dyn crate::intercept::Capture>),
            ));
        }
        for l in in_l {
            let s = shared.clone();
            tasks.spawn(listen::serve(
                l,
                move |req| inbound::handle(s.clone(), req),
                stop_rx.clone(),
                drain,
                gauge("inbound"),
                listen::Guard::Inbound(shared.clone() as Arc<dyn listen::InboundSecurity>),
            ));
        }
        for l in admin_l {
            let s = shared.clone();
            tasks.spawn(listen::serve(
                l,
                move |req| admin::handle(s.clone(), req),
                stop_rx.clone(),
                drain,
                gauge("admin"),
                listen::Guard::Open,
            ));
        }
        tracing::info!(outbound = %addrs.0, inbound = %addrs.1, admin = %addrs.2, "weft-proxy listening");
        Ok(Running { outbound: addrs.0, inbound: addrs.1, admin: addrs.2, shared, stop: stop_tx, tasks })
    }
}

/// A started sidecar.
#[derive(Debug)]
pub struct Running {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), and returns when every listener is done.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
