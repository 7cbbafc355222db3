//! The order endpoints. The caller is the user api-gateway authenticated, passed
//! as `x-user-id` and `x-user-role` (believed only from api-gateway's identity);
//! a customer sees and changes only their own orders (another user's order is
//! a 404, so ids cannot be probed), pays through the payment step, and cancels;
//! shipping is for staff, who may act on any order.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use weft_services_common::caller::{Role, User};
use weft_services_common::{ApiError, Json};

use crate::events::{Event, Release};
use crate::store::{now_ms, Claim, Idempotency, Order, Status, Swap};
use crate::AppState;

type Shared = State<Arc<AppState>>;

/// Most units of one product in one order (product-service's own limit).
pub const MAX_QUANTITY: u32 = 1000;
/// How many orders `GET /orders` returns, newest first.
pub const LIST_LIMIT: isize = 50;
/// v2's promise: delivered this many days after the order.
pub const DELIVERY_DAYS: u64 = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub product_id: u64,
    pub quantity: u32,
}

#[derive(Debug, Deserialize)]
struct Reservation {
    price_cents: i64,
}

fn caller(s: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    s.config.trust.user(headers)
}

/// `POST /orders/{id}/pay`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    pub payment_token: String,
}

/// The order as this version answers it: v2 adds `version` and `estimated_delivery`.
fn view(s: &AppState, o: &Order) -> Value {
    let mut v = json!({
        "id": o.id, "user_id": o.user_id, "product_id": o.product_id, "quantity": o.quantity,
        "total_cents": o.total_cents, "status": o.status, "created_at": o.created_at, "updated_at": o.updated_at,
    });
    if s.config.version == "v2" {
        v["version"] = json!("v2");
        v["estimated_delivery"] = json!(civil_date(o.created_at / 1000 + DELIVERY_DAYS * 86_400));
    }
    v
}

/// `YYYY-MM-DD` of a Unix time (UTC), by Howard Hinnant's days-to-civil algorithm.
fn civil_date(unix_secs: u64) -> String {
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn redis_error(e: redis::RedisError) -> ApiError {
    ApiError::dependency("order store", e)
}

/// The header a client sets so that sending the same order again (after a
/// timeout, a lost answer) places it once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request's `Idempotency-Key`, if any: 1 to 64 letters, digits, `-` and `_`.
fn idempotency(headers: &HeaderMap, user_id: &str, req: &NewOrder) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key: 1 to 64 letters, digits, '-' or '_'"))?;
    Ok(Some(Idempotency {
        key: format!("idem:{user_id}:{key}"),
        request: format!("{}x{}", req.product_id, req.quantity),
    }))
}

/// Places an order, once per `Idempotency-Key`: a repeat of a finished request
/// answers with the same order (`idempotent-replayed: true`), a repeat while the
/// first is still running gets 409, the key reused for another order 422. A
/// request that fails gives its key back.
pub async fn create(State(s): Shared, headers: HeaderMap, Json(req): Json<NewOrder>) -> Result<Response, ApiError> {
    let user_id = caller(&s, &headers)?.id;
    if req.quantity == 0 || req.quantity > MAX_QUANTITY {
        return Err(ApiError::bad_request(format!("quantity: 1 to {MAX_QUANTITY}")));
    }
    let Some(idem) = idempotency(&headers, &user_id, &req)? else { return place(&s, user_id, &req, None).await };
    match s.store.claim(&idem).await.map_err(redis_error)? {
        Claim::Mine => {
            let placed = place(&s, user_id, &req, Some(&idem)).await;
            if placed.is_err() {
                if let Err(e) = s.store.unclaim(&idem).await {
                    tracing::warn!(error = %e, "idempotency key not given back; it expires on its own");
                }
            }
            placed
        }
        Claim::Done(id) => {
            let order = s
                .store
                .get(&id)
                .await
                .map_err(redis_error)?
                .ok_or_else(|| ApiError::internal("idempotency key names a missing order"))?;
            let mut response = (StatusCode::CREATED, axum::Json(view(&s, &order))).into_response();
            response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
            Ok(response)
        }
        Claim::InProgress => {
            let mut e =
                ApiError::conflict("a request with this Idempotency-Key is still being processed; retry shortly");
            e.retry_after = Some(1);
            Err(e)
        }
        Claim::OtherRequest => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different order",
        )),
    }
}

/// Reserves stock at product-service, then records the order and its event.
async fn place(
    s: &AppState,
    user_id: String,
    req: &NewOrder,
    idem: Option<&Idempotency>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let path = format!("/products/{}/reservations", req.product_id);
    let body = json!({"order_id": id, "quantity": req.quantity});
    let answer = s
        .config
        .peers
        .call_json("product-service", Method::POST, &path, HeaderMap::new(), &body)
        .await
        .map_err(|e| ApiError::dependency("product-service", e))?;
    let price_cents = match answer.status {
        StatusCode::OK | StatusCode::CREATED => {
            answer.json::<Reservation>().map_err(|e| ApiError::dependency("product-service", e))?.price_cents
        }
        StatusCode::NOT_FOUND => return Err(ApiError::not_found(format!("product {} not found", req.product_id))),
        StatusCode::CONFLICT => {
            return Err(ApiError::conflict(format!("product {}: not enough stock", req.product_id)))
        }
        other => return Err(ApiError::dependency("product-service", format!("answered {other}"))),
    };
    let now = now_ms();
    let order = Order {
        id: id.clone(),
        user_id,
        product_id: req.product_id,
        quantity: req.quantity,
        total_cents: price_cents.saturating_mul(i64::from(req.quantity)),
        status: Status::Created,
        created_at: now,
        updated_at: now,
        placed_by: s.config.version.clone(),
    };
    let event = Event::new("order.created", &order, &s.config.version).to_json();
    if let Err(e) = s.store.insert(&order, &event, idem).await {
        // Nothing was written; give the stock back so nothing is half done.
        let release = Release { order_id: id.clone(), product_id: req.product_id };
        if let Err(re) = crate::events::release(s, &release).await {
            tracing::error!(order = %id, error = %re, "could not release the reservation of an order that was not stored");
        }
        return Err(redis_error(e));
    }
    s.outbox.notify_one();
    tracing::info!(order = %id, product = req.product_id, quantity = req.quantity, "order created");
    Ok((StatusCode::CREATED, axum::Json(view(s, &order))).into_response())
}

/// The order, if the caller may see it: its owner, or staff.
async fn owned(s: &AppState, headers: &HeaderMap, id: &str) -> Result<(Order, User), ApiError> {
    let user = caller(s, headers)?;
    let not_found = || ApiError::not_found(format!("order {id} not found"));
    if id.len() > 64 {
        return Err(not_found());
    }
    let order = s.store.get(id).await.map_err(redis_error)?.ok_or_else(not_found)?;
    if order.user_id != user.id && user.role != Role::Staff {
        return Err(not_found());
    }
    Ok((order, user))
}

pub async fn show(State(s): Shared, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (order, _) = owned(&s, &headers, &id).await?;
    Ok(axum::Json(view(&s, &order)).into_response())
}

pub async fn list(State(s): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let user_id = caller(&s, &headers)?.id;
    let orders = s.store.list(&user_id, LIST_LIMIT).await.map_err(redis_error)?;
    Ok(axum::Json(orders.iter().map(|o| view(&s, o)).collect::<Vec<_>>()).into_response())
}

/// `POST /orders/{id}/pay|ship|cancel`. Paying is the owner's, with a payment
/// token the provider approves (`{"payment_token": "tok_visa"}`); shipping is
/// staff's; cancelling is the owner's (or staff's). An invalid transition is a
/// 409 naming the current state.
pub async fn transition(
    State(s): Shared,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let target = match action.as_str() {
        "pay" => Status::Paid,
        "ship" => Status::Shipped,
        "cancel" => Status::Cancelled,
        other => return Err(ApiError::not_found(format!("no action {other:?}; pay, ship or cancel"))),
    };
    let (mut order, user) = owned(&s, &headers, &id).await?;
    match target {
        Status::Shipped => user.staff()?,
        // Staff see any order, but only its owner pays for it.
        Status::Paid if order.user_id != user.id => return Err(ApiError::forbidden("only the customer pays")),
        _ => {}
    }
    if !order.status.can_become(target) {
        return Err(ApiError::conflict(format!("cannot {action} an order that is {}", order.status.as_str())));
    }
    if target == Status::Paid {
        let payment: Payment = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("pay needs {{\"payment_token\": …}}: {e}")))?;
        crate::payments::charge(&payment.payment_token, order.total_cents, &order.id)?;
    }
    let from = order.status;
    order.status = target;
    order.updated_at = now_ms();
    let event = Event::new(&format!("order.{}", target.as_str()), &order, &s.config.version).to_json();
    let release = (target == Status::Cancelled)
        .then(|| Release { order_id: order.id.clone(), product_id: order.product_id }.to_json());
    match s
        .store
        .swap_status(&id, from, target, order.updated_at, &event, release.as_deref())
        .await
        .map_err(redis_error)?
    {
        Swap::Done => {}
        Swap::Missing => return Err(ApiError::not_found(format!("order {id} not found"))),
        Swap::Changed(now) => {
            return Err(ApiError::conflict(format!("cannot {action} an order that is {}", now.as_str())));
        }
    }
    s.outbox.notify_one();
    tracing::info!(order = %id, from = from.as_str(), to = target.as_str(), "order changed");
    Ok(axum::Json(view(&s, &order)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_798_675_200), "2026-12-31");
    }

    #[test]
    fn the_state_machine() {
        use Status::*;
        assert!(Created.can_become(Paid) && Paid.can_become(Shipped));
        assert!(Created.can_become(Cancelled) && Paid.can_become(Cancelled));
        assert!(!Shipped.can_become(Cancelled) && !Cancelled.can_become(Paid) && !Created.can_become(Shipped));
        assert!(!Paid.can_become(Paid));
    }
}
