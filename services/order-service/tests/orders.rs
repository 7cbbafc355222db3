//! order-service on the real Redis and RabbitMQ, with a real product-service on
//! the real MariaDB: each test with its own key prefix, exchange and database.
//!
//! Size: an order's life (create, pay, cancel, the outbox) against the real backends,
//! the tests sharing their fixtures.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use order_service::{app, AppState, Config};
use serde_json::{json, Value};
use weft_services_common::peers::Peers;
use weft_testkit::{eventually, Client, PrivateServer, TestAmqp, TestDb, TestRedisPrefix};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// product-service and order-service, wired to each other, plus a queue that sees every event.
struct Shop {
    products: Client,
    orders: Client,
    product_addr: SocketAddr,
    exchange: String,
    prefix: TestRedisPrefix,
    _db: TestDb,
    _amqp: TestAmqp,
}

async fn product_service(db: &TestDb) -> (Client, SocketAddr) {
    // Called directly here (no sidecar to prove order-service's identity).
    let config = product_service::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        trust: weft_services_common::caller::Trust::Development,
    };
    let addr =
        weft_testkit::spawn(product_service::app(product_service::AppState::connect(&config).await.unwrap())).await;
    (Client::new(addr), addr)
}

fn config(product_addr: SocketAddr, redis_url: &str, prefix: &str, exchange: &str, version: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: redis_url.into(),
        redis_prefix: prefix.into(),
        amqp_url: AMQP.into(),
        exchange: exchange.into(),
        version: version.into(),
        instance: format!("order-service-{version}"),
        fault_injection: true,
        peers: Peers::direct([("product-service", product_addr)]),
        trust: weft_services_common::caller::Trust::mesh(),
    }
}

async fn order_service(config: Config) -> Client {
    Client::new(weft_testkit::spawn(app(AppState::start(config).await.expect("start"))).await)
}

impl Shop {
    async fn start(version: &str) -> Shop {
        let db = TestDb::new("orders");
        let (products, product_addr) = product_service(&db).await;
        let prefix = TestRedisPrefix::new("orders");
        let mut amqp = TestAmqp::new(AMQP);
        let exchange = amqp.exchange("orders");
        let orders = order_service(config(product_addr, "redis://127.0.0.1:6379", &prefix.0, &exchange, version)).await;
        Shop { products, orders, product_addr, exchange, prefix, _db: db, _amqp: amqp }
    }

    async fn product(&self, stock: i64) -> u64 {
        let p = self
            .products
            .as_user("1", "staff")
            .post("/products", json!({"name": "Kettle", "price_cents": 2500, "stock": stock}))
            .await;
        p.json["id"].as_u64().unwrap()
    }

    async fn stock(&self, id: u64) -> i64 {
        self.products.get(&format!("/products/{id}")).await.json["stock"].as_i64().unwrap()
    }

    /// A queue bound to every event on this shop's exchange.
    async fn events(&self) -> Events {
        let conn = Connection::connect(AMQP, ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(self.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            q.name().clone(),
            self.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(q.name().clone(), "test".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        Events { _conn: conn, consumer }
    }
}

struct Events {
    _conn: Connection,
    consumer: lapin::Consumer,
}

impl Events {
    async fn next(&mut self) -> Value {
        let d = tokio::time::timeout(Duration::from_secs(10), self.consumer.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        serde_json::from_slice(&d.data).unwrap()
    }
}

#[tokio::test]
async fn an_order_goes_created_paid_shipped_and_each_step_is_an_event() {
    let shop = Shop::start("v1").await;
    let mut events = shop.events().await;
    let product = shop.product(5).await;
    let me = shop.orders.as_user("7", "customer");

    let placed = me.post("/orders", json!({"product_id": product, "quantity": 2})).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    assert_eq!((placed.json["status"].as_str(), placed.json["total_cents"].as_i64()), (Some("created"), Some(5000)));
    assert_eq!(placed.header("x-version"), Some("v1"));
    assert!(placed.json.get("version").is_none() && placed.json.get("estimated_delivery").is_none(), "v1 has neither");
    assert_eq!(shop.stock(product).await, 3, "stock reserved at product-service");
    let id = placed.json["id"].as_str().unwrap().to_string();

    let staff = shop.orders.as_user("900", "staff");
    assert_eq!(staff.post(&format!("/orders/{id}/ship"), json!({})).await.status, StatusCode::CONFLICT, "not paid yet");
    let declined = me.post(&format!("/orders/{id}/pay"), json!({"payment_token": "tok_declined"})).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.text);
    let no_token = me.post(&format!("/orders/{id}/pay"), json!({})).await;
    assert_eq!(no_token.status, StatusCode::BAD_REQUEST, "{}", no_token.text);
    assert_eq!(
        staff.post(&format!("/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await.status,
        StatusCode::FORBIDDEN,
        "only the customer pays"
    );
    assert_eq!(
        me.post(&format!("/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await.json["status"],
        "paid"
    );
    let pay_again = me.post(&format!("/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await;
    assert_eq!(pay_again.status, StatusCode::CONFLICT);
    assert_eq!(pay_again.json["error"]["message"], "cannot pay an order that is paid");
    let customer_ships = me.post(&format!("/orders/{id}/ship"), json!({})).await;
    assert_eq!(customer_ships.status, StatusCode::FORBIDDEN, "shipping is staff's: {}", customer_ships.text);
    assert_eq!(staff.post(&format!("/orders/{id}/ship"), json!({})).await.json["status"], "shipped");
    let cancel = me.post(&format!("/orders/{id}/cancel"), json!({})).await;
    assert_eq!(
        (cancel.status, cancel.json["error"]["message"].as_str()),
        (StatusCode::CONFLICT, Some("cannot cancel an order that is shipped"))
    );
    assert_eq!(me.get(&format!("/orders/{id}")).await.json["status"], "shipped");
    assert_eq!(me.get("/orders").await.json.as_array().unwrap().len(), 1);

    let mut kinds = Vec::new();
    for _ in 0..3 {
        let e = events.next().await;
        kinds.push((e["type"].as_str().unwrap().to_string(), e["order_id"].as_str().unwrap().to_string()));
    }
    let expected: Vec<(String, String)> =
        ["order.created", "order.paid", "order.shipped"].iter().map(|k| (k.to_string(), id.clone())).collect();
    assert_eq!(kinds, expected);
}

#[tokio::test]
async fn v2_answers_with_its_version_and_a_delivery_date() {
    let shop = Shop::start("v2").await;
    let product = shop.product(1).await;
    let placed =
        shop.orders.as_user("8", "customer").post("/orders", json!({"product_id": product, "quantity": 1})).await;
    assert_eq!(placed.header("x-version"), Some("v2"));
    assert_eq!(placed.json["version"], "v2");
    let date = placed.json["estimated_delivery"].as_str().unwrap();
    assert!(date.len() == 10 && date.starts_with("20"), "{date}");
}

#[tokio::test]
async fn orders_belong_to_their_user_and_bad_input_changes_nothing() {
    let shop = Shop::start("v1").await;
    let product = shop.product(2).await;
    let alice = shop.orders.as_user("1", "customer");
    let id = alice.post("/orders", json!({"product_id": product, "quantity": 1})).await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = shop.orders.as_user("2", "customer");
    assert_eq!(
        bob.get(&format!("/orders/{id}")).await.status,
        StatusCode::NOT_FOUND,
        "another user's order is not found"
    );
    assert_eq!(bob.post(&format!("/orders/{id}/cancel"), json!({})).await.status, StatusCode::NOT_FOUND);
    let bob_pays = bob.post(&format!("/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await;
    assert_eq!(bob_pays.status, StatusCode::NOT_FOUND, "another customer cannot pay it");
    // The user headers from any workload but api-gateway (here, notification-service's) are not believed.
    let spoofed = shop.orders.as_workload("notification-service").with("x-user-id", "1");
    assert_eq!(spoofed.get(&format!("/orders/{id}")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        shop.orders.with("x-user-id", "1").get("/orders").await.status,
        StatusCode::UNAUTHORIZED,
        "nor without a sidecar's proof"
    );
    assert_eq!(bob.get("/orders").await.json, json!([]));
    assert_eq!(
        shop.orders.post("/orders", json!({"product_id": product, "quantity": 1})).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        alice.post("/orders", json!({"product_id": 999_999, "quantity": 1})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(alice.post("/orders", json!({"product_id": product, "quantity": 5})).await.status, StatusCode::CONFLICT);
    assert_eq!(
        alice.post("/orders", json!({"product_id": product, "quantity": 0})).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(alice.post("/orders", json!({"product_id": "one"})).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(alice.post(&format!("/orders/{id}/refund"), json!({})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(alice.get("/orders").await.json.as_array().unwrap().len(), 1, "no refused order was stored");
    assert_eq!(shop.stock(product).await, 1, "no refused order holds stock");
}

#[tokio::test]
async fn fifty_parallel_orders_for_ten_in_stock_exactly_ten_succeed() {
    let shop = Shop::start("v1").await;
    let product = shop.product(10).await;
    let attempts = (0..50).map(|i| {
        let c = shop.orders.as_user(&format!("{}", 100 + i % 5), "customer");
        tokio::spawn(async move { c.post("/orders", json!({"product_id": product, "quantity": 1})).await.status })
    });
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let placed = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((placed, refused), (10, 40), "{statuses:?}");
    assert_eq!(shop.stock(product).await, 0);
    let mut stored = 0;
    for u in 100..105 {
        stored += shop.orders.as_user(&u.to_string(), "customer").get("/orders").await.json.as_array().unwrap().len();
    }
    assert_eq!(stored, 10);
}

#[tokio::test]
async fn a_cancelled_order_gives_its_stock_back() {
    let shop = Shop::start("v1").await;
    let product = shop.product(3).await;
    let me = shop.orders.as_user("9", "customer");
    let id = me.post("/orders", json!({"product_id": product, "quantity": 3})).await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(shop.stock(product).await, 0);
    assert_eq!(
        me.post(&format!("/orders/{id}/pay"), json!({"payment_token": "tok_visa"})).await.status,
        StatusCode::OK
    );
    assert_eq!(me.post(&format!("/orders/{id}/cancel"), json!({})).await.json["status"], "cancelled");
    assert!(eventually(Duration::from_secs(10), || async { shop.stock(product).await == 3 }).await, "stock released");
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_the_broker_is_unreachable() {
    let shop = Shop::start("v1").await;
    let mut events = shop.events().await;
    let product = shop.product(2).await;
    // A second instance on the same Redis whose broker address leads nowhere.
    let mut cut_off = config(
        shop.product_addr,
        "redis://127.0.0.1:6379",
        &format!("{}isolated:", shop.prefix.0),
        &shop.exchange,
        "v1",
    );
    cut_off.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", weft_testkit::free_port());
    let isolated = order_service(cut_off.clone()).await.as_user("3", "customer");
    let placed = isolated.post("/orders", json!({"product_id": product, "quantity": 1})).await;
    assert_eq!(placed.status, StatusCode::CREATED, "orders are taken while the broker is down");
    // Twice in a row, one failed attempt of the relay ends after the other: the second
    // began after the order was placed, so the relay has had its go at the event.
    relay_fails_to_reach_the_broker(&cut_off.redis_prefix, product).await;
    relay_fails_to_reach_the_broker(&cut_off.redis_prefix, product).await;
    assert_eq!(redis_cli(&["LLEN", &format!("{}outbox", cut_off.redis_prefix)]), "1", "the event is held");

    // An instance that reaches the broker drains the same outbox.
    let mut healed = cut_off;
    healed.amqp_url = AMQP.into();
    let _relay = order_service(healed).await;
    let event = events.next().await;
    assert_eq!(
        (event["type"].as_str(), event["order_id"].as_str()),
        (Some("order.created"), placed.json["id"].as_str())
    );
}

fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli").args(args).output().expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for one failed attempt of the relay on `prefix` (whose broker is unreachable)
/// to end. After each failure the relay gives back the stock of cancelled orders: hand it
/// a release (of a reservation product-service does not hold, so it changes no stock) and
/// wait until it is taken off the `releases` queue.
async fn relay_fails_to_reach_the_broker(prefix: &str, product: u64) {
    let releases = format!("{prefix}releases");
    let marker = json!({"order_id": weft_testkit::unique("marker"), "product_id": product}).to_string();
    redis_cli(&["RPUSH", &releases, &marker]);
    assert!(
        eventually(Duration::from_secs(20), || async { redis_cli(&["LPOS", &releases, &marker]).is_empty() }).await,
        "the relay never went on after a failed attempt to reach the broker (its release is still queued)"
    );
}

#[tokio::test]
async fn redis_restarted_mid_test_ready_tells_the_truth_and_no_stock_leaks() {
    let mut redis = PrivateServer::redis();
    let db = TestDb::new("orders_redis");
    let (products, product_addr) = product_service(&db).await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut amqp = TestAmqp::new(AMQP);
    let orders = order_service(config(product_addr, &url, "shop:", &amqp.exchange("orders"), "v1")).await;
    let product = products
        .as_user("1", "staff")
        .post("/products", json!({"name": "Vase", "price_cents": 10, "stock": 5}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    let me = orders.as_user("4", "customer");
    assert_eq!(me.post("/orders", json!({"product_id": product, "quantity": 1})).await.status, StatusCode::CREATED);
    assert_eq!(orders.get("/ready").await.status, StatusCode::OK);

    redis.kill();
    let ready = orders.get("/ready").await;
    assert_eq!((ready.status, ready.json["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not ready")));
    let refused = me.post("/orders", json!({"product_id": product, "quantity": 1})).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text);
    assert_eq!(refused.json["error"]["message"], "order store unavailable, try again");
    let stock = products.get(&format!("/products/{product}")).await.json["stock"].as_i64();
    assert_eq!(stock, Some(4), "the reservation of the order that could not be stored was given back");

    redis.start();
    assert!(
        eventually(Duration::from_secs(20), || async { orders.get("/ready").await.status == StatusCode::OK }).await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            me.post("/orders", json!({"product_id": product, "quantity": 1})).await.status == StatusCode::CREATED
        })
        .await,
        "orders are taken again"
    );
}

/// A durable queue bound to every event on `exchange`: it outlives a broker restart.
async fn durable_queue(amqp_url: &str, exchange: &str) -> String {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    let queue = weft_testkit::unique("seen");
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await.unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
    queue
}

/// The next event in `queue`, if one is there (a new connection each time: the broker may have restarted).
async fn take_event(amqp_url: &str, queue: &str) -> Option<Value> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await.ok()?;
    let ch = conn.create_channel().await.ok()?;
    let got = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.ok()?;
    let _ = conn.close(200, "done".into()).await;
    got.and_then(|m| serde_json::from_slice(&m.delivery.data).ok())
}

async fn wait_event(amqp_url: &str, queue: &str, within: Duration) -> Option<Value> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(event) = take_event(amqp_url, queue).await {
            return Some(event);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test]
async fn after_a_broker_restart_the_relay_reconnects_and_publishes_what_waited() {
    let mut broker = PrivateServer::rabbitmq();
    let db = TestDb::new("orders_broker");
    let (products, product_addr) = product_service(&db).await;
    let prefix = TestRedisPrefix::new("orders_broker");
    let exchange = weft_testkit::unique("orders");
    let mut config = config(product_addr, "redis://127.0.0.1:6379", &prefix.0, &exchange, "v1");
    config.amqp_url = broker.amqp_url();
    let seen = durable_queue(&config.amqp_url, &exchange).await;
    let orders = order_service(config.clone()).await;
    let me = orders.as_user("8", "customer");
    let product = products
        .as_user("1", "staff")
        .post("/products", json!({"name": "Lamp", "price_cents": 900, "stock": 5}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();

    let first = me.post("/orders", json!({"product_id": product, "quantity": 1})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let event = wait_event(&config.amqp_url, &seen, Duration::from_secs(10)).await.expect("the first event");
    assert_eq!(event["order_id"], first.json["id"]);

    broker.kill();
    let second = me.post("/orders", json!({"product_id": product, "quantity": 2})).await;
    assert_eq!(second.status, StatusCode::CREATED, "orders are taken while the broker is down: {}", second.text);
    assert_eq!(orders.get("/ready").await.status, StatusCode::OK, "the broker is not a readiness gate");

    broker.start();
    // A broker that crashed may hand out again what it had taken from its disk queue before the
    // crash (at-least-once: the first event may come twice); the event that waited must come.
    let event = loop {
        let event = wait_event(&config.amqp_url, &seen, Duration::from_secs(30)).await.expect("the event that waited");
        if event["order_id"] != first.json["id"] {
            break event;
        }
    };
    assert_eq!((event["type"].as_str(), &event["order_id"]), (Some("order.created"), &second.json["id"]));
    // The relay publishes the outbox in order: were the event that waited published again, or
    // anything else, it would reach the queue before the event of an order placed now.
    let third = me.post("/orders", json!({"product_id": product, "quantity": 1})).await;
    assert_eq!(third.status, StatusCode::CREATED, "{}", third.text);
    let next = wait_event(&config.amqp_url, &seen, Duration::from_secs(20)).await.expect("the event of a later order");
    assert_eq!(
        (next["type"].as_str(), &next["order_id"]),
        (Some("order.created"), &third.json["id"]),
        "published once: nothing came between the event that waited and the next order's"
    );
}

#[tokio::test]
async fn an_idempotency_key_places_an_order_once() {
    let shop = Shop::start("v1").await;
    let product = shop.product(10).await;
    let me = shop.orders.as_user("9", "customer");
    let order = |quantity: u32| json!({"product_id": product, "quantity": quantity});

    let keyed = me.with("idempotency-key", "attempt-1");
    let first = keyed.post("/orders", order(2)).await;
    assert_eq!((first.status, first.header("idempotent-replayed")), (StatusCode::CREATED, None), "{}", first.text);
    let again = keyed.post("/orders", order(2)).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (StatusCode::CREATED, Some("true")));
    assert_eq!(again.json["id"], first.json["id"], "the same order, not a second one");
    assert_eq!(shop.stock(product).await, 8, "stock reserved once");

    // Ten concurrent sends of one request (a client retrying on a timeout): one order.
    let racing = me.with("idempotency-key", "attempt-2");
    let answers = futures_util::future::join_all((0..10).map(|_| racing.post("/orders", order(1)))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::CREATED || a.status == StatusCode::CONFLICT));
    let ids: std::collections::BTreeSet<_> =
        answers.iter().filter(|a| a.status == StatusCode::CREATED).map(|a| a.json["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(shop.stock(product).await, 7);
    assert_eq!(me.get("/orders").await.json.as_array().map(Vec::len), Some(2));

    // The key reused for another order is refused, and changes nothing.
    let reused = keyed.post("/orders", order(3)).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.json["error"]["message"], "this Idempotency-Key was used for a different order");
    assert_eq!(shop.stock(product).await, 7);

    // A request that failed gives its key back; another user's key is their own.
    let failing = me.with("idempotency-key", "attempt-3");
    let missing = failing.post("/orders", json!({"product_id": 999_999_999u64, "quantity": 1})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(failing.post("/orders", order(1)).await.status, StatusCode::CREATED);
    let other =
        shop.orders.as_user("10", "customer").with("idempotency-key", "attempt-1").post("/orders", order(1)).await;
    assert_eq!((other.status, other.header("idempotent-replayed")), (StatusCode::CREATED, None));
    assert_ne!(other.json["id"], first.json["id"]);

    let bad = me.with("idempotency-key", "not a key").post("/orders", order(1)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(shop.stock(product).await, 5);
}
