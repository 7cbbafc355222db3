//! Control-plane convergence: N simulated sidecars hold push streams to a real
//! `weft-control-plane` process on a private etcd; after one apply, how long
//! until each has received and ACKed the new config (p50, p99, max), and the
//! control plane's peak RSS.
//!
//! With `--dashboard`, also the dashboard with those sidecars: headless Chromium loads
//! the page (when it first draws the mesh) and the control plane's RSS with it open.
//!
//! target/release/weft-bench-control-plane --sidecars 100,1000 [--dashboard]

use anyhow::{bail, Context};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_bench::process::rss_kib;
use weft_control_plane::istio::load_str;
use weft_control_plane::registry::Instance;
use weft_control_plane::store::Store;
use weft_model::stream::{line, ChannelBody, Lines};
use weft_model::stream::{Ack, Hello, Push, STREAM_PATH};

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
    /// Also measure the dashboard (needs Debian's chromium and chromium-driver).
    #[arg(long)]
    dashboard: bool,
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

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When each sidecar received each version.
type Seen = Arc<Mutex<BTreeMap<i64, Vec<Instant>>>>;

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

async fn sidecar(
    cp: String,
    i: usize,
    seen: Seen,
    tls: Arc<weft_proxy::security::identity::ControlPlaneTls>,
) -> anyhow::Result<()> {
    let io = weft_proxy::security::identity::connect_control_plane(&cp, Some(&tls), true)
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
        service: None,
        address: None,
        port: None,
        applied_version: None,
        protocol: None,
        metrics_port: None,
    };
    tx.send(line(&hello)).await?;
    let req = http::Request::post(format!("http://{cp}{STREAM_PATH}")).body(body)?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("control plane answered {}", resp.status());
    }
    let mut lines = Lines::new(resp.into_body());
    while let Some(push) = lines.next::<Push>().await? {
        let at = Instant::now();
        let version: i64 = push.version.parse().unwrap_or(0);
        seen.lock().unwrap_or_else(|p| p.into_inner()).entry(version).or_default().push(at);
        tx.send(line(&Ack { version: push.version, error: None })).await?;
    }
    Ok(())
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
    println!("| sidecars | applies | p50 ms | p99 ms | max ms | control plane peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut pages = Vec::new();
    for &n in &args.sidecars {
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
                    metrics_port: None,
                };
                store.register("bench", &format!("svc-{s}"), &format!("svc-{s}-{k}"), &inst, 600).await?;
            }
        }
        let port = weft_testkit::free_port();
        let cp = format!("127.0.0.1:{port}");
        let dashboard_addr = format!("127.0.0.1:{}", weft_testkit::free_port());
        let ca_dir = weft_testkit::TempDir::new("bench-ca");
        let parts = weft_control_plane::ca::CaParts::generate("cluster.local").map_err(|e| anyhow::anyhow!("{e}"))?;
        parts.write_dir(&ca_dir.0.join("ca")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ca = weft_control_plane::ca::Ca::from_parts(&parts, "cluster.local").map_err(|e| anyhow::anyhow!("{e}"))?;
        let tls = Arc::new(sim_tls(&ca)?);
        let ca_path = ca_dir.0.join("ca");
        let child = Command::new(&args.cp_bin)
            .args(["--etcd", &etcd.url(), "--listen", &cp, "--id", "cp-bench", "--max-streams-per-identity", "100000"])
            .args(if args.dashboard { vec!["--dashboard", dashboard_addr.as_str()] } else { vec![] })
            .arg("--ca-dir")
            .arg(&ca_path)
            .arg("--etcd-ca")
            .arg(etcd.certs().join("ca.pem"))
            .arg("--etcd-cert")
            .arg(weft_etcd::user_files(etcd.certs(), weft_etcd::CONTROL_PLANE).0)
            .arg("--etcd-key")
            .arg(weft_etcd::user_files(etcd.certs(), weft_etcd::CONTROL_PLANE).1)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(std::env::temp_dir().join("weft-bench-cp.log"))?)
            .spawn()
            .context("starting the control plane")?;
        let pid = child.id();
        let _cp = Kill(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&cp).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen: Seen = Arc::default();
        for i in 0..n {
            let (cp, seen, tls) = (cp.clone(), seen.clone(), tls.clone());
            tokio::spawn(async move {
                if let Err(e) = sidecar(cp, i, seen, tls).await {
                    eprintln!("sim-{i}: {e}");
                }
            });
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
            let vs = format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-0, namespace: bench}}\nspec:\n  hosts: [svc-0]\n  http:\n  - route:\n    - destination: {{host: svc-0}}\n    timeout: {}s\n",
                a + 1
            );
            let resources = load_str(Path::new("bench.yaml"), &vs).map_err(|d| anyhow::anyhow!("{d:?}"))?;
            let t0 = Instant::now();
            let revision = store.apply(&resources).await?.revision;
            let deadline = t0 + Duration::from_secs(60);
            loop {
                let got: Vec<Instant> = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .range(revision..)
                    .flat_map(|(_, v)| v.iter().copied())
                    .collect();
                if got.len() >= n {
                    latencies.extend(got.iter().map(|t| t.duration_since(t0)));
                    break;
                }
                if Instant::now() > deadline {
                    bail!("only {} of {n} sidecars converged", got.len());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(args.pause).await;
        }
        latencies.sort();
        let (_, hwm) = rss_kib(pid).unwrap_or((0, 0));
        println!(
            "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            args.applies,
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            hwm as f64 / 1024.0
        );
        if args.dashboard {
            pages.push(dashboard(&format!("http://{dashboard_addr}/"), pid, n).await?);
        }
    }
    println!("\nConvergence = from `weftctl apply` returning to the sidecar receiving the push (it ACKs at once);");
    println!("it includes the control plane's 100 ms debounce.");
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
