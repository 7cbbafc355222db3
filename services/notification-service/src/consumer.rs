//! The queue consumer: declares its topology, consumes with a prefetch window,
//! stores then acks, dead-letters what can never be stored, and reconnects.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use mysql_async::prelude::*;
use serde::Deserialize;

use crate::AppState;

/// Pause between reconnection attempts and between database retries.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The event types this service turns into notifications.
pub const KINDS: [&str; 4] = ["order.created", "order.paid", "order.shipped", "order.cancelled"];

/// The part of an order event a notification needs.
#[derive(Debug, Deserialize)]
pub struct OrderEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub user_id: String,
    pub quantity: u32,
    pub product_id: u64,
    pub total_cents: i64,
}

/// What happened to one message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Stored,
    /// Can never be processed: dead-letter it.
    Poison(String),
}

pub async fn run(s: Arc<AppState>) {
    loop {
        match subscribe(&s).await {
            Ok((conn, channel, consumer)) => {
                s.consuming.store(true, Ordering::Relaxed);
                tracing::info!(queue = %s.config.queue, "consuming");
                let why = consume(&s, consumer).await;
                s.consuming.store(false, Ordering::Relaxed);
                tracing::warn!(%why, "consumer stopped; reconnecting");
                let _ = channel.close(200, "reconnecting".into()).await;
                let _ = conn.close(200, "reconnecting".into()).await;
            }
            Err(error) => tracing::warn!(%error, "broker not reachable; retrying"),
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

/// Exchange, dead-letter exchange and queue, the main queue bound to `order.*`.
async fn subscribe(s: &AppState) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
    let c = &s.config;
    let conn = Connection::connect(&c.amqp_url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.basic_qos(c.prefetch, BasicQosOptions::default()).await?;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(c.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    let dlx = format!("{}.dlx", c.queue);
    let dead = format!("{}.dead", c.queue);
    channel.exchange_declare(dlx.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
    channel.queue_declare(dead.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;
    channel
        .queue_bind(
            dead.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
    channel.queue_declare(c.queue.as_str().into(), QueueDeclareOptions::durable(), args).await?;
    channel
        .queue_bind(
            c.queue.as_str().into(),
            c.exchange.as_str().into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            c.queue.as_str().into(),
            SERVICE_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, channel, consumer))
}

const SERVICE_TAG: &str = "notification-service";

async fn consume(s: &AppState, mut consumer: lapin::Consumer) -> String {
    while let Some(next) = consumer.next().await {
        let delivery = match next {
            Ok(d) => d,
            Err(e) => return e.to_string(),
        };
        let result = match handle(s, &delivery).await {
            Outcome::Stored => delivery.ack(BasicAckOptions::default()).await,
            Outcome::Poison(why) => {
                tracing::error!(%why, tag = delivery.delivery_tag, "message dead-lettered");
                delivery.nack(BasicNackOptions { requeue: false, multiple: false }).await
            }
        };
        if let Err(e) = result {
            // The broker will redeliver it; the unique event_id keeps it stored once.
            return e.to_string();
        }
    }
    "the broker cancelled the consumer".to_string()
}

/// Stores the notification, holding the message while the database is down.
async fn handle(s: &AppState, delivery: &Delivery) -> Outcome {
    let event: OrderEvent = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => return Outcome::Poison(format!("unreadable event: {e}")),
    };
    if !KINDS.contains(&event.kind.as_str()) {
        return Outcome::Poison(format!("unknown event type {:?}", event.kind));
    }
    if [&event.event_id, &event.user_id, &event.order_id].iter().any(|f| f.is_empty() || f.len() > 64) {
        return Outcome::Poison("event_id, user_id and order_id: 1 to 64 characters".to_string());
    }
    // The id travels on as the mail's Idempotency-Key header: letters, digits and `-_.:` only.
    if !event.event_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Outcome::Poison("event_id: letters, digits and -_.: only".to_string());
    }
    let message = message(&event);
    loop {
        let insert = async {
            let mut conn = s.pool.get_conn().await?;
            conn.exec_drop(
                "INSERT IGNORE INTO notifications (event_id, user_id, order_id, kind, message) VALUES (?, ?, ?, ?, ?)",
                (&event.event_id, &event.user_id, &event.order_id, &event.kind, &message),
            )
            .await
        };
        match insert.await {
            Ok(()) => {
                s.outbox.notify_one();
                tracing::info!(event = %event.event_id, kind = %event.kind, user = %event.user_id, "notification stored");
                return Outcome::Stored;
            }
            // A lock wait timeout or a deadlock is the database busy, not the message bad.
            Err(mysql_async::Error::Server(e)) if !matches!(e.code, 1205 | 1213) => {
                return Outcome::Poison(format!("database refused it: {}", e.message))
            }
            Err(e) => {
                tracing::warn!(error = %e, event = %event.event_id, "database unavailable; holding the message");
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}

fn message(e: &OrderEvent) -> String {
    let short = &e.order_id[..e.order_id.len().min(8)];
    let total = format!("{}.{:02}", e.total_cents / 100, e.total_cents % 100);
    match e.kind.as_str() {
        "order.created" => format!("Order {short} placed: {} x product {}, total {total}", e.quantity, e.product_id),
        "order.paid" => format!("Order {short} paid: {total}"),
        "order.shipped" => format!("Order {short} shipped"),
        _ => format!("Order {short} cancelled"),
    }
}
