//! The shop's services trust the sidecar's proof, not the caller's word:
//! product-service behind a real sidecar (mTLS from real sidecars of other
//! workloads, no AuthorizationPolicy applied, so the service's own check is
//! what decides) believes `x-user-id`/`x-user-role` only from api-gateway's
//! identity and takes stock reservations only from order-service's — and an
//! `x-forwarded-client-cert` a caller writes itself is replaced on the way in.

mod common;

use common::{sidecar, test_ca, workload, Cp};
use http::{HeaderMap, HeaderValue, Method};
use std::net::SocketAddr;
use weft_services_common::caller::Trust;
use weft_testkit::Etcd;
use weft_testkit::TestDb;

/// A call to product-service through `outbound` (a sidecar's outbound listener): status and body.
async fn call(outbound: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let body = (!body.is_empty()).then(|| bytes::Bytes::from(body.to_string()));
    let r = weft_services_common::peers::send(outbound, "product-service", method, path, h, body).await.unwrap();
    (r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_believe_identities_only_from_the_sidecars_proof() {
    let etcd = Etcd::start();
    let (cp, _control_plane) = Cp::start(&etcd, "cp-shop", test_ca()).await;
    let db = TestDb::new("shop_trust");
    let config = product_service::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        trust: Trust::mesh(),
    };
    let app =
        weft_testkit::spawn(product_service::app(product_service::AppState::connect(&config).await.unwrap())).await;
    let (_products, _bye1) =
        sidecar(&cp, workload("product-a", &[("app", "product-service")]), Some("product-service"), Some(app)).await;
    let (gateway, _bye2) = sidecar(&cp, workload("gw", &[("app", "api-gateway")]), None, None).await;
    let (orders, _bye3) = sidecar(&cp, workload("orders", &[("app", "order-service")]), None, None).await;
    let (notify, _bye4) = sidecar(&cp, workload("notify", &[("app", "notification-service")]), None, None).await;
    let (gw, order, notify) = (gateway.outbound, orders.outbound, notify.outbound);
    common::eventually("the sidecars know product-service", || async {
        common::endpoints(&gateway, "product-service") == 1 && common::endpoints(&orders, "product-service") == 1
    })
    .await;

    let staff = [("x-user-id", "1"), ("x-user-role", "staff")];
    let teapot = r#"{"name":"Teapot","price_cents":1999,"stock":5}"#;
    // The same staff headers: believed from api-gateway's workload only.
    let (status, body) = call(notify, Method::POST, "/products", &staff, teapot).await;
    assert_eq!(status, 401, "user headers from notification-service's identity: {body}");
    let (status, _) =
        call(gw, Method::POST, "/products", &[("x-user-id", "2"), ("x-user-role", "customer")], teapot).await;
    assert_eq!(status, 403, "a customer, through the gateway");
    let (status, body) = call(gw, Method::POST, "/products", &staff, teapot).await;
    assert_eq!(status, 201, "staff, through the gateway: {body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = format!("/products/{}/reservations", id["id"]);

    // Reservations: order-service's identity only; a forged XFCC is replaced by the receiving sidecar.
    let drain = r#"{"order_id":"made-up","quantity":5}"#;
    let forged = [("x-forwarded-client-cert", "By=x;URI=spiffe://cluster.local/ns/production/sa/order-service")];
    for (who, via, headers) in [("api-gateway", gw, &staff[..]), ("notification-service", notify, &forged[..])] {
        let (status, body) = call(via, Method::POST, &path, headers, drain).await;
        assert_eq!(status, 403, "{who} reserves: {body}");
        assert!(body.contains("only order-service may call this"), "refused by the service itself: {body}");
    }
    let (status, body) = call(order, Method::POST, &path, &[], r#"{"order_id":"o-1","quantity":2}"#).await;
    assert_eq!(status, 201, "order-service reserves: {body}");
    let (status, body) = call(gw, Method::GET, &format!("/products/{}", id["id"]), &[], "").await;
    assert_eq!((status, serde_json::from_str::<serde_json::Value>(&body).unwrap()["stock"].as_i64()), (200, Some(3)));
    let (status, _) = call(gw, Method::DELETE, &format!("{path}/o-1"), &staff, "").await;
    assert_eq!(status, 403, "staff through the gateway do not release");
    assert_eq!(call(order, Method::DELETE, &format!("{path}/o-1"), &[], "").await.0, 204);
}
