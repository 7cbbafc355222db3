//! Retries, back-off, timeouts and the local replies they end in.

use crate::harness::*;
use http::StatusCode;
use std::time::{Duration, Instant};

const SVC: &str = "svc.test.svc.cluster.local";

fn one_route(route_extra: &str) -> String {
    format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n{route_extra}")
}

/// Fails the first `n` requests with `code`, then answers 200.
async fn flaky(n: usize, code: StatusCode) -> Upstream {
    Upstream::with("flaky", move |seen| {
        Box::pin(async move {
            if seen.n <= n {
                status(code, "flaky")
            } else {
                ok("flaky")
            }
        })
    })
    .await
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint_by_default() {
    let up = Upstream::named("alive").await;
    let dead = dead_addr().await;
    let services = one_route("");
    let clusters = format!(
        "  c:\n    lbPolicy: ROUND_ROBIN\n    endpoints:\n      - {{ address: \"{dead}\" }}\n      - {{ address: \"{}\" }}\n",
        up.addr
    );
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let mut c = Client::h1(proxy.outbound).await;
    for _ in 0..10 {
        let got = c.send("POST", "svc", "/", &[], "body").await;
        assert_eq!(got.status, 200, "connect failure retried even for POST: {got:?}");
    }
    let text = admin(&proxy, "/stats/prometheus").await;
    assert!(metric(&text, "weft_upstream_retries_total", &[r#"cluster="c""#]) >= 5.0, "{text}");
}

#[tokio::test]
async fn all_endpoints_down_is_503_uf_with_urx() {
    let dead = dead_addr().await;
    let clusters = format!("  c:\n    endpoints:\n      - {{ address: \"{dead}\" }}\n");
    let proxy = start(&config_yaml(&one_route(""), &clusters)).await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 503);
    assert!(got.body.contains("reset reason: connection failure"), "{}", got.body);
    assert!(got.header("x-weft-error").contains(&dead.to_string()));
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "istio_requests_total", &[r#"response_flags="UF,URX""#]), 1.0, "{text}");
    assert_eq!(metric(&text, "weft_upstream_retries_total", &[]), 2.0, "Istio default: 2 retries");
}

#[tokio::test]
async fn default_policy_does_not_retry_503() {
    let up = flaky(1, StatusCode::SERVICE_UNAVAILABLE).await;
    let proxy = start(&config_yaml(&one_route(""), &cluster("c", "", &[&up]))).await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 503, "Istio >= 1.24 does not retry 503 by default");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn retry_on_5xx_until_success() {
    let up = flaky(2, StatusCode::INTERNAL_SERVER_ERROR).await;
    let extra = "        retries: { attempts: 3, retryOn: [5xx], backoff: 1ms }\n";
    let proxy = start(&config_yaml(&one_route(extra), &cluster("c", "", &[&up]))).await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.requests(), 3, "two failures, then success");
}

#[tokio::test]
async fn retries_exhausted_return_the_last_response() {
    let up = flaky(100, StatusCode::BAD_GATEWAY).await;
    let extra = "        retries: { attempts: 2, retryOn: [gateway-error], backoff: 1ms }\n";
    let proxy = start(&config_yaml(&one_route(extra), &cluster("c", "", &[&up]))).await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.body, "flaky", "the upstream's own last response, not a local reply");
    assert_eq!(up.requests(), 3);
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "istio_requests_total", &[r#"response_flags="URX""#, r#"response_code="502""#]), 1.0);
}

#[tokio::test]
async fn post_is_not_retried_on_5xx_unless_asked() {
    let up = flaky(1, StatusCode::SERVICE_UNAVAILABLE).await;
    // retriableStatusCodes without an explicit retryOn: the default conditions,
    // so a GET would be retried, a POST not.
    let extra = "        retries: { attempts: 2, retriableStatusCodes: [503], backoff: 1ms }\n";
    let proxy = start(&config_yaml(&one_route(extra), &cluster("c", "", &[&up]))).await;
    let mut c = Client::h1(proxy.outbound).await;
    let got = c.send("POST", "svc", "/", &[], "pay 10 EUR").await;
    assert_eq!(got.status, 503, "non-idempotent request must not be replayed");
    assert_eq!(up.requests(), 1);

    let up = flaky(1, StatusCode::SERVICE_UNAVAILABLE).await;
    let extra = "        retries: { attempts: 2, retryOn: [5xx], backoff: 1ms }\n";
    let proxy = start(&config_yaml(&one_route(extra), &cluster("c", "", &[&up]))).await;
    let mut c = Client::h1(proxy.outbound).await;
    let got = c.send("POST", "svc", "/", &[], "pay 10 EUR").await;
    assert_eq!(got.status, 200, "explicit retryOn opts POST in");
    assert_eq!(up.requests(), 2);
    assert_eq!(up.last().body, "pay 10 EUR", "the buffered body is replayed");
    assert_eq!(up.last().method, "POST");
}

#[tokio::test]
async fn route_timeout_is_504_ut_and_covers_retries() {
    let slow = Upstream::with("slow", |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ok("slow")
        })
    })
    .await;
    let extra = "        timeout: 300ms\n        retries: { attempts: 5, perTryTimeout: 100ms, retryOn: [reset], backoff: 1ms }\n";
    let proxy = start(&config_yaml(&one_route(extra), &cluster("c", "", &[&slow]))).await;
    let t0 = Instant::now();
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    let took = t0.elapsed();
    assert_eq!(got.status, 504);
    assert_eq!(got.body, "upstream request timeout");
    assert!(took < Duration::from_secs(3), "the route timeout bounds tries and back-off: {took:?}");
    assert!(slow.requests() >= 2, "per-try timeouts were retried: {}", slow.requests());
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "istio_requests_total", &[r#"response_flags="UT""#, r#"response_code="504""#]), 1.0);
}

#[tokio::test]
async fn per_try_timeout_moves_to_a_healthy_endpoint() {
    let slow = Upstream::with("slow", |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ok("slow")
        })
    })
    .await;
    let fast = Upstream::named("fast").await;
    let extra =
        "        retries: { attempts: 2, perTryTimeout: 100ms, retryOn: [reset, connect-failure], backoff: 1ms }\n";
    let clusters = cluster("c", "    lbPolicy: ROUND_ROBIN\n", &[&slow, &fast]);
    let proxy = start(&config_yaml(&one_route(extra), &clusters)).await;
    let mut c = Client::h1(proxy.outbound).await;
    for _ in 0..4 {
        let got = c.get("svc", "/").await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "fast"));
    }
}

/// Envoy's route timeout covers the whole response: an upstream that sends its headers and
/// then stalls its body is cut when the timeout runs out (before, the body hung forever).
#[tokio::test]
async fn the_route_timeout_cuts_a_stalled_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A deliberately stalling server: headers and 5 of 100 body bytes, then silence.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello").await;
                let _ = s.read(&mut buf).await; // holds the connection until the sidecar closes it
            });
        }
    });
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n        timeout: 300ms\n");
    let clusters = format!("  c:\n    service: {SVC}\n    endpoints:\n      - {{ address: \"{addr}\" }}\n");
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let mut s = tokio::net::TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    // The sidecar closes the connection when the timeout runs out; 10 s bounds a hang.
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.expect("cut, not hung").ok();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello"), "the body is cut short: {text}");
    let t0 = Instant::now();
    loop {
        let stats = admin(&proxy, "/stats/prometheus").await;
        if metric(&stats, "istio_requests_total", &[r#"response_flags="UT""#, r#"response_code="200""#]) == 1.0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "recorded with UT: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
