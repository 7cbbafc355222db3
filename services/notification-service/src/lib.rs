//! notification-service: turns order events into notifications.
//!
//! It consumes a durable queue bound to the order events (`order.*`), stores
//! each notification in MariaDB and acknowledges only after the row is written
//! (an event seen twice is stored once: `event_id` is unique). A message that
//! can never be processed (unreadable, unknown type, refused by the database)
//! is rejected without requeue and RabbitMQ dead-letters it to `<queue>.dead`:
//! never lost, never redelivered forever. While the database is down the
//! message is held and retried, and `/ready` says so.
//!
//! With `MAIL_URL` set, each notification is also mailed, through the sidecar,
//! to a mail API outside the mesh (`mailer`: the table is the outbox).
//!
//! Least privilege: a user reads only their own notifications (the user
//! api-gateway names; a `user` query parameter is ignored), and
//! `POST /notifications` (a notice to one user) is internal: only
//! user-service's workloads may call it.

pub mod consumer;
pub mod mailer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mysql_async::prelude::*;
use mysql_async::Pool;
use serde::{Deserialize, Serialize};
use weft_services_common::caller::Trust;
use weft_services_common::{db, env, serve, ApiError, Json};

pub const SERVICE: &str = "notification-service";

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS notifications (
        id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
        event_id VARCHAR(64) NOT NULL,
        user_id VARCHAR(64) NOT NULL,
        order_id VARCHAR(64) NOT NULL,
        kind VARCHAR(32) NOT NULL,
        message VARCHAR(500) NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        UNIQUE KEY notifications_event (event_id),
        KEY notifications_user (user_id, id)
    ) ENGINE=InnoDB",
    // The outbox of mail (mailer.rs); rows stored before it are not mailed after the fact.
    "ALTER TABLE notifications ADD COLUMN mailed_at TIMESTAMP NULL DEFAULT NULL,
        ADD COLUMN mail_status SMALLINT UNSIGNED NULL, ADD COLUMN mail_attempts INT UNSIGNED NOT NULL DEFAULT 0,
        ADD COLUMN mail_next_at TIMESTAMP NULL DEFAULT NULL, ADD COLUMN mail_claim CHAR(36) NULL,
        ADD COLUMN mail_claimed_until TIMESTAMP NULL DEFAULT NULL,
        ADD KEY notifications_outbox (mailed_at, id), ADD KEY notifications_claim (mail_claim)",
    "UPDATE notifications SET mailed_at = created_at",
];

/// How many notifications `GET /notifications` returns at most, newest first.
pub const LIST_LIMIT: u32 = 100;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub amqp_url: String,
    /// The topic exchange order-service publishes to.
    pub exchange: String,
    /// This service's durable queue; its dead letters go to `<queue>.dead`.
    pub queue: String,
    /// Unacknowledged messages the broker may hand over at once.
    pub prefetch: u16,
    /// Who may name the end user, and who may send notices.
    pub trust: Trust,
    /// Where each notification is mailed (`None`: nowhere).
    pub mail: Option<mailer::Mail>,
}

impl Config {
    /// `LISTEN` (127.0.0.1:3004), `DATABASE_URL` (mysql://root@127.0.0.1:3306/weft_notifications),
    /// `AMQP_URL` (amqp://guest:guest@127.0.0.1:5672/%2f), `EVENTS_EXCHANGE` (shop.orders),
    /// `QUEUE` (shop.notifications), `PREFETCH` (16), `MAIL_URL` (unset: no mail; see [`mailer::Mail::from_env`]).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3004)))?,
            database_url: env::var("DATABASE_URL", "mysql://root@127.0.0.1:3306/weft_notifications"),
            amqp_url: env::var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            exchange: env::var("EVENTS_EXCHANGE", "shop.orders"),
            queue: env::var("QUEUE", "shop.notifications"),
            prefetch: env::parse("PREFETCH", 16)?,
            trust: Trust::from_env(),
            mail: mailer::Mail::from_env()?,
        })
    }
}

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub pool: Pool,
    /// True while the consumer holds a broker channel.
    pub consuming: AtomicBool,
    /// Woken when a notification is stored, for the mailer.
    pub outbox: tokio::sync::Notify,
}

impl AppState {
    /// Connects to MariaDB (waiting at start-up), applies migrations, starts the consumer.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let pool = db::connect_and_migrate(&config.database_url, SERVICE, MIGRATIONS).await?;
        let state = Arc::new(AppState { config, pool, consuming: AtomicBool::new(false), outbox: Default::default() });
        tokio::spawn(consumer::run(state.clone()));
        if let Some(mail) = state.config.mail.clone() {
            tokio::spawn(mailer::run(state.clone(), mail));
        }
        Ok(state)
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    serve::finish(
        Router::new().route("/notifications", get(list).post(notify)).route("/ready", get(ready)).with_state(state),
    )
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let broker = if s.consuming.load(Ordering::Relaxed) { Ok(()) } else { Err("broker: not consuming".to_string()) };
    serve::ready(&[db::ping(&s.pool).await, broker])
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: Option<u32>,
}

/// The only workloads that may send a notice.
pub const NOTIFIER: &str = "user-service";

/// `POST /notifications`: a notice to one user (a registration attempt on their address).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub user_id: String,
    pub kind: String,
    pub message: String,
}

async fn notify(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    s.config.trust.require_peer(&headers, NOTIFIER)?;
    let n: Notice = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("notice: {e}")))?;
    if n.user_id.is_empty() || n.user_id.len() > 64 || n.kind.is_empty() || n.kind.len() > 32 || n.message.len() > 500 {
        return Err(ApiError::bad_request("user_id 1-64, kind 1-32, message up to 500 characters"));
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let mut conn = s.pool.get_conn().await?;
    conn.exec_drop(
        "INSERT INTO notifications (event_id, user_id, order_id, kind, message) VALUES (?, ?, '', ?, ?)",
        (&event_id, &n.user_id, &n.kind, &n.message),
    )
    .await?;
    s.outbox.notify_one();
    tracing::info!(user = %n.user_id, kind = %n.kind, "notice stored");
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    pub id: u64,
    pub event_id: String,
    pub user_id: String,
    pub order_id: String,
    pub kind: String,
    pub message: String,
}

async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    let user = s.config.trust.user(&headers)?.id;
    let limit = q.limit.unwrap_or(LIST_LIMIT).clamp(1, LIST_LIMIT);
    let mut conn = s.pool.get_conn().await?;
    let rows: Vec<(u64, String, String, String, String, String)> = conn
        .exec(
            "SELECT id, event_id, user_id, order_id, kind, message FROM notifications WHERE user_id = ? ORDER BY id DESC LIMIT ?",
            (&user, limit),
        )
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|(id, event_id, user_id, order_id, kind, message)| Notification {
                id,
                event_id,
                user_id,
                order_id,
                kind,
                message,
            })
            .collect(),
    ))
}
