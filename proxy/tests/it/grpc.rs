//! gRPC through the sidecar as Istio users expect it: retries on the gRPC statuses
//! Istio retries (every call is a POST), the client's `grpc-timeout` honoured, local
//! replies a gRPC client can read, and `grpc_response_status` in the metrics.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const SVC: &str = "svc.test.svc.cluster.local";

/// How the app answers call `n` (1-based).
#[derive(Clone, Copy)]
enum Answer {
    /// A message, then `grpc-status` in the trailers.
    Message(u16),
    /// Trailers-only: `grpc-status` in the headers, no body.
    TrailersOnly(u16),
    /// Answers `Message(0)` after this long.
    Slow(Duration),
}

/// An h2c gRPC app on a port the OS picks; counts the calls it saw.
async fn grpc_app(
    answer: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (counter, answer) = (calls.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (counter, answer) = (counter.clone(), answer.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let answer = answer(n);
                    async move {
                        let status = match answer {
                            Answer::Slow(d) => {
                                tokio::time::sleep(d).await;
                                Answer::Message(0)
                            }
                            other => other,
                        };
                        let mut frames = std::collections::VecDeque::new();
                        let mut resp_status = None;
                        match status {
                            Answer::Message(code) => {
                                frames.push_back(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")));
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", code.into());
                                frames.push_back(http_body::Frame::trailers(trailers));
                            }
                            Answer::TrailersOnly(code) => resp_status = Some(code),
                            Answer::Slow(_) => unreachable!(),
                        }
                        let mut resp = http::Response::new(Frames(frames));
                        resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                        if let Some(code) = resp_status {
                            resp.headers_mut().insert("grpc-status", code.into());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, calls)
}

/// A sidecar whose one service goes to `endpoint`, with `route_extra` on the route.
async fn sidecar(endpoint: std::net::SocketAddr, route_extra: &str) -> weft_proxy::Running {
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n{route_extra}");
    let clusters = format!("  c:\n    service: {SVC}\n    endpoints: [ {{ address: \"{endpoint}\" }} ]\n");
    start(&config_yaml(&services, &clusters)).await
}

/// One unary call over h2c; the gRPC status (headers or trailers), the HTTP status, and the headers.
async fn call(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> (Option<String>, http::StatusCode, http::HeaderMap) {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post("http://svc/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let resp = tx.send_request(req).await.unwrap();
    let (status, head) = (resp.status(), resp.headers().clone());
    let collected = resp.into_body().collect().await.unwrap();
    let grpc = head
        .get("grpc-status")
        .or_else(|| collected.trailers().and_then(|t| t.get("grpc-status")))
        .map(|v| v.to_str().unwrap().to_string());
    (grpc, status, head)
}

#[tokio::test]
async fn unavailable_is_retried_though_every_call_is_a_post() {
    // The first call answers UNAVAILABLE (trailers-only), the second OK.
    let (app, calls) = grpc_app(|n| if n == 1 { Answer::TrailersOnly(14) } else { Answer::Message(0) }).await;
    let proxy = sidecar(app, "").await;
    let (grpc, status, _) = call(proxy.outbound, &[]).await;
    assert_eq!((grpc.as_deref(), status.as_u16()), (Some("0"), 200), "Istio's default policy retries UNAVAILABLE");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // INVALID_ARGUMENT is the app's final word: not retried.
    let (app, calls) = grpc_app(|_| Answer::TrailersOnly(3)).await;
    let proxy = sidecar(app, "").await;
    assert_eq!(call(proxy.outbound, &[]).await.0.as_deref(), Some("3"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_clients_grpc_timeout_is_the_deadline_and_the_route_timeout_caps_it() {
    let (app, _) = grpc_app(|_| Answer::Slow(Duration::from_secs(3))).await;
    let proxy = sidecar(app, "").await;
    let started = std::time::Instant::now();
    let (grpc, status, head) = call(proxy.outbound, &[("grpc-timeout", "200m")]).await;
    assert!(started.elapsed() < Duration::from_millis(2500), "the client's deadline was not kept");
    // A local reply a gRPC client reads: trailers-only, UNAVAILABLE (Envoy's mapping of 504).
    assert_eq!((grpc.as_deref(), status.as_u16()), (Some("14"), 200));
    assert_eq!(head["grpc-message"], "upstream request timeout");
    // The route's own timeout is shorter than the client's: it wins.
    let proxy = sidecar(app, "        timeout: 200ms\n").await;
    let started = std::time::Instant::now();
    assert_eq!(call(proxy.outbound, &[("grpc-timeout", "1H")]).await.0.as_deref(), Some("14"));
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn local_replies_to_grpc_are_grpc_and_the_status_is_a_metric_label() {
    let dead = dead_addr().await;
    let proxy = sidecar(dead, "").await;
    let (grpc, status, head) = call(proxy.outbound, &[]).await;
    assert_eq!((grpc.as_deref(), status.as_u16()), (Some("14"), 200));
    assert_eq!(head["content-type"], "application/grpc");
    assert!(head["grpc-message"].to_str().unwrap().contains("connection failure"), "{head:?}");

    let (app, _) = grpc_app(|_| Answer::Message(5)).await;
    let proxy = sidecar(app, "").await;
    assert_eq!(call(proxy.outbound, &[]).await.0.as_deref(), Some("5"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = admin(&proxy, "/stats/prometheus").await;
        let seen = metric(&text, "istio_requests_total", &["request_protocol=\"grpc\"", "grpc_response_status=\"5\""]);
        if seen == 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gRPC endpoint that answers every call UNAVAILABLE (trailers-only, HTTP 200) is a
/// failing endpoint to outlier detection, as to Envoy: it is ejected.
#[tokio::test]
async fn grpc_unavailable_counts_for_outlier_detection() {
    let (bad, _) = grpc_app(|_| Answer::TrailersOnly(14)).await;
    let (good, good_calls) = grpc_app(|_| Answer::Message(0)).await;
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let clusters = format!(
        "  c:\n    service: {SVC}\n    lbPolicy: ROUND_ROBIN\n    outlierDetection: {{ consecutive5xxErrors: 2, interval: 60s, baseEjectionTime: 60s, maxEjectionPercent: 100 }}\n    endpoints: [ {{ address: \"{bad}\" }}, {{ address: \"{good}\" }} ]\n"
    );
    let proxy = start(&config_yaml(&services, &clusters)).await;
    for _ in 0..10 {
        assert_eq!(call(proxy.outbound, &[]).await.0.as_deref(), Some("0"), "retried onto the good endpoint");
    }
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "weft_outlier_ejections_total", &["result=\"ejected\""]), 1.0, "{text}");
    let before = good_calls.load(Ordering::SeqCst);
    for _ in 0..5 {
        call(proxy.outbound, &[]).await;
    }
    assert_eq!(good_calls.load(Ordering::SeqCst) - before, 5, "the ejected endpoint gets nothing");
}
