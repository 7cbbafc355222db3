//! The shop's tokens: HS256, issued by user-service, verified by api-gateway.
//! Issuer, audience and expiry are always set and always checked.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "weft-shop/user-service";
pub const AUDIENCE: &str = "weft-shop";
/// A token's lifetime unless `JWT_TTL_SECS` says otherwise.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The development secret; set `JWT_SECRET` anywhere else.
pub const DEV_SECRET: &str = "weft-shop-development-secret-change-me";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    pub email: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn issue(
    secret: &str,
    user_id: &str,
    email: &str,
    ttl_secs: u64,
) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
    let iat = now();
    let claims = Claims {
        sub: user_id.to_string(),
        email: email.to_string(),
        iss: ISSUER.to_string(),
        aud: AUDIENCE.to_string(),
        iat,
        exp: iat + ttl_secs,
    };
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?;
    Ok((token, claims))
}

/// Signature, algorithm, issuer, audience and expiry (no leeway) checked.
pub fn verify(secret: &str, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation).map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_secret_only() {
        let (token, claims) = issue("s1", "42", "a@example.com", 60).unwrap();
        assert_eq!(verify("s1", &token).unwrap(), claims);
        assert!(verify("s2", &token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let (token, _) = issue("s", "42", "a@example.com", 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(verify("s", &token).is_err());
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let claims = Claims {
            sub: "1".into(),
            email: "e".into(),
            iss: ISSUER.into(),
            aud: "other".into(),
            iat: now(),
            exp: now() + 60,
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"s")).unwrap();
        assert!(verify("s", &token).is_err());
    }
}
