//! `weft-load`: an open-loop HTTP load generator (wrk2's model). See [`weft_bench::load`].
//!
//! ```text
//! weft-load --url http://127.0.0.1:15001/ --header 'host: app' --rate 1000 --connections 8 --duration 10s
//! ```

use anyhow::Context;
use clap::Parser;
use http::header::{HeaderName, HeaderValue};
use std::path::PathBuf;
use std::time::Duration;
use weft_bench::load::{self, Options};
use weft_bench::parse_duration;

/// Open-loop HTTP load: constant rate, latency from the intended send time.
#[derive(Debug, Parser)]
#[command(name = "weft-load", version, about)]
struct Args {
    /// Target, e.g. http://127.0.0.1:15001/path (plain http; h2c with --http2).
    #[arg(long)]
    url: http::Uri,
    /// Requests per second over all connections; 0 sends as fast as possible (closed-loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Keep-alive connections the requests are spread over (with --http2 at rate 0: concurrent streams).
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    /// Measured window, e.g. 10s, 500ms, 1m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load sent first and not recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Extra header, `name: value`; repeatable. `host: x` sets Host (HTTP/1.1) or :authority (HTTP/2).
    #[arg(long = "header", short = 'H', value_parser = load::parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// HTTP/2 with prior knowledge (h2c), all requests multiplexed on one connection.
    #[arg(long)]
    http2: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Runtime worker threads (default: one per core). The pacer has its own thread.
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("starting the runtime")?;

    let mut opts = Options::new(args.url);
    opts.rate = args.rate.max(0.0);
    opts.connections = args.connections.max(1);
    opts.duration = args.duration;
    opts.warmup = args.warmup;
    opts.http2 = args.http2;
    opts.timeout = args.timeout;
    for (name, value) in args.headers {
        opts.headers.append(name, value);
    }

    let report = rt.block_on(load::run(&opts))?;
    print!("{}", report.table());
    if let Some(path) = args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
