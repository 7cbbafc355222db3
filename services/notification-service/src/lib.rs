//! notification-service: turns order events into notifications.
//!
//! It consumes a durable queue bound to the order events (`order.*`), stores
//! each notification in MariaDB and acknowledges only after the row is written
//! (an event seen twice is stored once: `event_id` is unique). A message that
//! can never be processed (unreadable, unknown type, refused by the database)
//! is rejected without requeue and RabbitMQ dead-letters it to `<queue>.dead`:
//! never lost, never redelivered forever. While the database is down the
//! message is held and retried, and `/ready` says so.

pub mod consumer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use mysql_async::prelude::*;
use mysql_async::Pool;
use serde::{Deserialize, Serialize};
use weft_services_common::{db, env, serve, ApiError, Json};

pub const SERVICE: &str = "notification-service";

pub const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS notifications (
        id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
        event_id VARCHAR(64) NOT NULL,
        user_id VARCHAR(64) NOT NULL,
        order_id VARCHAR(64) NOT NULL,
        kind VARCHAR(32) NOT NULL,
        message VARCHAR(500) NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        UNIQUE KEY notifications_event (event_id),
        KEY notifications_user (user_id, id)
    ) ENGINE=InnoDB"];

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
}

impl Config {
    /// `LISTEN` (127.0.0.1:3004), `DATABASE_URL` (mysql://root@127.0.0.1:3306/weft_notifications),
    /// `AMQP_URL` (amqp://guest:guest@127.0.0.1:5672/%2f), `EVENTS_EXCHANGE` (shop.orders),
    /// `QUEUE` (shop.notifications), `PREFETCH` (16).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3004)))?,
            database_url: env::var("DATABASE_URL", "mysql://root@127.0.0.1:3306/weft_notifications"),
            amqp_url: env::var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            exchange: env::var("EVENTS_EXCHANGE", "shop.orders"),
            queue: env::var("QUEUE", "shop.notifications"),
            prefetch: env::parse("PREFETCH", 16)?,
        })
    }
}

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub pool: Pool,
    /// True while the consumer holds a broker channel.
    pub consuming: AtomicBool,
}

impl AppState {
    /// Connects to MariaDB (waiting at start-up), applies migrations, starts the consumer.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let pool = db::connect_and_migrate(&config.database_url, SERVICE, MIGRATIONS).await?;
        let state = Arc::new(AppState { config, pool, consuming: AtomicBool::new(false) });
        tokio::spawn(consumer::run(state.clone()));
        Ok(state)
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    serve::finish(Router::new().route("/notifications", get(list)).route("/ready", get(ready)).with_state(state))
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let broker = if s.consuming.load(Ordering::Relaxed) { Ok(()) } else { Err("broker: not consuming".to_string()) };
    serve::ready(&[db::ping(&s.pool).await, broker])
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub user: Option<String>,
    pub limit: Option<u32>,
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

async fn list(State(s): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Result<Json<Vec<Notification>>, ApiError> {
    let user =
        q.user.filter(|u| !u.is_empty()).ok_or_else(|| ApiError::bad_request("query parameter user is required"))?;
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
