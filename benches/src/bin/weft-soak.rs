//! `make soak` (not in CI): the mesh path for a long while under change. A real
//! control plane on a private etcd, two `weft-proxy` sidecars with certificates
//! from it (client → mutual TLS, HTTP/2 → server → app), open-loop load at a
//! fixed rate through the client's outbound listener, a policy change applied
//! every `--change-every`, and workload certificates short-lived enough
//! (`--cert-ttl`, renewed at half-life) to rotate about every minute. Every
//! minute it prints a row: requests and failures, latency, each sidecar's RSS and
//! open file descriptors, certificates installed, changes applied. At the end:
//! failed requests, RSS drift after the first five minutes, the file-descriptor
//! range, and a PNG of RSS over time (`<out>/soak-rss.png`, `<out>/soak.md`).

use anyhow::{bail, Context};
use clap::Parser;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_bench::load;
use weft_bench::process::rss_kib;
use weft_control_plane::istio::load_str;
use weft_control_plane::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "weft-soak",
    about = "The mesh path under load, config changes and certificate rotation, minute by minute"
)]
struct Args {
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Requests per second through the mesh path (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rps: f64,
    /// How often a VirtualService change is applied.
    #[arg(long, default_value = "10s", value_parser = weft_model::duration::parse)]
    change_every: Duration,
    /// Workload certificate lifetime; sidecars renew at half of it.
    #[arg(long, default_value = "2m", value_parser = weft_model::duration::parse)]
    cert_ttl: Duration,
    #[arg(long, default_value = "target/sidecar/weft-proxy")]
    proxy_bin: PathBuf,
    #[arg(long, default_value = "target/release/weft-control-plane")]
    cp_bin: PathBuf,
    /// Where the logs, the table and the plot go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

const NS: &str = "soak";

/// A sidecar process, killed when dropped.
struct Sidecar {
    name: &'static str,
    child: Child,
    log: PathBuf,
    admin: String,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Certificates installed so far (the first one and every renewal), from its log.
    fn certificates(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |l| l.matches("workload certificate installed").count())
    }
}

/// One row of the report.
struct Minute {
    minute: u64,
    requests: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    rss_kib: [u64; 2],
    fds: [usize; 2],
    certificates: [usize; 2],
    changes: u64,
}

/// The status of `GET path` with `Host: host` on a fresh connection, if any answer came.
async fn status(addr: &str, host: &str, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 32];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.ok()?.ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split(' ').nth(1)?.parse().ok()
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok().await {
        if Instant::now() > deadline {
            bail!("{what}: not within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn policies(change: u64) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: {NS}}}\nspec:\n  mtls: {{mode: STRICT}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: server, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {{principals: [cluster.local/ns/{NS}/sa/client]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: server, namespace: {NS}}}\nspec:\n  host: server\n  trafficPolicy:\n    connectionPool: {{http: {{h2UpgradePolicy: UPGRADE}}}}\n    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: server, namespace: {NS}}}\nspec:\n  hosts: [server]\n  http:\n  - name: change-{change}\n    route:\n    - destination: {{host: server}}\n    timeout: {}s\n    retries: {{attempts: {}, perTryTimeout: 2s}}\n",
        10 + change % 5,
        1 + change % 3
    )
}

async fn apply(store: &Store, change: u64) -> anyhow::Result<()> {
    let resources = load_str(Path::new("soak.yaml"), &policies(change)).map_err(|d| anyhow::anyhow!("{d:?}"))?;
    store.apply(&resources).await?;
    Ok(())
}

/// Starts a sidecar for `sa` (an endpoint of `service` in front of `app` when given).
async fn sidecar(
    args: &Args,
    store: &Store,
    cp: &str,
    root: &Path,
    name: &'static str,
    service: Option<(&str, String)>,
) -> anyhow::Result<(Sidecar, String)> {
    let (token, _) = weft_control_plane::token::mint(
        store,
        NS,
        name,
        weft_control_plane::token::DEFAULT_AUDIENCE,
        Duration::from_secs(3 * 3600),
        SystemTime::now(),
    )
    .await?;
    let token_file = args.out.join(format!("{name}.token"));
    std::fs::write(&token_file, token)?;
    let port = |_: ()| format!("127.0.0.1:{}", weft_testkit::free_port());
    let (inbound, outbound, admin) = (port(()), port(()), port(()));
    let log = args.out.join(format!("{name}.sidecar.log"));
    let mut cmd = Command::new(&args.proxy_bin);
    cmd.args(["--control-plane", &format!("http://{cp}"), "--workload", &format!("{name}-0"), "--namespace", NS])
        .args(["--service-account", name, "--labels", &format!("app={name},version=v1")])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(root)
        .args(["--inbound", &inbound, "--outbound", &outbound, "--admin", &admin]);
    if let Some((service, app)) = &service {
        cmd.args(["--service", service, "--app", app]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", args.proxy_bin.display()))?;
    Ok((Sidecar { name, child, log, admin }, outbound))
}

const HEADER: &str = "| minute | requests | failed | p50 ms | p99 ms | client RSS MiB | server RSS MiB | client fds | server fds | certificates (client / server) | changes |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

impl Minute {
    /// The row of the Markdown table.
    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {} / {} | {} |",
            self.minute,
            self.requests,
            self.failed,
            self.p50_ms,
            self.p99_ms,
            self.rss_kib[0] as f64 / 1024.0,
            self.rss_kib[1] as f64 / 1024.0,
            self.fds[0],
            self.fds[1],
            self.certificates[0],
            self.certificates[1],
            self.changes
        )
    }
}

fn summary(args: &Args, rows: &[Minute]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADER}");
    for r in rows {
        let _ = writeln!(s, "{}", r.row());
    }
    let requests: u64 = rows.iter().map(|r| r.requests).sum();
    let failed: u64 = rows.iter().map(|r| r.failed).sum();
    let _ = writeln!(s, "\n{requests} requests at {} rps over {} minutes: {failed} failed.", args.rps, rows.len());
    for (i, who) in ["client", "server"].iter().enumerate() {
        if let Some(base) = rows.iter().find(|r| r.minute == 5) {
            let last = rows.last().map_or(0, |r| r.rss_kib[i]);
            let max = rows.iter().filter(|r| r.minute >= 5).map(|r| r.rss_kib[i]).max().unwrap_or(0);
            let drift = |v: u64| (v as f64 - base.rss_kib[i] as f64) / base.rss_kib[i] as f64 * 100.0;
            let _ = writeln!(
                s,
                "{who} sidecar RSS after minute 5: {:.1} MiB → {:.1} MiB at the end ({:+.1} %; highest {:+.1} %).",
                base.rss_kib[i] as f64 / 1024.0,
                last as f64 / 1024.0,
                drift(last),
                drift(max)
            );
        }
        let fds = rows.iter().map(|r| r.fds[i]);
        let (lo, hi) = (fds.clone().min().unwrap_or(0), fds.max().unwrap_or(0));
        let certs = rows.last().map_or(0, |r| r.certificates[i]);
        let _ = writeln!(s, "{who} sidecar: open file descriptors {lo}–{hi}; {certs} certificates installed.");
    }
    let _ = writeln!(s, "{} configuration changes applied.", rows.last().map_or(0, |r| r.changes));
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for bin in [&args.proxy_bin, &args.cp_bin] {
        if !bin.exists() {
            bail!("{} not found: make soak builds it", bin.display());
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let etcd = weft_testkit::Etcd::start();
    let store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.tls(weft_etcd::ROOT))).await?;
    let ttl = format!("{}s", args.cert_ttl.as_secs());
    let cp = weft_bench::control_plane::start(
        &etcd,
        &args.cp_bin,
        &["--id", "cp-soak", "--cert-ttl", &ttl],
        &args.out.join("control-plane.log"),
    )
    .await?;
    let root = args.out.join("root.pem");
    std::fs::write(&root, cp.ca.root_pem())?;
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app.local_addr()?.to_string();
    tokio::spawn(weft_bench::upstream::serve(app, weft_bench::upstream::DEFAULT_BODY_BYTES));
    apply(&store, 0).await?;
    let (server, _) = sidecar(&args, &store, &cp.addr, &root, "server", Some(("server", app_addr))).await?;
    let (client, outbound) = sidecar(&args, &store, &cp.addr, &root, "client", None).await?;
    for s in [&server, &client] {
        wait_for(&format!("{} ready", s.name), async || status(&s.admin, "admin", "/ready").await == Some(200)).await?;
    }
    wait_for("client → server answering 200", async || status(&outbound, "server", "/").await == Some(200)).await?;
    println!(
        "# soak: {} minutes at {} rps, client → mTLS/HTTP2 → server → app; a change every {:?}, certificates for {:?}",
        args.minutes, args.rps, args.change_every, args.cert_ttl
    );

    let changes = Arc::new(AtomicU64::new(0));
    let changer = {
        let (store, changes, every) = (store.clone(), changes.clone(), args.change_every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = changes.load(Ordering::Relaxed) + 1;
                match apply(&store, n).await {
                    Ok(()) => changes.store(n, Ordering::Relaxed),
                    Err(e) => eprintln!("change {n}: {e}"),
                }
            }
        })
    };

    let mut options = load::Options::new(format!("http://{outbound}/").parse()?);
    options.rate = args.rps;
    options.connections = 8;
    options.duration = Duration::from_secs(60);
    options.timeout = Duration::from_secs(5);
    options.headers.insert(http::header::HOST, http::HeaderValue::from_static("server"));
    let mut rows = Vec::new();
    println!("{HEADER}");
    for minute in 1..=args.minutes {
        let report = load::run(&options).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let sidecars = [&client, &server];
        let row = Minute {
            minute,
            requests: report.requests,
            failed: report.failed(),
            p50_ms: report.latency_ms.p50,
            p99_ms: report.latency_ms.p99,
            rss_kib: sidecars.map(|s| rss_kib(s.pid()).map_or(0, |r| r.0)),
            fds: sidecars.map(Sidecar::fds),
            certificates: sidecars.map(Sidecar::certificates),
            changes: changes.load(Ordering::Relaxed),
        };
        println!("{}", row.row());
        if row.failed > 0 {
            println!("           failures: {:?} {:?}", report.status, report.transport_errors);
        }
        rows.push(row);
    }
    changer.abort();
    let text = summary(&args, &rows);
    println!("\n{text}");
    std::fs::write(args.out.join("soak.md"), &text)?;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = ["client sidecar", "server sidecar"]
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, rows.iter().map(|r| (r.minute as f64, r.rss_kib[i] as f64 / 1024.0)).collect()))
        .collect();
    let png = args.out.join("soak-rss.png");
    weft_bench::plot::lines(&png, "Sidecar RSS during the soak", "minute", "RSS, MiB", &curves)?;
    println!("plot: {}", png.display());
    Ok(())
}
