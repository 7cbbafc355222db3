//! order-service: orders and their state machine, kept in Redis.
//!
//! Placing an order reserves stock at product-service first, then writes the
//! order, the user's index and an `order.created` event to Redis in one
//! transaction (an outbox). A background relay publishes the outbox to a
//! RabbitMQ topic exchange with publisher confirms and removes an event only
//! once the broker has confirmed it: at-least-once, nothing lost when the broker
//! is down, and consumers dedupe by `event_id`.
//!
//! Built as v1 and v2 (`VERSION`): v2 answers with a `version` field and an
//! `estimated_delivery` date, so a canary is visible. Every answer carries
//! `x-version` and `x-served-by`.

pub mod events;
pub mod orders;
pub mod payments;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;
use weft_services_common::caller::Trust;
use weft_services_common::peers::Peers;
use weft_services_common::{env, serve, ApiError, Json};

pub const SERVICE: &str = "order-service";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub redis_url: String,
    /// Prefix of every Redis key this service owns (tests use their own).
    pub redis_prefix: String,
    pub amqp_url: String,
    /// The topic exchange order events are published to (routing key = event type).
    pub exchange: String,
    /// `v1` or `v2`.
    pub version: String,
    /// This instance's name, answered in `x-served-by`.
    pub instance: String,
    /// Serve `POST /admin/fault` (make this instance answer an error status; for demos).
    pub fault_injection: bool,
    pub peers: Peers,
    /// Who may name the end user (api-gateway behind a sidecar).
    pub trust: Trust,
}

impl Config {
    /// `LISTEN` (127.0.0.1:3002), `REDIS_URL` (redis://127.0.0.1:6379), `REDIS_PREFIX` (shop:),
    /// `AMQP_URL` (amqp://guest:guest@127.0.0.1:5672/%2f), `EVENTS_EXCHANGE` (shop.orders),
    /// `VERSION` (v1), `INSTANCE` (order-service-<version>), `FAULT_INJECTION` (false),
    /// and the peers (see `Peers::from_env`).
    pub fn from_env() -> anyhow::Result<Self> {
        let version = env::var("VERSION", "v1");
        anyhow::ensure!(version == "v1" || version == "v2", "VERSION={version:?}: v1 or v2");
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3002)))?,
            redis_url: env::var("REDIS_URL", "redis://127.0.0.1:6379"),
            redis_prefix: env::var("REDIS_PREFIX", "shop:"),
            amqp_url: env::var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            exchange: env::var("EVENTS_EXCHANGE", "shop.orders"),
            instance: env::var("INSTANCE", &format!("order-service-{version}")),
            version,
            fault_injection: env::parse("FAULT_INJECTION", false)?,
            peers: Peers::from_env()?,
            trust: Trust::from_env(),
        })
    }
}

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub store: store::Store,
    /// Wakes the relay when the outbox has something new.
    pub outbox: Arc<Notify>,
    /// When non-zero, every business request is answered with this status (fault injection).
    pub fault: AtomicU16,
    pub broker: Arc<events::BrokerStatus>,
}

impl AppState {
    /// Connects to Redis (waiting for it at start-up) and starts the outbox relay.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let store = store::Store::connect(&config.redis_url, &config.redis_prefix).await?;
        let outbox = Arc::new(Notify::new());
        let broker = Arc::new(events::BrokerStatus::default());
        let state = Arc::new(AppState { config, store, outbox, fault: AtomicU16::new(0), broker });
        tokio::spawn(events::relay(state.clone()));
        Ok(state)
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    let mut routes = Router::new()
        .route("/orders", get(orders::list).post(orders::create))
        .route("/orders/{id}", get(orders::show))
        .route("/orders/{id}/{action}", post(orders::transition))
        .layer(axum::middleware::from_fn_with_state(state.clone(), fault))
        .route("/ready", get(ready));
    if state.config.fault_injection {
        routes = routes.route("/admin/fault", post(set_fault));
    }
    let version = HeaderValue::from_str(&state.config.version).unwrap_or(HeaderValue::from_static("v1"));
    let instance = HeaderValue::from_str(&state.config.instance).unwrap_or(HeaderValue::from_static("order-service"));
    serve::finish(routes.with_state(state)).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let (version, instance) = (version.clone(), instance.clone());
        async move {
            let mut response = next.run(req).await;
            response.headers_mut().insert("x-version", version);
            response.headers_mut().insert("x-served-by", instance);
            response
        }
    }))
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    serve::ready(&[s.store.ping().await])
}

async fn fault(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match s.fault.load(Ordering::Relaxed) {
        0 => next.run(req).await,
        status => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            ApiError::new(status, "injected_fault", "this instance was told to fail (POST /admin/fault)")
                .into_response()
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    /// 0 clears the fault; otherwise 500..=599.
    status: u16,
}

async fn set_fault(State(s): State<Arc<AppState>>, Json(f): Json<Fault>) -> Result<StatusCode, ApiError> {
    if f.status != 0 && !(500..=599).contains(&f.status) {
        return Err(ApiError::bad_request("status: 0 (clear) or 500 to 599"));
    }
    s.fault.store(f.status, Ordering::Relaxed);
    tracing::warn!(status = f.status, "fault injection set");
    Ok(StatusCode::NO_CONTENT)
}
