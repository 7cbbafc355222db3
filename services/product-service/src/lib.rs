//! product-service: the catalogue and its stock, in MariaDB.
//!
//! Stock is reserved per order with one conditional `UPDATE … WHERE stock >= ?`
//! inside a transaction that also records the reservation, so concurrent orders
//! can never take the stock below zero (a `CHECK` constraint says so too), and a
//! retried reservation for the same order is answered, not applied twice.
//!
//! Least privilege: anyone reads the catalogue; only staff create products;
//! reservations are internal — only order-service's workloads (their mTLS
//! identity, from the sidecar) may make or release them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use mysql_async::prelude::*;
use mysql_async::{Pool, TxOpts};
use serde::{Deserialize, Serialize};
use weft_services_common::caller::Trust;
use weft_services_common::{db, env, serve, ApiError, Json};

pub const SERVICE: &str = "product-service";

/// The schema, one statement per version (see `weft_services_common::db`).
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS products (
        id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        price_cents BIGINT NOT NULL,
        stock INT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        CONSTRAINT stock_never_negative CHECK (stock >= 0),
        CONSTRAINT price_never_negative CHECK (price_cents >= 0)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS reservations (
        order_id VARCHAR(64) PRIMARY KEY,
        product_id BIGINT UNSIGNED NOT NULL,
        quantity INT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (product_id) REFERENCES products (id)
    ) ENGINE=InnoDB",
];

/// Most units one order may reserve of one product.
pub const MAX_QUANTITY: u32 = 1000;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// Who may name the end user and who may reserve.
    pub trust: Trust,
}

impl Config {
    /// `LISTEN` (default 127.0.0.1:3003), `DATABASE_URL` (default mysql://root@127.0.0.1:3306/weft_products).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Config {
            listen: env::parse("LISTEN", SocketAddr::from(([127, 0, 0, 1], 3003)))?,
            database_url: env::var("DATABASE_URL", "mysql://root@127.0.0.1:3306/weft_products"),
            trust: Trust::from_env(),
        })
    }
}

/// The only workloads that may reserve and release stock.
pub const RESERVER: &str = "order-service";

#[derive(Debug, Clone)]
pub struct AppState {
    pool: Pool,
    trust: Trust,
}

impl AppState {
    /// Connects to MariaDB (waiting for it at start-up) and applies the migrations.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database_url, SERVICE, MIGRATIONS).await?;
        Ok(AppState { pool, trust: config.trust.clone() })
    }
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/products", get(list).post(create))
        .route("/products/{id}", get(show))
        .route("/products/{id}/reservations", post(reserve))
        .route("/products/{id}/reservations/{order_id}", delete(release))
        .route("/ready", get(ready))
        .with_state(Arc::new(state));
    serve::finish(routes)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReservation {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reservation {
    pub order_id: String,
    pub product_id: u64,
    pub quantity: u32,
    pub price_cents: i64,
}

type Shared = State<Arc<AppState>>;

async fn ready(State(s): Shared) -> Response {
    serve::ready(&[db::ping(&s.pool).await])
}

fn product_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("product id {raw:?} is not a number")))
}

async fn list(State(s): Shared) -> Result<Json<Vec<Product>>, ApiError> {
    let mut conn = s.pool.get_conn().await?;
    let rows: Vec<(u64, String, i64, i64)> =
        conn.query("SELECT id, name, price_cents, stock FROM products ORDER BY id LIMIT 1000").await?;
    Ok(Json(rows.into_iter().map(|(id, name, price_cents, stock)| Product { id, name, price_cents, stock }).collect()))
}

async fn show(State(s): Shared, Path(id): Path<String>) -> Result<Json<Product>, ApiError> {
    let id = product_id(&id)?;
    let mut conn = s.pool.get_conn().await?;
    let row: Option<(u64, String, i64, i64)> =
        conn.exec_first("SELECT id, name, price_cents, stock FROM products WHERE id = ?", (id,)).await?;
    let (id, name, price_cents, stock) = row.ok_or_else(|| ApiError::not_found(format!("product {id} not found")))?;
    Ok(Json(Product { id, name, price_cents, stock }))
}

/// Staff only.
async fn create(State(s): Shared, headers: HeaderMap, Json(p): Json<NewProduct>) -> Result<Response, ApiError> {
    s.trust.user(&headers)?.staff()?;
    let name = p.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::bad_request("name: 1 to 200 characters"));
    }
    if p.price_cents < 0 {
        return Err(ApiError::bad_request("price_cents: must not be negative"));
    }
    if !(0..=i32::MAX as i64).contains(&p.stock) {
        return Err(ApiError::bad_request("stock: 0 to 2147483647"));
    }
    let mut conn = s.pool.get_conn().await?;
    conn.exec_drop("INSERT INTO products (name, price_cents, stock) VALUES (?, ?, ?)", (name, p.price_cents, p.stock))
        .await?;
    let id = conn.last_insert_id().ok_or_else(|| ApiError::internal("insert returned no id"))?;
    let product = Product { id, name: name.to_string(), price_cents: p.price_cents, stock: p.stock };
    Ok((StatusCode::CREATED, Json(product)).into_response())
}

/// Reserves `quantity` units for `order_id`: 201 when reserved now, 200 when this
/// order already holds the same reservation, 409 when stock is short or the order
/// holds a different one, 404 when the product does not exist.
async fn reserve(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(r): Json<NewReservation>,
) -> Result<Response, ApiError> {
    s.trust.require_peer(&headers, RESERVER)?;
    let id = product_id(&id)?;
    if r.order_id.is_empty() || r.order_id.len() > 64 {
        return Err(ApiError::bad_request("order_id: 1 to 64 characters"));
    }
    if r.quantity == 0 || r.quantity > MAX_QUANTITY {
        return Err(ApiError::bad_request(format!("quantity: 1 to {MAX_QUANTITY}")));
    }
    let mut attempt = 0;
    loop {
        match try_reserve(&s.pool, id, &r).await {
            Err(ReserveError::Db(e)) if db::is_retryable(&e) && attempt < 3 => attempt += 1,
            Err(ReserveError::Db(e)) => return Err(e.into()),
            Err(ReserveError::Api(e)) => return Err(e),
            Ok((status, reservation)) => return Ok((status, Json(reservation)).into_response()),
        }
    }
}

#[derive(Debug)]
enum ReserveError {
    Db(mysql_async::Error),
    Api(ApiError),
}

impl From<mysql_async::Error> for ReserveError {
    fn from(e: mysql_async::Error) -> Self {
        ReserveError::Db(e)
    }
}

/// One transaction. The product row is locked first, so reservations of one
/// product queue behind each other instead of deadlocking on the reservations index.
async fn try_reserve(pool: &Pool, id: u64, r: &NewReservation) -> Result<(StatusCode, Reservation), ReserveError> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let product: Option<(i64, i64)> =
        tx.exec_first("SELECT price_cents, stock FROM products WHERE id = ? FOR UPDATE", (id,)).await?;
    let Some((price_cents, stock)) = product else {
        tx.rollback().await?;
        return Err(ReserveError::Api(ApiError::not_found(format!("product {id} not found"))));
    };
    let reservation = Reservation { order_id: r.order_id.clone(), product_id: id, quantity: r.quantity, price_cents };
    let held: Option<(u64, u32)> =
        tx.exec_first("SELECT product_id, quantity FROM reservations WHERE order_id = ?", (&r.order_id,)).await?;
    if let Some(held) = held {
        tx.rollback().await?;
        return if held == (id, r.quantity) {
            Ok((StatusCode::OK, reservation))
        } else {
            Err(ReserveError::Api(ApiError::conflict(format!(
                "order {} already holds a different reservation",
                r.order_id
            ))))
        };
    }
    if stock < i64::from(r.quantity) {
        tx.rollback().await?;
        return Err(ReserveError::Api(ApiError::conflict(format!(
            "product {id}: not enough stock for {}",
            r.quantity
        ))));
    }
    tx.exec_drop("UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?", (r.quantity, id, r.quantity))
        .await?;
    match tx
        .exec_drop(
            "INSERT INTO reservations (order_id, product_id, quantity) VALUES (?, ?, ?)",
            (&r.order_id, id, r.quantity),
        )
        .await
    {
        Ok(()) => {}
        Err(e) if db::is_duplicate(&e) => {
            tx.rollback().await?;
            return Err(ReserveError::Api(ApiError::conflict(format!(
                "order {} already holds a reservation",
                r.order_id
            ))));
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, reservation))
}

/// Gives a reservation's units back (an order cancelled, or one that failed after reserving).
async fn release(
    State(s): Shared,
    headers: HeaderMap,
    Path((id, order_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.trust.require_peer(&headers, RESERVER)?;
    let id = product_id(&id)?;
    let mut conn = s.pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let held: Option<u32> = tx
        .exec_first(
            "SELECT quantity FROM reservations WHERE order_id = ? AND product_id = ? FOR UPDATE",
            (&order_id, id),
        )
        .await?;
    let Some(quantity) = held else {
        tx.rollback().await?;
        return Err(ApiError::not_found(format!("no reservation of product {id} for order {order_id}")));
    };
    tx.exec_drop("UPDATE products SET stock = stock + ? WHERE id = ?", (quantity, id)).await?;
    tx.exec_drop("DELETE FROM reservations WHERE order_id = ?", (&order_id,)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
