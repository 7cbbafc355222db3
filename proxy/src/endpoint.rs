//! Endpoints and the state that outlives a config reload.
//!
//! A snapshot holds `Arc<Endpoint>`s; the [`Registry`] hands out the same
//! `Arc` for the same (cluster, address) across reloads, so pools and
//! active-request counts carry over instead of being rebuilt.

use crate::pool::{Pool, PoolSettings};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One upstream endpoint of one cluster.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub labels: BTreeMap<String, String>,
    active: AtomicUsize,
    pub pool: Pool,
    /// Outlier-detection state; survives reloads with the endpoint.
    pub outlier: crate::outlier::HostState,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, labels: BTreeMap<String, String>, settings: PoolSettings) -> Self {
        Endpoint {
            addr,
            labels,
            active: AtomicUsize::new(0),
            pool: Pool::new(addr, settings),
            outlier: Default::default(),
        }
    }

    /// Requests in flight to this endpoint (LEAST_REQUEST reads it).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// RAII count of a request in flight.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

type Key = (String, SocketAddr);

/// Endpoint state by (cluster, address), kept across reloads.
#[derive(Debug, Default)]
pub struct Registry {
    endpoints: Mutex<HashMap<Key, Arc<Endpoint>>>,
}

impl Registry {
    /// Builds the endpoint set of a new snapshot: existing state is reused
    /// when address, labels and pool settings are unchanged; entries no longer
    /// named are forgotten (requests still holding them finish normally).
    pub fn resolve(
        &self,
        wanted: Vec<(String, SocketAddr, BTreeMap<String, String>, PoolSettings)>,
    ) -> Vec<Arc<Endpoint>> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(wanted.len());
        let mut out = Vec::with_capacity(wanted.len());
        for (cluster, addr, labels, settings) in wanted {
            let key = (cluster, addr);
            let ep = match map.remove(&key).or_else(|| next.get(&key).cloned()) {
                Some(ep) if ep.labels == labels && ep.pool.settings() == settings => ep,
                _ => Arc::new(Endpoint::new(addr, labels, settings)),
            };
            next.insert(key, ep.clone());
            out.push(ep);
        }
        *map = next;
        out
    }
}
