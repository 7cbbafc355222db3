//! Bootstrap tokens: what a sidecar shows the CA once, at its first start,
//! to get a certificate for the namespace and service account the token was
//! minted for (renewal authenticates with the current certificate).
//!
//! A token is `weft1.<id>.<secret>`. etcd keeps, under `tokens/<id>`, only
//! what it proves (namespace, service account, audience, expiry, revoked) and
//! the SHA-256 of the secret: reading etcd gives no usable token, and there is
//! no signing secret to steal. Each token has an id, so it can be listed and
//! revoked alone (`weftctl token list`, `weftctl token revoke ID`).

use crate::store::{Store, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The audience the mesh CA accepts by default (Istio's CA checks `istio-ca`).
pub const DEFAULT_AUDIENCE: &str = "weft-ca";
/// How long a token may be used when `weftctl token` is not told otherwise: two days.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(2 * 24 * 3600);
/// The longest lifetime `weftctl token` mints.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What etcd holds about one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub namespace: String,
    pub service_account: String,
    pub audience: String,
    /// Seconds since the epoch.
    pub issued: u64,
    pub expires: u64,
    pub revoked: bool,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
}

/// What a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub id: String,
    pub ns: String,
    pub sa: String,
}

/// Why a token is refused; the message names the reason and the token's id.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown token {0}")]
    Unknown(String),
    #[error("token {0} does not match its record")]
    BadSecret(String),
    #[error("token {0} expired")]
    Expired(String),
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {id} is for audience {audience:?}, not {expected:?}")]
    Audience { id: String, audience: String, expected: String },
    #[error("token lifetime {0:?} is over the maximum of 30 days")]
    TooLong(Duration),
    #[error("weft-system/weft-control-plane is the control plane's own identity: no token is minted for it")]
    Reserved,
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random<const N: usize>() -> Result<[u8; N], TokenError> {
    let rng = ring::rand::SystemRandom::new();
    ring::rand::generate::<[u8; N]>(&rng).map(|r| r.expose()).map_err(|_| TokenError::Malformed)
}

fn key(store: &Store, id: &str) -> String {
    format!("{}tokens/{id}", store.prefix())
}

/// Ids are 16 hex digits; anything else is not one of ours (and never reaches etcd as a key).
fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Mints a token for `ns`/`sa`, stores its record, returns the token (shown once).
pub async fn mint(
    store: &Store,
    ns: &str,
    sa: &str,
    audience: &str,
    ttl: Duration,
    now: SystemTime,
) -> Result<(String, TokenRecord), TokenError> {
    if ttl > MAX_TOKEN_TTL {
        return Err(TokenError::TooLong(ttl));
    }
    if (ns, sa) == crate::ca::CONTROL_PLANE_IDENTITY {
        return Err(TokenError::Reserved);
    }
    let id: String = random::<8>()?.iter().map(|b| format!("{b:02x}")).collect();
    let secret = B64.encode(random::<32>()?);
    let record = TokenRecord {
        id: id.clone(),
        namespace: ns.to_string(),
        service_account: sa.to_string(),
        audience: audience.to_string(),
        issued: secs(now),
        expires: secs(now) + ttl.as_secs(),
        revoked: false,
        secret_sha256: crate::ca::sha256_hex(secret.as_bytes()),
    };
    put(store, &record).await?;
    Ok((format!("weft1.{id}.{secret}"), record))
}

async fn put(store: &Store, record: &TokenRecord) -> Result<(), TokenError> {
    let body = serde_json::to_vec(record).map_err(|_| TokenError::Malformed)?;
    store.client().kv_client().put(key(store, &record.id), body, None).await.map_err(StoreError::from)?;
    Ok(())
}

async fn get(store: &Store, id: &str) -> Result<Option<TokenRecord>, TokenError> {
    let k = key(store, id);
    let got = store.client().kv_client().get(k.clone(), None).await.map_err(StoreError::from)?;
    match got.kvs().first() {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(kv.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt { key: k, message: e.to_string() }.into()),
    }
}

/// Checks a token against its record: known, secret matches, audience, not expired, not revoked.
pub async fn verify(store: &Store, token: &str, audience: &str, now: SystemTime) -> Result<Claims, TokenError> {
    let mut parts = token.trim().splitn(3, '.');
    let (Some("weft1"), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    if !valid_id(id) {
        return Err(TokenError::Malformed);
    }
    let record = get(store, id).await?.ok_or_else(|| TokenError::Unknown(id.to_string()))?;
    let presented = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let stored: Vec<u8> = (0..record.secret_sha256.len() / 2)
        .filter_map(|i| u8::from_str_radix(record.secret_sha256.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    // Constant time: the comparison says nothing about how much of the secret was right.
    if presented.as_ref().len() != stored.len()
        || presented.as_ref().iter().zip(&stored).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0
    {
        return Err(TokenError::BadSecret(id.to_string()));
    }
    if record.audience != audience {
        return Err(TokenError::Audience {
            id: id.to_string(),
            audience: record.audience,
            expected: audience.to_string(),
        });
    }
    if record.revoked {
        return Err(TokenError::Revoked(id.to_string()));
    }
    if record.expires <= secs(now) {
        return Err(TokenError::Expired(id.to_string()));
    }
    Ok(Claims { id: record.id, ns: record.namespace, sa: record.service_account })
}

/// Every token record, oldest first.
pub async fn list(store: &Store) -> Result<Vec<TokenRecord>, TokenError> {
    let prefix = format!("{}tokens/", store.prefix());
    let got = store
        .client()
        .kv_client()
        .get(prefix.clone(), Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .map_err(StoreError::from)?;
    let mut out = Vec::new();
    for kv in got.kvs() {
        let record: TokenRecord = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            message: e.to_string(),
        })?;
        out.push(record);
    }
    out.sort_by_key(|r| (r.issued, r.id.clone()));
    Ok(out)
}

/// Revokes one token; `Unknown` if there is none with that id.
pub async fn revoke(store: &Store, id: &str) -> Result<TokenRecord, TokenError> {
    if !valid_id(id) {
        return Err(TokenError::Unknown(id.to_string()));
    }
    let mut record = get(store, id).await?.ok_or_else(|| TokenError::Unknown(id.to_string()))?;
    record.revoked = true;
    put(store, &record).await?;
    Ok(record)
}
