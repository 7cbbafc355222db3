//! `x-request-id` is accepted or minted, echoed, and carried to peers.

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use http::Method;
use weft_services_common::peers::Peers;
use weft_services_common::serve;
use weft_services_common::testkit::{self, Client};

/// Answers with the request id it received.
fn echo() -> Router {
    serve::finish(Router::new().route("/", get(|h: HeaderMap| async move { h.get("x-request-id").unwrap().to_str().unwrap().to_string() })))
}

#[tokio::test]
async fn the_id_reaches_the_peer_and_comes_back() {
    let downstream = testkit::spawn(echo()).await;
    let peers = Peers::direct([("echo", downstream)]);
    let front = Router::new().route(
        "/",
        get(move || {
            let peers = peers.clone();
            async move { String::from_utf8_lossy(&peers.call("echo", Method::GET, "/", HeaderMap::new(), None).await.unwrap().body).to_string() }
        }),
    );
    let c = Client::new(testkit::spawn(serve::finish(front)).await);
    let given = c.with("x-request-id", "req-42").get("/").await;
    assert_eq!((given.text.as_str(), given.header("x-request-id")), ("req-42", Some("req-42")));
    let minted = c.get("/").await;
    let id = minted.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "a uuid is minted: {id}");
    assert_eq!(minted.text, id, "and carried to the peer");
}
