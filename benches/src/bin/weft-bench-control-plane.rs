//! Control-plane convergence: N simulated sidecars hold push streams to a real
//! `weft-control-plane` process on a private etcd; after one apply, how long
//! until each has received and ACKed the new config (p50, p99, max), and the
//! control plane's peak RSS.
//!
//! With `--dashboard`, also the dashboard with those sidecars: headless Chromium loads
//! the page (when it first draws the mesh) and the control plane's RSS with it open.
//!
//! With `--churn R`, then pods churn beside those sidecars for `--churn-seconds`: R
//! a second register as endpoints (a Hello naming a service: an etcd lease and key),
//! each leaves after `--churn-life` (its lease revoked), so every steady sidecar's
//! endpoints change all the time; measured: how long a new pod waits for its first
//! config, the pushes the steady sidecars take, the control plane's CPU and RSS, and
//! convergence of one apply right after.
//!
//! target/release/weft-bench-control-plane --sidecars 100,1000 [--dashboard] [--churn 100]
//!     [--pushes delta,whole] [--plot convergence.png]
//!
//! Size: one benchmark's scenario (steady and churning simulated sidecars), measurements
//! and report.

use anyhow::{bail, Context};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_bench::process::rss_kib;
use weft_control_plane::istio::load_str;
use weft_control_plane::registry::Instance;
use weft_control_plane::store::Store;
use weft_model::stream::{line, ChannelBody, Lines};
use weft_model::stream::{Ack, Hello, STREAM_PATH};

#[derive(Debug, Parser)]
struct Args {
    /// Simulated sidecar counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sidecars: Vec<usize>,
    /// Services in the registry, each with --instances endpoints (what every config carries).
    #[arg(long, default_value_t = 20)]
    services: usize,
    #[arg(long, default_value_t = 5)]
    instances: usize,
    #[arg(long, default_value = "target/release/weft-control-plane")]
    cp_bin: PathBuf,
    /// Applies per run (each measured).
    #[arg(long, default_value_t = 5)]
    applies: usize,
    /// Quiet time between applies (the sidecars' status writes from the last one settle).
    #[arg(long, default_value = "300ms", value_parser = weft_model::duration::parse)]
    pause: Duration,
    /// How the simulated sidecars take pushes, one run each per sidecar count: `delta` (they
    /// ask for deltas, as weft-proxy does) or `whole` (they do not, as sidecars older than
    /// deltas: every push is the whole config).
    #[arg(long, value_delimiter = ',', default_value = "delta")]
    pushes: Vec<Pushes>,
    /// Also draw each run's convergence (the share of sidecars converged against time since
    /// the apply) to this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also measure the dashboard (needs Debian's chromium and chromium-driver).
    #[arg(long)]
    dashboard: bool,
    /// Pods registering (and, after --churn-life, leaving) per second; 0: no churn phase.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// How long the churn lasts.
    #[arg(long, default_value_t = 10)]
    churn_seconds: u64,
    /// How long each churning pod stays registered after its first config.
    #[arg(long, default_value = "1s", value_parser = weft_model::duration::parse)]
    churn_life: Duration,
}

/// Whether simulated sidecars ask for delta pushes.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum Pushes {
    Delta,
    Whole,
}

impl std::fmt::Display for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if *self == Pushes::Delta { "delta" } else { "whole" })
    }
}

/// What churn cost at one sidecar count.
struct ChurnFigures {
    sidecars: usize,
    joined: usize,
    first_config: Vec<Duration>,
    pushes_per_second: f64,
    cpu_percent: f64,
    rss_peak_mib: f64,
    after: Vec<Duration>,
    /// Steady sidecars' streams the control plane cut (slow readers), during the churn and the apply after.
    cut: usize,
}

/// The CPU time `pid` has used (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// What the dashboard cost at one sidecar count.
struct DashboardFigures {
    sidecars: usize,
    rows: u64,
    first_drawn_ms: f64,
    rss_before_mib: f64,
    rss_open_mib: f64,
}

/// Loads the dashboard in headless Chromium (three times, the best and the worst kept
/// apart by taking the median) and reads the control plane's RSS before and with the page open.
async fn dashboard(url: &str, pid: u32, sidecars: usize) -> anyhow::Result<DashboardFigures> {
    let (before, _) = rss_kib(pid)?;
    let browser = weft_testkit::browser::Browser::start(1400, 1000).await.map_err(anyhow::Error::msg)?;
    let mut drawn = Vec::new();
    let mut rows = 0;
    for _ in 0..3 {
        browser.goto(url).await.map_err(anyhow::Error::msg)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = browser
                .eval(
                    "return [document.body.dataset.firstRenderMs || null, document.querySelectorAll('[data-sidecar]').length]",
                    serde_json::json!([]),
                )
                .await
                .map_err(anyhow::Error::msg)?;
            if let Some(ms) = v[0].as_str().and_then(|s| s.parse::<f64>().ok()) {
                drawn.push(ms);
                rows = v[1].as_u64().unwrap_or(0);
                break;
            }
            if Instant::now() > deadline {
                bail!("the dashboard never drew the mesh");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A few refreshes with the page open.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let (open, _) = rss_kib(pid)?;
    browser.close().await;
    drawn.sort_by(f64::total_cmp);
    Ok(DashboardFigures {
        sidecars,
        rows,
        first_drawn_ms: drawn[drawn.len() / 2],
        rss_before_mib: before as f64 / 1024.0,
        rss_open_mib: open as f64 / 1024.0,
    })
}

/// Which sidecar received each version, and when.
type Seen = Arc<Mutex<BTreeMap<i64, Vec<(usize, Instant)>>>>;

/// How a simulated sidecar reaches the control plane: TLS with one certificate for
/// `bench/sim` (they are replicas of one workload), and whether it reads deltas.
struct Dial {
    tls: weft_proxy::security::identity::ControlPlaneTls,
    deltas: bool,
}

/// TLS to the control plane with one certificate for `bench/sim`, shared by
/// every simulated sidecar (they are replicas of one workload).
fn sim_tls(ca: &weft_control_plane::ca::Ca) -> anyhow::Result<weft_proxy::security::identity::ControlPlaneTls> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?.pem()?;
    let cert = ca.sign(&csr, "bench", "sim", Duration::from_secs(3600)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let leaf = weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &ca.root_pem())?;
    let identity = Arc::new(weft_proxy::security::identity::Identity::default());
    identity.install(leaf);
    let mut tls = weft_proxy::security::identity::ControlPlaneTls::from_pem(&ca.root_pem(), ca.trust_domain())
        .map_err(anyhow::Error::msg)?;
    tls.identity = Some(identity);
    Ok(tls)
}

/// A steady simulated sidecar: as a real one, it opens its stream again when the
/// control plane ends it (a slow reader is cut), counting each time in `cut`,
/// until `stop`.
async fn sidecar(
    cp: String,
    i: usize,
    seen: Seen,
    tls: Arc<Dial>,
    cut: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        let _ = stream(cp.clone(), i, None, tls.clone(), Duration::ZERO, |push| {
            let version: i64 = push.version.parse().unwrap_or(0);
            seen.lock().unwrap_or_else(|p| p.into_inner()).entry(version).or_default().push((i, Instant::now()));
            true
        })
        .await;
        if !stop.load(Ordering::Relaxed) {
            cut.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// What a simulated sidecar reads of a `weft_model::stream::Push`: its version (the config is skipped,
/// not built: real sidecars decode on machines of their own, the simulator shares
/// the control plane's cores).
#[derive(serde::Deserialize)]
struct PushVersion {
    version: String,
}

/// A pod of the churn: registers as an endpoint of `sim` (its service account's
/// service), waits for its first config, stays `life`, leaves. Returns the wait.
async fn churn_pod(cp: String, i: usize, life: Duration, tls: Arc<Dial>) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let first = Arc::new(Mutex::new(None));
    let got = first.clone();
    let streamed = stream(cp, i, Some(20_000 + (i % 20_000) as u16), tls, life, move |_| {
        got.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(t0.elapsed());
        false
    });
    streamed.await?;
    let waited = first.lock().unwrap_or_else(|p| p.into_inner()).take().context("no config")?;
    Ok(waited)
}

/// One config stream as simulated sidecar `i` (an endpoint of `sim` on `port` when
/// given); `on_push` is told each push (ACKed at once) and says whether to go on;
/// when it says no, the stream is held `linger` more, then closed.
async fn stream(
    cp: String,
    i: usize,
    port: Option<u16>,
    dial: Arc<Dial>,
    linger: Duration,
    mut on_push: impl FnMut(&PushVersion) -> bool,
) -> anyhow::Result<()> {
    let io = weft_proxy::security::identity::connect_control_plane(&cp, Some(&dial.tls), true)
        .await
        .map_err(anyhow::Error::msg)?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let (tx, body) = ChannelBody::new(4);
    let hello = Hello {
        workload: weft_model::Workload {
            name: format!("sim-{i}"),
            namespace: "bench".into(),
            service_account: "sim".into(),
            labels: [("app".to_string(), format!("sim-{}", i % 10))].into(),
        },
        instance: format!("sim-{i}"),
        service: port.map(|_| "sim".to_string()),
        address: port.map(|p| format!("127.0.0.1:{p}")),
        port: port.map(|_| 80),
        applied_version: None,
        protocol: None,
        other_ports: Vec::new(),
        metrics_port: None,
    };
    tx.send(line(&hello)).await?;
    let mut req = http::Request::post(format!("http://{cp}{STREAM_PATH}"));
    if dial.deltas {
        req = req.header(weft_model::stream::DELTA_HEADER, "true");
    }
    let req = req.body(body)?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("control plane answered {}", resp.status());
    }
    let mut lines = Lines::new(resp.into_body());
    while let Some(push) = lines.next::<PushVersion>().await? {
        let go_on = on_push(&push);
        tx.send(line(&Ack { version: push.version, error: None })).await?;
        if !go_on {
            tokio::time::sleep(linger).await;
            break;
        }
    }
    Ok(())
}

/// Applies a VirtualService (its timeout `timeout_s`) and waits until all `n` sidecars
/// hold a version at least as new: each one's time from the apply returning.
async fn apply_and_wait(store: &Store, seen: &Seen, n: usize, timeout_s: usize) -> anyhow::Result<Vec<Duration>> {
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-0, namespace: bench}}\nspec:\n  hosts: [svc-0]\n  http:\n  - route:\n    - destination: {{host: svc-0}}\n    timeout: {timeout_s}s\n"
    );
    let resources = load_str(Path::new("bench.yaml"), &vs).map_err(|d| anyhow::anyhow!("{d:?}"))?;
    let t0 = Instant::now();
    let revision = store.apply(&resources).await?.revision;
    let deadline = t0 + Duration::from_secs(120);
    loop {
        // Each sidecar's first push at or after the revision (under churn a sidecar takes several).
        let got: std::collections::HashMap<usize, Instant> = {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut firsts = std::collections::HashMap::new();
            for &(i, at) in seen.range(revision..).flat_map(|(_, v)| v.iter()) {
                firsts.entry(i).and_modify(|t: &mut Instant| *t = (*t).min(at)).or_insert(at);
            }
            firsts
        };
        if got.len() >= n {
            return Ok(got.values().map(|t| t.duration_since(t0)).collect());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} sidecars converged", got.len());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One run's control plane and its `n` steady sidecars, as the churn phase uses them.
struct Steady<'a> {
    cp: &'a str,
    pid: u32,
    n: usize,
    seen: &'a Seen,
    tls: &'a Arc<Dial>,
    store: &'a Store,
    cut: &'a std::sync::atomic::AtomicUsize,
}

/// The churn phase beside the steady sidecars (see the module's doc).
async fn churn(args: &Args, steady: &Steady<'_>) -> anyhow::Result<ChurnFigures> {
    let Steady { cp, pid, n, seen, tls, store, cut } = *steady;
    let pushes = || seen.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum::<usize>();
    let cuts = || cut.load(std::sync::atomic::Ordering::Relaxed);
    let (pushes0, cpu0, t0, cut0) = (pushes(), cpu_time(pid), Instant::now(), cuts());
    let mut pods = tokio::task::JoinSet::new();
    let every = Duration::from_secs_f64(1.0 / args.churn as f64);
    let mut tick = tokio::time::interval(every);
    let total = args.churn * args.churn_seconds as usize;
    for k in 0..total {
        tick.tick().await;
        pods.spawn(churn_pod(cp.to_string(), 1_000_000 + k, args.churn_life, tls.clone()));
    }
    let elapsed = t0.elapsed();
    let (pushes1, cpu1) = (pushes(), cpu_time(pid));
    let mut first_config = Vec::new();
    while let Some(done) = pods.join_next().await {
        match done {
            Ok(Ok(waited)) => first_config.push(waited),
            Ok(Err(e)) => eprintln!("a churn pod: {e}"),
            Err(e) => eprintln!("a churn pod: {e}"),
        }
    }
    first_config.sort();
    let (_, hwm) = rss_kib(pid).unwrap_or((0, 0));
    let mut after = apply_and_wait(store, seen, n, 99).await.unwrap_or_else(|e| {
        eprintln!("after the churn: {e}");
        Vec::new()
    });
    after.sort();
    Ok(ChurnFigures {
        sidecars: n,
        joined: first_config.len(),
        first_config,
        pushes_per_second: (pushes1 - pushes0) as f64 / elapsed.as_secs_f64(),
        cpu_percent: (cpu1 - cpu0).as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        rss_peak_mib: hwm as f64 / 1024.0,
        after,
        cut: cuts() - cut0,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.cp_bin.exists() {
        bail!("{} not found: cargo build --release -p weft-control-plane", args.cp_bin.display());
    }
    println!(
        "## Control-plane convergence ({} services x {} endpoints in every config)\n",
        args.services, args.instances
    );
    println!("| sidecars | pushes | applies | p50 ms | p99 ms | max ms | control plane peak RSS MiB | streams cut |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut pages = Vec::new();
    let mut churns = Vec::new();
    let mut curves = Vec::new();
    let runs: Vec<(usize, Pushes)> =
        args.sidecars.iter().flat_map(|&n| args.pushes.iter().map(move |&p| (n, p))).collect();
    for (n, pushes) in runs {
        let etcd = weft_testkit::Etcd::start();
        // The harness plays every part (registry of simulated services, policy writer): etcd's root.
        let store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.tls(weft_etcd::ROOT))).await?;
        for s in 0..args.services {
            for k in 0..args.instances {
                let inst = Instance {
                    address: format!("10.1.{s}.{k}:15006"),
                    labels: [
                        ("app".to_string(), format!("svc-{s}")),
                        ("version".to_string(), format!("v{}", k % 2 + 1)),
                    ]
                    .into(),
                    service_account: format!("svc-{s}"),
                    port: 80,
                    protocol: None,
                    other_ports: Vec::new(),
                    metrics_port: None,
                };
                store.register("bench", &format!("svc-{s}"), &format!("svc-{s}-{k}"), &inst, 600).await?;
            }
        }
        let dashboard_addr = format!("127.0.0.1:{}", weft_testkit::free_port());
        let mut extra = vec!["--id", "cp-bench", "--max-streams-per-identity", "100000"];
        if args.dashboard {
            extra.extend(["--dashboard", dashboard_addr.as_str()]);
        }
        let log = std::env::temp_dir().join("weft-bench-cp.log");
        let running = weft_bench::control_plane::start(&etcd, &args.cp_bin, &extra, &log).await?;
        let (cp, pid) = (running.addr.clone(), running.pid);
        let tls = Arc::new(Dial { tls: sim_tls(&running.ca)?, deltas: pushes == Pushes::Delta });
        let seen: Seen = Arc::default();
        let cut = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for i in 0..n {
            let (cp, seen, tls, cut, stop) = (cp.clone(), seen.clone(), tls.clone(), cut.clone(), stop.clone());
            tokio::spawn(sidecar(cp, i, seen, tls, cut, stop));
        }
        // Everyone holds the initial config.
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum::<usize>() < n {
            if Instant::now() > deadline {
                bail!("not every simulated sidecar got its first config");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut latencies = Vec::new();
        for a in 0..args.applies {
            latencies.extend(apply_and_wait(&store, &seen, n, a + 1).await?);
            tokio::time::sleep(args.pause).await;
        }
        latencies.sort();
        let (_, hwm) = rss_kib(pid).unwrap_or((0, 0));
        println!(
            "| {n} | {pushes} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            args.applies,
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            hwm as f64 / 1024.0,
            cut.load(std::sync::atomic::Ordering::Relaxed)
        );
        // The share of sidecar convergences done by each time since the apply.
        let total = latencies.len().max(1) as f64;
        let curve =
            latencies.iter().enumerate().map(|(i, d)| (d.as_secs_f64() * 1000.0, (i + 1) as f64 * 100.0 / total));
        curves.push((format!("{n} sidecars, {pushes} pushes"), curve.collect::<Vec<_>>()));
        if args.churn > 0 {
            let steady = Steady { cp: &cp, pid, n, seen: &seen, tls: &tls, store: &store, cut: &cut };
            churns.push(churn(&args, &steady).await?);
        }
        if args.dashboard {
            pages.push(dashboard(&format!("http://{dashboard_addr}/"), pid, n).await?);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    println!("\nConvergence = from `weftctl apply` returning to the sidecar receiving the push (it ACKs at once);");
    println!("it includes the control plane's 100 ms debounce.");
    if let Some(path) = &args.plot {
        let named: Vec<(&str, Vec<(f64, f64)>)> = curves.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
        let title = format!("Convergence after an apply ({} services x {} endpoints)", args.services, args.instances);
        weft_bench::plot::lines(path, &title, "ms since weftctl apply returned", "% of sidecars converged", &named)?;
        println!(
            "\nPlot: {} (colours in run order: {})",
            path.display(),
            weft_bench::plot::COLORS.iter().take(curves.len()).map(|c| c.0).collect::<Vec<_>>().join(", ")
        );
    }
    if !churns.is_empty() {
        println!(
            "\n## Churn: {} pods a second register as endpoints and leave after {:?}, for {} s, beside the sidecars\n",
            args.churn, args.churn_life, args.churn_seconds
        );
        println!("| sidecars | pods joined | a new pod's first config p50 / p99 / max ms | pushes to the steady sidecars per s | control plane CPU | peak RSS MiB | one apply right after: p50 / p99 ms | streams cut |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &churns {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "| {} | {} | {:.0} / {:.0} / {:.0} | {:.0} | {:.0} % | {:.1} | {} | {} |",
                c.sidecars,
                c.joined,
                ms(percentile(&c.first_config, 0.5)),
                ms(percentile(&c.first_config, 0.99)),
                ms(c.first_config.last().copied().unwrap_or_default()),
                c.pushes_per_second,
                c.cpu_percent,
                c.rss_peak_mib,
                if c.after.len() < c.sidecars {
                    "not all in 120 s".to_string()
                } else {
                    format!("{:.0} / {:.0}", ms(percentile(&c.after, 0.5)), ms(percentile(&c.after, 0.99)))
                },
                c.cut,
            );
        }
    }
    if !pages.is_empty() {
        println!("\n## The dashboard (headless Chromium, median of 3 loads; no Prometheus: registry and sidecars)\n");
        println!("| sidecars | rows drawn | page first drew the mesh ms | control plane RSS before / with the page open MiB | target |");
        println!("|---:|---:|---:|---:|---|");
        for p in &pages {
            let met = p.first_drawn_ms < 1000.0 && p.rss_open_mib <= p.rss_before_mib + 20.0;
            println!(
                "| {} | {} | {:.0} | {:.1} / {:.1} | {} |",
                p.sidecars,
                p.rows,
                p.first_drawn_ms,
                p.rss_before_mib,
                p.rss_open_mib,
                if met { "met (< 1 s, ≤ +20 MiB)" } else { "NOT met (< 1 s, ≤ +20 MiB)" }
            );
        }
    }
    Ok(())
}
