//! `weft-bench-sidecar`: what the sidecar adds, measured the way Istio's
//! performance benchmark does: the same open-loop load straight to an app
//! ("direct") and through `weft-proxy` ("sidecar"), rounds interleaved so drift
//! hits both alike, and the added latency taken as sidecar percentile minus
//! direct percentile.
//!
//! The app and the proxy run as child processes, so the proxy's peak RSS and
//! CPU time are its own; the load generator runs in this process. Children are
//! killed when this process ends, also on Ctrl-C and SIGTERM; the app also
//! exits when its stdin (a pipe from this process) closes.
//!
//! ```text
//! cargo build --release -p weft-proxy -p weft-bench
//! target/release/weft-bench-sidecar --rates 200,1000,2000 --max --duration 10s --rounds 3
//! ```

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::header::{HeaderValue, HOST};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_bench::load::{self, Percentiles, Report};
use weft_bench::{parse_duration, process, upstream};
use weft_model as model;

/// The service the bench routes to; `Host: app` reaches it from namespace `bench`.
const SERVICE: &str = "app.bench.svc.cluster.local";
const HOST_HEADER: &str = "app";
/// How long the proxy may take to answer `/ready` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Direct vs. through-the-sidecar latency, CPU and memory of weft-proxy.
#[derive(Debug, Parser)]
#[command(name = "weft-bench-sidecar", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The weft-proxy binary to measure.
    #[arg(long, default_value = "target/release/weft-proxy")]
    proxy_bin: PathBuf,
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
    /// Interleaved direct/sidecar rounds per scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Send HTTP/2 (h2c) from the load generator; the proxy speaks HTTP/1.1 upstream (Istio's default).
    #[arg(long)]
    http2: bool,
    /// Response body size of the app.
    #[arg(long, default_value_t = upstream::DEFAULT_BODY_BYTES)]
    body_bytes: usize,
    /// Worker threads of the proxy (its --workers).
    #[arg(long, default_value_t = 1)]
    proxy_workers: usize,
    /// Worker threads of the app.
    #[arg(long, default_value_t = 1)]
    app_workers: usize,
    /// Worker threads of the load generator (the pacer has its own thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// JSON results; the generated proxy config and the proxy's log go beside it.
    #[arg(long, default_value = "target/bench/sidecar.json")]
    out: PathBuf,
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

/// Ports the proxy binds, found by binding port 0. All three are held until
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

/// The sidecar's config: one service, `app`, one route, one endpoint — the app.
/// Written as the YAML a person would write (see `proxy/examples/canary.yaml`),
/// so fields the schema gains later keep their defaults; it is parsed and
/// validated here, so a schema change that breaks it fails before the proxy starts.
fn proxy_config(app: SocketAddr) -> anyhow::Result<String> {
    let yaml = format!(
        r#"# Generated by weft-bench-sidecar: Host `{HOST_HEADER}` -> the bench app.
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
    endpoints:
      - address: {app}
        labels: {{ app: app, version: v1 }}
"#,
        api = model::API_VERSION
    );
    let parsed: model::ProxyConfig =
        serde_yaml::from_str(&yaml).context("the generated proxy config does not parse")?;
    parsed.validate().context("the generated proxy config is invalid")?;
    Ok(yaml)
}

struct Proxy {
    guard: Guard,
    outbound: SocketAddr,
    log: PathBuf,
}

async fn start_proxy(args: &Args, app: SocketAddr, dir: &Path) -> anyhow::Result<Proxy> {
    if !args.proxy_bin.is_file() {
        bail!(
            "no proxy binary at {}: run `cargo build --release -p weft-proxy` or pass --proxy-bin",
            args.proxy_bin.display()
        );
    }
    let config_path = dir.join("sidecar-proxy.yaml");
    std::fs::write(&config_path, proxy_config(app)?).with_context(|| format!("writing {}", config_path.display()))?;
    let log = dir.join("sidecar-proxy.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let [outbound, inbound, admin] = free_ports()?;
    let child = Command::new(&args.proxy_bin)
        .arg("--config")
        .arg(&config_path)
        .args(["--outbound", &outbound.to_string(), "--inbound", &inbound.to_string(), "--admin", &admin.to_string()])
        .args(["--no-access-log", "--workers", &args.proxy_workers.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", args.proxy_bin.display()))?;
    let mut proxy = Proxy { guard: Guard { name: "weft-proxy", child }, outbound, log };

    let started = Instant::now();
    loop {
        proxy.guard.ensure_running(Some(&proxy.log))?;
        if matches!(get(admin, "localhost", "/ready").await, Ok((200, _))) {
            return Ok(proxy);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("weft-proxy not ready after {READY_TIMEOUT:?}{}", log_tail(&proxy.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET over a fresh HTTP/1.1 connection: status and body length.
async fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, usize)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path).header(HOST, host).body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes().len()))
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

#[derive(Debug, Serialize)]
struct Round {
    direct: Report,
    sidecar: Report,
    proxy_cpu_s: f64,
}

#[derive(Debug, Serialize)]
struct ProxyCost {
    /// Peak RSS over this scenario (or since start, see `peak_rss_scope`), KiB.
    peak_rss_kib: u64,
    /// `scenario` when the peak could be reset before it, `process` otherwise.
    peak_rss_scope: &'static str,
    /// utime + stime over the measured sidecar runs.
    cpu_s: f64,
    /// CPU seconds per 1000 requests through the proxy.
    cpu_s_per_1k_requests: f64,
    /// Average cores busy during the measured sidecar runs.
    cpu_cores: f64,
}

#[derive(Debug, Serialize)]
struct Added {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

impl Added {
    /// Istio's method: percentile through the sidecar minus the same percentile direct.
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
struct Scenario {
    load: String,
    target_rps: Option<f64>,
    connections: usize,
    /// All rounds merged.
    direct: Report,
    sidecar: Report,
    added_latency_ms: Added,
    proxy: ProxyCost,
    rounds: Vec<Round>,
}

#[derive(Debug, Serialize)]
struct Setup {
    proxy_bin: String,
    protocol: &'static str,
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
    proxy_idle_rss_kib: u64,
    scenarios: Vec<Scenario>,
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    if args.proxy_bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!("warning: {} looks like a debug build; numbers will not mean much", args.proxy_bin.display());
    }
    let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let (mut app_guard, app) = start_upstream(args)?;
    let mut proxy = start_proxy(args, app, &dir).await?;
    let pid = proxy.guard.pid();

    // Both paths must answer the same before their numbers can be compared.
    for (path, addr) in [("direct", app), ("sidecar", proxy.outbound)] {
        match get(addr, HOST_HEADER, "/").await {
            Ok((200, n)) if n == args.body_bytes => {}
            other => bail!(
                "{path} probe: expected 200 with {} bytes, got {other:?}{}",
                args.body_bytes,
                log_tail(&proxy.log)
            ),
        }
    }
    let (_, proxy_idle_rss_kib) = process::rss_kib(pid).context("reading the proxy's RSS")?;
    eprintln!("app on {app}, weft-proxy (pid {pid}) outbound on {}, idle RSS {proxy_idle_rss_kib} KiB", proxy.outbound);

    let mut loads: Vec<Load> = args.rates.iter().filter(|r| **r > 0.0).map(|r| Load::Rate(*r)).collect();
    if args.max {
        loads.push(Load::Max);
    }
    let mut scenarios = Vec::new();
    for load in loads {
        let scope = if process::reset_peak_rss(pid).is_ok() { "scenario" } else { "process" };
        let mut rounds = Vec::new();
        for round in 1..=args.rounds.max(1) {
            eprintln!("{}: round {round}/{} direct", load.label(args), args.rounds);
            let direct = measure(args, load, app).await?;
            app_guard.ensure_running(None)?;
            eprintln!("{}: round {round}/{} sidecar", load.label(args), args.rounds);
            warm(args, load, proxy.outbound).await?;
            let cpu_before = process::cpu_seconds(pid)?;
            let sidecar = run_load(args, load, proxy.outbound, args.duration).await?;
            let proxy_cpu_s = process::cpu_seconds(pid)? - cpu_before;
            proxy.guard.ensure_running(Some(&proxy.log))?;
            rounds.push(Round { direct, sidecar, proxy_cpu_s });
        }
        let (_, peak_rss_kib) = process::rss_kib(pid)?;
        scenarios.push(summarize(args, load, rounds, peak_rss_kib, scope));
    }

    let results = Results {
        setup: Setup {
            proxy_bin: args.proxy_bin.display().to_string(),
            protocol: if args.http2 { "http2" } else { "http1" },
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
        proxy_idle_rss_kib,
        scenarios,
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

async fn measure(args: &Args, load: Load, addr: SocketAddr) -> anyhow::Result<Report> {
    warm(args, load, addr).await?;
    run_load(args, load, addr, args.duration).await
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

fn summarize(args: &Args, load: Load, rounds: Vec<Round>, peak_rss_kib: u64, peak_rss_scope: &'static str) -> Scenario {
    let mut direct = rounds[0].direct.clone();
    let mut sidecar = rounds[0].sidecar.clone();
    for r in &rounds[1..] {
        direct.merge(&r.direct);
        sidecar.merge(&r.sidecar);
    }
    let cpu_s: f64 = rounds.iter().map(|r| r.proxy_cpu_s).sum();
    let through_proxy = sidecar.requests + sidecar.transport_errors.values().sum::<u64>();
    let proxy = ProxyCost {
        peak_rss_kib,
        peak_rss_scope,
        cpu_s,
        cpu_s_per_1k_requests: if through_proxy > 0 { cpu_s * 1000.0 / through_proxy as f64 } else { 0.0 },
        cpu_cores: if sidecar.elapsed_s > 0.0 { cpu_s / sidecar.elapsed_s } else { 0.0 },
    };
    Scenario {
        load: load.label(args),
        target_rps: match load {
            Load::Rate(r) => Some(r),
            Load::Max => None,
        },
        connections: direct.connections,
        added_latency_ms: Added::of(&direct.latency_ms, &sidecar.latency_ms),
        direct,
        sidecar,
        proxy,
        rounds,
    }
}

fn markdown(r: &Results) -> String {
    use std::fmt::Write;
    let s = &r.setup;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## weft-proxy vs direct ({}, {} x {:.0}s rounds interleaved, {} B responses, proxy --workers {}, {} CPUs)\n",
        s.protocol, s.rounds, s.duration_s, s.body_bytes, s.proxy_workers, s.cpus
    );
    let _ = writeln!(out, "Latency in ms from the intended send time (open-loop; max is closed-loop). Added = sidecar − direct, per percentile.\n");
    let _ = writeln!(out, "| load | path | p50 | p90 | p99 | p99.9 | max | achieved rps | errors |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for sc in &r.scenarios {
        for (path, rep) in [("direct", &sc.direct), ("sidecar", &sc.sidecar)] {
            let p = &rep.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {path} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {} |",
                sc.load,
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max,
                rep.achieved_rps,
                rep.non_2xx + rep.failed()
            );
        }
        let a = &sc.added_latency_ms;
        let _ = writeln!(
            out,
            "| {} | **added** | {:+.3} | {:+.3} | {:+.3} | {:+.3} | | | |",
            sc.load, a.p50, a.p90, a.p99, a.p999
        );
    }
    let _ = writeln!(out, "\nweft-proxy process (idle RSS {:.1} MiB):\n", r.proxy_idle_rss_kib as f64 / 1024.0);
    let _ = writeln!(out, "| load | requests via proxy | peak RSS MiB | CPU s / 1000 req | CPU cores busy |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for sc in &r.scenarios {
        let p = &sc.proxy;
        let scope = if p.peak_rss_scope == "process" { " (since start)" } else { "" };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1}{scope} | {:.4} | {:.2} |",
            sc.load,
            sc.sidecar.requests,
            p.peak_rss_kib as f64 / 1024.0,
            p.cpu_s_per_1k_requests,
            p.cpu_cores
        );
    }
    out
}
