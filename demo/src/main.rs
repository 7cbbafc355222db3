//! The driver of `make demo`: once scripts/demo.sh has started etcd, the control
//! plane and the five services each behind its sidecar, and applied policies/,
//! this walks a user through the shop and sends a traffic mix through the
//! gateway, then prints what it observed — the v1/v2 split, `x-canary`
//! routing, least privilege (one call per service that its policy or the
//! service itself refuses), an instance ejected after it was made to fail,
//! latency percentiles. Exits non-zero when a check fails.
//!
//! Size: the demo's story in order (journey, traffic mix, least privilege, ejection,
//! latency), each step a check the demo test relies on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use weft_testkit::{Answer, Client};

#[derive(Debug, Parser)]
#[command(name = "weft-demo", about = "Drives the shop through the mesh and reports what it saw")]
struct Args {
    /// The api-gateway app: the shop's public entry.
    #[arg(long, default_value = "127.0.0.1:3000")]
    gateway: SocketAddr,
    /// The gateway sidecar's admin listener (/clusters shows ejections).
    #[arg(long, default_value = "127.0.0.1:15000")]
    gateway_admin: SocketAddr,
    /// notification-service's sidecar outbound: a caller the authorization policy does not allow.
    #[arg(long, default_value = "127.0.0.1:16401")]
    intruder: SocketAddr,
    /// The other sidecars' outbound listeners, to call as their workloads would.
    #[arg(long, default_value = "127.0.0.1:15001")]
    gateway_outbound: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:16101")]
    user_outbound: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:16201")]
    order_outbound: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:16301")]
    product_outbound: SocketAddr,
    /// The member of staff user-service was started with (STAFF_EMAIL, STAFF_PASSWORD).
    #[arg(long, env = "WEFT_DEMO_STAFF_EMAIL", default_value = "staff@shop.example")]
    staff_email: String,
    #[arg(long, env = "WEFT_DEMO_STAFF_PASSWORD", default_value = "")]
    staff_password: String,
    /// The order-service instance made to fail: its app (for /admin/fault), its name, its sidecar's inbound.
    #[arg(long, default_value = "127.0.0.1:3022")]
    faulty_app: SocketAddr,
    #[arg(long, default_value = "order-service-v1-b")]
    faulty_name: String,
    #[arg(long, default_value = "127.0.0.1:16216")]
    faulty_endpoint: SocketAddr,
    /// product-service's app, measured directly for comparison.
    #[arg(long, default_value = "127.0.0.1:3003")]
    direct_product: SocketAddr,
    /// Where scripts/demo.sh keeps every process's log (`<workload>.sidecar.log`, `<workload>.log`):
    /// one request's trace is followed through them.
    #[arg(long, env = "WEFT_DEMO_LOGS")]
    logs: Option<std::path::PathBuf>,
    /// Requests in the canary mix.
    #[arg(long, default_value_t = 200)]
    mix: usize,
    /// Requests per latency sample.
    #[arg(long, default_value_t = 300)]
    latency_requests: usize,
    /// No report: a customer of its own keeps a gentle traffic mix going until stopped
    /// (orders through the canary, the catalogue, and a call the policy refuses), so
    /// Prometheus and the dashboard have a live mesh to show.
    #[arg(long)]
    live: bool,
    /// No report: serve the partner's mail API on this address (outside the mesh; notification-service
    /// reaches it only through the ServiceEntry) and print one line per mail until stopped.
    #[arg(long, value_name = "ADDR")]
    mail_api: Option<SocketAddr>,
}

/// The checks that passed and failed, printed as the report goes.
#[derive(Debug, Default)]
struct Report {
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let what = what.into();
            println!("  !! {what}");
            self.failures.push(what);
        }
    }
}

fn expect(report: &mut Report, a: &Answer, want: StatusCode, what: &str) {
    report.check(a.status == want, format!("{what}: expected {want}, got {} {}", a.status, a.text));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut report = Report::default();
    if let Some(addr) = args.mail_api {
        return mail_api(addr).await;
    }
    let gateway = Client::new(args.gateway);
    if args.live {
        return live(&args, &gateway).await;
    }
    let (me, order_id, product_id) = journey(&args, &gateway, &mut report).await;
    trace(&args, &me, product_id, &mut report).await;
    canary(&me, &order_id, args.mix, &mut report).await;
    authorization(&args, &me, &mut report).await;
    ejection(&args, &me, &mut report).await;
    latency(&args, &gateway, &mut report).await;
    println!();
    if report.failures.is_empty() {
        println!("demo: every check passed");
        Ok(())
    } else {
        anyhow::bail!("demo: {} check(s) failed", report.failures.len())
    }
}

/// A customer's background traffic, forever: every 200 ms an order list (the canary
/// splits it 90/10), every 400 ms the catalogue, every 2 s notification-service asking
/// order-service for orders (refused by the AuthorizationPolicy).
async fn live(args: &Args, g: &Client) -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let email = format!("live-{stamp}@example.com");
    let reg = g.post("/api/users/register", json!({"email": email, "password": "demo-password", "name": "Live"})).await;
    anyhow::ensure!(reg.status == StatusCode::ACCEPTED, "register: {} {}", reg.status, reg.text);
    let login = g.post("/api/users/login", json!({"email": email, "password": "demo-password"})).await;
    anyhow::ensure!(login.status == StatusCode::OK, "login: {} {}", login.status, login.text);
    let me = g.with("authorization", &format!("Bearer {}", login.json["token"].as_str().unwrap_or_default()));
    println!("live traffic as {email}: orders every 200 ms, products every 400 ms, a refused call every 2 s");
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for i in 0u64.. {
        tick.tick().await;
        me.get("/api/orders").await;
        if i % 2 == 0 {
            me.get("/api/products").await;
        }
        if i % 10 == 0 {
            let _ = weft_services_common::peers::send(
                args.intruder,
                "order-service",
                Method::GET,
                "/orders",
                HeaderMap::new(),
                None,
            )
            .await;
        }
    }
    Ok(())
}

/// A stand-in for a mail provider's HTTP API: `POST /send` with a JSON mail prints
/// `mail <key> to user <id>: <subject>: <text>` and answers 202; a repeated
/// `Idempotency-Key` is answered 200 and not sent twice, as such APIs do.
async fn mail_api(addr: SocketAddr) -> anyhow::Result<()> {
    type Sent = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;
    async fn send(
        axum::extract::State(sent): axum::extract::State<Sent>,
        headers: HeaderMap,
        axum::Json(mail): axum::Json<Value>,
    ) -> StatusCode {
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let new = sent.lock().map(|mut s| key.is_empty() || s.insert(key.clone())).unwrap_or(true);
        if !new {
            return StatusCode::OK;
        }
        let field = |f: &str| mail[f].as_str().unwrap_or("?").to_string();
        println!("mail {key} to user {}: {}: {}", field("to_user"), field("subject"), field("text"));
        StatusCode::ACCEPTED
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("# the partner's mail API on http://{addr}/send");
    let app = axum::Router::new().route("/send", axum::routing::post(send)).with_state(Sent::default());
    axum::serve(listener, app).await?;
    Ok(())
}

/// register → login → staff create a product → place an order → pay → staff ship → the notifications arrive.
async fn journey(args: &Args, g: &Client, report: &mut Report) -> (Client, String, u64) {
    println!("== The shop's journey, through api-gateway at http://{}", g.addr);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let email = format!("demo-{stamp}@example.com");
    let reg =
        g.post("/api/users/register", json!({"email": email, "password": "demo-password", "name": "Demo User"})).await;
    expect(report, &reg, StatusCode::ACCEPTED, "register");
    let login = g.post("/api/users/login", json!({"email": email, "password": "demo-password"})).await;
    expect(report, &login, StatusCode::OK, "login");
    let token = login.json["token"].as_str().unwrap_or_default();
    println!(
        "  register {email}: {}   login: {} (JWT, expires in {} s)",
        reg.status.as_u16(),
        login.status.as_u16(),
        login.json["expires_in"]
    );
    let me = g.with("authorization", &format!("Bearer {token}"));
    let staff_login =
        g.post("/api/users/login", json!({"email": args.staff_email, "password": args.staff_password})).await;
    expect(report, &staff_login, StatusCode::OK, "staff login");
    let staff = g.with("authorization", &format!("Bearer {}", staff_login.json["token"].as_str().unwrap_or_default()));
    let product =
        staff.post("/api/products", json!({"name": "Espresso machine", "price_cents": 34900, "stock": 100})).await;
    expect(report, &product, StatusCode::CREATED, "staff create a product");
    let product_id = product.json["id"].as_u64().unwrap_or_default();
    println!("  product {product_id} \"Espresso machine\", stock 100: {}", product.status.as_u16());
    // Sent twice with one Idempotency-Key, as a client retrying after a lost answer would: one order.
    let keyed = me.with("idempotency-key", &format!("demo-order-{stamp}"));
    let order = keyed.post("/api/orders", json!({"product_id": product_id, "quantity": 2})).await;
    expect(report, &order, StatusCode::CREATED, "place order");
    let resent = keyed.post("/api/orders", json!({"product_id": product_id, "quantity": 2})).await;
    let id = order.json["id"].as_str().unwrap_or_default().to_string();
    let replayed = resent.status == StatusCode::CREATED
        && resent.header("idempotent-replayed") == Some("true")
        && resent.json["id"].as_str() == Some(id.as_str());
    report.check(replayed, format!("the resent order is the same order: {} {}", resent.status, resent.text));
    let paid = me.post(&format!("/api/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await;
    let shipped = staff.post(&format!("/api/orders/{id}/ship"), json!({})).await;
    let refused = me.post(&format!("/api/orders/{id}/cancel"), json!({})).await;
    expect(report, &paid, StatusCode::OK, "pay");
    expect(report, &shipped, StatusCode::OK, "ship");
    expect(report, &refused, StatusCode::CONFLICT, "cancel after shipping");
    let stock = me.get(&format!("/api/products/{product_id}")).await.json["stock"].clone();
    println!(
        "  order {} (placed by {}): created {} (sent again with its Idempotency-Key: {}{}) → paid {} → shipped by staff {}; cancel now: {} ({}); stock left {stock}",
        &id[..id.len().min(8)],
        order.header("x-version").unwrap_or("?"),
        order.status.as_u16(),
        resent.status.as_u16(),
        if replayed { " replayed, same order" } else { " NOT the same order" },
        paid.status.as_u16(),
        shipped.status.as_u16(),
        refused.status.as_u16(),
        refused.json["error"]["message"].as_str().unwrap_or_default(),
    );
    let start = Instant::now();
    let mut kinds = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        let n = me.get("/api/notifications").await;
        kinds = n
            .json
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["kind"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if kinds.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kinds.reverse();
    report.check(
        kinds.len() == 3,
        format!("three notifications (RabbitMQ → notification-service → MariaDB), got {kinds:?}"),
    );
    println!("  notifications delivered via RabbitMQ in {:.1} s: {}", start.elapsed().as_secs_f64(), kinds.join(", "));
    (me, id, product_id)
}

/// One order placed with a W3C `traceparent` (sampled), then followed: its trace id must be
/// in the access log of every sidecar on its way (api-gateway's, an order-service instance's,
/// product-service's) and in the log of every service it reached.
async fn trace(args: &Args, me: &Client, product_id: u64, report: &mut Report) {
    println!("== Trace context: one order followed through every hop by its trace id");
    let Some(logs) = &args.logs else {
        report.check(false, "no --logs directory: the trace cannot be followed");
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let trace_id = format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 64) | 1);
    let traced = me.with("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"));
    let order = traced.post("/api/orders", json!({"product_id": product_id, "quantity": 1})).await;
    expect(report, &order, StatusCode::CREATED, "the traced order");
    let hops = [
        ("sidecar", "api-gateway.sidecar.log"),
        ("sidecar", "order-service-"),
        ("sidecar", "product-service.sidecar.log"),
        ("service", "api-gateway.log"),
        ("service", "order-service-"),
        ("service", "product-service.log"),
    ];
    // Access-log lines are written by their own thread: wait for them, not for a fixed time.
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        seen = std::fs::read_dir(logs)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&trace_id)))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        seen.sort();
        if hops.iter().all(|(kind, prefix)| logged_in(&seen, kind, prefix)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names = |sidecar: bool| {
        seen.iter()
            .filter(|f| f.ends_with(".sidecar.log") == sidecar)
            .map(|f| f.trim_end_matches(".log").trim_end_matches(".sidecar").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  trace {trace_id}: in the access log of the sidecars {}; in the logs of {}", names(true), names(false));
    let mut every = true;
    for (kind, prefix) in hops {
        let ok = logged_in(&seen, kind, prefix);
        let workload = prefix.trim_end_matches('-').trim_end_matches(".sidecar.log").trim_end_matches(".log");
        report.check(ok, format!("the trace id is in the {kind} log of {workload}"));
        every &= ok;
    }
    if every {
        println!("  the trace reached every hop: api-gateway → order-service → product-service, sidecars and services");
    }
}

/// Whether a file of `seen` is the `kind` log (sidecar or service) of a workload named `prefix…`.
fn logged_in(seen: &[String], kind: &str, prefix: &str) -> bool {
    seen.iter().any(|f| f.starts_with(prefix) && f.ends_with(".sidecar.log") == (kind == "sidecar"))
}

/// The VirtualService: `x-canary: true` → v2, otherwise 90/10.
async fn canary(me: &Client, order_id: &str, n: usize, report: &mut Report) {
    println!("== Canary: VirtualService order-service (x-canary: true → v2, otherwise 90% v1 / 10% v2)");
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    let mut instances: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let a = me.get(&format!("/api/orders/{order_id}")).await;
        let version = if a.status == StatusCode::OK {
            a.header("x-version").unwrap_or("?").to_string()
        } else {
            format!("HTTP {}", a.status.as_u16())
        };
        *versions.entry(version).or_default() += 1;
        *instances.entry(a.header("x-served-by").unwrap_or("?").to_string()).or_default() += 1;
    }
    let pct = |k: &str| versions.get(k).copied().unwrap_or(0) as f64 * 100.0 / n as f64;
    println!(
        "  {n} requests: v1 {} ({:.1}%), v2 {} ({:.1}%); by instance: {}",
        versions.get("v1").copied().unwrap_or(0),
        pct("v1"),
        versions.get("v2").copied().unwrap_or(0),
        pct("v2"),
        instances.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    );
    report.check(pct("v1") + pct("v2") == 100.0, format!("every request answered: {versions:?}"));
    report.check((80.0..=97.0).contains(&pct("v1")), format!("about 90% on v1, got {:.1}%", pct("v1")));
    let canary = me.with("x-canary", "true");
    let mut v2 = 0;
    for _ in 0..20 {
        if canary.get(&format!("/api/orders/{order_id}")).await.header("x-version") == Some("v2") {
            v2 += 1;
        }
    }
    println!("  20 requests with x-canary: true → v2 {v2}/20");
    report.check(v2 == 20, format!("x-canary: true always reaches v2, got {v2}/20"));
}

/// Least privilege: every service refuses one call its call graph does not have,
/// by its AuthorizationPolicy (a 403 at its sidecar, from the caller's mTLS
/// identity) or by the service itself (roles, internal routes).
async fn authorization(args: &Args, me: &Client, report: &mut Report) {
    println!("== Least privilege: deny by default, one ALLOW per service naming its callers (weftctl explain --access above)");
    let allowed = me.get("/api/orders").await;
    println!("  customer → api-gateway → order-service: {}", allowed.status.as_u16());
    report.check(allowed.status == StatusCode::OK, "api-gateway is allowed to order-service");
    let as_user = || {
        let mut h = HeaderMap::new();
        h.insert("x-user-id", http::HeaderValue::from_static("1"));
        h.insert("x-user-role", http::HeaderValue::from_static("staff"));
        h
    };
    let reserve = Some(bytes::Bytes::from_static(br#"{"order_id":"made-up","quantity":1}"#));
    let notice = Some(bytes::Bytes::from_static(br#"{"user_id":"1","kind":"x","message":"spoofed"}"#));
    let denials = [
        ("notification-service", args.intruder, "order-service", Method::GET, "/orders", None),
        ("notification-service", args.intruder, "user-service", Method::GET, "/users/me", None),
        ("api-gateway", args.gateway_outbound, "product-service", Method::POST, "/products/1/reservations", reserve),
        ("product-service", args.product_outbound, "notification-service", Method::POST, "/notifications", notice),
        ("order-service", args.order_outbound, "api-gateway", Method::GET, "/api/products", None),
    ];
    for (from, outbound, to, method, path, body) in denials {
        let json = body.is_some();
        let mut headers = as_user();
        if json {
            headers.insert("content-type", http::HeaderValue::from_static("application/json"));
        }
        let denied = weft_services_common::peers::send(outbound, to, method.clone(), path, headers, body).await;
        let (status, text) = match &denied {
            Ok(r) => (r.status.as_u16(), String::from_utf8_lossy(&r.body).trim().to_string()),
            Err(e) => (0, e.clone()),
        };
        println!("  {from} → {to} {method} {path}: {status} {text}");
        report.check(status == 403, format!("{from} → {to} {method} {path} refused with 403, got {status} {text}"));
    }
    // Allowed at the mesh, refused by the service: a customer's role, and routes the gateway never exposes.
    let customer_creates = me.post("/api/products", json!({"name": "Sneaky", "price_cents": 1, "stock": 1})).await;
    let reservation = me.post("/api/products/1/reservations", json!({"order_id": "made-up", "quantity": 1})).await;
    let someone = me.get("/api/users/1").await;
    println!(
        "  customer → POST /api/products: {} (staff only)   → POST /api/products/1/reservations: {} (internal, not routed)   → GET /api/users/1: {} (customers read /users/me)",
        customer_creates.status.as_u16(),
        reservation.status.as_u16(),
        someone.status.as_u16()
    );
    report.check(customer_creates.status == StatusCode::FORBIDDEN, "a customer cannot create products");
    report.check(reservation.status == StatusCode::NOT_FOUND, "reservations are not routed by the gateway");
    report.check(someone.status == StatusCode::FORBIDDEN, "a customer cannot read other users");
}

/// The DestinationRule's outlier detection: 5 consecutive 5xx eject an instance for 30 s.
async fn ejection(args: &Args, me: &Client, report: &mut Report) {
    println!("== Outlier detection: DestinationRule order-service (5 consecutive 5xx → ejected for 30 s, at most 50% of a subset)");
    let fault = Client::new(args.faulty_app);
    let set = fault.post("/admin/fault", json!({"status": 500})).await;
    expect(report, &set, StatusCode::NO_CONTENT, "inject the fault");
    let (mut errors, mut last_error, total) = (0, None, 60);
    for i in 0..total {
        if me.get("/api/orders").await.status != StatusCode::OK {
            errors += 1;
            last_error = Some(i);
        }
    }
    let clusters = Client::new(args.gateway_admin).get("/clusters").await.json;
    let endpoint = clusters["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["address"] == Value::String(args.faulty_endpoint.to_string()))
        .unwrap_or(Value::Null);
    let ejected = endpoint["ejected"] == Value::Bool(true);
    let clean_tail = total - last_error.map_or(0, |i| i + 1);
    println!(
        "  {} told to answer 500: {errors} of {total} requests failed, then it was ejected by the gateway's sidecar ({}); the last {clean_tail} requests: no errors",
        args.faulty_name,
        if ejected { format!("ejected for another {:.0} s", endpoint["ejected_for_seconds"].as_f64().unwrap_or(0.0)) } else { "NOT ejected".into() },
    );
    report.check(ejected, format!("{} ejected, /clusters shows {endpoint}", args.faulty_name));
    report.check(errors <= 5, format!("at most 5 errors reach clients before the ejection, got {errors}"));
    let healed = fault.post("/admin/fault", json!({"status": 0})).await;
    expect(report, &healed, StatusCode::NO_CONTENT, "clear the fault");
    println!("  {} healed; it returns to the pool when its 30 s ejection ends", args.faulty_name);
}

/// Latency of a read through the whole mesh path and straight to the service.
async fn latency(args: &Args, g: &Client, report: &mut Report) {
    println!("== Latency: {} sequential GET requests each (this machine, no warm-up excluded)", args.latency_requests);
    let direct = Client::new(args.direct_product);
    let mesh = sample(g, "/api/products", args.latency_requests).await;
    let plain = sample(&direct, "/products", args.latency_requests).await;
    for (label, h) in [
        ("client → api-gateway → sidecar ⇒ mTLS ⇒ sidecar → product-service → MariaDB", &mesh),
        ("client → product-service → MariaDB (no mesh, no gateway)", &plain),
    ] {
        match h {
            Ok(h) => println!(
                "  {label}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            ),
            Err(e) => report.check(false, format!("{label}: {e}")),
        }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

async fn sample(c: &Client, path: &str, n: usize) -> Result<Histogram<u64>, String> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    for _ in 0..n {
        let start = Instant::now();
        let a = c.get(path).await;
        if a.status != StatusCode::OK {
            return Err(format!("GET {path}: {} {}", a.status, a.text));
        }
        h.record(start.elapsed().as_micros().max(1) as u64).map_err(|e| e.to_string())?;
    }
    Ok(h)
}
