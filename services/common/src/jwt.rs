//! The shop's tokens: EdDSA (Ed25519). user-service signs them with a private
//! key only it holds and serves the public half as a JSON Web Key Set
//! (`GET /.well-known/jwks.json`); whoever checks a token needs only that set —
//! api-gateway, and the mesh's ingress gateway through a RequestAuthentication.
//! A leaked verifier cannot mint tokens, unlike the shared HS256 secret before.
//! Issuer, audience, expiry and the user's role are always set and always
//! checked; only `EdDSA` with a key of the set verifies (no `none`, no HMAC).

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair;
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "weft-shop/user-service";
pub const AUDIENCE: &str = "weft-shop";
/// A token's lifetime unless `JWT_TTL_SECS` says otherwise.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Where user-service serves its key set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// How to make a signing key, for the error that asks for one.
pub const KEYGEN: &str = "openssl genpkey -algorithm ed25519 -out jwt-signing-key.pem";

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

/// user-service's signing key and its public JWK, with the public keys of the
/// keys it publishes beside it (the one before a rotation, the one after).
pub struct Signer {
    key: EncodingKey,
    kid: String,
    x: String,
    also: Vec<(String, String)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Signer {
    /// An Ed25519 key in PKCS#8 DER (v1 as `openssl genpkey` writes it, or v2).
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 private key in PKCS#8 ({e}); make one with: {KEYGEN}"))?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(Signer { key: EncodingKey::from_ed_der(der), kid: thumbprint(&x), x, also: Vec::new() })
    }

    /// A `-----BEGIN PRIVATE KEY-----` PEM file's text.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PRIVATE KEY-----")
            .collect();
        anyhow::ensure!(
            !body.is_empty(),
            "no PRIVATE KEY block (an Ed25519 key in PKCS#8 PEM; make one with: {KEYGEN})"
        );
        let der = STANDARD.decode(body).map_err(|e| anyhow::anyhow!("the PRIVATE KEY block is not base64: {e}"))?;
        Self::from_pkcs8(&der)
    }

    /// A fresh key that lives as long as the process.
    pub fn generate() -> anyhow::Result<Self> {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Also publishes `other`'s public key (it signs nothing here).
    pub fn publishing(mut self, other: &Signer) -> Self {
        if other.kid != self.kid && !self.also.iter().any(|(kid, _)| *kid == other.kid) {
            self.also.push((other.kid.clone(), other.x.clone()));
        }
        self
    }

    fn read(var: &str, path: &str) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{var}={path}: {e}"))?;
        Self::from_pem(&pem).map_err(|e| anyhow::anyhow!("{var}={path}: {e}"))
    }

    /// `JWT_SIGNING_KEY_FILE` (an Ed25519 key in PKCS#8 PEM), and `JWT_PUBLISHED_KEY_FILES`
    /// (comma-separated: keys whose public halves are served too — the previous one until
    /// its tokens expire, the next one before it signs); without a signing key, a key of
    /// this process only under `SHOP_DEVELOPMENT=1`, else an error that says what to do.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("JWT_SIGNING_KEY_FILE").ok().filter(|s| !s.is_empty()) {
            Some(path) => {
                let mut signer = Self::read("JWT_SIGNING_KEY_FILE", &path)?;
                let published = std::env::var("JWT_PUBLISHED_KEY_FILES").unwrap_or_default();
                for path in published.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    signer = signer.publishing(&Self::read("JWT_PUBLISHED_KEY_FILES", path)?);
                }
                Ok(signer)
            }
            None if crate::caller::development() => {
                tracing::warn!("SHOP_DEVELOPMENT=1: signing tokens with a key of this process (tokens die with it)");
                Self::generate()
            }
            None => anyhow::bail!(
                "JWT_SIGNING_KEY_FILE is not set: user-service signs tokens with an Ed25519 key ({KEYGEN}); \
                 SHOP_DEVELOPMENT=1 uses a key of this process instead"
            ),
        }
    }

    /// The key's id: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set to serve at [`JWKS_PATH`].
    pub fn jwks(&self) -> serde_json::Value {
        let jwk = |kid: &str, x: &str| serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
        let keys: Vec<_> =
            std::iter::once(jwk(&self.kid, &self.x)).chain(self.also.iter().map(|(kid, x)| jwk(kid, x))).collect();
        serde_json::json!({ "keys": keys })
    }

    pub fn issue(
        &self,
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
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok((jsonwebtoken::encode(&header, &claims, &self.key)?, claims))
    }
}

/// RFC 7638's thumbprint of an Ed25519 public key.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refused {
    /// Signed by a key the set does not hold (yet: the holder may fetch the set again).
    #[error("the token is signed by a key this service does not know")]
    UnknownKey,
    #[error("{0}")]
    Invalid(String),
}

/// The public keys tokens are checked against, by key id.
#[derive(Default, Clone)]
pub struct Keys {
    by_kid: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_kid.keys()).finish()
    }
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    kid: String,
}

impl Keys {
    /// The Ed25519 signing keys of a JWKS document (others are skipped); an error
    /// when it is not a key set or holds none.
    pub fn from_jwks(json: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        let set: Set = serde_json::from_slice(json).map_err(|_| "not a JSON Web Key Set".to_string())?;
        let mut by_kid = HashMap::new();
        for k in set.keys {
            if k.kty == "OKP" && k.crv == "Ed25519" && !k.kid.is_empty() {
                let key = DecodingKey::from_ed_components(&k.x).map_err(|e| format!("key {}: {e}", k.kid))?;
                by_kid.insert(k.kid, key);
            }
        }
        if by_kid.is_empty() {
            return Err("the key set holds no Ed25519 key with a kid".into());
        }
        Ok(Keys { by_kid })
    }

    /// Signature (EdDSA only, by the key the header names), issuer, audience and
    /// expiry (no leeway) checked.
    pub fn verify(&self, token: &str) -> Result<Claims, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refused::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Refused::Invalid(format!("algorithm {:?} is not accepted (EdDSA only)", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| Refused::Invalid("the token names no key (kid)".into()))?;
        let key = self.by_kid.get(&kid).ok_or(Refused::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| Refused::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Role;

    fn keys_of(s: &Signer) -> Keys {
        Keys::from_jwks(s.jwks().to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_token_verifies_with_its_signers_key_set_only() {
        let (a, b) = (Signer::generate().unwrap(), Signer::generate().unwrap());
        let (token, claims) = a.issue("42", "a@example.com", Role::Customer, 60).unwrap();
        assert_eq!(keys_of(&a).verify(&token).unwrap(), claims);
        assert_eq!(keys_of(&b).verify(&token), Err(Refused::UnknownKey));
    }

    #[test]
    fn a_token_whose_payload_was_changed_is_refused() {
        let s = Signer::generate().unwrap();
        let (token, _) = s.issue("42", "a@example.com", Role::Customer, 60).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(payload.replace("customer", "staff"));
        assert!(matches!(keys_of(&s).verify(&format!("{}.{forged}.{}", parts[0], parts[2])), Err(Refused::Invalid(_))));
    }

    #[test]
    fn hmac_and_none_tokens_are_refused_even_under_a_known_kid() {
        let s = Signer::generate().unwrap();
        let claims = Claims {
            sub: "1".into(),
            email: "e".into(),
            role: Role::Staff,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now(),
            exp: now() + 60,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(s.kid().to_string());
        // HMAC keyed with the public key's bytes: the classic confusion attack.
        let hmac = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(s.x.as_bytes())).unwrap();
        assert!(matches!(keys_of(&s).verify(&hmac), Err(Refused::Invalid(_))));
        let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, s.kid()));
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(keys_of(&s).verify(&format!("{none_header}.{body}.")).is_err());
    }

    #[test]
    fn expired_and_foreign_audience_tokens_are_refused() {
        let s = Signer::generate().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(s.kid().to_string());
        let claims = Claims {
            sub: "1".into(),
            email: "e".into(),
            role: Role::Customer,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now() - 70,
            exp: now() - 10,
        };
        let expired = jsonwebtoken::encode(&header, &claims, &s.key).unwrap();
        assert!(matches!(keys_of(&s).verify(&expired), Err(Refused::Invalid(_))));
        let foreign = Claims { aud: "other".into(), exp: now() + 60, ..claims };
        let other = jsonwebtoken::encode(&header, &foreign, &s.key).unwrap();
        assert!(matches!(keys_of(&s).verify(&other), Err(Refused::Invalid(_))));
    }

    #[test]
    fn a_rotation_publishes_both_keys_and_each_verifies_its_tokens() {
        let (old, new) = (Signer::generate().unwrap(), Signer::generate().unwrap());
        let (before, _) = old.issue("1", "a@example.com", Role::Customer, 60).unwrap();
        let rotated = new.publishing(&old).publishing(&old);
        assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2, "the old key once, beside the new");
        let (after, _) = rotated.issue("1", "a@example.com", Role::Customer, 60).unwrap();
        let keys = keys_of(&rotated);
        assert!(keys.verify(&before).is_ok() && keys.verify(&after).is_ok());
    }

    #[test]
    fn an_openssl_key_loads_and_its_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.1's key (PKCS#8 v1, as `openssl genpkey` writes), and A.3's thumbprint.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let s = Signer::from_pem(pem).unwrap();
        assert_eq!(s.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(s.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert!(Signer::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
