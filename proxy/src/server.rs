//! Putting the sidecar together: the three listeners, their handlers and
//! shutdown. It only wires: the state requests read is [`crate::state`].

use crate::config::snapshot::Snapshot;
use crate::http::{inbound, outbound};
use crate::net::listen;
use crate::ops::access_log::AccessLog;
use crate::ops::admin;
use crate::ops::metrics::Metrics;
use crate::state::Shared;
use crate::upstream::endpoint::Registry;
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
    /// What the app's port speaks (`--app-protocol`): overrides `inbound.protocol` of the
    /// config. The sidecar knows its own app; no other instance's word changes this.
    pub app_protocol: Option<weft_model::AppProtocol>,
    /// The app's other ports its flags declared: a config opens no other one to peers.
    /// `None` (a static config): the config's `inbound.tcpPorts`/`httpPorts` as written.
    pub declared_ports: Option<crate::state::DeclaredPorts>,
    /// Where a DestinationRule's `credentialName` is read (a mounted TLS Secret per name).
    pub credentials_dir: std::path::PathBuf,
    /// How long in-flight requests may take to finish after shutdown starts.
    /// Istio's `terminationDrainDuration` default is 5 s.
    pub drain_timeout: Duration,
    /// Write the JSON access log to stdout unless the config says otherwise (an Istio
    /// Telemetry resource); off by default, as in Istio.
    pub access_log: bool,
    /// Not ready until a config is applied (the one given at start is a placeholder):
    /// the control-plane mode.
    pub wait_for_config: bool,
    /// The workload certificate (kept current by `identity::run`): mTLS in and out.
    pub identity: Option<Arc<crate::security::identity::Identity>>,
    /// Captured traffic to destinations outside the mesh: passed through (Istio's default) or
    /// refused, unless the config says otherwise (a Sidecar resource's `outboundTrafficPolicy`).
    pub outbound_traffic_policy: crate::net::intercept::OutboundTrafficPolicy,
    /// The mesh-wide path normalization, unless the config says otherwise.
    pub path_normalization: weft_model::PathNormalization,
    /// Downstream connections idle this long are closed (Envoy's `idle_timeout`, 1 h).
    pub idle_timeout: Duration,
    /// How often endpoints given by DNS name are resolved again at most (Istio's
    /// `dnsRefreshRate`, 60 s); sooner when their TTL runs out.
    pub dns_refresh: Duration,
    /// The nameservers asked for them; empty: `/etc/resolv.conf`'s.
    pub dns_servers: Vec<SocketAddr>,
    /// The share of traces started here that are sampled, in percent (Istio's default 1);
    /// `None`: tracing off (Istio's `meshConfig.enableTracing: false`).
    pub trace_sampling_percent: Option<f64>,
    /// Sampled spans go here over OTLP/HTTP (`--otlp-endpoint`); none: not exported.
    pub otlp_endpoint: Option<crate::ops::otlp::Endpoint>,
    /// Run as an ingress gateway (`weft-proxy gateway`): no inbound or outbound listener;
    /// the config's gateway servers' ports instead.
    pub gateway: Option<crate::gateway::GatewayOptions>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            outbound: ([127, 0, 0, 1], 15001).into(),
            inbound: ([0, 0, 0, 0], 15006).into(),
            admin: ([127, 0, 0, 1], 15000).into(),
            app: None,
            app_protocol: None,
            declared_ports: None,
            credentials_dir: "/etc/weft/credentials".into(),
            drain_timeout: Duration::from_secs(5),
            access_log: false,
            wait_for_config: false,
            identity: None,
            outbound_traffic_policy: Default::default(),
            path_normalization: Default::default(),
            idle_timeout: crate::net::listen::IDLE_TIMEOUT,
            dns_refresh: crate::upstream::dns::REFRESH,
            dns_servers: Vec::new(),
            trace_sampling_percent: Some(crate::ops::trace::DEFAULT_SAMPLING_PERCENT),
            otlp_endpoint: None,
            gateway: None,
        }
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
        mut config: ProxyConfig,
        registry: prometheus::Registry,
    ) -> Result<Running, StartError> {
        crate::state::speak_to_app(&mut config, options.app_protocol);
        crate::state::restrict_ports(&mut config, options.declared_ports.as_ref());
        crate::state::mounted_credentials(&mut config, &options.credentials_dir);
        let metrics = Metrics::new(registry)?;
        let access_log = AccessLog::new(options.access_log, metrics.access_log_dropped.clone());
        let otlp =
            options.otlp_endpoint.clone().map(|e| crate::ops::otlp::Exporter::start(e, metrics.trace_spans.clone()));
        let endpoints = Registry::with_identity(options.identity.clone());
        let snapshot = Arc::new(Snapshot::compile(config, &endpoints, options.app)?);
        metrics.config_applied.inc();
        let shared = Arc::new(Shared {
            snapshot: Arc::new(ArcSwap::new(snapshot.clone())),
            reviews: Default::default(),
            endpoints,
            app_override: options.app,
            app_protocol: options.app_protocol,
            apply_lock: Mutex::new(()),
            ready: std::sync::atomic::AtomicBool::new(!options.wait_for_config),
            identity: options.identity.clone(),
            metrics,
            access_log,
            outbound_traffic_policy: options.outbound_traffic_policy,
            path_normalization: options.path_normalization,
            inbound_retry: crate::http::retry::RetryPolicy::inbound(),
            dns: crate::upstream::dns::Dns::new(options.dns_servers.clone()),
            trace_sampling: options.trace_sampling_percent.map(crate::ops::trace::per_million),
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(crate::http::mirror::MAX_IN_FLIGHT)),
            tap: Default::default(),
            otlp,
            applied: Default::default(),
            epoch: tokio::sync::watch::channel(0).0,
            declared_ports: options.declared_ports.clone(),
            credentials_dir: options.credentials_dir.clone(),
        });
        shared.reviews.follow(&snapshot, &shared.snapshot);

        let bind = |addr: SocketAddr| async move {
            listen::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
        };
        // A gateway has no app: its listeners are its servers' ports, bound by `gateway::run`.
        let (out_l, in_l) = match options.gateway {
            Some(_) => (Vec::new(), Vec::new()),
            None => (bind(options.outbound).await?, bind(options.inbound).await?),
        };
        let admin_l = bind(options.admin).await?;
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
                move |req, conn| outbound::handle(s.clone(), req, conn),
                stop_rx.clone(),
                drain,
                gauge("outbound"),
                listen::Guard::Outbound(shared.clone() as Arc<dyn crate::net::intercept::Capture>),
            ));
        }
        for l in in_l {
            let s = shared.clone();
            tasks.spawn(listen::serve(
                l,
                move |req, conn| inbound::handle(s.clone(), req, conn),
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
                move |req, _conn| admin::handle(s.clone(), req),
                stop_rx.clone(),
                drain,
                gauge("admin"),
                listen::Guard::Open,
            ));
        }
        if let Some(gateway) = options.gateway.clone() {
            let (s, gateway) = (shared.clone(), Arc::new(crate::gateway::Gateway::new(gateway)));
            let g = gateway.clone();
            let serve = move |req, conn, port| outbound::serve(s.clone(), req, conn, Some((g.clone(), port)));
            tasks.spawn(crate::gateway::run(shared.clone(), gateway, serve, drain, stop_rx.clone()));
        }
        let (s, stop) = (shared.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let live = || s.snapshot().config.clone();
            crate::upstream::dns::run(&s.dns, live, || s.refresh_endpoints(), options.dns_refresh, stop).await
        });
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
