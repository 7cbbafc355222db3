//! The shop's journey through its public entry, all five services on the real
//! MariaDB, Redis and RabbitMQ: register → login → staff create a product →
//! place an order → pay → staff ship → the notifications arrive. Plus what the
//! gateway owns: which routes need a token and which are never routed, that a
//! client cannot claim another user's id or a role, who may do what (customer,
//! another customer, staff), and rate limits. The services run without
//! sidecars here (`Trust::Development`); their own tests and the mesh tests
//! check that they believe user headers only from the gateway's identity.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use weft_services_common::caller::Trust;
use weft_services_common::peers::Peers;
use weft_testkit::{eventually, Client, TestAmqp, TestDb, TestRedisPrefix};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const STAFF: (&str, &str) = ("staff@example.com", "staff-password");

struct Shop {
    gateway: Client,
    _guards: (TestDb, TestRedisPrefix, TestAmqp),
}

async fn shop(rate: f64, burst: f64) -> Shop {
    shop_with(rate, burst, 1000.0).await
}

async fn shop_with(rate: f64, burst: f64, auth_per_minute: f64) -> Shop {
    let db = TestDb::new("journey");
    let prefix = TestRedisPrefix::new("journey");
    let mut amqp = TestAmqp::new(AMQP);
    let (exchange, queue) = (amqp.exchange("orders"), amqp.queue("notifications"));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();

    let products = product_service::Config { listen: any, database_url: db.url.clone(), trust: Trust::Development };
    let products =
        weft_testkit::spawn(product_service::app(product_service::AppState::connect(&products).await.unwrap())).await;
    let orders = order_service::Config {
        listen: any,
        redis_url: "redis://127.0.0.1:6379".into(),
        redis_prefix: prefix.0.clone(),
        amqp_url: AMQP.into(),
        exchange: exchange.clone(),
        version: "v1".into(),
        instance: "order-service-v1".into(),
        fault_injection: false,
        peers: Peers::direct([("product-service", products)]),
        trust: Trust::Development,
    };
    let orders = weft_testkit::spawn(order_service::app(order_service::AppState::start(orders).await.unwrap())).await;
    let notifications = notification_service::Config {
        listen: any,
        database_url: db.url.clone(),
        amqp_url: AMQP.into(),
        exchange,
        queue,
        prefetch: 8,
        trust: Trust::Development,
        mail: None,
    };
    let notifications = weft_testkit::spawn(notification_service::app(
        notification_service::AppState::start(notifications).await.unwrap(),
    ))
    .await;
    let n = Client::new(notifications);
    assert!(
        eventually(Duration::from_secs(10), || async { n.get("/ready").await.status == StatusCode::OK }).await,
        "consumer up"
    );
    let users = user_service::Config {
        listen: any,
        database_url: db.url.clone(),
        signer: std::sync::Arc::new(weft_services_common::jwt::Signer::generate().unwrap()),
        jwt_ttl_secs: 3600,
        trust: Trust::Development,
        peers: Peers::direct([("notification-service", notifications)]),
    };
    let users = user_service::AppState::connect(&users).await.unwrap();
    user_service::create_staff(users.pool(), STAFF.0, "Staff", STAFF.1).await.unwrap();
    let users = weft_testkit::spawn(user_service::app(users)).await;

    let peers = Peers::direct([
        ("user-service", users),
        ("product-service", products),
        ("order-service", orders),
        ("notification-service", notifications),
    ]);
    let gateway = api_gateway::Config {
        listen: any,
        rate,
        burst,
        rate_limit_redis: Some("redis://127.0.0.1:6379".into()),
        rate_limit_prefix: format!("{}ratelimit:", prefix.0),
        auth_per_minute,
        peers,
    };
    Shop {
        gateway: Client::new(weft_testkit::spawn(api_gateway::app(gateway).await.unwrap()).await),
        _guards: (db, prefix, amqp),
    }
}

/// Registers `email` (a customer) and logs in: the client with its token, and the user's id.
async fn login(g: &Client, email: &str) -> (Client, String) {
    let reg =
        g.post("/api/users/register", json!({"email": email, "password": "journey-pass", "name": "Journey"})).await;
    assert_eq!(reg.status, StatusCode::ACCEPTED, "{}", reg.text);
    log_in(g, email, "journey-pass").await
}

async fn log_in(g: &Client, email: &str, password: &str) -> (Client, String) {
    let login = g.post("/api/users/login", json!({"email": email, "password": password})).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let token = login.json["token"].as_str().unwrap();
    (g.with("authorization", &format!("Bearer {token}")), login.json["user"]["id"].to_string())
}

#[tokio::test]
async fn register_login_product_order_pay_and_the_notifications_arrive() {
    let shop = shop(1000.0, 1000.0).await;
    let g = &shop.gateway;
    let (me, my_id) = login(g, "journey@example.com").await;
    assert_eq!(me.get("/api/users/me").await.json["email"], "journey@example.com");
    assert_eq!(me.get("/api/users/me").await.json["role"], "customer");
    let (staff, _) = log_in(g, STAFF.0, STAFF.1).await;

    let product =
        staff.post("/api/products", json!({"name": "Espresso machine", "price_cents": 34900, "stock": 4})).await;
    assert_eq!(product.status, StatusCode::CREATED, "{}", product.text);
    let product_id = product.json["id"].as_u64().unwrap();
    assert_eq!(g.get("/api/products").await.json.as_array().unwrap().len(), 1, "the catalogue is public");

    let order = me
        .with("x-request-id", "journey-1")
        .post("/api/orders", json!({"product_id": product_id, "quantity": 1}))
        .await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text);
    assert_eq!(order.header("x-request-id"), Some("journey-1"));
    assert_eq!(order.header("x-version"), Some("v1"), "the service's headers come back");
    let id = order.json["id"].as_str().unwrap();
    assert_eq!(order.json["user_id"].to_string(), format!("\"{}\"", my_id.trim_matches('"')));
    let unpaid = me.post(&format!("/api/orders/{id}/pay"), json!({})).await;
    assert_eq!(unpaid.status, StatusCode::BAD_REQUEST, "paying needs a payment token: {}", unpaid.text);
    let declined = me.post(&format!("/api/orders/{id}/pay"), json!({"payment_token": "tok_declined"})).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.text);
    let staff_pays = staff.post(&format!("/api/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await;
    assert_eq!(staff_pays.status, StatusCode::FORBIDDEN, "only the customer pays: {}", staff_pays.text);
    let paid = me.post(&format!("/api/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await;
    assert_eq!(paid.json["status"], "paid", "{}", paid.text);
    assert_eq!(me.get(&format!("/api/products/{product_id}")).await.json["stock"], 3);
    let self_shipped = me.post(&format!("/api/orders/{id}/ship"), json!({})).await;
    assert_eq!(self_shipped.status, StatusCode::FORBIDDEN, "customers do not ship: {}", self_shipped.text);
    let shipped = staff.post(&format!("/api/orders/{id}/ship"), json!({})).await;
    assert_eq!(shipped.json["status"], "shipped", "staff ship any order: {}", shipped.text);

    assert!(
        eventually(Duration::from_secs(15), || async {
            me.get("/api/notifications").await.json.as_array().map_or(0, Vec::len) == 3
        })
        .await,
        "order.created, order.paid and order.shipped delivered as notifications"
    );
    let kinds: Vec<String> = me
        .get("/api/notifications")
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["order.shipped", "order.paid", "order.created"]);
    let theirs = staff.get("/api/notifications?user=1").await.json;
    assert!(theirs.as_array().unwrap().iter().all(|n| n["user_id"] != my_id.as_str()), "?user= is ignored: {theirs}");
}

#[tokio::test]
async fn customers_read_only_themselves_and_internal_routes_are_not_routed() {
    let shop = shop(1000.0, 1000.0).await;
    let g = &shop.gateway;
    let (alice, alice_id) = login(g, "alice@example.com").await;
    let (bob, bob_id) = login(g, "bob@example.com").await;
    let (staff, _) = log_in(g, STAFF.0, STAFF.1).await;
    assert_eq!(bob.get(&format!("/api/users/{alice_id}")).await.status, StatusCode::FORBIDDEN, "no enumeration");
    assert_eq!(alice.get(&format!("/api/users/{alice_id}")).await.status, StatusCode::FORBIDDEN, "/users/me instead");
    assert_eq!(staff.get(&format!("/api/users/{bob_id}")).await.json["email"], "bob@example.com");
    let forged_role = bob.with("x-user-role", "staff");
    let made = forged_role.post("/api/products", json!({"name": "x", "price_cents": 1, "stock": 1})).await;
    assert_eq!(made.status, StatusCode::FORBIDDEN, "a role header from a client is dropped: {}", made.text);
    let product = staff.post("/api/products", json!({"name": "Mug", "price_cents": 900, "stock": 3})).await;
    let product_id = product.json["id"].as_u64().unwrap();
    for (method, path) in [
        ("POST", format!("/api/products/{product_id}/reservations")),
        ("DELETE", format!("/api/products/{product_id}/reservations/some-order")),
    ] {
        let c = if method == "POST" {
            staff.post(&path, json!({"order_id": "made-up", "quantity": 3})).await
        } else {
            staff.delete(&path).await
        };
        assert_eq!(c.status, StatusCode::NOT_FOUND, "{method} {path} is internal: {}", c.text);
    }
    // Spelled so the gateway's router sees no reservation: still never a reservation.
    for path in [
        format!("/api/products/{product_id}%2Freservations"),
        format!("/api/products/{product_id}/./reservations"),
        format!("/api/products/x/../{product_id}/reservations"),
    ] {
        let c = staff.post(&path, json!({"order_id": "made-up", "quantity": 3})).await;
        assert_ne!(c.status, StatusCode::CREATED, "{path}: {}", c.text);
    }
    assert_eq!(g.get(&format!("/api/products/{product_id}")).await.json["stock"], 3, "nothing drained");

    // Registering a taken address: the same answer, and a notice to the address's owner.
    let again = g
        .post("/api/users/register", json!({"email": "ALICE@example.com", "password": "other-pass", "name": "Eve"}))
        .await;
    let fresh = g
        .post("/api/users/register", json!({"email": "carol@example.com", "password": "other-pass", "name": "Carol"}))
        .await;
    assert_eq!((again.status, &again.json), (fresh.status, &fresh.json), "no enumeration by registration");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let n = alice.get("/api/notifications").await.json;
            n.as_array().is_some_and(|a| a.iter().any(|n| n["kind"] == "account.registration_attempt"))
        })
        .await,
        "the owner is told"
    );
}

#[tokio::test]
async fn registration_and_login_are_limited_per_address() {
    let shop = shop_with(1000.0, 1000.0, 3.0).await;
    let g = &shop.gateway;
    let statuses: Vec<StatusCode> = futures_util::future::join_all(
        (0..4).map(|_| g.post("/api/users/login", json!({"email": "nobody@example.com", "password": "guessing"}))),
    )
    .await
    .iter()
    .map(|a| a.status)
    .collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 1, "{statuses:?}");
    assert_eq!(g.get("/api/products").await.status, StatusCode::OK, "other routes keep their own bucket");
}

#[tokio::test]
async fn tokens_are_required_and_a_client_cannot_claim_another_user() {
    let shop = shop(1000.0, 1000.0).await;
    let g = &shop.gateway;
    let no_token = g.get("/api/orders").await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    assert!(no_token.json["error"]["message"].as_str().unwrap().contains("Bearer"));
    assert_eq!(
        g.with("authorization", "Bearer forged.token.here").get("/api/orders").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A staff token minted with a key of the attacker's own: refused, whatever kid it names.
    let mallory = weft_services_common::jwt::Signer::generate().unwrap();
    let (minted, _) = mallory.issue("1", "boss@example.com", weft_services_common::caller::Role::Staff, 60).unwrap();
    let minted = g.with("authorization", &format!("Bearer {minted}")).get("/api/orders").await;
    assert_eq!(minted.status, StatusCode::UNAUTHORIZED, "{}", minted.text);
    assert_eq!(
        g.post("/api/products", json!({"name": "x", "price_cents": 1, "stock": 1})).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(g.get("/api/nowhere").await.status, StatusCode::NOT_FOUND);
    let (forged, _) = {
        let (c, id) = login(g, "mallory@example.com").await;
        (c.with("x-user-id", "1"), id)
    };
    let (victim, _) = login(g, "victim@example.com").await;
    let (staff, _) = log_in(g, STAFF.0, STAFF.1).await;
    let product = staff.post("/api/products", json!({"name": "Book", "price_cents": 100, "stock": 5})).await.json["id"]
        .as_u64()
        .unwrap();
    let order = victim.post("/api/orders", json!({"product_id": product, "quantity": 1})).await;
    let id = order.json["id"].as_str().unwrap();
    assert_eq!(
        forged.get(&format!("/api/orders/{id}")).await.status,
        StatusCode::NOT_FOUND,
        "x-user-id from a client is replaced"
    );
    assert_eq!(forged.get("/api/orders").await.json, json!([]));
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let shop = shop(1.0, 5.0).await;
    let statuses: Vec<StatusCode> = futures_util::future::join_all((0..8).map(|_| shop.gateway.get("/api/products")))
        .await
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5, "{statuses:?}");
    let limited = shop.gateway.get("/api/products").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json["error"]["code"], "rate_limited");
}
