//! Consistent-hash load balancing (Istio `loadBalancer.consistentHash`): requests with
//! the same key go to the same endpoint while the endpoints stay the same.

use crate::duration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Written as Istio writes `consistentHash`: one key, and at most one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    /// A request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie's value; when absent and `ttl` is set, the sidecar makes one and sets it
    /// on the response (`ttl` 0: a session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookie>,
    /// The caller's IP address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_ip: bool,
    /// A query parameter's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
    /// Envoy's ring hash (ketama) with at least this many points; the default table
    /// (1024 points, Istio's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<u64>,
    /// Maglev with this prime table size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<u64>,
}

/// What is hashed. A request without the key is balanced at random.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    Header(String),
    Cookie(HashCookie),
    SourceIp,
    QueryParameter(String),
}

impl ConsistentHash {
    /// The one key set (validation makes sure there is exactly one).
    pub fn key(&self) -> Option<HashKey> {
        match (&self.header, &self.cookie, self.source_ip, &self.query_parameter) {
            (Some(h), None, false, None) => Some(HashKey::Header(h.clone())),
            (None, Some(c), false, None) => Some(HashKey::Cookie(c.clone())),
            (None, None, true, None) => Some(HashKey::SourceIp),
            (None, None, false, Some(q)) => Some(HashKey::QueryParameter(q.clone())),
            _ => None,
        }
    }

    pub fn table(&self) -> HashTable {
        match (self.maglev, self.ring_hash) {
            (Some(table_size), _) => HashTable::Maglev { table_size },
            (None, Some(minimum_ring_size)) => HashTable::RingHash { minimum_ring_size },
            (None, None) => HashTable::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashCookie {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashTable {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

impl Default for HashTable {
    fn default() -> Self {
        HashTable::RingHash { minimum_ring_size: DEFAULT_RING_SIZE }
    }
}

/// Istio's `minimumRingSize` default.
pub const DEFAULT_RING_SIZE: u64 = 1024;
/// Envoy's Maglev default table size.
pub const DEFAULT_MAGLEV_SIZE: u64 = 65537;
/// Envoy's ring-hash maximum (8M entries).
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Istio's bound on the Maglev table size.
pub const MAX_MAGLEV_SIZE: u64 = 5_000_011;

/// Trial division: callers bound `n` first ([`MAX_MAGLEV_SIZE`]), so this stays cheap.
pub fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d <= &(n / d)).all(|d| !n.is_multiple_of(d))
}
