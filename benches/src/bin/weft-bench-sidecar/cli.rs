//! The command line.

use crate::scenario::Kind;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_bench::{parse_duration, upstream};

/// Direct vs. through one or two sidecars: latency, CPU and memory of weft-proxy.
#[derive(Debug, Parser)]
#[command(name = "weft-bench-sidecar", version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) cmd: Option<Cmd>,
    /// Paths to measure, comma separated, interleaved in this order in each round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,sidecar,hyper-floor,httparse-floor,httparse-http-floor,pair-h1,pair-h2,mesh,haproxy-pair,nginx-pair,haproxy-tls-pair,nginx-tls-pair,ingress,haproxy-ingress,nginx-ingress"
    )]
    pub(crate) scenarios: Vec<Kind>,
    /// The weft-proxy binary to measure (the `sidecar` profile, as shipped).
    #[arg(long, default_value = "target/sidecar/weft-proxy")]
    pub(crate) proxy_bin: PathBuf,
    /// The floors under the sidecar (`hyper-floor`, `httparse-floor`, `httparse-http-floor`):
    /// hyper and tokio alone, or `httparse` and tokio alone, one hop.
    #[arg(long, default_value = "target/sidecar/weft-bench-floor")]
    pub(crate) floor_bin: PathBuf,
    /// HAProxy, for `haproxy-pair` (a name is looked up on PATH, then /usr/sbin).
    #[arg(long, default_value = "haproxy")]
    pub(crate) haproxy_bin: PathBuf,
    /// nginx, for `nginx-pair` (a name is looked up on PATH, then /usr/sbin).
    #[arg(long, default_value = "nginx")]
    pub(crate) nginx_bin: PathBuf,
    /// Constant rates to measure, requests per second, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub(crate) rates: Vec<f64>,
    /// Also measure the maximum rate: closed-loop over --max-connections.
    #[arg(long)]
    pub(crate) max: bool,
    /// Connections of the closed-loop --max scenario.
    #[arg(long, default_value_t = 16)]
    pub(crate) max_connections: usize,
    /// Count instructions instead of timing: every proxy runs under valgrind's callgrind;
    /// after a warm-up its counters are zeroed, closed-loop load runs for
    /// --callgrind-window, and the instructions each proxy executed are divided by the
    /// requests answered (`make bench-instructions`). Deterministic where time is not.
    #[arg(long)]
    pub(crate) callgrind: bool,
    /// The counted window under --callgrind.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) callgrind_window: Duration,
    /// An extra argument for every weft-proxy (repeatable), e.g. `--proxy-arg=--no-access-log`
    /// to measure an older build the same way.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) proxy_arg: Vec<String>,
    /// Keep-alive connections of the constant-rate scenarios.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub(crate) connections: usize,
    /// Measured window of each run.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Unrecorded load before each run (fills the proxy's upstream pool).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Interleaved rounds (one run of each scenario) per load.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Send HTTP/2 (h2c) from the load generator; `sidecar` and `pair-h1` still speak HTTP/1.1 upstream (Istio's default).
    #[arg(long)]
    pub(crate) http2: bool,
    /// Response body size of the app.
    #[arg(long, default_value_t = upstream::DEFAULT_BODY_BYTES)]
    pub(crate) body_bytes: usize,
    /// Worker threads of each proxy (its --workers).
    #[arg(long, default_value_t = 1)]
    pub(crate) proxy_workers: usize,
    /// Worker threads of the app.
    #[arg(long, default_value_t = 1)]
    pub(crate) app_workers: usize,
    /// Worker threads of the load generator (the pacer has its own thread).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// JSON results; each proxy's generated config and log (`NAME.yaml` / `.cfg` / `.conf`, `NAME.log`) go beside it.
    #[arg(long, default_value = "target/bench/sidecar.json")]
    pub(crate) out: PathBuf,
    /// PNG of the latency percentile curves; default `latency.png` beside --out.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// The constant rate whose latencies are plotted (else the first of --rates).
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) plot_rate: f64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Runs the app: prints `listening on ADDR`, serves until stdin closes.
    #[command(hide = true)]
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = upstream::DEFAULT_BODY_BYTES)]
        body_bytes: usize,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}
