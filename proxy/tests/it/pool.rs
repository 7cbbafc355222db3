//! Connection-pool limits (Envoy circuit breakers), the keep-alive race, and
//! HTTP/2 between sidecars.

use crate::harness::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SVC: &str = "svc.test.svc.cluster.local";

fn one_route(extra: &str) -> String {
    format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n{extra}")
}

async fn slow(ms: u64) -> Upstream {
    Upstream::with("slow", move |_| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ok("slow")
        })
    })
    .await
}

/// Fires `n` requests at once, each on its own client connection.
async fn burst(addr: SocketAddr, n: usize) -> Vec<Got> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(async move { get(addr, "svc", "/", &[]).await })).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn over_max_connections_and_pending_is_503_uo_at_once() {
    let up = slow(400).await;
    let extra = "    connectionPool: { tcp: { maxConnections: 2 }, http: { http1MaxPendingRequests: 2 } }\n";
    let proxy = start(&config_yaml(&one_route(""), &cluster("c", extra, &[&up]))).await;
    let got = burst(proxy.outbound, 10).await;
    let ok = got.iter().filter(|g| g.status == 200).count();
    let overflow: Vec<_> = got.iter().filter(|g| g.status == 503).collect();
    assert_eq!(ok, 4, "2 on connections + 2 pending: {got:?}");
    assert_eq!(overflow.len(), 6);
    for g in &overflow {
        assert_eq!(g.header("x-envoy-overloaded"), "true");
        assert_eq!(g.body, "upstream connect error or disconnect/reset before headers. reset reason: overflow");
    }
    assert!(up.connections() <= 2, "never more than maxConnections sockets: {}", up.connections());
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "istio_requests_total", &[r#"response_flags="UO""#]), 6.0);
    assert_eq!(metric(&text, "weft_upstream_overflow_total", &[r#"limit="pending""#]), 6.0);
    assert_eq!(up.requests(), 4, "overflowed requests were not retried");
}

#[tokio::test]
async fn pending_requests_are_served_when_a_connection_frees() {
    let up = slow(100).await;
    let extra = "    connectionPool: { tcp: { maxConnections: 1 } }\n";
    let proxy = start(&config_yaml(&one_route(""), &cluster("c", extra, &[&up]))).await;
    let got = burst(proxy.outbound, 6).await;
    assert!(got.iter().all(|g| g.status == 200), "{got:?}");
    assert_eq!(up.connections(), 1, "all six went over one connection, one after another");
}

#[tokio::test]
async fn http2_max_requests_caps_requests_in_flight() {
    let up = slow(400).await;
    let extra = "    protocol: HTTP2\n    connectionPool: { http: { http2MaxRequests: 3 } }\n";
    let proxy = start(&config_yaml(&one_route(""), &cluster("c", extra, &[&up]))).await;
    let got = burst(proxy.outbound, 10).await;
    assert_eq!(got.iter().filter(|g| g.status == 200).count(), 3, "{got:?}");
    assert_eq!(got.iter().filter(|g| g.status == 503 && g.header("x-envoy-overloaded") == "true").count(), 7);
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "weft_upstream_overflow_total", &[r#"limit="requests""#]), 7.0);
}

#[tokio::test]
async fn max_requests_per_connection_retires_connections() {
    let up = Upstream::named("up").await;
    let extra = "    connectionPool: { http: { maxRequestsPerConnection: 2 } }\n";
    let proxy = start(&config_yaml(&one_route(""), &cluster("c", extra, &[&up]))).await;
    let counts = tally(proxy.outbound, "svc", "/", &[], 6).await;
    assert_eq!(counts.get("200 up"), Some(&6));
    assert_eq!(up.connections(), 3, "six requests, two per connection");
}

#[tokio::test]
async fn max_retries_limits_concurrent_retries() {
    let up = Upstream::with("failing", |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            status(http::StatusCode::INTERNAL_SERVER_ERROR, "failing")
        })
    })
    .await;
    let extra = "        retries: { attempts: 3, retryOn: [5xx], backoff: 1ms }\n";
    let pool = "    connectionPool: { http: { maxRetries: 1 } }\n";
    let proxy = start(&config_yaml(&one_route(extra), &cluster("c", pool, &[&up]))).await;
    let got = burst(proxy.outbound, 4).await;
    assert!(got.iter().all(|g| g.status == 500));
    let text = admin(&proxy, "/stats/prometheus").await;
    assert!(metric(&text, "weft_upstream_overflow_total", &[r#"limit="retries""#]) >= 1.0, "{text}");
    assert!(metric(&text, "istio_requests_total", &[r#"response_flags="UO""#]) >= 1.0, "{text}");
    // Without the limit every request would make 4 tries: 16.
    assert!(up.requests() < 16, "{}", up.requests());
}

/// An HTTP/1.1 upstream that answers one request per connection with
/// keep-alive, then closes the connection after `idle` without a word.
async fn closes_idle_connections(idle: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(idle).await;
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn upstream_closing_idle_connections_is_not_a_client_error() {
    let (addr, served) = closes_idle_connections(Duration::from_millis(20)).await;
    let clusters = format!("  c:\n    endpoints: [ {{ address: \"{addr}\" }} ]\n");
    // No retry policy at all: only the unsent-request resend may save the day.
    let extra = "        retries: { attempts: 0 }\n";
    let proxy = start(&config_yaml(&one_route(extra), &clusters)).await;
    let mut c = Client::h1(proxy.outbound).await;
    for i in 0..40u64 {
        let got = c.get("svc", "/").await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "ok"), "request {i}: {got:?}");
        // Land around the moment the upstream closes.
        tokio::time::sleep(Duration::from_millis(15 + i % 10)).await;
    }
    assert_eq!(served.load(Ordering::SeqCst), 40);
}

#[tokio::test]
async fn sidecars_speak_http2_to_each_other_and_http1_to_the_app() {
    let app = slow(100).await;
    // The server sidecar delivers to an HTTP/1.1 app.
    let server = start_with(&config_yaml("", "").replace("services:\n\nclusters:\n\n", ""), Some(app.addr)).await;
    // The client sidecar upgrades to HTTP/2 towards the server sidecar's inbound port.
    let clusters = format!("  c:\n    protocol: HTTP2\n    endpoints: [ {{ address: \"{}\" }} ]\n", server.inbound);
    let client = start(&config_yaml(&one_route(""), &clusters)).await;
    let got = burst(client.outbound, 20).await;
    assert!(got.iter().all(|g| g.status == 200), "{got:?}");
    let text = admin(&server, "/stats/prometheus").await;
    assert_eq!(
        metric(&text, "weft_downstream_connections_total", &[r#"listener="inbound""#]),
        1.0,
        "20 concurrent HTTP/1.1 requests became streams on one HTTP/2 connection"
    );
    assert_eq!(app.last().version, http::Version::HTTP_11, "downgraded for the app");
    assert_eq!(app.requests(), 20);
}

/// gRPC through two sidecars whose clusters say nothing about HTTP/2: it stays HTTP/2
/// end to end (it cannot live on HTTP/1.1), trailers and all, to an app that speaks
/// only h2c (other requests on such clusters go HTTP/1.1, as the test above shows).
#[tokio::test]
async fn grpc_stays_http2_end_to_end_with_its_trailers() {
    use http_body_util::{BodyExt, Full};
    // A gRPC-like app: h2c only, answers with a body and `grpc-status` in the trailers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        log.lock().unwrap().push((req.version(), req.uri().path().to_string()));
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let body = Frames(
                            vec![
                                http_body::Frame::data(bytes::Bytes::from_static(b"\0\0\0\0\x02hi")),
                                http_body::Frame::trailers(trailers),
                            ]
                            .into(),
                        );
                        let mut resp = http::Response::new(body);
                        resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let server = start_with(&config_yaml("", "").replace("services:\n\nclusters:\n\n", ""), Some(app)).await;
    let clusters = format!("  c:\n    endpoints: [ {{ address: \"{}\" }} ]\n", server.inbound);
    let client = start(&config_yaml(&one_route(""), &clusters)).await;

    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(client.outbound).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://svc/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("the app's trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    assert_eq!(*seen.lock().unwrap(), [(http::Version::HTTP_2, "/echo.Echo/Say".to_string())]);
}
