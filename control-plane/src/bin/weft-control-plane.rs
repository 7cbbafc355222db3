//! `weft-control-plane`: follows etcd, compiles each sidecar's config and
//! pushes it. Stateless: run several; sidecars move between them.

use anyhow::Context as _;
use clap::Parser;
use std::net::SocketAddr;
use weft_control_plane::store::Store;

#[derive(Debug, Parser)]
#[command(name = "weft-control-plane", version, about = "Weft control plane: etcd in, sidecar configs out")]
struct Args {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "WEFT_ETCD", default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// etcd's CA (PEM): with --etcd-cert and --etcd-key, TLS to `https://` endpoints.
    #[arg(long, env = "WEFT_ETCD_CA", requires_all = ["etcd_cert", "etcd_key"])]
    etcd_ca: Option<std::path::PathBuf>,
    /// This control plane's etcd client certificate (CN `weft-control-plane`: its etcd role).
    #[arg(long, env = "WEFT_ETCD_CERT", requires = "etcd_ca")]
    etcd_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "WEFT_ETCD_KEY", requires = "etcd_ca")]
    etcd_key: Option<std::path::PathBuf>,
    /// Key prefix in etcd.
    #[arg(long, env = "WEFT_PREFIX", default_value = "/weft/")]
    prefix: String,
    /// Where sidecars connect (TLS only: the HTTP/2 push stream with a client
    /// certificate, certificate signing with a bootstrap token), and /metrics.
    #[arg(long, env = "WEFT_LISTEN", default_value = "0.0.0.0:15012")]
    listen: SocketAddr,
    /// The mesh CA's directory: `ca-cert.pem` and `ca-key.pem` (mode 0600),
    /// as `weftctl ca init --dir` writes them (Istio's plug-in CA; in
    /// Kubernetes a Secret only control planes mount). The key never goes to etcd.
    #[arg(long, env = "WEFT_CA_DIR")]
    ca_dir: std::path::PathBuf,
    /// The audience bootstrap tokens must be minted for.
    #[arg(long, env = "WEFT_TOKEN_AUDIENCE", default_value = weft_control_plane::token::DEFAULT_AUDIENCE)]
    token_audience: String,
    /// Register the address a sidecar advertises instead of its connection's
    /// source IP (with the advertised port). Only behind NAT you control: with
    /// it, a workload can point its service's traffic at any host.
    #[arg(long, env = "WEFT_TRUST_ADVERTISED_ADDRESS")]
    trust_advertised_address: bool,
    /// Config streams one identity (all replicas of a workload together) may hold open.
    #[arg(long, env = "WEFT_MAX_STREAMS_PER_IDENTITY", default_value_t = 256)]
    max_streams_per_identity: usize,
    /// The least time each step of a root rotation stands, so sidecars that were away are counted.
    #[arg(long, env = "WEFT_ROTATION_MIN_STEP", default_value = "30s", value_parser = weft_model::duration::parse)]
    rotation_min_step: std::time::Duration,
    /// Request-path normalization in every sidecar (Istio's MeshConfig `pathNormalization`):
    /// NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES.
    #[arg(long, env = "WEFT_PATH_NORMALIZATION", default_value = "BASE")]
    path_normalization: weft_model::PathNormalization,
    /// How often the key sets RequestAuthentications name by `jwksUri` are fetched
    /// again (istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL: 20m).
    #[arg(long, env = "WEFT_JWKS_REFRESH", default_value = "20m", value_parser = weft_model::duration::parse)]
    jwks_refresh: std::time::Duration,
    /// Serve the mesh dashboard (read-only, no login) on this loopback address,
    /// e.g. 127.0.0.1:15014. Any other address is refused.
    #[arg(long, env = "WEFT_DASHBOARD")]
    dashboard: Option<SocketAddr>,
    /// Prometheus's base URL, where the dashboard reads the sidecars' metrics.
    #[arg(long, env = "WEFT_PROMETHEUS")]
    prometheus: Option<String>,
    /// This instance's id in `weftctl status`; default cp-<pid>.
    #[arg(long, env = "WEFT_ID")]
    id: Option<String>,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime of workload certificates (Istio's default 24h; seconds for tests).
    #[arg(long, env = "WEFT_CERT_TTL", default_value = "24h", value_parser = weft_model::duration::parse)]
    cert_ttl: std::time::Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let args = Args::parse();
    let endpoints: Vec<String> = args.etcd.split(',').map(str::to_string).collect();
    let tls = match (&args.etcd_ca, &args.etcd_cert, &args.etcd_key) {
        (Some(ca), Some(cert), Some(key)) => Some(weft_etcd::EtcdTls::from_files(ca, cert, key)?),
        _ => None,
    };
    if let Some(addr) = args.dashboard {
        weft_control_plane::dashboard::check_address(addr).map_err(anyhow::Error::msg)?;
    }
    let store = Store::connect(&endpoints, &args.prefix, tls.as_ref()).await.context("connecting to etcd")?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let id = args.id.unwrap_or_else(|| format!("cp-{}", std::process::id()));
    let local = listener.local_addr()?;
    let ca = weft_control_plane::ca::Ca::from_dir(&args.ca_dir, &args.trust_domain).context("reading the mesh CA")?;
    let options = weft_control_plane::push::Options {
        trust_domain: args.trust_domain,
        cert_ttl: args.cert_ttl,
        token_audience: args.token_audience,
        trust_advertised_address: args.trust_advertised_address,
        max_streams_per_identity: args.max_streams_per_identity,
        rotation_min_step: args.rotation_min_step,
        path_normalization: args.path_normalization,
        jwks_refresh: args.jwks_refresh,
    };
    let _control_plane =
        weft_control_plane::push::start_with(store, id.clone(), listener, std::sync::Arc::new(ca), options)
            .await
            .context("starting")?;
    let _dashboard = match args.dashboard {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("dashboard: listening on {addr}"))?;
            tracing::info!("dashboard on http://{addr}/");
            let dashboard =
                weft_control_plane::dashboard::Dashboard::new(_control_plane.ctx.clone(), args.prometheus.clone());
            Some(AbortOnDrop(tokio::spawn(weft_control_plane::dashboard::serve(listener, dashboard))))
        }
        None => None,
    };
    tracing::info!(%id, listen = %local, "weft-control-plane serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// A task stopped when its handle goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
