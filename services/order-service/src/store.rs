//! Orders in Redis, under one key prefix:
//! `order:<id>` (hash), `user:<id>:orders` (sorted by creation time),
//! `outbox` (events waiting for the broker), `releases` (stock reservations
//! to give back after a cancellation) and `idem:<user>:<key>` (what an
//! `Idempotency-Key` stands for). Every change to an order and the event it
//! causes are written in one atomic step.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Paid,
    Shipped,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Status::Created, Status::Paid, Status::Shipped, Status::Cancelled].into_iter().find(|v| v.as_str() == s)
    }
    /// The state machine: created → paid → shipped, and created | paid → cancelled.
    pub fn can_become(self, next: Status) -> bool {
        matches!(
            (self, next),
            (Status::Created, Status::Paid)
                | (Status::Paid, Status::Shipped)
                | (Status::Created, Status::Cancelled)
                | (Status::Paid, Status::Cancelled)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub product_id: u64,
    pub quantity: u32,
    pub total_cents: i64,
    pub status: Status,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    /// The version that placed it (v1 or v2).
    pub placed_by: String,
}

impl Order {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("user_id", self.user_id.clone()),
            ("product_id", self.product_id.to_string()),
            ("quantity", self.quantity.to_string()),
            ("total_cents", self.total_cents.to_string()),
            ("status", self.status.as_str().to_string()),
            ("created_at", self.created_at.to_string()),
            ("updated_at", self.updated_at.to_string()),
            ("placed_by", self.placed_by.clone()),
        ]
    }

    fn from_fields(mut f: HashMap<String, String>) -> Option<Order> {
        let mut take = |k: &str| f.remove(k);
        Some(Order {
            id: take("id")?,
            user_id: take("user_id")?,
            product_id: take("product_id")?.parse().ok()?,
            quantity: take("quantity")?.parse().ok()?,
            total_cents: take("total_cents")?.parse().ok()?,
            status: Status::parse(&take("status")?)?,
            created_at: take("created_at")?.parse().ok()?,
            updated_at: take("updated_at")?.parse().ok()?,
            placed_by: take("placed_by").unwrap_or_default(),
        })
    }
}

/// What a compare-and-set on an order's status found.
#[derive(Debug, PartialEq)]
pub enum Swap {
    Done,
    /// The order is gone.
    Missing,
    /// Someone changed it first; this is its status now.
    Changed(Status),
}

/// How long one Redis command may take before it is an error.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the service waits for Redis at start-up.
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

const SWAP_SCRIPT: &str = r"
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[1] then return status or '' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[5]) end
return 'ok'
";

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
    swap: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("prefix", &self.prefix).finish()
    }
}

impl Store {
    /// Connects, waiting up to [`STARTUP_WAIT`]; the connection then reconnects by itself.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Store> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2);
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        let conn = loop {
            match client.get_connection_manager_with_config(config.clone()).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "redis not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => anyhow::bail!("redis not reachable within {STARTUP_WAIT:?}: {e}"),
            }
        };
        Ok(Store { conn, prefix: prefix.to_string(), swap: redis::Script::new(SWAP_SCRIPT) })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    pub async fn ping(&self) -> Result<(), String> {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()).map_err(|e| format!("redis: {e}"))
    }

    /// The order, its place in the user's index, its `order.created` event and
    /// the idempotency key it answers (if any), all or nothing.
    pub async fn insert(&self, order: &Order, event: &str, idem: Option<&Idempotency>) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(self.key(&format!("order:{}", order.id)), &order.fields())
            .ignore()
            .zadd(self.key(&format!("user:{}:orders", order.user_id)), &order.id, order.created_at)
            .ignore()
            .rpush(self.key("outbox"), event)
            .ignore();
        if let Some(i) = idem {
            let done = format!("done:{}:{}", i.request, order.id);
            pipe.set_ex(self.key(&i.key), done, IDEMPOTENCY_TTL.as_secs()).ignore();
        }
        pipe.query_async::<()>(&mut c).await
    }

    /// Claims an idempotency key for a request being processed; if it is taken,
    /// says by what.
    pub async fn claim(&self, i: &Idempotency) -> redis::RedisResult<Claim> {
        let mut c = self.conn.clone();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.key(&i.key))
            .arg(format!("pending:{}", i.request))
            .arg("NX")
            .arg("EX")
            .arg(IDEMPOTENCY_PENDING_TTL.as_secs())
            .query_async(&mut c)
            .await?;
        if claimed.is_some() {
            return Ok(Claim::Mine);
        }
        let held: Option<String> = redis::cmd("GET").arg(self.key(&i.key)).query_async(&mut c).await?;
        let Some(held) = held else { return Ok(Claim::InProgress) }; // expired just now: let the client retry
        let mut parts = held.splitn(3, ':');
        Ok(match (parts.next(), parts.next(), parts.next()) {
            (Some("done"), Some(request), Some(order)) if request == i.request => Claim::Done(order.to_string()),
            (_, Some(request), _) if request != i.request => Claim::OtherRequest,
            _ => Claim::InProgress,
        })
    }

    /// Gives a claimed key back after the request failed, so the client may retry it.
    pub async fn unclaim(&self, i: &Idempotency) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL").arg(self.key(&i.key)).query_async::<i64>(&mut c).await.map(|_| ())
    }

    pub async fn get(&self, id: &str) -> redis::RedisResult<Option<Order>> {
        let mut c = self.conn.clone();
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.key(&format!("order:{id}"))).query_async(&mut c).await?;
        Ok(if fields.is_empty() { None } else { Order::from_fields(fields) })
    }

    /// The user's most recent orders, newest first.
    pub async fn list(&self, user_id: &str, limit: isize) -> redis::RedisResult<Vec<Order>> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.key(&format!("user:{user_id}:orders")))
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut c)
            .await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.key(&format!("order:{id}")));
        }
        let all: Vec<HashMap<String, String>> =
            if ids.is_empty() { Vec::new() } else { pipe.query_async(&mut c).await? };
        Ok(all.into_iter().filter_map(Order::from_fields).collect())
    }

    /// Moves the order from `from` to `to` only if it is still in `from`, queueing
    /// `event` (and `release`, when given) in the same atomic step.
    pub async fn swap_status(
        &self,
        id: &str,
        from: Status,
        to: Status,
        now: u64,
        event: &str,
        release: Option<&str>,
    ) -> redis::RedisResult<Swap> {
        let mut c = self.conn.clone();
        let found: String = self
            .swap
            .key(self.key(&format!("order:{id}")))
            .key(self.key("outbox"))
            .key(self.key("releases"))
            .arg(from.as_str())
            .arg(to.as_str())
            .arg(now)
            .arg(event)
            .arg(release.unwrap_or(""))
            .invoke_async(&mut c)
            .await?;
        Ok(match found.as_str() {
            "ok" => Swap::Done,
            "" => Swap::Missing,
            other => Status::parse(other).map_or(Swap::Missing, Swap::Changed),
        })
    }

    /// The oldest `n` entries of a queue (`outbox` or `releases`), left in place.
    pub async fn peek(&self, queue: &str, n: isize) -> redis::RedisResult<Vec<String>> {
        let mut c = self.conn.clone();
        redis::cmd("LRANGE").arg(self.key(queue)).arg(0).arg(n - 1).query_async(&mut c).await
    }

    /// Removes one entry once it has been handled. Entries are unique (they carry
    /// an id), so two relays handling the same entry remove it once and lose nothing.
    pub async fn remove(&self, queue: &str, entry: &str) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("LREM").arg(self.key(queue)).arg(1).arg(entry).query_async::<i64>(&mut c).await.map(|_| ())
    }

    pub async fn len(&self, queue: &str) -> redis::RedisResult<u64> {
        let mut c = self.conn.clone();
        redis::cmd("LLEN").arg(self.key(queue)).query_async(&mut c).await
    }
}

/// How long an `Idempotency-Key` keeps answering with its order (Stripe's: 24 h).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a claim lasts if its request never finishes (the instance died):
/// longer than a request may take (peer calls time out after 5 s).
pub const IDEMPOTENCY_PENDING_TTL: Duration = Duration::from_secs(30);

/// A request's `Idempotency-Key`, scoped to its user, and what the request asked for.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// `idem:<user>:<key>`, under the store's prefix.
    pub key: String,
    /// The request's content (`<product>x<quantity>`): a key reused for another request is refused.
    pub request: String,
}

/// Who holds an idempotency key.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This request: go ahead.
    Mine,
    /// The same request, finished: this order.
    Done(String),
    /// The same key, still being processed.
    InProgress,
    /// The key was used for a different request.
    OtherRequest,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
