//! Protocols in and out, and bad input: never a panic, always a 4xx or a close.

use crate::harness::*;
use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SVC: &str = "svc.test.svc.cluster.local";

async fn simple(extra: &str) -> (Upstream, weft_proxy::Running) {
    let up = Upstream::named("up").await;
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let proxy = start(&config_yaml(&services, &cluster("c", extra, &[&up]))).await;
    (up, proxy)
}

/// Writes raw bytes and returns the status line of the answer ("" if closed).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn h2c_from_the_app_goes_upstream_as_http1_by_default() {
    let (up, proxy) = simple("").await;
    let mut c = Client::h2(proxy.outbound).await;
    let got = c.get("svc", "/h2").await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "up"));
    assert_eq!(up.last().version, Version::HTTP_11);
    assert_eq!(up.last().headers["host"], "svc");
}

#[tokio::test]
async fn http2_cluster_multiplexes_one_connection() {
    let (up, proxy) = simple("    protocol: HTTP2\n").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = proxy.outbound;
        tasks.push(tokio::spawn(async move { get(addr, "svc", "/", &[]).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(up.last().version, Version::HTTP_2);
    assert_eq!(up.connections(), 1, "20 concurrent requests, one HTTP/2 connection");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (up, proxy) = simple("").await;
    let big = format!("GET / HTTP/1.1\r\nhost: svc\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert!(raw(proxy.outbound, big.as_bytes()).await.starts_with("HTTP/1.1 431"));
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nhost: svc\r\n{many}\r\n");
    assert!(raw(proxy.outbound, req.as_bytes()).await.starts_with("HTTP/1.1 431"));
    assert_eq!(up.requests(), 0);
    // The proxy is still fine.
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn malformed_requests_get_400_or_a_close() {
    let (up, proxy) = simple("").await;
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: svc\r\ncontent-length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        let line = raw(proxy.outbound, junk).await;
        assert!(
            line.is_empty() || line.starts_with("HTTP/1.1 400"),
            "{:?} -> {line:?} upstream saw {:?}",
            String::from_utf8_lossy(junk),
            up.seen.lock().unwrap()
        );
    }
    // Only the chunked request had valid headers; its broken body never made a whole request.
    assert!(up.seen.lock().unwrap().iter().all(|s| s.body.is_empty()));
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn http_1_0_is_426_and_http_1_1_without_host_is_400_as_envoy_answers() {
    let (up, proxy) = simple("").await;
    let line = raw(proxy.outbound, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(line.ends_with(" 426 Upgrade Required"), "{line}");
    let line = raw(proxy.outbound, b"GET / HTTP/1.0\r\nhost: svc\r\n\r\n").await;
    assert!(line.ends_with(" 426 Upgrade Required"), "{line}");
    let line = raw(proxy.outbound, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");
    let line = raw(proxy.inbound, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");
    assert_eq!(up.requests(), 0, "none of them reached the upstream");
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn inbound_delivers_to_the_app() {
    let app = Upstream::named("app").await;
    let yaml = config_yaml("", "");
    let proxy = start_with(&yaml.replace("services:\n\nclusters:\n\n", ""), Some(app.addr)).await;
    let got = get(proxy.inbound, "svc.test", "/in", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "app"));
    assert_eq!(app.last().path, "/in");
    assert!(app.last().headers.contains_key("x-request-id"));
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(
        metric(&text, "istio_requests_total", &[r#"reporter="destination""#, r#"destination_workload="client""#]),
        1.0
    );
}

#[tokio::test]
async fn inbound_without_app_is_503_uh() {
    let (_up, proxy) = simple("").await;
    let got = get(proxy.inbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 503);
    assert!(got.header("x-weft-error").contains("no local app"));
}

#[tokio::test]
async fn admin_endpoints() {
    let (_up, proxy) = simple("").await;
    assert_eq!(get(proxy.admin, "a", "/ready", &[]).await.status, 200);
    assert_eq!(get(proxy.admin, "a", "/healthz", &[]).await.status, 200);
    get(proxy.outbound, "svc", "/", &[]).await;
    let clusters: serde_json::Value = serde_json::from_str(&admin(&proxy, "/clusters").await).unwrap();
    let ep = &clusters["clusters"][0]["endpoints"][0];
    assert_eq!(ep["open_connections"], 1);
    assert_eq!(ep["active_requests"], 0);
    let dump: serde_json::Value = serde_json::from_str(&admin(&proxy, "/config_dump").await).unwrap();
    assert_eq!(dump["version"], "t1");
    assert_eq!(dump["config"]["workload"]["name"], "client");
}

#[tokio::test]
async fn large_and_chunked_bodies_stream_through_intact() {
    let (up, proxy) = simple("").await;
    let big = "x".repeat(300 * 1024);
    let mut c = Client::h1(proxy.outbound).await;
    let got = c.send("POST", "svc", "/upload", &[], &big).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.last().body.len(), big.len(), "a body above the retry buffer streams whole");
    // HTTP/2 bodies come without content-length; small ones are buffered, large ones streamed.
    let mut c = Client::h2(proxy.outbound).await;
    for size in [10, 100 * 1024] {
        let body = "y".repeat(size);
        assert_eq!(c.send("PUT", "svc", "/h2", &[], &body).await.status, 200);
        assert_eq!(up.last().body.len(), size);
    }
}
