//! `weft-bench-sidecar`: what the sidecar adds, measured the way Istio's
//! performance benchmark does: the same open-loop load over several paths to
//! an app, rounds interleaved (A B C D A B C D ...) so drift hits all alike,
//! and the added latency taken as a path's percentile minus the direct one.
//!
//! Scenarios (`--scenarios`, default all):
//! - `direct`: load → app.
//! - `sidecar`: load → weft-proxy outbound → app.
//! - `pair-h1`: load → client weft-proxy (outbound, cluster `protocol: HTTP1`)
//!   → server weft-proxy (inbound, `--app`) → app. Plaintext.
//! - `pair-h2`: the same with the client's cluster `protocol: HTTP2` (Istio's
//!   h2UpgradePolicy UPGRADE): HTTP/2 between the sidecars, HTTP/1.1 to the app.
//! - `mesh`: the Weft mesh path: `pair-h2` with mutual TLS between the sidecars
//!   (SPIFFE certificates from a mesh CA made for the run, STRICT on the server
//!   sidecar, the client checking the server's identity).
//! - `haproxy-pair`: load → HAProxy → HAProxy → app, the same two-hop shape
//!   through Debian's HAProxy (HTTP mode, one thread, keep-alive both sides).
//! - `nginx-pair`: the same through Debian's nginx (one worker process,
//!   `proxy_http_version 1.1`, upstream keepalive).
//! - `haproxy-tls-pair` / `nginx-tls-pair`: the mesh path's shape for them:
//!   mutual TLS 1.3 between the two hops (certificates from the same bench CA,
//!   client certificate required and verified), HTTP/1.1 inside.
//!
//! Each scenario has its own proxies, started once. The app and the proxies run
//! as child processes, so each proxy's peak RSS and CPU time are its own; the
//! load generator runs in this process. Children are killed when this process
//! ends, also on Ctrl-C and SIGTERM; the app also exits when its stdin (a pipe
//! from this process) closes.
//!
//! ```text
//! cargo build --release -p weft-proxy -p weft-bench
//! target/release/weft-bench-sidecar --rates 200,1000,2000 --max --duration 10s --rounds 3
//! target/release/weft-bench-sidecar --scenarios direct,pair-h2 --rates 1000
//! ```
//!
//! HAProxy and nginx are run in the foreground on configs generated beside
//! `--out` (never the system services); `make bench` installs them when missing.
//! A PNG of the latency percentile curves at one rate goes to `--plot`.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http::header::{HeaderValue, HOST};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_bench::contestants::{self, Software};
use weft_bench::load::{self, Percentiles, Report};
use weft_bench::{parse_duration, plot, process, upstream};
use weft_model as model;

/// The service the bench routes to; `Host: app` reaches it from namespace `bench`.
const SERVICE: &str = "app.bench.svc.cluster.local";
const HOST_HEADER: &str = "app";
/// How long the proxy may take to answer `/ready` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Direct vs. through one or two sidecars: latency, CPU and memory of weft-proxy.
#[derive(Debug, Parser)]
#[command(name = "weft-bench-sidecar", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Paths to measure, comma separated, interleaved in this order in each round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,sidecar,pair-h1,pair-h2,mesh,haproxy-pair,nginx-pair,haproxy-tls-pair,nginx-tls-pair"
    )]
    scenarios: Vec<Kind>,
    /// The weft-proxy binary to measure.
    #[arg(long, default_value = "target/release/weft-proxy")]
    proxy_bin: PathBuf,
    /// HAProxy, for `haproxy-pair` (a name is looked up on PATH, then /usr/sbin).
    #[arg(long, default_value = "haproxy")]
    haproxy_bin: PathBuf,
    /// nginx, for `nginx-pair` (a name is looked up on PATH, then /usr/sbin).
    #[arg(long, default_value = "nginx")]
    nginx_bin: PathBuf,
    /// Constant rates to measure, requests per second, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    rates: Vec<f64>,
    /// Also measure the maximum rate: closed-loop over --max-connections.
    #[arg(long)]
    max: bool,
    /// Connections of the closed-loop --max scenario.
    #[arg(long, default_value_t = 16)]
    max_connections: usize,
    /// Keep-alive connections of the constant-rate scenarios.
    #[arg(long, short = 'c', default_value_t = 8)]
    connections: usize,
    /// Measured window of each run.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unrecorded load before each run (fills the proxy's upstream pool).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Interleaved rounds (one run of each scenario) per load.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Send HTTP/2 (h2c) from the load generator; `sidecar` and `pair-h1` still speak HTTP/1.1 upstream (Istio's default).
    #[arg(long)]
    http2: bool,
    /// Response body size of the app.
    #[arg(long, default_value_t = upstream::DEFAULT_BODY_BYTES)]
    body_bytes: usize,
    /// Worker threads of each proxy (its --workers).
    #[arg(long, default_value_t = 1)]
    proxy_workers: usize,
    /// Worker threads of the app.
    #[arg(long, default_value_t = 1)]
    app_workers: usize,
    /// Worker threads of the load generator (the pacer has its own thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// JSON results; each proxy's generated config and log (`NAME.yaml` / `.cfg` / `.conf`, `NAME.log`) go beside it.
    #[arg(long, default_value = "target/bench/sidecar.json")]
    out: PathBuf,
    /// PNG of the latency percentile curves; default `latency.png` beside --out.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The constant rate whose latencies are plotted (else the first of --rates).
    #[arg(long, default_value_t = 1000.0)]
    plot_rate: f64,
}

/// A path from the load generator to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Direct,
    Sidecar,
    PairH1,
    PairH2,
    Mesh,
    HaproxyPair,
    NginxPair,
    HaproxyTlsPair,
    NginxTlsPair,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Sidecar => "sidecar",
            Kind::PairH1 => "pair-h1",
            Kind::PairH2 => "pair-h2",
            Kind::Mesh => "mesh",
            Kind::HaproxyPair => "haproxy-pair",
            Kind::NginxPair => "nginx-pair",
            Kind::HaproxyTlsPair => "haproxy-tls-pair",
            Kind::NginxTlsPair => "nginx-tls-pair",
        }
    }

    /// The proxy program of a contestant's pair; `None` for weft-proxy's scenarios.
    fn contestant(self) -> Option<Software> {
        match self {
            Kind::HaproxyPair | Kind::HaproxyTlsPair => Some(Software::Haproxy),
            Kind::NginxPair | Kind::NginxTlsPair => Some(Software::Nginx),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Upstream { listen, body_bytes, workers }) = args.cmd {
        return run_upstream(listen, body_bytes, workers);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
        // Dropping `bench` on a signal drops its child guards, which kill the children.
        tokio::select! {
            result = bench(&args) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

fn run_upstream(listen: SocketAddr, body_bytes: usize, workers: usize) -> anyhow::Result<()> {
    // The parent holds our stdin; when it goes away, however it died, so do we.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers.max(1)).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        println!("listening on {}", listener.local_addr()?);
        upstream::serve(listener, body_bytes).await;
        Ok(())
    })
}

/// A child process that is killed when this guard is dropped.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ensure_running(&mut self, log: Option<&Path>) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}{}", self.name, log.map(log_tail).unwrap_or_default());
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("; last lines of {}:\n{}", path.display(), lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// Ports a proxy binds, found by binding port 0. All three are held until
/// each is known, so they differ; another process could still take one in the
/// moment before the proxy binds it.
fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let listeners = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let addrs = listeners.iter().map(TcpListener::local_addr).collect::<Result<Vec<_>, _>>()?;
    Ok(addrs.try_into().expect("N listeners give N addresses"))
}

fn start_upstream(args: &Args) -> anyhow::Result<(Guard, SocketAddr)> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let child = Command::new(exe)
        .args(["upstream", "--listen", "127.0.0.1:0"])
        .args(["--body-bytes", &args.body_bytes.to_string(), "--workers", &args.app_workers.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the app")?;
    let mut guard = Guard { name: "app", child };
    let stdout = guard.child.stdout.take().context("app stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("reading the app's address")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("app said {line:?} instead of its address"))?;
    Ok((guard, addr))
}

/// A client sidecar's config: one service, `app`, one route, one cluster whose
/// one endpoint is `endpoint` (the app itself, or a server sidecar's inbound
/// listener), spoken to in `protocol` (`HTTP1` or `HTTP2`).
/// Written as the YAML a person would write (see `proxy/examples/canary.yaml`),
/// so fields the schema gains later keep their defaults; it is parsed and
/// validated here, so a schema change that breaks it fails before the proxy starts.
fn client_config(endpoint: SocketAddr, protocol: &str) -> anyhow::Result<String> {
    client_config_with(endpoint, protocol, "")
}

/// The mesh path's client: the cluster speaks mTLS and accepts only the server's identity.
fn mesh_client_config(endpoint: SocketAddr) -> anyhow::Result<String> {
    client_config_with(endpoint, "HTTP2", &format!("    tls:\n      identities: [\"{}\"]\n", mesh_id("server")))
}

fn mesh_id(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/bench/sa/{sa}")
}

fn client_config_with(endpoint: SocketAddr, protocol: &str, tls: &str) -> anyhow::Result<String> {
    let yaml = format!(
        r#"# Generated by weft-bench-sidecar: Host `{HOST_HEADER}` -> {endpoint} over {protocol}.
apiVersion: {api}
version: bench
workload:
  name: bench-client
  namespace: bench
  labels: {{ app: bench-client, version: v1 }}
services:
  {SERVICE}:
    routes:
      - name: default
        route:
          - cluster: outbound|80||{SERVICE}
clusters:
  outbound|80||{SERVICE}:
    service: {SERVICE}
    protocol: {protocol}
    endpoints:
      - address: {endpoint}
        labels: {{ app: app, version: v1 }}
{tls}"#,
        api = model::API_VERSION
    );
    checked(yaml)
}

/// A server sidecar's config: no outbound services; its inbound listener
/// delivers to the app over HTTP/1.1 (the app is also passed as `--app`).
fn server_config_with(app: SocketAddr, mtls: &str) -> anyhow::Result<String> {
    let yaml = format!(
        r#"# Generated by weft-bench-sidecar: inbound -> the bench app at {app} over HTTP1.
apiVersion: {api}
version: bench
workload:
  name: app
  namespace: bench
  labels: {{ app: app, version: v1 }}
inbound:
  app: "{app}"
  protocol: HTTP1
  mtls: {mtls}
"#,
        api = model::API_VERSION
    );
    checked(yaml)
}

fn checked(yaml: String) -> anyhow::Result<String> {
    let parsed: model::ProxyConfig =
        serde_yaml::from_str(&yaml).context("the generated proxy config does not parse")?;
    parsed.validate().context("the generated proxy config is invalid")?;
    Ok(yaml)
}

/// One proxy child: a weft-proxy, or a contestant's HAProxy or nginx.
struct Proxy {
    /// `sidecar`, `pair-h1-client`, `pair-h1-server`, ...: also the stem of its config and log files.
    name: String,
    scenario: Kind,
    /// `weft-proxy`, `haproxy` or `nginx`.
    software: &'static str,
    /// The program's version as it reports it, for the record.
    version: Option<String>,
    /// `client` (the load enters its outbound listener) or `server` (inbound, in front of the app).
    role: &'static str,
    /// What it speaks upstream: to its cluster (client) or to the app (server).
    upstream_protocol: &'static str,
    guard: Guard,
    /// Where a client receives the load (a contestant's one listener is both).
    outbound: SocketAddr,
    /// Where a server receives the client's hop.
    inbound: SocketAddr,
    /// weft-proxy's admin listener; contestants have none here.
    admin: Option<SocketAddr>,
    log: PathBuf,
}

impl Proxy {
    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.guard.ensure_running(Some(&self.log))
    }
}

struct ProxySpec<'a> {
    name: String,
    scenario: Kind,
    role: &'static str,
    upstream_protocol: &'static str,
    config: String,
    app: Option<SocketAddr>,
    ports: [SocketAddr; 3],
    dir: &'a Path,
    /// The mesh path's certificate: (certificate, key, root) files.
    identity: Option<[PathBuf; 3]>,
}

async fn start_proxy(args: &Args, spec: ProxySpec<'_>) -> anyhow::Result<Proxy> {
    if !args.proxy_bin.is_file() {
        bail!(
            "no proxy binary at {}: run `cargo build --release -p weft-proxy` or pass --proxy-bin",
            args.proxy_bin.display()
        );
    }
    let config_path = spec.dir.join(format!("{}.yaml", spec.name));
    std::fs::write(&config_path, &spec.config).with_context(|| format!("writing {}", config_path.display()))?;
    let log = spec.dir.join(format!("{}.log", spec.name));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let [outbound, inbound, admin] = spec.ports;
    let mut cmd = Command::new(&args.proxy_bin);
    cmd.arg("--config")
        .arg(&config_path)
        .args(["--outbound", &outbound.to_string(), "--inbound", &inbound.to_string(), "--admin", &admin.to_string()])
        .args(["--no-access-log", "--workers", &args.proxy_workers.to_string()]);
    if let Some(app) = spec.app {
        cmd.args(["--app", &app.to_string()]);
    }
    if let Some([cert, key, root]) = &spec.identity {
        cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key).arg("--root-file").arg(root);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", args.proxy_bin.display()))?;
    let mut proxy = Proxy {
        name: spec.name,
        scenario: spec.scenario,
        software: "weft-proxy",
        version: None,
        role: spec.role,
        upstream_protocol: spec.upstream_protocol,
        guard: Guard { name: "weft-proxy", child },
        outbound,
        inbound,
        admin: Some(admin),
        log,
    };

    let started = Instant::now();
    loop {
        proxy.ensure_running()?;
        if matches!(get(admin, "localhost", "/ready").await, Ok((200, _))) {
            return Ok(proxy);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{} not ready after {READY_TIMEOUT:?}{}", proxy.name, log_tail(&proxy.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One hop of a contestant's pair: `bin` (HAProxy or nginx) in the foreground,
/// listening on a free port, forwarding to `upstream`. Its config and log go to
/// `dir`; nginx's pid and temp files to `run_dir`. Ready once a request through it
/// (and so through what is behind it) answers 200.
#[allow(clippy::too_many_arguments)]
async fn start_contestant(
    software: Software,
    bin: &Path,
    name: String,
    scenario: Kind,
    role: &'static str,
    upstream: SocketAddr,
    dir: &Path,
    run_dir: &Path,
    tls: Option<(&contestants::HopTls, contestants::TlsSide)>,
) -> anyhow::Result<Proxy> {
    let [listen] = free_ports()?;
    let ext = if software == Software::Haproxy { "cfg" } else { "conf" };
    let config_path = dir.join(format!("{name}.{ext}"));
    std::fs::write(&config_path, software.config_tls(listen, upstream, run_dir, tls))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = software
        .command(bin, &config_path, run_dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut proxy = Proxy {
        name,
        scenario,
        software: software.name(),
        version: software.version(bin),
        role,
        upstream_protocol: "HTTP1",
        guard: Guard { name: software.name(), child },
        outbound: listen,
        inbound: listen,
        admin: None,
        log,
    };
    let started = Instant::now();
    // A TLS listener cannot answer the plain probe: a TCP connect says it is up.
    let tls_listener = matches!(tls, Some((_, contestants::TlsSide::Listen)));
    loop {
        proxy.ensure_running()?;
        let ready = if tls_listener {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        } else {
            matches!(get(listen, HOST_HEADER, "/").await, Ok((200, _)))
        };
        if ready {
            return Ok(proxy);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{} not ready after {READY_TIMEOUT:?}{}", proxy.name, log_tail(&proxy.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a contestant's program is, or why it cannot run.
fn contestant_bin(args: &Args, software: Software) -> anyhow::Result<PathBuf> {
    let wanted = match software {
        Software::Haproxy => &args.haproxy_bin,
        Software::Nginx => &args.nginx_bin,
    };
    contestants::find_bin(wanted).with_context(|| {
        format!(
            "{} not found (Debian package {}): `make bench` installs it, or `apt-get install {}`, \
             or pass --{}-bin, or leave {}-pair out of --scenarios",
            wanted.display(),
            software.package(),
            software.package(),
            software.name(),
            software.name()
        )
    })
}

/// A directory removed when dropped: nginx's pid and temp files.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One GET over a fresh HTTP/1.1 connection: status and body length.
async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, usize)> {
    let (status, body) = get_body(addr, host, path).await?;
    Ok((status, body.len()))
}

/// One GET over a fresh HTTP/1.1 connection: status and body.
async fn get_body(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path).header(HOST, host).body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// Upstream connections the proxy has opened since it started (all its
/// clusters' endpoints, the inbound app included), from its admin `/clusters`.
/// One per endpoint shows HTTP/2 multiplexing; HTTP/1.1 opens one per concurrent request.
async fn connections_opened(proxy: &Proxy) -> Option<u64> {
    let (status, body) = get_body(proxy.admin?, "localhost", "/clusters").await.ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let clusters = v.get("clusters")?.as_array()?;
    let mut total = 0;
    for c in clusters {
        for e in c.get("endpoints")?.as_array()? {
            total += e.get("connections_opened")?.as_u64()?;
        }
    }
    Some(total)
}

/// One scenario: a constant rate, or closed-loop at full speed.
#[derive(Debug, Clone, Copy)]
enum Load {
    Rate(f64),
    Max,
}

impl Load {
    fn label(self, args: &Args) -> String {
        match self {
            Load::Rate(r) => format!("{r} rps"),
            Load::Max => format!("max ({} conn)", args.max_connections),
        }
    }
}

/// A path through which the load reaches the app, and the proxies on it.
struct ScenarioPath {
    kind: Kind,
    /// Where the load generator sends.
    entry: SocketAddr,
    /// Indices into the proxy list, client first.
    proxies: Vec<usize>,
}

/// One measured run of one scenario in one round.
#[derive(Debug, Serialize)]
struct Run {
    scenario: Kind,
    report: Report,
    /// CPU seconds of each proxy on the path over the measured window, by proxy name.
    proxy_cpu_s: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
struct Round {
    runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
struct ProxyCost {
    proxy: String,
    role: &'static str,
    /// Peak RSS over this load (or since start, see `peak_rss_scope`), KiB.
    peak_rss_kib: u64,
    /// `load` when the peak could be reset before it, `process` otherwise.
    peak_rss_scope: &'static str,
    /// utime + stime over the measured runs of its scenario.
    cpu_s: f64,
    /// CPU seconds per 1000 requests through the proxy.
    cpu_s_per_1k_requests: f64,
    /// Average cores busy during the measured runs.
    cpu_cores: f64,
    /// Upstream connections opened since the proxy started (cumulative, read after this load).
    upstream_connections_opened: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Added {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

impl Added {
    /// Istio's method: percentile through the sidecar(s) minus the same percentile direct.
    fn of(direct: &Percentiles, sidecar: &Percentiles) -> Self {
        Added {
            p50: sidecar.p50 - direct.p50,
            p90: sidecar.p90 - direct.p90,
            p99: sidecar.p99 - direct.p99,
            p999: sidecar.p999 - direct.p999,
        }
    }
}

#[derive(Debug, Serialize)]
struct ScenarioResult {
    scenario: Kind,
    /// All rounds merged.
    report: Report,
    /// Over `direct` of the same load; absent for `direct` itself or when it was not measured.
    added_latency_ms: Option<Added>,
    /// The proxies on the path, client first.
    proxies: Vec<ProxyCost>,
}

#[derive(Debug, Serialize)]
struct LoadResult {
    load: String,
    target_rps: Option<f64>,
    connections: usize,
    scenarios: Vec<ScenarioResult>,
    rounds: Vec<Round>,
}

#[derive(Debug, Serialize)]
struct ProxyInfo {
    name: String,
    scenario: Kind,
    software: &'static str,
    version: Option<String>,
    role: &'static str,
    upstream_protocol: &'static str,
    pid: u32,
    outbound: String,
    inbound: String,
    idle_rss_kib: u64,
}

#[derive(Debug, Serialize)]
struct Setup {
    proxy_bin: String,
    /// What the load generator speaks.
    protocol: &'static str,
    scenarios: Vec<Kind>,
    duration_s: f64,
    warmup_s: f64,
    rounds: usize,
    connections: usize,
    max_connections: usize,
    body_bytes: usize,
    proxy_workers: usize,
    app_workers: usize,
    load_threads: usize,
    cpus: usize,
}

#[derive(Debug, Serialize)]
struct Results {
    setup: Setup,
    proxies: Vec<ProxyInfo>,
    loads: Vec<LoadResult>,
    plot: Option<PlotInfo>,
}

/// The PNG of latency percentile curves at one load.
#[derive(Debug, Serialize)]
struct PlotInfo {
    path: String,
    load: String,
    /// Scenario and its line's colour, in drawing order.
    legend: Vec<(Kind, &'static str)>,
    /// Whether a font was found, so the PNG carries its own title, axes and legend.
    labelled: bool,
}

/// Plots the latencies of the load at `--plot-rate` (else the first constant
/// rate) to `--plot` (else `latency.png` beside `--out`).
fn draw_plot(args: &Args, loads: &[LoadResult]) -> anyhow::Result<Option<PlotInfo>> {
    let rated = || loads.iter().filter(|l| l.target_rps.is_some());
    let Some(load) = rated().find(|l| l.target_rps == Some(args.plot_rate)).or_else(|| rated().next()) else {
        return Ok(None);
    };
    let path = args.plot.clone().unwrap_or_else(|| args.out.with_file_name("latency.png"));
    if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let series: Vec<plot::Series<'_>> = load
        .scenarios
        .iter()
        .map(|sc| plot::Series { name: sc.scenario.name(), histogram: &sc.report.histogram })
        .collect();
    let title = format!(
        "Latency by percentile at {}, {} round(s) merged ({} B responses, loopback, open-loop)",
        load.load,
        load.rounds.len(),
        args.body_bytes
    );
    let labelled =
        plot::latency_percentiles(&path, &title, &series).with_context(|| format!("plotting {}", path.display()))?;
    let legend = load
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, sc)| (sc.scenario, plot::COLORS[i % plot::COLORS.len()].0))
        .collect();
    Ok(Some(PlotInfo { path: path.display().to_string(), load: load.load.clone(), legend, labelled }))
}

/// Starts the proxies the selected scenarios need, each pair's server first
/// (its client's cluster points at its inbound listener).
async fn start_proxies(
    args: &Args,
    kinds: &[Kind],
    app: SocketAddr,
    dir: &Path,
    run_dir: &Path,
) -> anyhow::Result<(Vec<Proxy>, Vec<ScenarioPath>)> {
    let mut proxies = Vec::new();
    let mut paths = Vec::new();
    for &kind in kinds {
        let entry_and_proxies = match kind {
            Kind::Direct => (app, vec![]),
            Kind::Sidecar => {
                let spec = ProxySpec {
                    name: "sidecar".into(),
                    scenario: kind,
                    role: "client",
                    upstream_protocol: "HTTP1",
                    config: client_config(app, "HTTP1")?,
                    app: None,
                    ports: free_ports()?,
                    dir,
                    identity: None,
                };
                proxies.push(start_proxy(args, spec).await?);
                (proxies[proxies.len() - 1].outbound, vec![proxies.len() - 1])
            }
            Kind::PairH1 | Kind::PairH2 | Kind::Mesh => {
                let protocol = if kind == Kind::PairH1 { "HTTP1" } else { "HTTP2" };
                // The mesh path: the same pair, with mutual TLS and STRICT on the server.
                let mesh = kind == Kind::Mesh;
                let server = ProxySpec {
                    name: format!("{}-server", kind.name()),
                    scenario: kind,
                    role: "server",
                    upstream_protocol: "HTTP1",
                    config: server_config_with(app, if mesh { "STRICT" } else { "PERMISSIVE" })?,
                    app: Some(app),
                    ports: free_ports()?,
                    dir,
                    identity: if mesh { Some(mesh_certificate(dir, "server")?) } else { None },
                };
                proxies.push(start_proxy(args, server).await?);
                let server_inbound = proxies[proxies.len() - 1].inbound;
                let client = ProxySpec {
                    name: format!("{}-client", kind.name()),
                    scenario: kind,
                    role: "client",
                    upstream_protocol: protocol,
                    config: if mesh {
                        mesh_client_config(server_inbound)?
                    } else {
                        client_config(server_inbound, protocol)?
                    },
                    app: None,
                    ports: free_ports()?,
                    dir,
                    identity: if mesh { Some(mesh_certificate(dir, "client")?) } else { None },
                };
                proxies.push(start_proxy(args, client).await?);
                let n = proxies.len();
                (proxies[n - 1].outbound, vec![n - 1, n - 2])
            }
            Kind::HaproxyPair | Kind::NginxPair | Kind::HaproxyTlsPair | Kind::NginxTlsPair => {
                let software = kind.contestant().expect("a contestant's scenario");
                let bin = contestant_bin(args, software)?;
                let tls = matches!(kind, Kind::HaproxyTlsPair | Kind::NginxTlsPair);
                let server_tls = if tls { Some(contestant_tls(dir, "server")?) } else { None };
                let client_tls = if tls { Some(contestant_tls(dir, "client")?) } else { None };
                let server = start_contestant(
                    software,
                    &bin,
                    format!("{}-server", kind.name()),
                    kind,
                    "server",
                    app,
                    dir,
                    run_dir,
                    server_tls.as_ref().map(|t| (t, contestants::TlsSide::Listen)),
                )
                .await?;
                let server_listen = server.inbound;
                proxies.push(server);
                let client = start_contestant(
                    software,
                    &bin,
                    format!("{}-client", kind.name()),
                    kind,
                    "client",
                    server_listen,
                    dir,
                    run_dir,
                    client_tls.as_ref().map(|t| (t, contestants::TlsSide::Upstream)),
                )
                .await?;
                proxies.push(client);
                let n = proxies.len();
                (proxies[n - 1].outbound, vec![n - 1, n - 2])
            }
        };
        paths.push(ScenarioPath { kind, entry: entry_and_proxies.0, proxies: entry_and_proxies.1 });
    }
    Ok((proxies, paths))
}

/// A contestant hop's certificate from the same bench CA, with the DNS name `app`
/// (what nginx's `proxy_ssl_name` checks), plus the key+certificate file HAProxy wants.
fn contestant_tls(dir: &Path, role: &str) -> anyhow::Result<contestants::HopTls> {
    let [cert, key, root] = issue_certificate(dir, &format!("contestant-{role}"), &["app"])?;
    let combined = dir.join(format!("mesh-contestant-{role}.all.pem"));
    std::fs::write(&combined, std::fs::read_to_string(&cert)? + &std::fs::read_to_string(&key)?)?;
    Ok(contestants::HopTls { cert, key, combined, root })
}

/// A workload certificate for `spiffe://cluster.local/ns/bench/sa/<sa>` from a mesh CA
/// kept in `dir` (made on first use), as the control plane's CA would issue it.
fn mesh_certificate(dir: &Path, sa: &str) -> anyhow::Result<[PathBuf; 3]> {
    issue_certificate(dir, sa, &[])
}

fn issue_certificate(dir: &Path, sa: &str, dns: &[&str]) -> anyhow::Result<[PathBuf; 3]> {
    use weft_control_plane::ca::{Ca, CaParts};
    let parts_file = dir.join("mesh-ca.json");
    let parts: CaParts = match std::fs::read(&parts_file) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(_) => {
            let parts = CaParts::generate("cluster.local").map_err(|e| anyhow::anyhow!("{e}"))?;
            std::fs::write(&parts_file, serde_json::to_vec(&parts)?)?;
            parts
        }
    };
    let ca = Ca::from_parts(&parts, "cluster.local").map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?.pem()?;
    let cert =
        ca.sign_with_dns(&csr, "bench", sa, Duration::from_secs(86_400), dns).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files = [dir.join(format!("mesh-{sa}.pem")), dir.join(format!("mesh-{sa}.key")), dir.join("mesh-root.pem")];
    std::fs::write(&files[0], cert)?;
    std::fs::write(&files[1], key.serialize_pem())?;
    std::fs::write(&files[2], ca.root_pem())?;
    Ok(files)
}

fn tails(proxies: &[Proxy], on_path: &[usize]) -> String {
    on_path.iter().map(|&i| log_tail(&proxies[i].log)).collect()
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    if args.proxy_bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!("warning: {} looks like a debug build; numbers will not mean much", args.proxy_bin.display());
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for k in &args.scenarios {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    if kinds.is_empty() {
        bail!("--scenarios is empty");
    }
    let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Absolute: nginx resolves a config's relative paths against its prefix.
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    for k in &kinds {
        if let Some(software) = k.contestant() {
            contestant_bin(args, software)?;
        }
    }
    let run_dir = RunDir(std::env::temp_dir().join(format!("weft-bench-sidecar-{}", std::process::id())));
    std::fs::create_dir_all(&run_dir.0).with_context(|| format!("creating {}", run_dir.0.display()))?;

    let (mut app_guard, app) = start_upstream(args)?;
    let (mut proxies, paths) = start_proxies(args, &kinds, app, &dir, &run_dir.0).await?;

    // Every path must answer the same before their numbers can be compared.
    for path in &paths {
        match get(path.entry, HOST_HEADER, "/").await {
            Ok((200, n)) if n == args.body_bytes => {}
            other => bail!(
                "{} probe: expected 200 with {} bytes, got {other:?}{}",
                path.kind.name(),
                args.body_bytes,
                tails(&proxies, &path.proxies)
            ),
        }
    }
    let mut infos = Vec::new();
    eprintln!("app on {app}");
    for p in &proxies {
        let (idle_rss_kib, _) = process::rss_kib(p.pid()).with_context(|| format!("reading {}'s RSS", p.name))?;
        let listens = if p.admin.is_some() {
            format!("outbound {}, inbound {}", p.outbound, p.inbound)
        } else {
            format!("listening on {}", p.outbound)
        };
        eprintln!(
            "{} ({} pid {}, {} -> {}): {listens}, idle RSS {idle_rss_kib} KiB",
            p.name,
            p.software,
            p.pid(),
            p.role,
            p.upstream_protocol,
        );
        infos.push(ProxyInfo {
            name: p.name.clone(),
            scenario: p.scenario,
            software: p.software,
            version: p.version.clone(),
            role: p.role,
            upstream_protocol: p.upstream_protocol,
            pid: p.pid(),
            outbound: p.outbound.to_string(),
            inbound: p.inbound.to_string(),
            idle_rss_kib,
        });
    }

    let mut loads: Vec<Load> = args.rates.iter().filter(|r| **r > 0.0).map(|r| Load::Rate(*r)).collect();
    if args.max {
        loads.push(Load::Max);
    }
    let mut results = Vec::new();
    for load in loads {
        let scopes: Vec<&'static str> =
            proxies.iter().map(|p| if process::reset_peak_rss(p.pid()).is_ok() { "load" } else { "process" }).collect();
        let mut rounds = Vec::new();
        for round in 1..=args.rounds.max(1) {
            let mut runs = Vec::new();
            for path in &paths {
                eprintln!("{}: round {round}/{} {}", load.label(args), args.rounds.max(1), path.kind.name());
                warm(args, load, path.entry).await?;
                let before = path
                    .proxies
                    .iter()
                    .map(|&i| process::cpu_seconds(proxies[i].pid()))
                    .collect::<Result<Vec<_>, _>>()?;
                let report = run_load(args, load, path.entry, args.duration).await?;
                let mut proxy_cpu_s = BTreeMap::new();
                for (&i, b) in path.proxies.iter().zip(before) {
                    proxy_cpu_s.insert(proxies[i].name.clone(), process::cpu_seconds(proxies[i].pid())? - b);
                }
                app_guard.ensure_running(None)?;
                for &i in &path.proxies {
                    proxies[i].ensure_running()?;
                }
                runs.push(Run { scenario: path.kind, report, proxy_cpu_s });
            }
            rounds.push(Round { runs });
        }
        let mut peaks = Vec::new();
        for p in &proxies {
            peaks.push((process::rss_kib(p.pid())?.1, connections_opened(p).await));
        }
        results.push(summarize(args, load, rounds, &paths, &proxies, &peaks, &scopes));
    }

    let plot = draw_plot(args, &results)?;
    if let Some(p) = &plot {
        eprintln!("wrote {}", p.path);
    }
    let results = Results {
        setup: Setup {
            proxy_bin: args.proxy_bin.display().to_string(),
            protocol: if args.http2 { "http2" } else { "http1" },
            scenarios: kinds,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            rounds: args.rounds.max(1),
            connections: args.connections,
            max_connections: args.max_connections,
            body_bytes: args.body_bytes,
            proxy_workers: args.proxy_workers,
            app_workers: args.app_workers,
            load_threads: args.threads,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        proxies: infos,
        loads: results,
        plot,
    };
    print!("{}", markdown(&results));
    std::fs::write(&args.out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

async fn warm(args: &Args, load: Load, addr: SocketAddr) -> anyhow::Result<()> {
    if !args.warmup.is_zero() {
        run_load(args, load, addr, args.warmup).await?;
    }
    Ok(())
}

async fn run_load(args: &Args, load: Load, addr: SocketAddr, duration: Duration) -> anyhow::Result<Report> {
    let mut opts = load::Options::new(format!("http://{addr}/").parse()?);
    opts.duration = duration;
    opts.http2 = args.http2;
    opts.headers.insert(HOST, HeaderValue::from_static(HOST_HEADER));
    match load {
        Load::Rate(r) => {
            opts.rate = r;
            opts.connections = args.connections;
        }
        Load::Max => opts.connections = args.max_connections,
    }
    Ok(load::run(&opts).await?)
}

/// Merges each scenario's rounds; `peaks[i]` (peak RSS, connections opened)
/// and `scopes[i]` belong to `proxies[i]`.
fn summarize(
    args: &Args,
    load: Load,
    rounds: Vec<Round>,
    paths: &[ScenarioPath],
    proxies: &[Proxy],
    peaks: &[(u64, Option<u64>)],
    scopes: &[&'static str],
) -> LoadResult {
    let mut scenarios: Vec<ScenarioResult> = Vec::new();
    for (k, path) in paths.iter().enumerate() {
        let mut report = rounds[0].runs[k].report.clone();
        for r in &rounds[1..] {
            report.merge(&r.runs[k].report);
        }
        let through = report.requests + report.transport_errors.values().sum::<u64>();
        let costs = path
            .proxies
            .iter()
            .map(|&i| {
                let p = &proxies[i];
                let cpu_s: f64 = rounds.iter().filter_map(|r| r.runs[k].proxy_cpu_s.get(&p.name)).sum();
                ProxyCost {
                    proxy: p.name.clone(),
                    role: p.role,
                    peak_rss_kib: peaks[i].0,
                    peak_rss_scope: scopes[i],
                    cpu_s,
                    cpu_s_per_1k_requests: if through > 0 { cpu_s * 1000.0 / through as f64 } else { 0.0 },
                    cpu_cores: if report.elapsed_s > 0.0 { cpu_s / report.elapsed_s } else { 0.0 },
                    upstream_connections_opened: peaks[i].1,
                }
            })
            .collect();
        scenarios.push(ScenarioResult { scenario: path.kind, report, added_latency_ms: None, proxies: costs });
    }
    if let Some(d) = scenarios.iter().position(|s| s.scenario == Kind::Direct) {
        let direct = scenarios[d].report.latency_ms;
        for s in scenarios.iter_mut().filter(|s| s.scenario != Kind::Direct) {
            s.added_latency_ms = Some(Added::of(&direct, &s.report.latency_ms));
        }
    }
    LoadResult {
        load: load.label(args),
        target_rps: match load {
            Load::Rate(r) => Some(r),
            Load::Max => None,
        },
        connections: scenarios[0].report.connections,
        scenarios,
        rounds,
    }
}

fn markdown(r: &Results) -> String {
    use std::fmt::Write;
    let s = &r.setup;
    let mut out = String::new();
    let names: Vec<&str> = s.scenarios.iter().map(|k| k.name()).collect();
    let _ = writeln!(
        out,
        "\n## Sidecar data plane: {} ({} from the load generator, {} x {:.0}s rounds interleaved, {} B responses, one worker per proxy (weft-proxy --workers {}), {} CPUs)\n",
        names.join(" / "),
        s.protocol,
        s.rounds,
        s.duration_s,
        s.body_bytes,
        s.proxy_workers,
        s.cpus
    );
    let _ = writeln!(out, "Scenarios: direct = load → app; sidecar = load → weft-proxy outbound → app;");
    let _ = writeln!(
        out,
        "pair-h1 / pair-h2 = load → client weft-proxy (outbound) → HTTP/1.1 / HTTP/2 → server weft-proxy (inbound) → HTTP/1.1 → app; mesh = pair-h2 over mutual TLS (SPIFFE identities, STRICT);"
    );
    let _ = writeln!(
        out,
        "haproxy-pair / nginx-pair = load → HAProxy / nginx → HAProxy / nginx → app, HTTP/1.1 keep-alive on every hop (one thread / one worker process each), plaintext; haproxy-tls-pair / nginx-tls-pair = the same with mutual TLS 1.3 between the two hops.\n"
    );
    let _ = writeln!(
        out,
        "Latency in ms from the intended send time (open-loop; max is closed-loop). Added = scenario − direct, per percentile (Istio's method).\n"
    );
    let _ = writeln!(out, "| load | scenario | p50 | p90 | p99 | p99.9 | max | achieved rps | errors |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.loads {
        for sc in &l.scenarios {
            let rep = &sc.report;
            let p = &rep.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {} |",
                l.load,
                sc.scenario.name(),
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max,
                rep.achieved_rps,
                rep.non_2xx + rep.failed()
            );
        }
    }
    if r.loads.iter().flat_map(|l| &l.scenarios).any(|sc| sc.added_latency_ms.is_some()) {
        let _ = writeln!(out, "\nAdded latency over direct, ms:\n");
        let _ = writeln!(out, "| load | scenario | added p50 | added p90 | added p99 | added p99.9 | rps vs direct |");
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
        for l in &r.loads {
            let direct_rps = l.scenarios.iter().find(|s| s.scenario == Kind::Direct).map(|s| s.report.achieved_rps);
            for sc in &l.scenarios {
                let Some(a) = &sc.added_latency_ms else { continue };
                let rps = match direct_rps {
                    Some(d) if d > 0.0 => format!("{:.0} %", sc.report.achieved_rps * 100.0 / d),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:+.3} | {:+.3} | {:+.3} | {:+.3} | {rps} |",
                    l.load,
                    sc.scenario.name(),
                    a.p50,
                    a.p90,
                    a.p99,
                    a.p999
                );
            }
        }
    }
    if !r.proxies.is_empty() {
        let _ = writeln!(out, "\nProxy processes (idle RSS after the probe request):\n");
        let _ = writeln!(out, "| proxy | program | role | speaks upstream | idle RSS MiB |");
        let _ = writeln!(out, "|---|---|---|---|---:|");
        for p in &r.proxies {
            let program = match &p.version {
                Some(v) => format!("{} ({v})", p.software),
                None => p.software.to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {program} | {} | {} | {:.1} |",
                p.name,
                p.role,
                p.upstream_protocol,
                p.idle_rss_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(
            out,
            "\nPer proxy and load: CPU over its scenario's measured runs; upstream connections opened since start, weft-proxy only (HTTP/2: one per endpoint).\n"
        );
        let _ = writeln!(
            out,
            "| load | scenario | proxy | requests | peak RSS MiB | CPU s / 1000 req | CPU cores busy | upstream conns opened |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|");
        for l in &r.loads {
            for sc in &l.scenarios {
                for p in &sc.proxies {
                    let scope = if p.peak_rss_scope == "process" { " (since start)" } else { "" };
                    let weft = r.proxies.iter().any(|i| i.name == p.proxy && i.software == "weft-proxy");
                    let conns = match p.upstream_connections_opened {
                        Some(n) => n.to_string(),
                        None if weft => "?".into(),
                        None => "–".into(),
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} ({}) | {} | {:.1}{scope} | {:.4} | {:.2} | {conns} |",
                        l.load,
                        sc.scenario.name(),
                        p.proxy,
                        p.role,
                        sc.report.requests,
                        p.peak_rss_kib as f64 / 1024.0,
                        p.cpu_s_per_1k_requests,
                        p.cpu_cores
                    );
                }
            }
        }
    }
    if let Some(p) = &r.plot {
        let legend: Vec<String> = p.legend.iter().map(|(k, color)| format!("{} = {color}", k.name())).collect();
        let _ = writeln!(
            out,
            "\nLatency by percentile at {} ({}): x = percentile (50, 90, 99, 99.9{}), y = latency ms, log scale{}. Lines: {}.",
            p.load,
            p.path,
            if p.labelled { ", 99.99 where measured" } else { " left to right" },
            if p.labelled { "" } else { " (no font found: drawn without text)" },
            legend.join(", ")
        );
    }
    out
}
