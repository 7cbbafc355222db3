//! A stand-in payment provider: the order service owns the payment step, so
//! an order becomes paid only when a charge for its total is approved. Card
//! details never reach the shop: the client sends a provider token. Test
//! tokens, as real providers have them: `tok_visa` and `tok_mastercard` are
//! approved, `tok_declined` is declined; anything else is not a token.

use axum::http::StatusCode;
use weft_services_common::ApiError;

/// An approved charge's id.
pub fn charge(token: &str, amount_cents: i64, order_id: &str) -> Result<String, ApiError> {
    match token {
        "tok_visa" | "tok_mastercard" if amount_cents >= 0 => {
            let id = format!("pay_{}", uuid::Uuid::new_v4().simple());
            tracing::info!(order = %order_id, amount_cents, payment = %id, "payment approved");
            Ok(id)
        }
        "tok_declined" => {
            Err(ApiError::new(StatusCode::PAYMENT_REQUIRED, "payment_declined", "the payment was declined"))
        }
        _ => Err(ApiError::bad_request("payment_token: not a payment token (try tok_visa)")),
    }
}
