//! The shop's tokens: HS256, issued by user-service, verified by api-gateway.
//! Issuer, audience, expiry and the user's role are always set and always
//! checked. The secret has no default outside development mode.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "weft-shop/user-service";
pub const AUDIENCE: &str = "weft-shop";
/// A token's lifetime unless `JWT_TTL_SECS` says otherwise.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The development secret, used only with `SHOP_DEVELOPMENT=1`.
pub const DEV_SECRET: &str = "weft-shop-development-secret-change-me";
/// The shortest secret accepted (HS256's key should be as long as its hash).
pub const MIN_SECRET: usize = 32;

/// `JWT_SECRET` (at least [`MIN_SECRET`] bytes); without it, the development
/// secret only under `SHOP_DEVELOPMENT=1`, else an error that says what to do.
pub fn secret_from_env() -> anyhow::Result<String> {
    match std::env::var("JWT_SECRET").ok().filter(|s| !s.is_empty()) {
        Some(s) if s.len() >= MIN_SECRET => Ok(s),
        Some(_) => {
            anyhow::bail!("JWT_SECRET is shorter than {MIN_SECRET} bytes (try: head -c 32 /dev/urandom | base64)")
        }
        None if crate::caller::development() => {
            tracing::warn!("SHOP_DEVELOPMENT=1: signing tokens with the public development secret");
            Ok(DEV_SECRET.to_string())
        }
        None => anyhow::bail!(
            "JWT_SECRET is not set: api-gateway and user-service need the same secret of at least {MIN_SECRET} bytes \
             (head -c 32 /dev/urandom | base64); SHOP_DEVELOPMENT=1 uses a public development secret instead"
        ),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    pub email: String,
    pub role: crate::caller::Role,
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
    role: crate::caller::Role,
    ttl_secs: u64,
) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
    let iat = now();
    let claims = Claims {
        sub: user_id.to_string(),
        email: email.to_string(),
        role,
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
        let (token, claims) = issue("s1", "42", "a@example.com", crate::caller::Role::Customer, 60).unwrap();
        assert_eq!(verify("s1", &token).unwrap(), claims);
        assert!(verify("s2", &token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let (token, _) = issue("s", "42", "a@example.com", crate::caller::Role::Staff, 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(verify("s", &token).is_err());
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let claims = Claims {
            sub: "1".into(),
            email: "e".into(),
            role: crate::caller::Role::Customer,
            iss: ISSUER.into(),
            aud: "other".into(),
            iat: now(),
            exp: now() + 60,
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"s")).unwrap();
        assert!(verify("s", &token).is_err());
    }
}
