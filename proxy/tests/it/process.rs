//! The `weft-proxy` binary as a process: flags, file watching with log lines
//! that name the file and the field, and SIGTERM draining.

use crate::harness::*;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SVC: &str = "svc.test.svc.cluster.local";

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn wait_ready(admin: SocketAddr) {
    for _ in 0..300 {
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
        .env("WEFT_NO_ACCESS_LOG", "true")
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
    tokio::time::sleep(Duration::from_millis(200)).await;
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
        .args(["--watch-interval", "50ms", "--no-access-log"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(admin_addr).await;
    std::fs::write(&file, good.replace("cluster: c }", "cluster: gone }")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    let want = format!(r#"{}: services["{SVC}"].routes[0].route[0].cluster: no cluster named "gone""#, file.display());
    assert!(stderr.contains(&want), "stderr lacks {want:?}:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
