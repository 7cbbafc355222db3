//! Routes that do more than forward: redirects, direct responses, CORS answered by
//! the sidecar, mirrors — through a real sidecar to real upstreams.

use crate::harness::*;
use std::time::Duration;

const SVC: &str = "svc.test.svc.cluster.local";

async fn with_routes(routes: &str, ups: &[&Upstream]) -> weft_proxy::Running {
    let services = format!("  {SVC}:\n    routes:\n{routes}");
    start(&config_yaml(&services, &cluster("c", "", ups))).await
}

#[tokio::test]
async fn a_redirect_answers_with_the_location_and_never_reaches_the_app() {
    let app = Upstream::named("app").await;
    let routes = "      - match: [ { uri: { prefix: /old/ } } ]\n        redirect: { prefixRewrite: /new/, authority: 'shop.example:8443', scheme: https, code: 308 }\n        headers: { response: { set: { x-why: moved } } }\n      - route: [ { cluster: c } ]\n";
    let proxy = with_routes(routes, &[&app]).await;
    let got = get(proxy.outbound, "svc", "/old/cart?id=7", &[]).await;
    assert_eq!(got.status, 308);
    assert_eq!(got.header("location"), "https://shop.example:8443/new/cart?id=7");
    assert_eq!(got.header("x-why"), "moved", "the route's response headers apply");
    assert_eq!(app.requests(), 0);
    // Other paths are forwarded as before.
    assert_eq!(get(proxy.outbound, "svc", "/cart", &[]).await.body, "app");
}

#[tokio::test]
async fn a_direct_response_answers_with_its_status_and_body() {
    let app = Upstream::named("app").await;
    let routes = "      - match: [ { uri: { exact: /maintenance } } ]\n        directResponse: { status: 503, body: { string: 'back at noon' } }\n      - route: [ { cluster: c } ]\n";
    let proxy = with_routes(routes, &[&app]).await;
    let got = get(proxy.outbound, "svc", "/maintenance", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (503, "back at noon"));
    assert_eq!(got.header("content-type"), "text/plain");
    assert_eq!(app.requests(), 0);
    // A POST with a body gets the same answer, and the next request on the connection works.
    let mut c = Client::h1(proxy.outbound).await;
    assert_eq!(c.send("POST", "svc", "/maintenance", &[], "payload").await.status, 503);
    assert_eq!(c.get("svc", "/").await.body, "app");
}

const CORS: &str = "        cors: { allowOrigins: [ { exact: 'https://shop.example' } ], allowMethods: [GET, POST], allowHeaders: [x-token], exposeHeaders: [x-total], maxAge: 1h, allowCredentials: true }\n";

#[tokio::test]
async fn cors_preflights_from_allowed_origins_are_answered_by_the_sidecar() {
    let app = Upstream::named("app").await;
    let dead = dead_addr().await;
    let services = format!(
        "  {SVC}:\n    routes:\n      - match: [ {{ uri: {{ prefix: /down }} }} ]\n        route: [ {{ cluster: dead }} ]\n{CORS}      - route: [ {{ cluster: c }} ]\n{CORS}"
    );
    let clusters = cluster("c", "", &[&app]) + &format!("  dead:\n    endpoints: [ {{ address: \"{dead}\" }} ]\n");
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let mut c = Client::h1(proxy.outbound).await;
    let preflight = [("origin", "https://shop.example"), ("access-control-request-method", "POST")];
    let got = c.send("OPTIONS", "svc", "/orders", &preflight, "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), "https://shop.example");
    assert_eq!(got.header("access-control-allow-methods"), "GET,POST");
    assert_eq!(got.header("access-control-allow-headers"), "x-token");
    assert_eq!(got.header("access-control-max-age"), "3600");
    assert_eq!(got.header("access-control-allow-credentials"), "true");
    assert_eq!(app.requests(), 0, "an allowed preflight never reaches the app");

    // An actual request from the origin is forwarded and its response decorated.
    let got = c.send("GET", "svc", "/orders", &[("origin", "https://shop.example")], "").await;
    assert_eq!(got.body, "app");
    assert_eq!(got.header("access-control-allow-origin"), "https://shop.example");
    assert_eq!(got.header("access-control-expose-headers"), "x-total");

    // A local reply (503: nothing listens) still tells the browser what happened.
    let got = c.send("GET", "svc", "/down", &[("origin", "https://shop.example")], "").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("access-control-allow-origin"), "https://shop.example");

    // The attacker's origin: its preflight goes on to the app (Istio's FORWARD), and
    // nothing the sidecar adds lets the browser read an answer.
    let evil = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    let got = c.send("OPTIONS", "svc", "/orders", &evil, "").await;
    assert_eq!(got.body, "app");
    assert_eq!(got.header("access-control-allow-origin"), "");
    let got = c.send("GET", "svc", "/orders", &[("origin", "https://evil.example")], "").await;
    assert_eq!(got.header("access-control-allow-origin"), "");
    // A look-alike origin (a prefix of the allowed one with more after it) is not it.
    let got = c.send("GET", "svc", "/", &[("origin", "https://shop.example.evil.example")], "").await;
    assert_eq!(got.header("access-control-allow-origin"), "");
}

#[tokio::test]
async fn mirrors_get_a_copy_and_never_delay_the_answer() {
    let main = Upstream::named("main").await;
    // The mirror takes 2 s to answer; the client must not wait for it.
    let shadow = Upstream::with("shadow", |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            ok("shadow")
        })
    })
    .await;
    let services =
        format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n        mirrors: [ {{ cluster: m }} ]\n");
    let clusters = cluster("c", "", &[&main]) + &cluster("m", "", &[&shadow]);
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let mut c = Client::h1(proxy.outbound).await;
    let started = std::time::Instant::now();
    let got = c.send("POST", "svc:8080", "/orders?x=1", &[("x-user", "alice")], "the body").await;
    assert_eq!(got.body, "main");
    assert!(started.elapsed() < Duration::from_millis(1500), "the answer waited for the mirror");
    // The copy arrives: same method, path, headers and body, Host with -shadow.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shadow.seen.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no copy reached the mirror");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = shadow.seen.lock().unwrap()[0].clone();
    assert_eq!((copy.method.as_str(), copy.path.as_str()), ("POST", "/orders?x=1"));
    assert_eq!(copy.headers["host"], "svc-shadow:8080");
    assert_eq!(copy.headers["x-user"], "alice");
    assert_eq!(&copy.body[..], b"the body");
    assert_eq!(main.requests(), 1);
    // Counted when answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = admin(&proxy, "/stats/prometheus").await;
        if metric(&text, "weft_mirror_requests_total", &["cluster=\"m\"", "result=\"answered\""]) == 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_mirror_changes_nothing_for_the_caller() {
    let main = Upstream::named("main").await;
    let dead = dead_addr().await;
    let services = format!(
        "  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n        mirrors: [ {{ cluster: m, percentage: 100 }} ]\n"
    );
    let clusters = cluster("c", "", &[&main])
        + &format!("  m:\n    service: svc.test.svc.cluster.local\n    endpoints: [ {{ address: \"{dead}\" }} ]\n");
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let counts = tally(proxy.outbound, "svc", "/", &[], 20).await;
    assert_eq!(counts.get("200 main"), Some(&20), "{counts:?}");
}

/// `/tap` on the admin listener: the lines of the requests that match, as they finish,
/// with the access log off; the stream ends after `max`.
#[tokio::test]
async fn the_tap_streams_matching_requests_live() {
    use http_body_util::BodyExt;
    let app = Upstream::named("app").await;
    let proxy = with_routes("      - route: [ { cluster: c } ]\n", &[&app]).await;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(proxy.admin).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/tap?path=%2Fwanted&max=2")
        .header("host", "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Watching from here on: one request that does not match, three that do.
    for path in ["/other", "/wanted/1", "/wanted/2", "/wanted/3"] {
        assert_eq!(get(proxy.outbound, "svc", path, &[]).await.status, 200);
    }
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await.unwrap().unwrap();
    let text = String::from_utf8(body.to_bytes().to_vec()).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["path"], "/wanted/1");
    assert_eq!(lines[1]["path"], "/wanted/2");
    assert_eq!(lines[0]["status"], 200);
}
