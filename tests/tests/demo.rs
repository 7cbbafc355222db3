//! `make demo`, end to end: the script builds (debug profile here), starts etcd,
//! the control plane, Prometheus and the five services behind their sidecars,
//! applies policies/, drives the journey, prints the report and keeps live
//! traffic going. While it runs, headless Chromium loads the control plane's
//! dashboard and reads what it draws; then the demo is stopped as Ctrl-C would,
//! and it must stop everything it started.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use weft_testkit::browser::Browser;

const DASHBOARD: &str = "127.0.0.1:15014";

/// The running demo; stopped with SIGTERM (its Ctrl-C path) when dropped, also on a failed assertion.
struct Demo(Child);

impl Demo {
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        self.0.wait().expect("wait for the demo")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

#[test]
fn the_demo_runs_the_whole_shop_on_the_mesh_and_the_dashboard_shows_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new(root.join("scripts/demo.sh"))
        .env("PROFILE", "debug")
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/demo.sh");
    let (stdout, mut stderr) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let mut demo = Demo(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The report, up to the line that says the shop is up (a debug build of the workspace first).
    let mut report = String::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(1500)) {
            Ok(line) => {
                report.push_str(&line);
                report.push('\n');
                if line.starts_with("The shop is running") {
                    break;
                }
            }
            Err(_) => {
                demo.stop();
                panic!("the demo stopped before the shop was up:\n{report}\n{}", errors.join().unwrap_or_default());
            }
        }
    }
    let seen =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(dashboard());
    let status = demo.stop();
    report.extend(lines.try_iter().map(|l| l + "\n"));
    let errors = errors.join().unwrap_or_default();
    // Stopped by SIGTERM: the script's trap exits 130 after stopping everything.
    assert_eq!(status.code(), Some(130), "the demo did not stop cleanly:\n{report}\n{errors}");
    assert!(!report.contains("demo: a step above failed"), "{report}\n{errors}");
    check_report(&report);
    if let Err(e) = seen {
        panic!("the dashboard: {e}\n{report}");
    }
    for port in [3000, 3012, 3032, 8443, 15000, 15012, 15014, 15100, 16200, 19090, 23790] {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open: a process was left behind");
    }
}

fn check_report(report: &str) {
    for line in [
        "notifications delivered via RabbitMQ",
        "order.created, order.paid, order.shipped",
        "sent again with its Idempotency-Key: 201 replayed, same order",
        "the trace reached every hop: api-gateway → order-service → product-service, sidecars and services",
        "20 requests with x-canary: true → v2 20/20",
        "notification-service → order-service GET /orders: 403 RBAC: access denied",
        "notification-service → user-service GET /users/me: 403 RBAC: access denied",
        "api-gateway → product-service POST /products/1/reservations: 403 RBAC: access denied",
        "product-service → notification-service POST /notifications: 403 RBAC: access denied",
        "order-service → api-gateway GET /api/products: 403 RBAC: access denied",
        "customer → POST /api/products: 403 (staff only)",
        "ALLOW nothing  (ns[production]-policy[deny-by-default])",
        "sa/order-service → POST | DELETE /products/*",
        "order-service-v1-b told to answer 500",
        "then it was ejected by the gateway's sidecar",
        "p50",
        "demo: every check passed",
        "weftctl top: the mesh's edges from Prometheus",
        "Dashboard: http://127.0.0.1:15014/",
        "GET https://127.0.0.1:8443/api/products → 200 over TLSv1.3, certificate CN=shop.localhost",
        "plaintext HTTP to 8443: 000",
        "GET /api/orders with the token user-service issued at login (EdDSA) → 200",
        "GET /api/orders without a token → 403",
        "under user-service's key id → 401",
        "(ServiceEntry partner-mail, outside the mesh): ",
        "notification-service → http://api.github.com/: 502",
        "sa/shop-ingress",
    ] {
        assert!(report.contains(line), "the report lacks {line:?}:\n{report}");
    }
    let mails = report.lines().find(|l| l.contains("mails delivered")).expect("the egress line");
    let n: u32 =
        mails.trim_end_matches(" mails delivered").rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(n >= 1, "notification-service mailed nothing through the ServiceEntry: {mails}");
    let split = report.lines().find(|l| l.contains("200 requests: v1")).expect("the v1/v2 split");
    assert!(split.contains("v2 ") && split.contains("order-service-v1-a"), "{split}");
    // weftctl top read Prometheus: the journey's edges with their rates.
    let top = report
        .lines()
        .skip_while(|l| !l.contains("weftctl top:"))
        .take_while(|l| !l.contains("weftctl tap:"))
        .collect::<Vec<_>>()
        .join("\n");
    let edge = |name: &str| {
        let line = top.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("weftctl top lacks {name}:\n{top}"));
        let field = |i: usize| line.split_whitespace().nth(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(-1.0);
        (line.to_string(), field(3), field(4))
    };
    // The canary mix and the latency sample are sustained: they have rates. The ejection's few
    // 500s (at most 5 of the 60 sent then) may still be in the one-minute window.
    for name in ["api-gateway → order-service", "api-gateway → product-service"] {
        let (line, rps, success) = edge(name);
        assert!(rps > 0.0 && success >= 95.0, "{line}");
    }
    // The journey's logins are a burst: listed, whatever its rate.
    assert!(edge("api-gateway → user-service").1 >= 0.0);
    // weftctl tap showed the three requests sent while it watched, as they finished.
    let tapped: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.contains("weftctl tap:"))
        .take_while(|l| !l.contains("live traffic"))
        .filter(|l| l.contains(r#""path":"/products""#) && l.contains(r#""method":"GET""#))
        .collect();
    assert_eq!(tapped.len(), 3, "{report}");
}

/// What the page draws, read from its DOM (the graph's `data-*` attributes).
const READ_PAGE: &str = r#"
const q = (s) => [...document.querySelectorAll(s)];
return {
  firstRenderMs: document.body.dataset.firstRenderMs ? Number(document.body.dataset.firstRenderMs) : null,
  nodes: q('[data-node]').map((n) => n.dataset.node + ' ' + n.dataset.version),
  edges: q('[data-edge]').map((e) => ({
    source: e.dataset.source, destination: e.dataset.destination, version: e.dataset.destinationVersion,
    mtls: e.dataset.mtls === 'true', lock: e.querySelector('[data-lock]') !== null,
    denied: e.dataset.denied === 'true', red: e.classList.contains('denied'), rps: Number(e.dataset.rps),
  })),
  split: Object.fromEntries(q('[data-split="order-service"] [data-version]').map((s) => [s.dataset.version, Number(s.dataset.percent)])),
  sidecars: q('[data-sidecar]').length,
  acked: q('[data-sidecar][data-acked="true"]').length,
  problems: q('#problems li').map((p) => p.textContent),
};
"#;

/// The dashboard's Done-when, in Chromium: the five services, the v1/v2 split near 90/10, a lock
/// on the mTLS edges, the denied notification-service → order-service edge in red, every
/// sidecar's ACK, an edge explained in the page; a screenshot; and what a hostile page or
/// caller gets.
async fn dashboard() -> Result<(), String> {
    let rss_before = control_plane_rss();
    let browser = Browser::start(1400, 1050).await?;
    let loaded = Instant::now();
    browser.goto(&format!("http://{DASHBOARD}/")).await?;
    let load_ms = loaded.elapsed().as_millis();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut page: Value;
    let mut first_render = None;
    let problems = loop {
        page = browser.eval(READ_PAGE, json!([])).await?;
        first_render = first_render.or(page["firstRenderMs"].as_f64());
        let missing = what_is_missing(&page);
        if missing.is_empty() {
            break missing;
        }
        if Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !problems.is_empty() {
        return Err(format!("the page never showed {problems:?}; it showed {page:#}"));
    }
    // An edge clicked: the page explains it with the route and the destination's decision.
    browser
        .eval(
            r#"document.querySelector('[data-source="notification-service"][data-destination="order-service"]')
                 .dispatchEvent(new MouseEvent('click', {bubbles: true}));"#,
            json!([]),
        )
        .await?;
    let explained = wait_for(&browser, "document.getElementById('explanation').dataset.explained === 'notification-service → order-service' ? document.getElementById('explanation').textContent : null").await?;
    for want in ["spiffe://cluster.local/ns/production/sa/notification-service", "route:", "authz:    denied: 403"] {
        if !explained.contains(want) {
            return Err(format!("the explanation lacks {want:?}:\n{explained}"));
        }
    }
    // The README's picture: the graph with that edge explained.
    let shot = browser.screenshot().await?;
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&file, &shot).map_err(|e| format!("{}: {e}", file.display()))?;
    println!("dashboard screenshot: {} ({} bytes)", file.display(), shot.len());
    // A crafted path comes back as text, never as markup.
    browser
        .eval(
            r#"const f = document.getElementById('explain');
               f.path.value = '/<img src=x onerror="document.body.dataset.pwned=1">';
               f.requestSubmit();"#,
            json!([]),
        )
        .await?;
    let shown = wait_for(
        &browser,
        "const t = document.getElementById('explanation').textContent; return t.includes('onerror') ? t : null",
    )
    .await?;
    let pwned = browser
        .eval(
            "return [document.body.dataset.pwned || null, document.querySelectorAll('#explanation *').length]",
            json!([]),
        )
        .await?;
    if pwned != json!([null, 0]) || !shown.contains("<img src=x") {
        return Err(format!("markup in a path was interpreted: {pwned} / {shown}"));
    }
    browser.close().await;
    let rss_after = control_plane_rss();
    println!(
        "dashboard: page loaded in {load_ms} ms (navigation), data first drawn at {:.0} ms; control plane RSS {} → {} KiB with the page open",
        first_render.unwrap_or(-1.0),
        rss_before.unwrap_or(0),
        rss_after.unwrap_or(0)
    );
    hostile_callers().await?;
    Ok(())
}

/// What the page does not show yet (empty: everything the Done-when asks).
fn what_is_missing(page: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    let nodes: Vec<&str> = page["nodes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for n in [
        "api-gateway v1",
        "user-service v1",
        "order-service v1",
        "order-service v2",
        "product-service v1",
        "notification-service v1",
    ] {
        if !nodes.contains(&n) {
            missing.push(format!("node {n}"));
        }
    }
    let edges: Vec<&Value> = page["edges"].as_array().into_iter().flatten().collect();
    let edge =
        |s: &'static str, d: &'static str| edges.iter().filter(move |e| e["source"] == s && e["destination"] == d);
    // The live traffic's edges carry requests now; the journey's order → product calls are over.
    for (s, d, live) in [
        ("api-gateway", "order-service", true),
        ("api-gateway", "product-service", true),
        ("order-service", "product-service", false),
    ] {
        if !edge(s, d)
            .any(|e| e["mtls"] == true && e["lock"] == true && (!live || e["rps"].as_f64().unwrap_or(0.0) > 0.0))
        {
            missing.push(format!("{s} → {d} with a lock{}", if live { " and traffic" } else { "" }));
        }
    }
    if !edge("notification-service", "order-service").any(|e| e["denied"] == true && e["red"] == true) {
        missing.push("notification-service → order-service denied, in red".into());
    }
    if edge("api-gateway", "order-service").any(|e| e["denied"] == true) {
        missing.push("api-gateway → order-service NOT denied".into());
    }
    let v1 = page["split"]["v1"].as_f64().unwrap_or(0.0);
    let v2 = page["split"]["v2"].as_f64().unwrap_or(0.0);
    // 90/10 with about 300 requests in the window: three standard deviations either side.
    if !((84.0..=96.0).contains(&v1) && (v1 + v2 - 100.0).abs() < 0.5) {
        missing.push(format!("order-service split near 90/10 (now v1 {v1} %, v2 {v2} %)"));
    }
    // Seven sidecars and the ingress gateway.
    if page["sidecars"] != 8 || page["acked"] != 8 {
        missing.push(format!("8 proxies, each ACKed (now {} / {})", page["sidecars"], page["acked"]));
    }
    if page["problems"].as_array().is_some_and(|p| !p.is_empty()) {
        missing.push(format!("no problems (now {})", page["problems"]));
    }
    missing
}

/// Polls a script until it returns a string (within 30 s).
async fn wait_for(browser: &Browser, script: &str) -> Result<String, String> {
    let script = if script.trim_start().starts_with("const") { script.to_string() } else { format!("return {script}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = browser.eval(&script, json!([])).await?.as_str() {
            return Ok(s.to_string());
        }
        if Instant::now() > deadline {
            return Err(format!("never true: {script}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A page from another origin (DNS rebinding: a name that resolves to 127.0.0.1; a cross-site
/// request) and a writer.
async fn hostile_callers() -> Result<(), String> {
    use weft_services_common::peers::send;
    let addr = DASHBOARD.parse().map_err(|e| format!("{e}"))?;
    let rebound = send(addr, "evil.example:15014", http::Method::GET, "/api/mesh", Default::default(), None).await?;
    if rebound.status != http::StatusCode::MISDIRECTED_REQUEST {
        return Err(format!("Host evil.example answered {}", rebound.status));
    }
    let write = send(addr, "127.0.0.1:15014", http::Method::POST, "/api/mesh", Default::default(), None).await?;
    if write.status != http::StatusCode::METHOD_NOT_ALLOWED {
        return Err(format!("POST answered {}", write.status));
    }
    // A page of another site (the operator's browser sends the request; the answer it could not
    // read anyway): refused before any work is done.
    for (name, value) in [("sec-fetch-site", "cross-site"), ("origin", "http://evil.example")] {
        let mut headers = http::HeaderMap::new();
        headers.insert(name, http::HeaderValue::from_static(value));
        let r =
            send(addr, "127.0.0.1:15014", http::Method::GET, "/api/explain?source=x&service=y", headers, None).await?;
        if r.status != http::StatusCode::FORBIDDEN {
            return Err(format!("{name}: {value} answered {}", r.status));
        }
    }
    let page = send(addr, "127.0.0.1:15014", http::Method::GET, "/", Default::default(), None).await?;
    let csp = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !csp.contains("script-src 'self'") || !csp.contains("frame-ancestors 'none'") {
        return Err(format!("the page's CSP: {csp:?}"));
    }
    Ok(())
}

/// The demo control plane's resident memory (KiB), from /proc.
fn control_plane_rss() -> Option<u64> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("weft-control-plane") && cmdline.contains("cp-demo") {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            return status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok();
        }
    }
    None
}
