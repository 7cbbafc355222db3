//! api-gateway's token keys against a real HTTP server standing in for
//! user-service's `/.well-known/jwks.json`: a rotated key is followed, a
//! withdrawn one stops verifying, and tokens naming made-up keys cannot make
//! the gateway hammer user-service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_gateway::tokens::TokenKeys;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use weft_services_common::caller::Role;
use weft_services_common::jwt::{self, Signer};
use weft_services_common::peers::Peers;

#[derive(Default)]
struct Served {
    signer: Mutex<Option<Arc<Signer>>>,
    fetches: AtomicUsize,
}

async fn jwks_server(served: Arc<Served>) -> std::net::SocketAddr {
    async fn jwks(State(s): State<Arc<Served>>) -> axum::Json<serde_json::Value> {
        s.fetches.fetch_add(1, Ordering::SeqCst);
        let signer = s.signer.lock().unwrap().clone().unwrap();
        axum::Json(signer.jwks())
    }
    weft_testkit::spawn(Router::new().route(jwt::JWKS_PATH, get(jwks)).with_state(served)).await
}

#[tokio::test]
async fn a_rotated_key_is_followed_and_the_withdrawn_one_refused() {
    let served = Arc::new(Served::default());
    let (old, new) = (Arc::new(Signer::generate().unwrap()), Arc::new(Signer::generate().unwrap()));
    *served.signer.lock().unwrap() = Some(old.clone());
    let addr = jwks_server(served.clone()).await;
    let keys = TokenKeys::new(Peers::direct([("user-service", addr)]), Duration::from_millis(200));

    let (before, claims) = old.issue("7", "a@example.com", Role::Customer, 60).unwrap();
    assert_eq!(keys.verify(&before).await.unwrap(), claims);
    assert_eq!(served.fetches.load(Ordering::SeqCst), 1, "fetched on first use");
    assert_eq!(keys.verify(&before).await.unwrap(), claims);
    assert_eq!(served.fetches.load(Ordering::SeqCst), 1, "then held");

    *served.signer.lock().unwrap() = Some(new.clone());
    let (after, claims) = new.issue("7", "a@example.com", Role::Customer, 60).unwrap();
    // Within the refetch interval the new key is not asked for yet; after it, it is.
    let verified =
        weft_testkit::eventually(Duration::from_secs(5), || async { keys.verify(&after).await.is_ok() }).await;
    assert!(verified, "the rotated key is fetched once the interval has passed");
    assert_eq!(keys.verify(&after).await.unwrap(), claims);
    let withdrawn = keys.verify(&before).await.unwrap_err();
    assert_eq!(withdrawn.status, StatusCode::UNAUTHORIZED, "{}", withdrawn.message);
}

#[tokio::test]
async fn tokens_naming_made_up_keys_cost_one_fetch_per_interval() {
    let served = Arc::new(Served::default());
    *served.signer.lock().unwrap() = Some(Arc::new(Signer::generate().unwrap()));
    let addr = jwks_server(served.clone()).await;
    let keys = TokenKeys::new(Peers::direct([("user-service", addr)]), Duration::from_secs(3600));
    for _ in 0..50 {
        let (token, _) = Signer::generate().unwrap().issue("1", "x@example.com", Role::Staff, 60).unwrap();
        assert_eq!(keys.verify(&token).await.unwrap_err().status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(served.fetches.load(Ordering::SeqCst), 1, "one fetch for 50 unknown keys");
}

#[tokio::test]
async fn without_user_service_tokens_cannot_be_checked_503() {
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let keys = TokenKeys::new(Peers::direct([("user-service", gone)]), Duration::from_secs(1));
    let (token, _) = Signer::generate().unwrap().issue("1", "x@example.com", Role::Customer, 60).unwrap();
    assert_eq!(keys.verify(&token).await.unwrap_err().status, StatusCode::SERVICE_UNAVAILABLE);
    // Within the refetch interval too: a valid token is not called invalid for want of keys.
    assert_eq!(keys.verify(&token).await.unwrap_err().status, StatusCode::SERVICE_UNAVAILABLE);
}
