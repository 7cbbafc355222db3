//! `x-request-id` is accepted or minted, echoed, and carried to peers; so is
//! the trace context, as Istio asks of an app.

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use http::Method;
use weft_services_common::peers::Peers;
use weft_services_common::serve;
use weft_testkit::Client;

/// Answers with the request id it received (and, on `/trace`, its trace headers).
fn echo() -> Router {
    serve::finish(
        Router::new()
            .route("/", get(|h: HeaderMap| async move { h.get("x-request-id").unwrap().to_str().unwrap().to_string() }))
            .route(
                "/trace",
                get(|h: HeaderMap| async move {
                    let v = |n: &str| h.get(n).map_or("-", |v| v.to_str().unwrap()).to_string();
                    format!("{} {} {}", v("traceparent"), v("x-b3-traceid"), v("tracestate"))
                }),
            ),
    )
}

/// A service whose `/` calls `path` on the echo peer and answers with what it got.
async fn front_calling(path: &'static str) -> Client {
    let downstream = weft_testkit::spawn(echo()).await;
    let peers = Peers::direct([("echo", downstream)]);
    let front = Router::new().route(
        "/",
        get(move || {
            let peers = peers.clone();
            async move {
                let answer = peers.call("echo", Method::GET, path, HeaderMap::new(), None).await.unwrap();
                String::from_utf8_lossy(&answer.body).to_string()
            }
        }),
    );
    Client::new(weft_testkit::spawn(serve::finish(front)).await)
}

#[tokio::test]
async fn the_trace_context_reaches_the_peer() {
    let c = front_calling("/trace").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let got = c
        .with("traceparent", tp)
        .with("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736")
        .with("tracestate", "shop=1")
        .get("/")
        .await;
    assert_eq!(got.text, format!("{tp} 4bf92f3577b34da6a3ce929d0e0e4736 shop=1"));
    assert_eq!(c.get("/").await.text, "- - -", "none invented by the app: the sidecars start traces");
}

#[tokio::test]
async fn the_id_reaches_the_peer_and_comes_back() {
    let c = front_calling("/").await;
    let given = c.with("x-request-id", "req-42").get("/").await;
    assert_eq!((given.text.as_str(), given.header("x-request-id")), ("req-42", Some("req-42")));
    let minted = c.get("/").await;
    let id = minted.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "a uuid is minted: {id}");
    assert_eq!(minted.text, id, "and carried to the peer");
}

/// A shutdown lets the request in flight finish, and the listener stops accepting.
#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let handler_arrived = arrived.clone();
    let slow = serve::finish(Router::new().route(
        "/slow",
        get(move || async move {
            handler_arrived.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            "done"
        }),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::run(listener, slow, async {
        let _ = stopped.await;
    }));
    let in_flight = tokio::spawn(async move { Client::new(addr).get("/slow").await });
    // The request is in the handler (which takes 300 ms) when the shutdown begins.
    tokio::time::timeout(std::time::Duration::from_secs(20), arrived.notified())
        .await
        .expect("the request never reached the handler");
    stop.send(()).unwrap();
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status.as_u16(), answer.text.as_str()), (200, "done"));
    server.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}
