//! Per-client token buckets: each client may spend `burst` requests at once and
//! `rate` per second after that. The buckets live in Redis, shared by every
//! gateway instance, so that N replicas allow a client `rate`, not N × `rate`
//! (the deploy/ HPA runs 2 to 10). While Redis cannot answer, each instance
//! keeps limiting with buckets of its own, so the gateway neither stops nor
//! stops limiting. Idle buckets expire.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
pub use weft_services_common::bucket::Limiter;

/// How long the gateway waits for the shared store before deciding with its own bucket.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(100);

/// A token bucket in a Redis hash, timed by Redis's clock (instances need not agree on time).
/// Returns 0 when a token was taken, otherwise the milliseconds until one is there.
const BUCKET_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
";

/// The limiter the gateway asks: the shared buckets when they answer, its own otherwise.
#[derive(Debug)]
pub struct RateLimiter {
    pub local: Limiter,
    shared: Option<SharedBuckets>,
}

impl RateLimiter {
    /// Buckets of this instance only.
    pub fn local(rate: f64, burst: f64) -> Self {
        RateLimiter { local: Limiter::new(rate, burst), shared: None }
    }

    /// Buckets in the Redis at `url` under `prefix`. Waits for the first connection
    /// (at most its 1 s timeout); if Redis is not there, keeps trying in the background.
    pub async fn shared(rate: f64, burst: f64, url: &str, prefix: &str) -> anyhow::Result<Self> {
        let shared = SharedBuckets::connect(url, prefix, rate, burst).await?;
        Ok(RateLimiter { local: Limiter::new(rate, burst), shared: Some(shared) })
    }

    /// Takes one token for `client`, or says how long until one is available.
    pub async fn take(&self, client: &str) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            if let Some(answer) = shared.take(client).await {
                return answer;
            }
        }
        self.local.take(client)
    }

    /// Whether the shared store is connected (the limits hold across instances).
    pub fn is_shared(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.conn.get().is_some())
    }
}

#[derive(Debug)]
struct SharedBuckets {
    conn: Arc<OnceLock<ConnectionManager>>,
    prefix: String,
    script: redis::Script,
    rate: f64,
    burst: f64,
}

impl SharedBuckets {
    async fn connect(url: &str, prefix: &str, rate: f64, burst: f64) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = Arc::new(OnceLock::new());
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(STORE_TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(0);
        let cell = conn.clone();
        let connected = move |c| {
            let _ = cell.set(c);
            tracing::info!("rate limits shared through Redis");
        };
        match client.get_connection_manager_with_config(config.clone()).await {
            Ok(c) => connected(c),
            Err(error) => {
                tracing::warn!(%error, "rate-limit store not reachable; limiting per instance meanwhile");
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Ok(c) = client.get_connection_manager_with_config(config.clone()).await {
                            return connected(c);
                        }
                    }
                });
            }
        }
        Ok(SharedBuckets { conn, prefix: prefix.to_string(), script: redis::Script::new(BUCKET_SCRIPT), rate, burst })
    }

    /// `None` when the store cannot answer in time (not connected yet, down, slow).
    async fn take(&self, client: &str) -> Option<Result<(), Duration>> {
        let mut conn = self.conn.get()?.clone();
        let idle = super::IDLE_BUCKET.as_millis() as u64;
        let mut call = self.script.key(format!("{}{client}", self.prefix));
        call.arg(self.rate).arg(self.burst).arg(idle);
        match tokio::time::timeout(STORE_TIMEOUT, call.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(wait_ms)) => Some(Err(Duration::from_millis(wait_ms))),
            Ok(Err(error)) => {
                tracing::warn!(%error, "rate-limit store failed; this instance decides alone");
                None
            }
            Err(_) => {
                tracing::warn!("rate-limit store too slow; this instance decides alone");
                None
            }
        }
    }
}
