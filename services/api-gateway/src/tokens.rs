//! The key set api-gateway checks tokens with: user-service's JWKS, fetched
//! through the mesh on first use and again when a token names a key the set
//! does not hold (user-service rotated its key), at most once per
//! [`REFETCH_AFTER`]: a stream of tokens with made-up key ids costs user-service
//! one request per interval, not one per token. A fetched set replaces the old
//! one whole, so a key user-service withdrew stops verifying.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use weft_services_common::jwt::{self, Claims, Keys, Refused};
use weft_services_common::peers::Peers;
use weft_services_common::ApiError;

/// The shortest time between two fetches of the key set.
pub const REFETCH_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct TokenKeys {
    peers: Peers,
    refetch_after: Duration,
    keys: RwLock<Arc<Keys>>,
    /// When the set was last asked for and whether that fetch succeeded; held while
    /// a fetch is in flight.
    fetched: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl TokenKeys {
    /// Keys fetched from `user-service` through `peers`, at most once per `refetch_after`.
    pub fn new(peers: Peers, refetch_after: Duration) -> Self {
        TokenKeys { peers, refetch_after, keys: RwLock::default(), fetched: tokio::sync::Mutex::new(None) }
    }

    fn current(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The token's claims, or 401 (503 while user-service's key set cannot be had).
    pub async fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = |e: Refused| ApiError::unauthorized(format!("invalid token: {e}"));
        let seen = self.current();
        match seen.verify(token) {
            Err(Refused::UnknownKey) => self.refresh(&seen).await?.verify(token).map_err(invalid),
            other => other.map_err(invalid),
        }
    }

    /// The set after a fetch, unless another request fetched it meanwhile or the
    /// last fetch was under `refetch_after` ago (then the set as it is, or 503 when
    /// that fetch failed: a valid token is not called invalid for want of keys).
    async fn refresh(&self, seen: &Arc<Keys>) -> Result<Arc<Keys>, ApiError> {
        let unavailable = || ApiError::unavailable("tokens cannot be checked right now; try again shortly");
        let mut fetched = self.fetched.lock().await;
        let now = self.current();
        match *fetched {
            _ if !Arc::ptr_eq(&now, seen) => return Ok(now),
            Some((at, ok)) if at.elapsed() < self.refetch_after => {
                return if ok { Ok(now) } else { Err(unavailable()) }
            }
            _ => {}
        }
        *fetched = Some((Instant::now(), false));
        let unavailable = |why: String| {
            tracing::warn!(%why, "user-service's key set could not be fetched");
            unavailable()
        };
        let answer = self
            .peers
            .call("user-service", Method::GET, jwt::JWKS_PATH, HeaderMap::new(), None)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if answer.status != StatusCode::OK {
            return Err(unavailable(format!("{} answered {}", jwt::JWKS_PATH, answer.status)));
        }
        let keys = Arc::new(Keys::from_jwks(&answer.body).map_err(unavailable)?);
        tracing::info!(keys = ?keys, "user-service's key set fetched");
        *fetched = Some((Instant::now(), true));
        match self.keys.write() {
            Ok(mut k) => *k = keys.clone(),
            Err(p) => *p.into_inner() = keys.clone(),
        }
        Ok(keys)
    }
}
