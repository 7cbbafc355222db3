//! Peer calls keep their connections alive, and survive a peer that closes one.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_services_common::peers::Peers;

#[tokio::test]
async fn sequential_calls_share_one_connection() {
    let app =
        Router::new().route("/", get(|ConnectInfo(from): ConnectInfo<SocketAddr>| async move { from.to_string() }));
    let addr = weft_testkit::spawn(app).await;
    let peers = Peers::direct([("peer", addr)]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = peers.call("peer", Method::GET, "/", HeaderMap::new(), None).await.unwrap();
        seen.insert(String::from_utf8_lossy(&r.body).to_string());
    }
    assert_eq!(seen.len(), 1, "one client port for ten calls: {seen:?}");
    assert_eq!(peers.pool.idle(addr), 1);

    // Concurrent calls open what they need, and all of it is kept for the next burst.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let peers = peers.clone();
        burst
            .spawn(async move { peers.call("peer", Method::GET, "/", HeaderMap::new(), None).await.map(|a| a.status) });
    }
    while let Some(answer) = burst.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), StatusCode::OK);
    }
    assert!((1..=5).contains(&peers.pool.idle(addr)), "{}", peers.pool.idle(addr));
}

/// Answers the first request on each connection (keep-alive), then reads the
/// next one and closes the connection without answering: the peer that
/// timed out an idle connection just as a request arrived.
async fn closes_after_one_answer() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                for answer in [true, false] {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                    let _ = seen.send(line);
                    if answer {
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                }
            });
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn a_get_on_a_connection_the_peer_closed_is_sent_again_a_post_is_not() {
    let (addr, mut requests) = closes_after_one_answer().await;
    let peers = Peers::direct([("peer", addr)]);
    let get = || peers.call("peer", Method::GET, "/items", HeaderMap::new(), None);
    assert_eq!(get().await.unwrap().body, Bytes::from_static(b"ok"));
    assert_eq!(get().await.unwrap().body, Bytes::from_static(b"ok"), "sent again on a new connection");
    let lines: Vec<_> = std::iter::from_fn(|| requests.try_recv().ok()).collect();
    assert_eq!(lines, ["GET /items HTTP/1.1"; 3], "the second GET reached the peer twice");

    // The peer may have acted on a POST it read: it is not sent twice, the caller hears of it.
    let post = peers.call("peer", Method::POST, "/orders", HeaderMap::new(), Some(Bytes::from_static(b"{}"))).await;
    assert!(post.is_err(), "{post:?}");
    let lines: Vec<_> = std::iter::from_fn(|| requests.try_recv().ok()).collect();
    assert_eq!(lines, ["POST /orders HTTP/1.1"], "sent once");
}
