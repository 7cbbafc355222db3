//! The outbox relay: publishes the events Redis holds to RabbitMQ and removes
//! each only after the broker confirmed it (publisher confirms), so an event is
//! delivered at least once whatever fails when. It also gives back the stock of
//! cancelled orders (the `releases` queue), retrying until product-service answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

use crate::store::{now_ms, Order};
use crate::AppState;

/// How long the relay waits for the broker to confirm one event.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between reconnection attempts, and the idle poll of the outbox.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
const BATCH: isize = 100;

/// What consumers receive. `event_id` is unique: at-least-once delivery means a
/// consumer may see an event twice and must dedupe by it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub user_id: String,
    pub product_id: u64,
    pub quantity: u32,
    pub total_cents: i64,
    pub status: String,
    /// Unix milliseconds.
    pub occurred_at: u64,
    /// The order-service version that emitted it.
    pub version: String,
}

impl Event {
    pub fn new(kind: &str, o: &Order, version: &str) -> Self {
        Event {
            event_id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            order_id: o.id.clone(),
            user_id: o.user_id.clone(),
            product_id: o.product_id,
            quantity: o.quantity,
            total_cents: o.total_cents,
            status: o.status.as_str().to_string(),
            occurred_at: now_ms(),
            version: version.to_string(),
        }
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A reservation to give back to product-service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub order_id: String,
    pub product_id: u64,
}

impl Release {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Whether the relay holds a broker connection (reported, not a readiness gate:
/// orders are accepted while the broker is down and published when it is back).
#[derive(Debug, Default)]
pub struct BrokerStatus(AtomicBool);

impl BrokerStatus {
    pub fn connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Gives a reservation back; done when product-service answers 204 (released) or 404 (nothing held).
pub async fn release(s: &AppState, r: &Release) -> Result<(), String> {
    let path = format!("/products/{}/reservations/{}", r.product_id, r.order_id);
    let answer = s
        .config
        .peers
        .call("product-service", Method::DELETE, &path, HeaderMap::new(), None)
        .await
        .map_err(|e| e.to_string())?;
    match answer.status {
        StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
        other => Err(format!("product-service answered {other}")),
    }
}

/// Runs for the life of the process.
pub async fn relay(s: Arc<AppState>) {
    loop {
        match connect(&s).await {
            Ok((conn, channel)) => {
                s.broker.0.store(true, Ordering::Relaxed);
                tracing::info!(exchange = %s.config.exchange, "event relay connected to the broker");
                let error = pump(&s, &channel).await;
                s.broker.0.store(false, Ordering::Relaxed);
                tracing::warn!(%error, "event relay lost the broker; reconnecting");
                let _ = conn.close(200, "reconnecting".into()).await;
            }
            Err(error) => {
                tracing::warn!(%error, "broker not reachable; events wait in the outbox");
                give_back_stock(&s).await;
            }
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

async fn connect(s: &AppState) -> Result<(Connection, Channel), lapin::Error> {
    let conn = Connection::connect(&s.config.amqp_url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(s.config.exchange.as_str().into(), ExchangeKind::Topic, options, FieldTable::default())
        .await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, channel))
}

/// Publishes until the broker fails; returns why.
async fn pump(s: &AppState, channel: &Channel) -> String {
    loop {
        give_back_stock(s).await;
        let batch = match s.store.peek("outbox", BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "outbox unreadable; retrying");
                tokio::time::sleep(RETRY_INTERVAL).await;
                continue;
            }
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(RETRY_INTERVAL, s.outbox.notified()).await;
            continue;
        }
        for entry in batch {
            if let Err(e) = publish(s, channel, &entry).await {
                return e;
            }
            if let Err(e) = s.store.remove("outbox", &entry).await {
                // Published but still in the outbox: it will be published again, and deduped.
                tracing::warn!(error = %e, "could not remove a published event from the outbox");
            }
        }
    }
}

async fn publish(s: &AppState, channel: &Channel, entry: &str) -> Result<(), String> {
    let (kind, id) = match serde_json::from_str::<Event>(entry) {
        Ok(e) => (e.kind, e.event_id),
        Err(e) => {
            // Never produced by this code; kept aside rather than blocking the outbox.
            tracing::error!(error = %e, entry, "unreadable outbox entry dropped");
            return Ok(());
        }
    };
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.as_str().into());
    let confirm = async {
        channel
            .basic_publish(
                s.config.exchange.as_str().into(),
                kind.as_str().into(),
                BasicPublishOptions::default(),
                entry.as_bytes(),
                properties,
            )
            .await?
            .await
    };
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(c)) if c.is_ack() => {
            tracing::debug!(event = %id, kind = %kind, "published");
            Ok(())
        }
        Ok(Ok(_)) => Err(format!("broker refused event {id}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no confirm for event {id} within {CONFIRM_TIMEOUT:?}")),
    }
}

async fn give_back_stock(s: &AppState) {
    let Ok(pending) = s.store.peek("releases", BATCH).await else { return };
    for entry in pending {
        let Ok(r) = serde_json::from_str::<Release>(&entry) else {
            let _ = s.store.remove("releases", &entry).await;
            continue;
        };
        match release(s, &r).await {
            Ok(()) => {
                let _ = s.store.remove("releases", &entry).await;
            }
            Err(e) => {
                tracing::warn!(order = %r.order_id, error = %e, "stock not given back yet; will retry");
                return;
            }
        }
    }
}
