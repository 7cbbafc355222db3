//! Circuit breakers: the connection-pool limits of one cluster, shared by all
//! its endpoints, as Envoy enforces Istio's `connectionPool` — per cluster,
//! per sidecar (shared/ISTIO-SEMANTICS.md §2.3).
//!
//! The counters outlive config reloads (the registry hands out the same
//! `Limits` for the same cluster name); the limit values are updated in place.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use weft_model::ConnectionPool;

/// The limits and live counts of one cluster.
#[derive(Debug, Default)]
pub struct Limits {
    max_connections: AtomicU32,
    max_pending: AtomicU32,
    max_requests: AtomicU32,
    max_retries: AtomicU32,
    max_requests_per_connection: AtomicU32,
    connections: AtomicUsize,
    pending: AtomicUsize,
    requests: AtomicUsize,
    retries: AtomicUsize,
    /// Woken when a connection returns to a pool or closes: pending requests look again.
    freed: Notify,
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Pending,
    Requests,
    Retries,
}

impl Overflow {
    pub fn label(self) -> &'static str {
        match self {
            Overflow::Pending => "pending",
            Overflow::Requests => "requests",
            Overflow::Retries => "retries",
        }
    }
}

/// A counted slot, released on drop.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Pending,
    Request,
    Retry,
    Connection,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let l = &self.limits;
        match self.kind {
            Kind::Pending => l.pending.fetch_sub(1, Ordering::AcqRel),
            Kind::Request => l.requests.fetch_sub(1, Ordering::AcqRel),
            Kind::Retry => l.retries.fetch_sub(1, Ordering::AcqRel),
            Kind::Connection => {
                let n = l.connections.fetch_sub(1, Ordering::AcqRel);
                l.freed.notify_waiters();
                n
            }
        };
    }
}

impl Limits {
    pub fn new(pool: &ConnectionPool) -> Arc<Self> {
        let l = Arc::new(Limits::default());
        l.update(pool);
        l
    }

    /// Takes new limit values; counts in flight are kept.
    pub(crate) fn update(&self, pool: &ConnectionPool) {
        self.max_connections.store(pool.max_connections(), Ordering::Relaxed);
        self.max_pending.store(pool.max_pending_requests(), Ordering::Relaxed);
        self.max_requests.store(pool.max_requests(), Ordering::Relaxed);
        self.max_retries.store(pool.max_retries(), Ordering::Relaxed);
        self.max_requests_per_connection.store(pool.max_requests_per_connection(), Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    fn acquire(self: &Arc<Self>, count: &AtomicUsize, max: &AtomicU32, kind: Kind) -> Option<Permit> {
        let max = max.load(Ordering::Relaxed) as usize;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Permit { limits: self.clone(), kind })
    }

    /// A request in flight (`http2MaxRequests`).
    pub fn request(self: &Arc<Self>) -> Result<Permit, Overflow> {
        self.acquire(&self.requests, &self.max_requests, Kind::Request).ok_or(Overflow::Requests)
    }

    /// A retry in flight (`maxRetries`).
    pub fn retry(self: &Arc<Self>) -> Result<Permit, Overflow> {
        self.acquire(&self.retries, &self.max_retries, Kind::Retry).ok_or(Overflow::Retries)
    }

    /// A place in the pending queue (`http1MaxPendingRequests`).
    pub fn pending(self: &Arc<Self>) -> Result<Permit, Overflow> {
        self.acquire(&self.pending, &self.max_pending, Kind::Pending).ok_or(Overflow::Pending)
    }

    /// A new upstream connection (`maxConnections`); held for the connection's life.
    pub fn connection(self: &Arc<Self>) -> Option<Permit> {
        self.acquire(&self.connections, &self.max_connections, Kind::Connection)
    }

    /// Wakes pending requests (a connection went back to a pool).
    pub(crate) fn notify_freed(&self) {
        self.freed.notify_waiters();
    }

    pub(crate) fn freed(&self) -> &Notify {
        &self.freed
    }

    /// Requests per connection before it is retired; 0 means unlimited.
    pub fn max_requests_per_connection(&self) -> u32 {
        self.max_requests_per_connection.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
    pub(crate) fn pending_requests(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
    pub fn active_requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
    pub(crate) fn active_retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_and_release() {
        let mut pool = ConnectionPool::default();
        pool.http.http2_max_requests = Some(2);
        let l = Limits::new(&pool);
        let a = l.request().unwrap();
        let _b = l.request().unwrap();
        assert_eq!(l.request().unwrap_err(), Overflow::Requests);
        drop(a);
        assert!(l.request().is_ok());
        assert_eq!(l.active_requests(), 1, "the temporary permit above was released");
    }

    #[test]
    fn unset_and_zero_mean_unlimited() {
        let mut pool = ConnectionPool::default();
        pool.tcp.max_connections = Some(0);
        let l = Limits::new(&pool);
        let held: Vec<_> = (0..1000).map(|_| l.connection().unwrap()).collect();
        assert_eq!(l.connections(), 1000);
        drop(held);
        assert_eq!(l.connections(), 0);
    }
}
