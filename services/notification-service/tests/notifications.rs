//! notification-service on the real RabbitMQ and MariaDB: each test with its own
//! exchange, queue (and dead-letter queue) and database.

use std::time::Duration;

use http::StatusCode;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use notification_service::{app, AppState, Config};
use serde_json::json;
use weft_testkit::{eventually, Client, PrivateServer, TestAmqp, TestDb};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct Setup {
    client: Client,
    channel: Channel,
    config: Config,
    _conn: Connection,
    _amqp: TestAmqp,
}

async fn start(database_url: &str) -> Setup {
    start_on(database_url, AMQP).await
}

async fn start_on(database_url: &str, amqp_url: &str) -> Setup {
    start_with(database_url, amqp_url, None).await
}

async fn start_with(database_url: &str, amqp_url: &str, mail: Option<notification_service::mailer::Mail>) -> Setup {
    let mut amqp = TestAmqp::new(amqp_url);
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.into(),
        amqp_url: amqp_url.into(),
        exchange: amqp.exchange("events"),
        queue: amqp.queue("notifications"),
        prefetch: 4,
        trust: weft_services_common::caller::Trust::mesh(),
        mail,
    };
    let state = AppState::start(config.clone()).await.expect("start");
    let client = Client::new(weft_testkit::spawn(app(state)).await);
    assert!(
        eventually(Duration::from_secs(10), || async { client.get("/ready").await.status == StatusCode::OK }).await
    );
    let (conn, channel) = publisher(&config).await;
    Setup { client, channel, config, _conn: conn, _amqp: amqp }
}

/// The test's own connection to the broker, declaring the exchange, with publisher confirms.
async fn publisher(config: &Config) -> (Connection, Channel) {
    let conn = Connection::connect(&config.amqp_url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(config.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (conn, channel)
}

impl Setup {
    /// A new publishing connection, after the broker was restarted.
    async fn reconnect(&mut self) {
        (self._conn, self.channel) = publisher(&self.config).await;
    }

    async fn publish(&self, routing_key: &str, body: &[u8]) {
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    async fn notifications(&self, user: &str) -> Vec<serde_json::Value> {
        let answer = self.client.as_user(user, "customer").get("/notifications").await;
        answer.json.as_array().cloned().unwrap_or_default()
    }

    /// Waits until the service's queue holds no message ready for delivery: everything
    /// published so far has been delivered to the consumer (acknowledged or not).
    async fn all_delivered(&self) {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let queue = self.config.queue.as_str();
        let ready = || async {
            let q = self.channel.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap();
            q.message_count()
        };
        assert!(
            eventually(Duration::from_secs(20), || async { ready().await == 0 }).await,
            "the consumer never took the messages: {} still ready in {queue}",
            ready().await
        );
    }

    async fn dead_letter(&self) -> Option<Vec<u8>> {
        let dead = format!("{}.dead", self.config.queue);
        let got = self.channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap();
        got.map(|m| m.delivery.data.clone())
    }
}

fn event(id: &str, kind: &str, user: &str) -> Vec<u8> {
    json!({"event_id": id, "type": kind, "order_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "user_id": user,
           "product_id": 3, "quantity": 2, "total_cents": 5000, "status": "created", "occurred_at": 1, "version": "v1"})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_event_becomes_a_notification_once_even_when_delivered_twice() {
    let db = TestDb::new("notifications");
    let s = start(&db.url).await;
    s.publish("order.created", &event("e-1", "order.created", "7")).await;
    s.publish("order.created", &event("e-1", "order.created", "7")).await;
    s.publish("order.paid", &event("e-2", "order.paid", "7")).await;
    assert!(eventually(Duration::from_secs(10), || async { s.notifications("7").await.len() == 2 }).await);
    let list = s.notifications("7").await;
    assert_eq!(list[0]["kind"], "order.paid", "newest first");
    assert_eq!(list[1]["message"], "Order 0f8fad5b placed: 2 x product 3, total 50.00");
    assert_eq!(s.notifications("8").await.len(), 0, "only the user's own");
    let no_user = s.client.get("/notifications?user=7").await;
    assert_eq!(no_user.status, StatusCode::UNAUTHORIZED, "the query names nobody");
    let other = s.client.as_user("8", "customer").get("/notifications?user=7").await;
    assert_eq!(other.json, json!([]), "?user= is ignored: {}", other.text);
    let spoofed = s.client.as_workload("order-service").with("x-user-id", "7").get("/notifications").await;
    assert_eq!(spoofed.status, StatusCode::UNAUTHORIZED, "user headers only from api-gateway");
}

#[tokio::test]
async fn only_user_service_sends_notices() {
    let db = TestDb::new("notifications_notice");
    let s = start(&db.url).await;
    let notice = json!({"user_id": "5", "kind": "account.registration_attempt", "message": "someone tried"});
    for who in ["api-gateway", "order-service", "product-service"] {
        let refused = s.client.as_workload(who).post("/notifications", notice.clone()).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{who}: {}", refused.text);
    }
    assert_eq!(s.client.post("/notifications", notice.clone()).await.status, StatusCode::FORBIDDEN, "no identity");
    let sent = s.client.as_workload("user-service").post("/notifications", notice).await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.text);
    let list = s.notifications("5").await;
    assert_eq!((list.len(), list[0]["kind"].as_str()), (1, Some("account.registration_attempt")));
}

#[tokio::test]
async fn a_message_that_cannot_be_processed_is_dead_lettered_not_redelivered() {
    let db = TestDb::new("notifications_dlq");
    let s = start(&db.url).await;
    s.publish("order.created", b"{not json").await;
    s.publish("order.refunded", &event("e-9", "order.refunded", "7")).await;
    s.publish("order.created", &event("e-10", "order.created", "7")).await;
    assert!(
        eventually(Duration::from_secs(10), || async { s.notifications("7").await.len() == 1 }).await,
        "the good one is stored"
    );
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead.len() < 2 && std::time::Instant::now() < deadline {
        match s.dead_letter().await {
            Some(m) => dead.push(m),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(dead.len(), 2, "both poison messages reach the dead-letter queue: {dead:?}");
    assert_eq!(dead[0], b"{not json");
    // Messages are handled one after another: a poison message handled again (redelivered)
    // would be dead-lettered again before one published now.
    s.publish("order.created", b"{marker, not json either").await;
    let mut next = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while next.is_none() && std::time::Instant::now() < deadline {
        next = s.dead_letter().await;
        if next.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let next = next.expect("the later poison message reaches the dead-letter queue");
    assert_eq!(String::from_utf8_lossy(&next), "{marker, not json either", "each dead-lettered once, not redelivered");
}

#[tokio::test]
async fn while_the_database_is_down_messages_are_held_and_ready_says_so() {
    let mut server = PrivateServer::mariadb();
    let s = start(&format!("mysql://root@127.0.0.1:{}/shop", server.port)).await;
    s.publish("order.created", &event("e-20", "order.created", "5")).await;
    assert!(eventually(Duration::from_secs(10), || async { s.notifications("5").await.len() == 1 }).await);

    server.kill();
    let ready = s.client.get("/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.json["reason"].as_str().unwrap().starts_with("database"), "{}", ready.text);
    s.publish("order.paid", &event("e-21", "order.paid", "5")).await;
    // The consumer holds e-21 while the database is down.
    s.all_delivered().await;

    server.start();
    assert!(
        eventually(Duration::from_secs(20), || async { s.client.get("/ready").await.status == StatusCode::OK }).await
    );
    assert!(
        eventually(Duration::from_secs(20), || async { s.notifications("5").await.len() == 2 }).await,
        "the event published while the database was down is stored once it is back"
    );
    assert_eq!(s.dead_letter().await, None, "nothing was dead-lettered for a transient outage");
}

async fn ready_reason(client: &Client) -> Option<String> {
    client.get("/ready").await.json["reason"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_broker_restart_loses_no_event_and_stores_none_twice() {
    let mut db = PrivateServer::mariadb();
    let mut broker = PrivateServer::rabbitmq();
    let mut s = start_on(&format!("mysql://root@127.0.0.1:{}/shop", db.port), &broker.amqp_url()).await;
    s.publish("order.created", &event("e-40", "order.created", "6")).await;
    assert!(eventually(Duration::from_secs(10), || async { s.notifications("6").await.len() == 1 }).await);

    // e-41 is delivered while the database is down: the consumer holds it, unacknowledged.
    db.kill();
    s.publish("order.paid", &event("e-41", "order.paid", "6")).await;
    s.all_delivered().await;
    broker.kill();
    db.start();
    assert!(
        eventually(Duration::from_secs(20), || async {
            ready_reason(&s.client).await.as_deref() == Some("broker: not consuming")
        })
        .await,
        "with the database back and the broker gone, /ready names the broker: {:?}",
        ready_reason(&s.client).await
    );

    // Published as soon as the broker is back, before the consumer has reconnected: the durable queue keeps it.
    broker.start();
    s.reconnect().await;
    s.publish("order.shipped", &event("e-42", "order.shipped", "6")).await;
    assert!(
        eventually(Duration::from_secs(30), || async { s.client.get("/ready").await.status == StatusCode::OK }).await,
        "the consumer reconnects: {:?}",
        ready_reason(&s.client).await
    );
    assert!(
        eventually(Duration::from_secs(20), || async { s.notifications("6").await.len() == 3 }).await,
        "every event is stored: {:?}",
        s.notifications("6").await
    );
    // Messages are handled one after another: a redelivered e-40..e-42 would be handled
    // before a message published now (for another user) is stored.
    s.publish("order.created", &event("e-43", "order.created", "9")).await;
    assert!(
        eventually(Duration::from_secs(20), || async { s.notifications("9").await.len() == 1 }).await,
        "a later event is stored"
    );
    let kinds: Vec<_> =
        s.notifications("6").await.iter().map(|n| n["event_id"].as_str().unwrap().to_string()).collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(sorted, ["e-40", "e-41", "e-42"], "each stored once, the redelivered e-41 too");
    assert_eq!(s.dead_letter().await, None, "nothing dead-lettered for a transient outage");
}

/// A mail API outside the mesh: refuses the first `outage` mails with 503, and
/// always the mails of `broken` (an Idempotency-Key), then accepts; records each
/// accepted mail's Host and Idempotency-Key.
#[derive(Default)]
struct MailApi {
    outage: std::sync::atomic::AtomicUsize,
    broken: std::sync::Mutex<String>,
    seen: std::sync::atomic::AtomicUsize,
    accepted: std::sync::Mutex<Vec<(String, String, serde_json::Value)>>,
}

async fn mail_api(api: std::sync::Arc<MailApi>) -> std::net::SocketAddr {
    use axum::extract::State;
    async fn send(
        State(api): State<std::sync::Arc<MailApi>>,
        headers: http::HeaderMap,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> StatusCode {
        use std::sync::atomic::Ordering;
        if api.seen.fetch_add(1, Ordering::SeqCst) < api.outage.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        if *api.broken.lock().unwrap() == h("idempotency-key") {
            return StatusCode::BAD_GATEWAY;
        }
        api.accepted.lock().unwrap().push((h("host"), h("idempotency-key"), body));
        StatusCode::ACCEPTED
    }
    weft_testkit::spawn(axum::Router::new().route("/send", axum::routing::post(send)).with_state(api)).await
}

#[tokio::test]
async fn every_notification_is_mailed_once_through_an_outage_of_the_mail_api() {
    let db = TestDb::new("notifications_mail");
    let api = std::sync::Arc::new(MailApi::default());
    api.outage.store(3, std::sync::atomic::Ordering::SeqCst);
    let addr = mail_api(api.clone()).await;
    // As behind a sidecar: sent to `addr` with the external host's name.
    let mail = notification_service::mailer::Mail::parse("http://mail.partner.example/send", Some(addr)).unwrap();
    let s = start_with(&db.url, AMQP, Some(mail)).await;
    for (i, kind) in ["order.created", "order.paid"].iter().enumerate() {
        let event = json!({"event_id": format!("mail-{i}"), "type": kind, "order_id": "o-1", "user_id": "42",
            "quantity": 1, "product_id": 3, "total_cents": 1250});
        s.publish(kind, event.to_string().as_bytes()).await;
    }
    let notice = json!({"user_id": "42", "kind": "account", "message": "someone tried to register your address"});
    assert_eq!(s.client.as_workload("user-service").post("/notifications", notice).await.status, StatusCode::CREATED);
    let all = eventually(Duration::from_secs(30), || async { api.accepted.lock().unwrap().len() >= 3 }).await;
    let accepted = api.accepted.lock().unwrap().clone();
    assert!(all, "three mails after three refusals: {accepted:?}");
    assert!(api.seen.load(std::sync::atomic::Ordering::SeqCst) >= 6, "the refused ones were sent again");
    let mut keys: Vec<&str> = accepted.iter().map(|(_, key, _)| key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!((accepted.len(), keys.len()), (3, 3), "each mail once, each with its own idempotency key: {accepted:?}");
    assert!(accepted.iter().all(|(host, _, body)| host == "mail.partner.example" && body["to_user"] == "42"));
    assert!(accepted.iter().any(|(_, key, body)| key == "mail-1" && body["text"].as_str().unwrap().contains("paid")));
}

#[tokio::test]
async fn a_mail_the_api_always_fails_delays_no_other() {
    let db = TestDb::new("notifications_mail_stuck");
    let api = std::sync::Arc::new(MailApi::default());
    *api.broken.lock().unwrap() = "stuck-0".into();
    let addr = mail_api(api.clone()).await;
    let mail = notification_service::mailer::Mail::parse("http://mail.partner.example/send", Some(addr)).unwrap();
    let s = start_with(&db.url, AMQP, Some(mail)).await;
    // The stuck one first: it has the lowest id, and is tried first every time it is due.
    for id in ["stuck-0", "next-1", "next-2"] {
        let event = json!({"event_id": id, "type": "order.created", "order_id": "o-2", "user_id": "7",
            "quantity": 1, "product_id": 3, "total_cents": 100});
        s.publish("order.created", event.to_string().as_bytes()).await;
    }
    let delivered = eventually(Duration::from_secs(15), || async { api.accepted.lock().unwrap().len() >= 2 }).await;
    assert!(delivered, "the others were mailed: {:?}", api.accepted.lock().unwrap());
    let keys: Vec<String> = api.accepted.lock().unwrap().iter().map(|(_, k, _)| k.clone()).collect();
    assert_eq!(keys, ["next-1", "next-2"]);
    // The stuck one is kept, to be tried again later (nothing lost).
    let conn_url = db.url.clone();
    let pool = mysql_async::Pool::new(conn_url.as_str());
    let mut conn = pool.get_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    let row: Option<(Option<String>, u32)> = conn
        .exec_first("SELECT CAST(mailed_at AS CHAR), mail_attempts FROM notifications WHERE event_id = 'stuck-0'", ())
        .await
        .unwrap();
    let (mailed, attempts) = row.expect("the stuck notification is stored");
    assert!(mailed.is_none() && attempts >= 1, "pending, tried: {mailed:?} {attempts}");
    drop(conn);
    pool.disconnect().await.unwrap();
}

#[tokio::test]
async fn an_event_id_that_is_not_a_header_value_is_dead_lettered() {
    let db = TestDb::new("notifications_bad_id");
    let s = start(&db.url).await;
    let event = json!({"event_id": "bad\u{7}id", "type": "order.created", "order_id": "o", "user_id": "7",
        "quantity": 1, "product_id": 3, "total_cents": 100});
    s.publish("order.created", event.to_string().as_bytes()).await;
    let dead = eventually(Duration::from_secs(10), || async { s.dead_letter().await.is_some() }).await;
    assert!(dead, "refused and dead-lettered, never stored");
}
