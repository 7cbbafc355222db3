//! product-service against the real MariaDB: each test in a database of its own.

use std::time::Duration;

use http::{Method, StatusCode};
use product_service::{app, AppState, Config};
use serde_json::json;
use weft_services_common::caller::Trust;
use weft_testkit::{eventually, Client, PrivateServer, TestDb};

async fn start(database_url: &str) -> Client {
    let config =
        Config { listen: "127.0.0.1:0".parse().unwrap(), database_url: database_url.to_string(), trust: Trust::mesh() };
    let state = AppState::connect(&config).await.expect("connect and migrate");
    Client::new(weft_testkit::spawn(app(state)).await)
}

#[tokio::test]
async fn products_are_created_listed_and_shown() {
    let db = TestDb::new("products");
    let c = start(&db.url).await;
    let created =
        c.as_user("1", "staff").post("/products", json!({"name": "Teapot", "price_cents": 1999, "stock": 5})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_u64().unwrap();
    let shown = c.get(&format!("/products/{id}")).await;
    assert_eq!(shown.json, json!({"id": id, "name": "Teapot", "price_cents": 1999, "stock": 5}));
    let listed = c.get("/products").await;
    assert_eq!(listed.json.as_array().unwrap().len(), 1);
    assert_eq!(c.get("/ready").await.status, StatusCode::OK);
    assert_eq!(c.get("/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn invalid_input_gets_a_clear_4xx_and_writes_nothing() {
    let db = TestDb::new("products_invalid");
    let c = start(&db.url).await;
    let bad_json = c.as_user("1", "staff").send(Method::POST, "/products", Some("{\"name\": ".into())).await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_json.json["error"]["code"], "invalid_json");
    let missing = c.as_user("1", "staff").post("/products", json!({"name": "x", "price_cents": 1})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.json["error"]["message"].as_str().unwrap().contains("stock"), "{}", missing.text);
    let plain = c
        .as_user("1", "staff")
        .with("content-type", "text/plain")
        .send(Method::POST, "/products", Some("{}".into()))
        .await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let negative = c.as_user("1", "staff").post("/products", json!({"name": "x", "price_cents": 1, "stock": -1})).await;
    assert_eq!(negative.status, StatusCode::BAD_REQUEST);
    assert_eq!(negative.json["error"]["message"], "stock: 0 to 2147483647");
    let unknown = c
        .as_user("1", "staff")
        .post("/products", json!({"name": "x", "price_cents": 1, "stock": 1, "colour": "red"}))
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.get("/products/999").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/products/abc").await.status, StatusCode::BAD_REQUEST);
    let reserve_unknown = c
        .as_workload("order-service")
        .post("/products/999/reservations", json!({"order_id": "o1", "quantity": 1}))
        .await;
    assert_eq!(reserve_unknown.status, StatusCode::NOT_FOUND);
    let zero =
        c.as_workload("order-service").post("/products/1/reservations", json!({"order_id": "o1", "quantity": 0})).await;
    assert_eq!(zero.status, StatusCode::BAD_REQUEST);
    assert_eq!(c.get("/products").await.json, json!([]), "nothing was written");
}

#[tokio::test]
async fn fifty_concurrent_reservations_for_ten_in_stock_exactly_ten_win() {
    let db = TestDb::new("products_race");
    let c = start(&db.url).await;
    let id = c
        .as_user("1", "staff")
        .post("/products", json!({"name": "Limited", "price_cents": 500, "stock": 10}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    let attempts = (0..50).map(|i| {
        let c = c.clone();
        tokio::spawn(async move {
            c.as_workload("order-service")
                .post(&format!("/products/{id}/reservations"), json!({"order_id": format!("order-{i}"), "quantity": 1}))
                .await
                .status
        })
    });
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let won = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((won, refused), (10, 40), "{statuses:?}");
    assert_eq!(c.get(&format!("/products/{id}")).await.json["stock"], 0);
}

#[tokio::test]
async fn a_reservation_is_idempotent_per_order_and_released_once() {
    let db = TestDb::new("products_idem");
    let c = start(&db.url).await;
    let id =
        c.as_user("1", "staff").post("/products", json!({"name": "Mug", "price_cents": 800, "stock": 3})).await.json
            ["id"]
            .as_u64()
            .unwrap();
    let path = format!("/products/{id}/reservations");
    let first = c.as_workload("order-service").post(&path, json!({"order_id": "o-1", "quantity": 2})).await;
    assert_eq!((first.status, first.json["price_cents"].as_i64()), (StatusCode::CREATED, Some(800)));
    let again = c.as_workload("order-service").post(&path, json!({"order_id": "o-1", "quantity": 2})).await;
    assert_eq!(again.status, StatusCode::OK, "a retry is answered, not applied twice");
    let different = c.as_workload("order-service").post(&path, json!({"order_id": "o-1", "quantity": 1})).await;
    assert_eq!(different.status, StatusCode::CONFLICT);
    assert_eq!(c.get(&format!("/products/{id}")).await.json["stock"], 1);
    let short = c.as_workload("order-service").post(&path, json!({"order_id": "o-2", "quantity": 2})).await;
    assert_eq!(short.status, StatusCode::CONFLICT);
    assert_eq!(c.as_workload("order-service").delete(&format!("{path}/o-1")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.as_workload("order-service").delete(&format!("{path}/o-1")).await.status,
        StatusCode::NOT_FOUND,
        "released once"
    );
    assert_eq!(c.get(&format!("/products/{id}")).await.json["stock"], 3);
}

#[tokio::test]
async fn the_database_restarted_mid_test_ready_tells_the_truth_and_the_service_recovers() {
    let mut server = PrivateServer::mariadb();
    let c = start(&format!("mysql://root@127.0.0.1:{}/shop", server.port)).await;
    let id =
        c.as_user("1", "staff").post("/products", json!({"name": "Lamp", "price_cents": 100, "stock": 1})).await.json
            ["id"]
            .as_u64()
            .unwrap();
    assert_eq!(c.get("/ready").await.status, StatusCode::OK);

    server.kill();
    let down = c.get("/ready").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json["status"], "not ready");
    let failed = c.get(&format!("/products/{id}")).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", failed.text);
    assert_eq!(failed.json["error"]["message"], "database unavailable, try again", "no internals leak");

    server.start();
    assert!(eventually(Duration::from_secs(20), || async { c.get("/ready").await.status == StatusCode::OK }).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.get(&format!("/products/{id}")).await.status == StatusCode::OK
        })
        .await,
        "the pool reconnects"
    );
    assert_eq!(c.get(&format!("/products/{id}")).await.json["name"], "Lamp", "the data survived the crash");
}

#[tokio::test]
async fn only_staff_create_and_only_order_service_reserves() {
    let db = TestDb::new("products_privilege");
    let c = start(&db.url).await;
    let teapot = json!({"name": "Teapot", "price_cents": 1999, "stock": 5});
    assert_eq!(c.as_user("7", "customer").post("/products", teapot.clone()).await.status, StatusCode::FORBIDDEN);
    let elsewhere = c.as_workload("order-service").with("x-user-id", "1").with("x-user-role", "staff");
    assert_eq!(
        elsewhere.post("/products", teapot.clone()).await.status,
        StatusCode::UNAUTHORIZED,
        "user headers from another workload"
    );
    let bare = c.with("x-user-id", "1").with("x-user-role", "staff");
    assert_eq!(bare.post("/products", teapot.clone()).await.status, StatusCode::UNAUTHORIZED, "no sidecar proof");
    let id = c.as_user("1", "staff").post("/products", teapot).await.json["id"].as_u64().unwrap();

    let path = format!("/products/{id}/reservations");
    let drain = json!({"order_id": "made-up", "quantity": 5});
    for (who, caller) in [
        ("a customer through the gateway", c.as_user("7", "customer")),
        ("staff through the gateway", c.as_user("1", "staff")),
        ("notification-service", c.as_workload("notification-service")),
        ("no identity", c.clone()),
    ] {
        assert_eq!(caller.post(&path, drain.clone()).await.status, StatusCode::FORBIDDEN, "{who} reserves");
    }
    let order_service = c.as_workload("order-service");
    assert_eq!(order_service.post(&path, json!({"order_id": "o-1", "quantity": 2})).await.status, StatusCode::CREATED);
    let release = format!("{path}/o-1");
    assert_eq!(
        c.as_user("7", "customer").delete(&release).await.status,
        StatusCode::FORBIDDEN,
        "release by a customer"
    );
    assert_eq!(c.get(&format!("/products/{id}")).await.json["stock"], 3);
    assert_eq!(order_service.delete(&release).await.status, StatusCode::NO_CONTENT);
}
