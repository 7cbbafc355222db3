//! Endpoints and the state that outlives a config reload.
//!
//! A snapshot holds `Arc<Endpoint>`s; the [`Registry`] hands out the same
//! `Arc` for the same (cluster, address) across reloads, so pools and
//! active-request counts carry over instead of being rebuilt.

use crate::upstream::limits::Limits;
use crate::upstream::pool::{Pool, PoolSettings};
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
    pub outlier: crate::upstream::outlier::HostState,
}

impl Endpoint {
    pub fn new(
        addr: SocketAddr,
        labels: BTreeMap<String, String>,
        settings: PoolSettings,
        limits: Arc<Limits>,
        identity: Option<Arc<crate::security::identity::Identity>>,
    ) -> Self {
        Endpoint {
            addr,
            labels,
            active: AtomicUsize::new(0),
            pool: Pool::new(addr, settings, limits, identity),
            outlier: Default::default(),
        }
    }

    /// Requests in flight to this endpoint (LEAST_REQUEST reads it).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard drops.
    pub(crate) fn start_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// RAII count of a request in flight.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

type Key = (String, SocketAddr);

/// What a snapshot wants of one cluster's state.
#[derive(Debug)]
pub(crate) struct ClusterSpec {
    pub name: String,
    pub pool: weft_model::ConnectionPool,
    pub settings: PoolSettings,
    pub endpoints: Vec<(SocketAddr, BTreeMap<String, String>)>,
}

/// Endpoint state by (cluster, address) and limits by cluster, kept across reloads.
#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
    /// This sidecar's workload identity, for mTLS to the endpoints.
    identity: Option<Arc<crate::security::identity::Identity>>,
    /// Consistent-hash tables, shared by the snapshots that have the same endpoints.
    pub(crate) hash_tables: crate::upstream::hash::TableCache,
}

#[derive(Debug, Default)]
struct State {
    endpoints: HashMap<Key, Arc<Endpoint>>,
    limits: HashMap<String, Arc<Limits>>,
}

impl Registry {
    pub(crate) fn with_identity(identity: Option<Arc<crate::security::identity::Identity>>) -> Self {
        Registry { state: Mutex::default(), identity, hash_tables: Default::default() }
    }

    /// Builds the state of a new snapshot, cluster by cluster: existing limits
    /// are kept (with new values) and endpoints reused when their labels and
    /// pool settings are unchanged; entries no longer named are forgotten
    /// (requests still holding them finish normally).
    pub(crate) fn resolve(&self, wanted: Vec<ClusterSpec>) -> Vec<(Arc<Limits>, Vec<Arc<Endpoint>>)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut endpoints = HashMap::new();
        let mut limits = HashMap::new();
        let mut out = Vec::with_capacity(wanted.len());
        for spec in wanted {
            let cluster_limits = match state.limits.remove(&spec.name).or_else(|| limits.get(&spec.name).cloned()) {
                Some(l) => {
                    l.update(&spec.pool);
                    l
                }
                None => Limits::new(&spec.pool),
            };
            limits.insert(spec.name.clone(), cluster_limits.clone());
            let mut eps = Vec::with_capacity(spec.endpoints.len());
            for (addr, labels) in spec.endpoints {
                let key = (spec.name.clone(), addr);
                let ep = match state.endpoints.remove(&key).or_else(|| endpoints.get(&key).cloned()) {
                    Some(ep) if ep.labels == labels && *ep.pool.settings() == spec.settings => ep,
                    _ => Arc::new(Endpoint::new(
                        addr,
                        labels,
                        spec.settings.clone(),
                        cluster_limits.clone(),
                        self.identity.clone(),
                    )),
                };
                endpoints.insert(key, ep.clone());
                eps.push(ep);
            }
            out.push((cluster_limits, eps));
        }
        *state = State { endpoints, limits };
        out
    }
}
