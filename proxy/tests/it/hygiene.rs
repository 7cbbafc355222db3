//! Request hygiene against a client that crafts its requests: one row per
//! bypass of a `DENY paths: [/admin, /admin/*]` (and of a header condition),
//! each spelled several ways, sent raw to a real sidecar listener, with the
//! app recording what path and headers it received.

use crate::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A sidecar whose inbound app is `app`, under `normalization`, denying /admin, /admin/* and
/// any `x-role` ending in `admin`.
async fn guarded(app: &Upstream, normalization: &str) -> weft_proxy::Running {
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nworkload: {{name: w, namespace: n}}\npathNormalization: {normalization}\ninbound:\n  app: {}\n  authz:\n  - name: n/deny-admin\n    action: DENY\n    rules:\n    - to: [[{{attribute: path, anyOf: [{{match: exact, value: /admin}}, {{match: prefix, value: /admin/}}]}}]]\n    - when: [{{attribute: header, name: x-role, anyOf: [{{match: suffix, value: admin}}]}}]\n",
        app.addr
    );
    start(&yaml).await
}

/// Sends `head` (request line and headers, without the final blank line) and returns the status.
async fn status(addr: std::net::SocketAddr, head: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: w")
}

#[tokio::test]
async fn every_spelling_of_admin_is_denied_and_the_app_sees_normalized_paths() {
    let app = Upstream::named("app").await;
    let proxy = guarded(&app, "BASE").await;
    let denied = [
        "/admin",
        "/admin/x",
        "/public/../admin/x",
        "/./admin/x",
        "/%61dmin/x",
        "/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/a/b/../../admin/x",
        "/public/./../admin",
        "/../../admin/x",
    ];
    for path in denied {
        let code = status(proxy.inbound, &get(path)).await;
        assert_eq!(code, 403, "{path} must be denied");
    }
    assert_eq!(app.requests(), 0, "no denied spelling reached the app");
    // Backslashes: the HTTP parser refuses them, or they become slashes and are denied; never 200.
    let code = status(proxy.inbound, &get("\\admin\\x")).await;
    assert!(code == 400 || code == 403, "\\admin\\x got {code}");
    // Refused outright: NUL, broken escapes.
    for path in ["/admin%00", "/x%zz", "/x%4"] {
        assert_eq!(status(proxy.inbound, &get(path)).await, 400, "{path}");
    }
    assert_eq!(app.requests(), 0);
    // Allowed: the app receives the normalized path, query untouched.
    for (sent, seen) in [
        ("/public/./x/../y?q=/../admin", "/public/y?q=/../admin"),
        ("/%70ublic/%7Ex", "/public/~x"),
        ("/%2561dmin/x", "/%2561dmin/x"), // %25 is '%': decoded once only, never twice
        ("/Admin", "/Admin"),
    ] {
        assert_eq!(status(proxy.inbound, &get(sent)).await, 200, "{sent}");
        assert_eq!(app.last().path, seen, "{sent}");
    }
}

#[tokio::test]
async fn encoded_slashes_are_a_path_only_under_decode_and_merge_slashes() {
    let app = Upstream::named("app").await;
    // BASE, as in Istio: %2F stays encoded, so /admin%2Fx is not /admin/x (documented; the app must agree).
    let base = guarded(&app, "BASE").await;
    assert_eq!(status(base.inbound, &get("/admin%2fx")).await, 200);
    assert_eq!(app.last().path, "/admin%2Fx");
    assert_eq!(status(base.inbound, &get("//admin/x")).await, 200, "BASE keeps //, as Istio's");
    let strict = guarded(&app, "DECODE_AND_MERGE_SLASHES").await;
    for path in ["/admin%2fx", "/admin%2Fx", "/public/..%2fadmin/x", "//admin/x", "/public%5c..%5cadmin", "///admin"] {
        assert_eq!(status(strict.inbound, &get(path)).await, 403, "{path}");
    }
    let merge = guarded(&app, "MERGE_SLASHES").await;
    assert_eq!(status(merge.inbound, &get("//admin//x")).await, 403);
}

#[tokio::test]
async fn repeated_and_odd_header_values_cannot_slip_past_a_header_condition() {
    let app = Upstream::named("app").await;
    let proxy = guarded(&app, "BASE").await;
    let h = |extra: &str| format!("GET /public HTTP/1.1\r\nhost: w\r\n{extra}");
    // The first value alone would pass; Envoy joins them: "user,admin" ends in admin.
    assert_eq!(status(proxy.inbound, &h("x-role: user\r\nx-role: admin")).await, 403);
    assert_eq!(status(proxy.inbound, &h("x-role: admin\r\nx-role: user,superadmin")).await, 403);
    // A non-UTF-8 value does not hide the header.
    let mut s = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    s.write_all(b"GET /public HTTP/1.1\r\nhost: w\r\nx-role: \xff\xfeadmin\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 403"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(app.requests(), 0);
    assert_eq!(status(proxy.inbound, &h("x-role: user")).await, 200);
}

#[tokio::test]
async fn connection_cannot_strip_the_headers_the_sidecar_sets() {
    let app = Upstream::named("app").await;
    let proxy = guarded(&app, "BASE").await;
    let head = "GET /public HTTP/1.1\r\nhost: w\r\nconnection: x-request-id, x-forwarded-client-cert, keep-alive";
    assert_eq!(status(proxy.inbound, head).await, 200);
    let seen = app.last();
    assert!(seen.headers.contains_key("x-request-id"), "the sidecar's request id survives: {:?}", seen.headers);
    assert!(!seen.headers.contains_key("connection"));
}

#[tokio::test]
async fn one_authority_a_host_rule_sees_what_the_app_sees() {
    let app = Upstream::named("app").await;
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nworkload: {{name: w, namespace: n}}\ninbound:\n  app: {}\n  authz:\n  - name: n/deny-host\n    action: DENY\n    rules:\n    - when: [{{attribute: header, name: host, anyOf: [{{match: exact, value: admin.example}}]}}]\n    - when: [{{attribute: header, name: x-debug, anyOf: [{{match: any}}]}}]\n",
        app.addr
    );
    let proxy = start(&yaml).await;
    // Absolute form with another Host: the target's authority wins, for the rule and the app alike.
    assert_eq!(status(proxy.inbound, "GET http://admin.example/x HTTP/1.1\r\nhost: public").await, 403);
    assert_eq!(status(proxy.inbound, "GET http://x@admin.example/ HTTP/1.1\r\nhost: admin.example").await, 400);
    assert_eq!(status(proxy.inbound, "GET admin.example:80 HTTP/1.1\r\nhost: admin.example").await, 400);
    assert_eq!(status(proxy.inbound, "GET / HTTP/1.1\r\nhost:").await, 400, "an empty Host");
    assert_eq!(status(proxy.inbound, "GET / HTTP/1.1\r\nhost: a\r\nhost: b").await, 400, "two Hosts");
    // `*` on a header is presence, an empty value too (Istio's present_match).
    assert_eq!(status(proxy.inbound, "GET / HTTP/1.1\r\nhost: public\r\nx-debug:").await, 403);
    assert_eq!(app.requests(), 0);
    // A client's x-envoy-original-path never reaches the app.
    assert_eq!(
        status(proxy.inbound, "GET http://public/x HTTP/1.1\r\nhost: other\r\nx-envoy-original-path: /admin").await,
        200
    );
    let seen = app.last();
    assert_eq!(seen.headers["host"], "public");
    assert!(!seen.headers.contains_key("x-envoy-original-path"));
}

#[test]
fn a_condition_on_a_pseudo_header_is_refused_never_dropped() {
    let yaml = "apiVersion: weft.dev/v1alpha1\nworkload: {name: w, namespace: n}\ninbound:\n  app: 127.0.0.1:1\n  authz:\n  - name: n/p\n    action: ALLOW\n    rules:\n    - when: [{attribute: header, name: ':path', noneOf: [{match: prefix, value: /admin}]}]\n";
    let err = parse(yaml).validate().unwrap_err().to_string();
    assert!(err.contains(":path") && err.contains("not a lower-case header name"), "{err}");
}

#[tokio::test]
async fn label_values_from_the_network_are_bounded() {
    let app = Upstream::named("app").await;
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nworkload: {{name: w, namespace: n, labels: {{app: shop}}}}\ninbound:\n  app: {}\nservices: {{}}\nclusters: {{}}\n",
        app.addr
    );
    let proxy = start(&yaml).await;
    // Inbound: a caller's Host is not a label value; the destination service is the workload's own.
    for i in 0..300 {
        assert_eq!(status(proxy.inbound, &format!("GET / HTTP/1.1\r\nhost: h{i}.example")).await, 200);
    }
    let text = admin(&proxy, "/stats/prometheus").await;
    let inbound: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
        .collect();
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert!(inbound[0].contains("destination_service=\"shop.n.svc.cluster.local\""), "{}", inbound[0]);
    // Outbound: distinct unknown hosts (404 NR) fold into one overflow set past the cap.
    let cap = weft_proxy::ops::metrics::MAX_REQUEST_SERIES;
    for i in 0..cap + 50 {
        assert_eq!(status(proxy.outbound, &format!("GET / HTTP/1.1\r\nhost: x{i}.example")).await, 404);
    }
    let text = admin(&proxy, "/stats/prometheus").await;
    let series = text.lines().filter(|l| l.starts_with("istio_requests_total{")).count();
    assert!(series <= cap + 1, "{series} series");
    assert!(text.contains("destination_service=\"overflow\""));
    assert!(metric(&text, "weft_metric_series_overflow_total", &[]) >= 50.0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_hypers_30_second_head_timeout() {
    // hyper arms its header-read timeout (30 s unless set) while a keep-alive connection
    // waits for its next request; the sidecar's idle timeout (1 h, here 2 min) is what
    // closes idle connections. This test waits 31 s: the bound it checks is a time.
    let app = Upstream::named("app").await;
    let yaml =
        format!("apiVersion: weft.dev/v1alpha1\nworkload: {{name: w, namespace: n}}\ninbound:\n  app: {}\n", app.addr);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = weft_proxy::ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        access_log: false,
        idle_timeout: std::time::Duration::from_secs(120),
        ..Default::default()
    };
    let proxy = weft_proxy::Proxy::start(options, parse(&yaml), prometheus::Registry::new()).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy.inbound).await.unwrap());
    let (mut h1, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(std::time::Duration::from_secs(31)).await;
        }
        let req =
            http::Request::get("/").header("host", "w").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        let resp = h1.send_request(req).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(resp.status(), 200, "round {round}");
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    // An app that takes 600 ms to answer: longer than the idle timeout, so a request in flight
    // must hold its connection open.
    let app = Upstream::with("slow", |_| {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            ok("slow")
        })
    })
    .await;
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let yaml =
        format!("apiVersion: weft.dev/v1alpha1\nworkload: {{name: w, namespace: n}}\ninbound:\n  app: {}\n", app.addr);
    let options = weft_proxy::ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        access_log: false,
        idle_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let proxy = weft_proxy::Proxy::start(options, parse(&yaml), prometheus::Registry::new()).await.unwrap();
    // HTTP/1.1 keep-alive: the request in flight completes; then the idle connection is closed.
    let mut s = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: w\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "a slow request is not cut");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the idle keep-alive connection was closed: {closed:?}");
    // h2c: the same; the client's connection task ends when the server closes it.
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy.inbound).await.unwrap());
    let (mut h2, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://w/").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200, "a slow request is not cut");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle h2c connection was closed");
}
