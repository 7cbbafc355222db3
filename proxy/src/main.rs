//! `weft-proxy`: the sidecar binary. Reads a static ProxyConfig file, watches
//! it, serves until SIGTERM, then drains.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_proxy::{config, Proxy, ProxyOptions};

/// The Weft sidecar.
#[derive(Debug, Parser)]
#[command(name = "weft-proxy", version, about)]
struct Args {
    /// ProxyConfig file (YAML, or JSON when it ends in .json); watched for changes.
    #[arg(long, env = "WEFT_CONFIG")]
    config: PathBuf,
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
    /// Turn the JSON access log on stdout off.
    #[arg(long, env = "WEFT_NO_ACCESS_LOG")]
    no_access_log: bool,
    /// Worker threads (default: one per core).
    #[arg(long, env = "WEFT_WORKERS")]
    workers: Option<usize>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_model::duration::parse(s)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build().context("starting the runtime")?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (cfg, bytes) = config::read(&args.config)?;
    let options = ProxyOptions {
        outbound: args.outbound,
        inbound: args.inbound,
        admin: args.admin,
        app: args.app,
        drain_timeout: args.drain_timeout,
        access_log: !args.no_access_log,
    };
    let running = Proxy::start(options, cfg, prometheus::Registry::new())
        .await
        .with_context(|| format!("starting from {}", args.config.display()))?;
    tokio::spawn(config::watch(args.config.clone(), running.shared.clone(), bytes, args.watch_interval));

    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: draining for up to {:?}", args.drain_timeout);
    running.shutdown().await;
    tracing::info!("drained, bye");
    Ok(())
}
