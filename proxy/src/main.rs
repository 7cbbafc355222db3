//! `weft-proxy`: the sidecar binary. Takes its config from a static file
//! (watched) or from the control plane, serves until SIGTERM, then drains.
//!
//! Size: the command line (every flag with its help: the sidecar's reference) and the
//! start-up that wires it.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_model::{stream::Hello, ProxyConfig, Workload};
use weft_proxy::config::control::ControlOptions;
use weft_proxy::config::file as config;
use weft_proxy::{Proxy, ProxyOptions};

/// The Weft sidecar.
#[derive(Debug, Parser)]
#[command(name = "weft-proxy", version, about)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "control_plane"])))]
struct Args {
    /// ProxyConfig file (YAML, or JSON when it ends in .json); watched for changes.
    #[arg(long, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    /// Control plane addresses, `http://host:port[,http://host:port]`; configs come from there.
    #[arg(long, env = "WEFT_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Vec<String>,
    /// Workload name (control-plane mode).
    #[arg(long, env = "WEFT_WORKLOAD", default_value = "unknown")]
    workload: String,
    /// Namespace of the workload.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Service account of the workload.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// The service this workload serves; registers it in the mesh (with --advertise).
    #[arg(long, env = "WEFT_SERVICE")]
    service: Option<String>,
    /// Workload labels, `k=v,k=v` (`app`, `version` ...).
    #[arg(long, env = "WEFT_LABELS", default_value = "")]
    labels: String,
    /// Instance id (pod name); default `<workload>-<pid>`.
    #[arg(long, env = "WEFT_INSTANCE")]
    instance: Option<String>,
    /// Inbound address peers use to reach this sidecar; default the inbound listener's.
    #[arg(long, env = "WEFT_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Service port (Istio's destination port); default 80.
    #[arg(long, env = "WEFT_SERVICE_PORT", default_value_t = 80)]
    service_port: u16,
    /// What the service port speaks, as Istio reads a port's name or `appProtocol`:
    /// `http`, `http2`, `grpc`, `grpc-web`, or one of them followed by `-name` (`grpc-orders`).
    /// Unset, or a name Istio does not know: the caller's HTTP/1.1 or HTTP/2 is kept. TCP
    /// protocols (`tcp`, `tls`, `mysql`, `redis` …): opaque TCP between sidecars over mTLS.
    #[arg(long, env = "WEFT_APP_PROTOCOL", value_parser = parse_app_protocol)]
    app_protocol: Option<weft_model::AppProtocol>,
    /// The service's other ports, `NAME:PORT,...` as a Kubernetes Service names them
    /// (`http-admin:8081,tcp-db:5432`): each is registered with what its name says, and a
    /// peer's call for one goes to the app's host on that port (HTTP routed by that port's
    /// routes, TCP relayed); the app's main port is `--app`.
    #[arg(long, env = "WEFT_OTHER_PORTS", value_delimiter = ',', value_parser = weft_model::ServicePort::parse)]
    other_ports: Vec<weft_model::ServicePort>,
    /// Outbound listener: the local app sends its calls here.
    #[arg(long, env = "WEFT_OUTBOUND", default_value = "127.0.0.1:15001")]
    outbound: SocketAddr,
    /// Inbound listener: peers' calls arrive here and go to the app.
    #[arg(long, env = "WEFT_INBOUND", default_value = "0.0.0.0:15006")]
    inbound: SocketAddr,
    /// Admin listener: /ready /healthz /config_dump /clusters /stats/prometheus.
    #[arg(long, env = "WEFT_ADMIN", default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Where the local app listens (overrides inbound.app of the config).
    #[arg(long, env = "WEFT_APP")]
    app: Option<SocketAddr>,
    /// How often the config file is checked for changes, e.g. 1s, 200ms.
    #[arg(long, env = "WEFT_WATCH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// How long in-flight requests may finish after SIGTERM (Istio's terminationDrainDuration).
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Write a JSON access-log line per request on stdout (off by default, as in Istio;
    /// an Istio Telemetry resource with `accessLogging` turns it on or off per workload).
    #[arg(long, env = "WEFT_ACCESS_LOG")]
    access_log: bool,
    /// The old default's switch: the access log is off unless asked for; accepted and ignored.
    #[arg(long, hide = true, conflicts_with = "access_log")]
    no_access_log: bool,
    /// Bootstrap token file (from `weftctl token`): get a workload certificate from the
    /// control plane and speak mTLS with the other sidecars.
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A workload certificate issued elsewhere (PEM; with --key-file and --root-file)
    /// instead of one from the control plane: mTLS without a token. Not renewed.
    #[arg(long, env = "WEFT_CERT_FILE", requires_all = ["key_file", "root_file"], conflicts_with = "token_file")]
    cert_file: Option<PathBuf>,
    #[arg(long, env = "WEFT_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    #[arg(long, env = "WEFT_ROOT_FILE", requires = "cert_file")]
    root_file: Option<PathBuf>,
    /// The mesh root (PEM, from `weftctl root-cert`): talk to the control plane over TLS
    /// and accept only a control plane that proves its identity under this root.
    /// Required with --control-plane (the control plane speaks TLS only).
    #[arg(long, env = "WEFT_CA_FILE", requires = "control_plane")]
    ca_file: Option<PathBuf>,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Captured traffic to a destination outside the mesh: ALLOW_ANY passes it
    /// through (Istio's default), REGISTRY_ONLY refuses it (HTTP 502, TCP closed).
    /// The mesh-wide default: a Sidecar resource for the workload overrides it.
    #[arg(long, env = "WEFT_OUTBOUND_TRAFFIC_POLICY", default_value = "ALLOW_ANY")]
    outbound_traffic_policy: weft_model::OutboundTrafficPolicy,
    /// Request-path normalization before routing, authorization and the app (Istio's MeshConfig
    /// `pathNormalization`): NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES; the control
    /// plane's setting overrides it.
    #[arg(long, env = "WEFT_PATH_NORMALIZATION", default_value = "BASE")]
    path_normalization: weft_model::PathNormalization,
    /// Downstream connections (HTTP/1.1, h2c, TLS) with no request in flight and no traffic for
    /// this long are closed (Envoy's `idle_timeout`).
    #[arg(long, env = "WEFT_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// The longest time before endpoints given by DNS name (a ServiceEntry with
    /// resolution DNS) are resolved again; sooner when their TTL runs out (Istio's
    /// MeshConfig `dnsRefreshRate`).
    #[arg(long, env = "WEFT_DNS_REFRESH", default_value = "60s", value_parser = weft_model::duration::parse)]
    dns_refresh: Duration,
    /// Nameservers for endpoints given by DNS name (comma-separated `IP:port`); default
    /// `/etc/resolv.conf`'s.
    #[arg(long, env = "WEFT_DNS_SERVER", value_delimiter = ',')]
    dns_server: Vec<std::net::SocketAddr>,
    /// The share of traces this sidecar starts that are sampled, in percent (Istio's
    /// `meshConfig.defaultConfig.tracing.sampling`, 1 by default). A caller's decision stands.
    #[arg(long, env = "WEFT_TRACE_SAMPLING", default_value_t = weft_proxy::ops::trace::DEFAULT_SAMPLING_PERCENT)]
    trace_sampling: f64,
    /// Tracing off (Istio's `meshConfig.enableTracing: false`): no trace context is
    /// continued or started, no `traceparent`/`x-b3-*` written.
    #[arg(long, env = "WEFT_NO_TRACING")]
    no_tracing: bool,
    /// Export sampled spans over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is added to a URL without a path). http:// only:
    /// a collector on the node or in the pod forwards them on. Off unless given.
    #[arg(long, env = "WEFT_OTLP_ENDPOINT")]
    otlp_endpoint: Option<weft_proxy::ops::otlp::Endpoint>,
    /// Status listener for the kubelet (Istio's 15020): `/healthz/ready` and
    /// `/app-health/<container>/{livez,readyz,startupz}`. Off unless given.
    /// Several addresses, comma-separated, serve the same (injection uses 15020 and 15021).
    #[arg(long, env = "WEFT_STATUS", value_delimiter = ',')]
    status: Vec<SocketAddr>,
    /// The app's original HTTP probes (JSON, Istio's ISTIO_KUBE_APP_PROBERS shape), set by `weftctl inject`.
    #[arg(long, env = "WEFT_APP_PROBES")]
    app_probes: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "WEFT_WORKERS")]
    workers: Option<usize>,
    /// `weft-proxy gateway`: where the Gateway servers' ports are bound.
    #[arg(long, env = "WEFT_GATEWAY_ADDRESS", default_value = "0.0.0.0")]
    gateway_address: std::net::IpAddr,
    /// Where a `credentialName` is read, as a mounted TLS Secret: `<dir>/<name>/tls.crt`,
    /// `tls.key`, `ca.crt` — a gateway server's certificate (and for MUTUAL its client CA), a
    /// DestinationRule's client certificate (`tls.mode: MUTUAL`) and roots.
    #[arg(long, env = "WEFT_CREDENTIALS_DIR", default_value = "/etc/weft/credentials")]
    credentials_dir: PathBuf,
    /// `weft-proxy gateway`: proxies in front of the gateway whose `x-forwarded-for` entries
    /// are trusted (Istio's `gatewayTopology.numTrustedProxies`).
    #[arg(long, env = "WEFT_NUM_TRUSTED_PROXIES", default_value_t = 0)]
    num_trusted_proxies: usize,
    /// Set by the `gateway` subcommand.
    #[arg(skip)]
    gateway: bool,
}

fn parse_app_protocol(s: &str) -> Result<weft_model::AppProtocol, String> {
    weft_model::AppProtocol::from_port(s)?.ok_or_else(|| {
        format!(
            "{s:?} names no protocol Istio knows (http, http2, grpc, grpc-web, tcp …); leave the flag out to detect it"
        )
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_model::duration::parse(s)
}

/// `weft-proxy init-iptables`: what the pod's init container runs (root or NET_ADMIN).
#[derive(Debug, Parser)]
#[command(name = "weft-proxy init-iptables", about = "Installs the pod's interception rules (Istio's REDIRECT mode)")]
struct InitArgs {
    /// Print the rules (iptables-restore input) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the rules instead.
    #[arg(long)]
    cleanup: bool,
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// The sidecar's uid and gid; their traffic is never redirected.
    #[arg(long, default_value_t = weft_proxy::net::iptables::PROXY_UID)]
    proxy_uid: u32,
    #[arg(long, default_value_t = weft_proxy::net::iptables::PROXY_UID)]
    proxy_gid: u32,
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// IPv4 and IPv6 CIDRs whose traffic leaves the pod unintercepted.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
}

fn init_iptables(args: InitArgs) -> anyhow::Result<()> {
    use weft_proxy::net::iptables;
    let rules = iptables::Rules {
        outbound_port: args.outbound_port,
        inbound_port: args.inbound_port,
        proxy_uid: args.proxy_uid,
        proxy_gid: args.proxy_gid,
        exclude_inbound_ports: args.exclude_inbound_ports,
        exclude_outbound_ports: args.exclude_outbound_ports,
        exclude_outbound_cidrs: args.exclude_outbound_cidrs,
    };
    rules.validate().map_err(anyhow::Error::msg)?;
    match (args.dry_run, args.cleanup) {
        (true, _) => {
            for family in iptables::families() {
                println!("# {family:?}");
                print!("{}", rules.restore_input(family));
            }
        }
        (false, true) => iptables::cleanup().map_err(anyhow::Error::msg)?,
        (false, false) => {
            iptables::apply(&rules).map_err(anyhow::Error::msg)?;
            let families = iptables::families();
            let n: usize = families.iter().map(|f| rules.rules(*f).len()).sum();
            eprintln!("weft-proxy init-iptables: {n} rules installed ({families:?})");
        }
    }
    Ok(())
}

/// `weft-proxy wait`: the classic sidecar's postStart hold; returns once the sidecar is ready.
#[derive(Debug, Parser)]
#[command(name = "weft-proxy wait", about = "Waits until the sidecar's /healthz/ready answers 200")]
struct WaitArgs {
    #[arg(long, default_value = "127.0.0.1:15020")]
    status: SocketAddr,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

fn wait_ready(args: WaitArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + args.timeout;
    loop {
        let ready = std::net::TcpStream::connect_timeout(&args.status, Duration::from_secs(1)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"GET /healthz/ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(head.ends_with(b"200"))
        });
        if ready.unwrap_or(false) {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the sidecar was not ready within {:?}", args.timeout);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("init-iptables") => return init_iptables(InitArgs::parse_from(std::env::args().skip(1))),
        Some("wait") => return wait_ready(WaitArgs::parse_from(std::env::args().skip(1))),
        _ => {}
    }
    // `weft-proxy gateway …`: an ingress gateway (Istio's gateway deployment), not a sidecar;
    // the same flags, and the gateway's own.
    let gateway = std::env::args().nth(1).as_deref() == Some("gateway");
    let mut args = match gateway {
        true => Args::parse_from(std::env::args().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a)),
        false => Args::parse(),
    };
    args.gateway = gateway;
    if gateway {
        if args.labels.is_empty() {
            // The labels Istio's ingress gateway deployment carries, which Gateway selectors name.
            args.labels = "istio=ingressgateway,app=istio-ingressgateway".into();
        }
        // Only a workload that says it is a gateway takes Gateway resources.
        let (k, v) = weft_model::gateway::ROLE_LABEL;
        args.labels = format!("{},{k}={v}", args.labels);
    }
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build().context("starting the runtime")?.block_on(run(args))
}

fn workload(args: &Args) -> Workload {
    Workload {
        name: args.workload.clone(),
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        labels: args
            .labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().into(), v.trim().into()))
            .collect(),
    }
}

/// The app's ports as the flags give them: each other port once, none the app's main port
/// or the service port, none in the sidecar's own range; a TCP service port is the app's port
/// (peers dial the pod's address, there is no virtual IP to map it).
fn check_ports(args: &Args) -> Result<(), String> {
    let reserved = weft_proxy::state::RESERVED_PORTS;
    let own = [args.inbound.port(), args.outbound.port(), args.admin.port()];
    let app_port = args.app.map(|a| a.port());
    for (i, p) in args.other_ports.iter().enumerate() {
        if reserved.contains(&p.port) || own.contains(&p.port) {
            return Err(format!("--other-ports: {} is one of the sidecar's own ports ({reserved:?}, {own:?})", p.port));
        }
        if Some(p.port) == app_port || p.port == args.service_port {
            return Err(format!("--other-ports: {} is the app's main port or the service port", p.port));
        }
        if args.other_ports[..i].iter().any(|o| o.port == p.port) {
            return Err(format!("--other-ports: {} is listed twice", p.port));
        }
    }
    if args.app_protocol == Some(weft_model::AppProtocol::Tcp) && app_port != Some(args.service_port) {
        return Err(format!(
            "--app-protocol tcp: the service port ({}) must be the app's port (--app {:?}): peers dial the pod's address on it",
            args.service_port, args.app
        ));
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_ports(&args).map_err(|e| anyhow::anyhow!(e))?;
    if !args.control_plane.is_empty() {
        anyhow::ensure!(
            args.ca_file.is_some(),
            "--control-plane needs --ca-file (the mesh root from `weftctl root-cert`): the control plane speaks TLS only"
        );
        anyhow::ensure!(
            args.token_file.is_some() || args.cert_file.is_some(),
            "--control-plane needs a workload identity: --token-file (from `weftctl token`) or --cert-file/--key-file/--root-file; the config stream takes only callers with a certificate"
        );
    }
    let mut cp_tls = match &args.ca_file {
        Some(file) => Some(
            weft_proxy::security::identity::ControlPlaneTls::from_file(file, &args.trust_domain)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let identity = match &args.token_file {
        Some(file) => {
            let token = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            anyhow::ensure!(!args.control_plane.is_empty(), "--token-file needs --control-plane (the CA is there)");
            let identity = std::sync::Arc::new(weft_proxy::security::identity::Identity::default());
            let options = weft_proxy::security::identity::IdentityOptions {
                urls: args.control_plane.clone(),
                token: token.trim().to_string(),
                tls: cp_tls.clone(),
            };
            tokio::spawn(weft_proxy::security::identity::run(identity.clone(), options));
            Some(identity)
        }
        None => match (&args.cert_file, &args.key_file, &args.root_file) {
            (Some(cert), Some(key), Some(root)) => {
                let leaf = weft_proxy::security::identity::Leaf::from_pem_files(cert, key, root)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tracing::info!(identity = %leaf.id, "static workload certificate");
                let identity = std::sync::Arc::new(weft_proxy::security::identity::Identity::default());
                identity.install(leaf);
                Some(identity)
            }
            _ => None,
        },
    };
    // Once the sidecar holds a certificate, the control-plane stream is mutual TLS.
    if let Some(t) = cp_tls.as_mut() {
        t.identity = identity.clone();
    }
    let options = ProxyOptions {
        app_protocol: args.app_protocol,
        credentials_dir: args.credentials_dir.clone(),
        // In control-plane mode the flags say which of the app's ports peers may reach.
        declared_ports: args
            .config
            .is_none()
            .then(|| weft_proxy::state::DeclaredPorts::new(args.app_protocol, args.service_port, &args.other_ports)),
        outbound: args.outbound,
        inbound: args.inbound,
        admin: args.admin,
        app: args.app,
        drain_timeout: args.drain_timeout,
        access_log: args.access_log,
        wait_for_config: args.config.is_none(),
        identity: identity.clone(),
        outbound_traffic_policy: args.outbound_traffic_policy,
        path_normalization: args.path_normalization,
        idle_timeout: args.idle_timeout,
        dns_refresh: args.dns_refresh,
        dns_servers: args.dns_server.clone(),
        trace_sampling_percent: (!args.no_tracing).then_some(args.trace_sampling),
        otlp_endpoint: args.otlp_endpoint.clone(),
        gateway: args.gateway.then(|| weft_proxy::gateway::GatewayOptions {
            address: args.gateway_address,
            credentials_dir: args.credentials_dir.clone(),
            num_trusted_proxies: args.num_trusted_proxies,
        }),
    };
    let (initial, watched) = match &args.config {
        Some(file) => {
            let (cfg, bytes) = config::read(file)?;
            (cfg, Some((file.clone(), bytes)))
        }
        // Until the control plane speaks: no services, not ready.
        None => (
            ProxyConfig {
                api_version: weft_model::API_VERSION.into(),
                version: String::new(),
                workload: workload(&args),
                services: Default::default(),
                clusters: Default::default(),
                inbound: Default::default(),
                outbound_traffic_policy: None,
                trust: None,
                path_normalization: None,
                access_log: None,
                egress: Vec::new(),
                tcp: Vec::new(),
                gateway: Vec::new(),
            },
            None,
        ),
    };
    let probes = match &args.app_probes {
        Some(json) => weft_proxy::ops::probes::AppProbes::parse(json).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let running = Proxy::start(options, initial, prometheus::Registry::new()).await.context("starting weft-proxy")?;
    // POST /quitquitquit from inside the pod ends the sidecar (a classic sidecar's Job is done).
    let quit = std::sync::Arc::new(tokio::sync::Notify::new());
    let _status = weft_proxy::ops::probes::serve_status(&running, &args.status, probes, quit.clone())
        .await
        .context("binding the status listeners")?;
    let (goodbye, goodbye_rx) = tokio::sync::watch::channel(false);
    let mut control_task = None;
    match watched {
        Some((file, bytes)) => {
            tokio::spawn(config::watch(file, running.shared.clone(), bytes, args.watch_interval));
        }
        None => {
            let advertise = args.advertise.unwrap_or_else(|| {
                let mut a = running.inbound;
                if a.ip().is_unspecified() {
                    a.set_ip([127, 0, 0, 1].into());
                }
                a
            });
            let hello = Hello {
                workload: workload(&args),
                instance: args.instance.clone().unwrap_or_else(|| format!("{}-{}", args.workload, std::process::id())),
                service: args.service.clone(),
                // A gateway is no destination of the mesh: it is not registered.
                address: (!args.gateway).then(|| advertise.to_string()),
                port: Some(args.service_port),
                protocol: args.app_protocol,
                other_ports: args.other_ports.clone(),
                // Scrapeable where peers reach the sidecar only when the admin listener is there too.
                metrics_port: (running.admin.ip() == advertise.ip() || running.admin.ip().is_unspecified())
                    .then_some(running.admin.port()),
                applied_version: None,
            };
            let control = ControlOptions { urls: args.control_plane.clone(), hello, tls: cp_tls.clone() };
            control_task =
                Some(tokio::spawn(weft_proxy::config::control::run(running.shared.clone(), control, goodbye_rx)));
        }
    }

    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = quit.notified() => tracing::info!("asked to quit (POST /quitquitquit)"),
    }
    // Deregister first, so peers stop choosing this instance, then drain.
    let _ = goodbye.send(true);
    if let Some(task) = control_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    tracing::info!("shutting down: draining for up to {:?}", args.drain_timeout);
    running.shutdown().await;
    tracing::info!("drained, bye");
    Ok(())
}
