//! The `weft-proxy` binary as a process: flags, file watching with log lines
//! that name the file and the field, and SIGTERM draining.

use crate::harness::*;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SVC: &str = "svc.test.svc.cluster.local";

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn wait_ready(admin: SocketAddr) {
    // Up to 30 s: a process starting while the whole suite runs on two cores can be slow.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = tokio::net::TcpStream::connect(admin).await {
            drop(s);
            if get(admin, "a", "/ready", &[]).await.status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("weft-proxy never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_rejects_a_bad_file_then_drains_on_sigterm() {
    let slow = Upstream::with("slow", |seen| {
        Box::pin(async move {
            if seen.path == "/slow" {
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            ok("slow")
        })
    })
    .await;
    let dir = std::env::temp_dir().join(format!("weft-proc-{}-{}", std::process::id(), slow.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.yaml");
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let good = config_yaml(&services, &cluster("c", "", &[&slow]));
    std::fs::write(&file, &good).unwrap();
    let (outbound, inbound, admin_addr) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&file)
        .args(["--outbound", &outbound.to_string(), "--inbound", &inbound.to_string()])
        .env("WEFT_ADMIN", admin_addr.to_string())
        .env("WEFT_WATCH_INTERVAL", "50ms")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(admin_addr).await;
    assert_eq!(get(outbound, "svc", "/", &[]).await.body, "slow");

    std::fs::write(
        &file,
        good.replace("lbPolicy", "x").replace("routes:", "routes:\n      - route: [ { cluster: c, weight: -1 } ]"),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let text = get(admin_addr, "a", "/stats/prometheus", &[]).await.body;
        if metric(&text, "weft_config_reloads_total", &[r#"result="rejected""#]) == 1.0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "rejection never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(outbound, "svc", "/", &[]).await.status, 200, "old config kept");

    // A request in flight when SIGTERM arrives still completes.
    let in_flight = tokio::spawn(async move { get(outbound, "svc", "/slow", &[]).await });
    // SIGTERM once the upstream holds the request (it answers /slow after 700 ms).
    let t0 = Instant::now();
    while !slow.seen.lock().unwrap().iter().any(|s| s.path == "/slow") {
        assert!(t0.elapsed() < Duration::from_secs(20), "/slow never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let got = in_flight.await.unwrap();
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "slow"), "drained, not cut");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit 0 after drain: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_names_file_and_field() {
    let up = Upstream::named("up").await;
    let dir = std::env::temp_dir().join(format!("weft-log-{}-{}", std::process::id(), up.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sidecar.yaml");
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let good = config_yaml(&services, &cluster("c", "", &[&up]));
    std::fs::write(&file, &good).unwrap();
    let admin_addr = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--config")
        .arg(&file)
        .args([
            "--outbound",
            &free_port().to_string(),
            "--inbound",
            &free_port().to_string(),
            "--admin",
            &admin_addr.to_string(),
        ])
        .args(["--watch-interval", "50ms"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // stderr, read as it comes.
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (mut pipe, log) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let stderr = || String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    wait_ready(admin_addr).await;
    std::fs::write(&file, good.replace("cluster: c }", "cluster: gone }")).unwrap();
    let want = format!(r#"{}: services["{SVC}"].routes[0].route[0].cluster: no cluster named "gone""#, file.display());
    let t0 = Instant::now();
    while !stderr().contains(&want) && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().unwrap();
    reader.join().unwrap();
    let stderr = stderr();
    assert!(stderr.contains(&want), "stderr lacks {want:?}:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A running `weft-proxy` whose stdout (the access log) is collected as it comes.
struct Logged {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    outbound: SocketAddr,
    admin: SocketAddr,
}

impl Logged {
    fn start(file: &std::path::Path, flags: &[&str]) -> Self {
        let (outbound, admin) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
            .arg("--config")
            .arg(file)
            .args(["--outbound", &outbound.to_string(), "--inbound", &free_port().to_string()])
            .args(["--admin", &admin.to_string(), "--watch-interval", "50ms"])
            .args(flags)
            .stderr(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (mut pipe, sink) = (child.stdout.take().unwrap(), stdout.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Logged { child, stdout, outbound, admin }
    }

    /// The access-log lines so far, each parsed as JSON.
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    }

    /// Waits for the line of the request to `path`.
    async fn line_for(&self, path: &str) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l["path"] == path) {
                return l;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no access-log line for {path}: {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Istio ships with access logging off; `accessLog` in the config (an Istio Telemetry
/// resource, through the control plane) or `--access-log` turns it on. A line is one JSON
/// object whatever the request carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_off_by_default_and_on_when_asked() {
    let up = Upstream::named("up").await;
    let dir = std::env::temp_dir().join(format!("weft-access-{}-{}", std::process::id(), up.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sidecar.yaml");
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let off = config_yaml(&services, &cluster("c", "", &[&up]));
    std::fs::write(&file, &off).unwrap();

    let p = Logged::start(&file, &[]);
    wait_ready(p.admin).await;
    assert_eq!(get(p.outbound, "svc", "/first", &[]).await.status, 200);
    std::fs::write(&file, format!("{off}accessLog: true\n")).unwrap();
    let t0 = Instant::now();
    while metric(
        &get(p.admin, "a", "/stats/prometheus", &[]).await.body,
        "weft_config_reloads_total",
        &[r#"result="applied""#],
    ) < 1.0
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "the reload was never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let crafted = r#"a"b\c","path":"/forged"#;
    assert_eq!(get(p.outbound, "svc", "/second", &[("x-request-id", crafted)]).await.status, 200);
    let line = p.line_for("/second").await;
    assert_eq!(line["request_id"], crafted, "a crafted value stays inside its field");
    assert_eq!((line["status"].as_u64(), line["reporter"].as_str()), (Some(200), Some("source")));
    assert!(line["upstream"].as_str().is_some_and(|u| u == up.addr.to_string()), "{line}");
    let paths: Vec<String> = p.lines().iter().map(|l| l["path"].to_string()).collect();
    assert_eq!(paths, [r#""/second""#], "off by default: /first was not logged");
    drop(p);

    std::fs::write(&file, &off).unwrap();
    let p = Logged::start(&file, &["--access-log"]);
    wait_ready(p.admin).await;
    assert_eq!(get(p.outbound, "svc", "/flag", &[]).await.status, 200);
    assert_eq!(p.line_for("/flag").await["cluster"], "c");
    // The trace context, numbers and address are written by hand: they read as the caller sent them.
    let (trace, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let traceparent = format!("00-{trace}-{parent}-01");
    assert_eq!(get(p.outbound, "svc", "/traced", &[("traceparent", &traceparent)]).await.status, 200);
    let line = p.line_for("/traced").await;
    assert_eq!(line["trace_id"], trace, "{line}");
    let span = line["span_id"].as_str().unwrap_or_default();
    assert!(span.len() == 16 && span.bytes().all(|b| b.is_ascii_hexdigit()) && span != parent, "{line}");
    assert_eq!(line["upstream"], up.addr.to_string(), "{line}");
    assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(line["bytes_sent"].as_u64().is_some_and(|b| b > 0), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
