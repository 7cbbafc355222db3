//! Choosing: a destination by weight, and an endpoint by the cluster's
//! load-balancing policy (ROUND_ROBIN, RANDOM, LEAST_REQUEST with two random
//! choices — Istio's default).

use crate::upstream::endpoint::Endpoint;
use crate::upstream::hash::{Table, TableCache};
use crate::upstream::locality::Plan;
use crate::upstream::outlier::{self, Event, Outcome, Settings};
use rand::Rng;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use weft_model::LbPolicy;

/// Picks an index with probability `weight / sum(weights)`.
#[derive(Debug, Clone)]
pub struct WeightedPick {
    /// Running sums; the pick is the first index whose sum exceeds a uniform draw.
    cumulative: Vec<u64>,
}

impl WeightedPick {
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        WeightedPick {
            cumulative: weights
                .iter()
                .map(|w| {
                    sum += u64::from(*w);
                    sum
                })
                .collect(),
        }
    }

    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The index for a draw `n` in `0..total()`.
    pub(crate) fn index_for(&self, n: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= n)
    }

    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        match self.cumulative.len() {
            0 | 1 => 0,
            _ => self.index_for(rng.gen_range(0..self.total().max(1))),
        }
    }
}

/// Now, by tokio's clock: the real clock in production, a paused one in tests
/// (so ejection and its end can be tested without waiting).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Why no endpoint could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    NoEndpoints,
    /// Every endpoint is ejected by outlier detection and panic mode is off.
    AllEjected,
}

/// Where a retry may go (the route's retry policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retrying {
    /// Back to hosts already tried (Istio's `retryIgnorePreviousHosts: false`).
    pub previous_hosts: bool,
    /// Only to failover levels not yet tried, while one is left (`retryRemoteLocalities`).
    pub(crate) other_levels: bool,
}

/// The endpoints of one cluster, with its policy and outlier detection.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
    outlier: Option<Settings>,
    /// Consistent hashing: requests with a hash go by this table.
    table: Option<Arc<Table>>,
    /// Priority levels and locality weights (Istio's locality load balancing).
    plan: Option<Plan>,
}

impl Balancer {
    pub fn new(policy: LbPolicy, endpoints: Vec<Arc<Endpoint>>) -> Self {
        Balancer { policy, endpoints, next: AtomicUsize::new(0), outlier: None, table: None, plan: None }
    }

    /// Priority levels and locality weights, per endpoint in order (see [`Plan`]).
    pub(crate) fn with_localities(
        mut self,
        priorities: &[u32],
        localities: &[Option<String>],
        weights: Option<&std::collections::BTreeMap<String, u32>>,
    ) -> Self {
        if priorities.len() == self.endpoints.len() && localities.len() == self.endpoints.len() {
            self.plan = Plan::new(priorities, localities, weights);
        }
        self
    }

    /// Consistent hashing over these endpoints; a request without a hash is placed at
    /// random (as Envoy's hash balancers do).
    pub(crate) fn with_consistent_hash(mut self, table: &weft_model::HashTable, cache: &TableCache) -> Self {
        let addrs: Vec<std::net::SocketAddr> = self.endpoints.iter().map(|e| e.addr).collect();
        self.table = cache.get(table, &addrs);
        self.policy = LbPolicy::Random;
        self
    }

    pub(crate) fn with_outlier_detection(mut self, settings: Option<Settings>) -> Self {
        self.outlier = settings;
        self
    }

    pub(crate) fn outlier_settings(&self) -> Option<&Settings> {
        self.outlier.as_ref()
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    fn hosts(&self) -> Vec<&outlier::HostState> {
        self.endpoints.iter().map(|e| &e.outlier).collect()
    }

    /// Feeds a try's outcome to outlier detection (when the cluster has it).
    pub fn record(&self, endpoint: &Arc<Endpoint>, outcome: Outcome) -> Option<Event> {
        let settings = self.outlier.as_ref()?;
        let index = self.endpoints.iter().position(|e| Arc::ptr_eq(e, endpoint))?;
        outlier::on_result(settings, &self.hosts(), index, outcome, now())
    }

    /// The failover levels of `hosts` (by the locality plan).
    fn levels_of(&self, hosts: &[Arc<Endpoint>]) -> Vec<usize> {
        let Some(plan) = &self.plan else { return Vec::new() };
        hosts
            .iter()
            .filter_map(|h| self.endpoints.iter().position(|e| Arc::ptr_eq(e, h)))
            .filter_map(|i| plan.level_of(i))
            .collect()
    }

    /// The outlier review at an `interval` tick; returns the hosts un-ejected.
    pub fn tick(&self) -> usize {
        self.outlier.as_ref().map_or(0, |s| outlier::on_tick(s, &self.hosts(), now()))
    }

    /// The endpoints load may go to: all, or the non-ejected ones unless in panic; with a
    /// locality plan, those of the level and locality drawn for this request.
    fn candidates(
        &self,
        hash: Option<u64>,
        levels_tried: &[usize],
        rng: &mut impl Rng,
    ) -> Result<Cow<'_, [Arc<Endpoint>]>, NoPick> {
        if self.endpoints.is_empty() {
            return Err(NoPick::NoEndpoints);
        }
        if let Some(plan) = &self.plan {
            let draw = hash.unwrap_or_else(|| rng.gen());
            let chosen = plan.choose(|i| !self.endpoints[i].outlier.is_ejected(), draw, levels_tried);
            if chosen.is_empty() {
                return Err(NoPick::NoEndpoints);
            }
            let up: Vec<_> =
                chosen.iter().map(|&i| &self.endpoints[i]).filter(|e| !e.outlier.is_ejected()).cloned().collect();
            if !up.is_empty() {
                return Ok(Cow::Owned(up));
            }
            // Nothing healthy anywhere (a level is drawn only while it has health): Envoy's
            // panic mode when the cluster allows it, else 503 UH.
            return match &self.outlier {
                Some(settings) if !outlier::panic_mode(settings, &self.hosts()) => Err(NoPick::AllEjected),
                _ => Ok(Cow::Owned(chosen.iter().map(|&i| self.endpoints[i].clone()).collect())),
            };
        }
        let Some(settings) = &self.outlier else {
            return Ok(Cow::Borrowed(&self.endpoints));
        };
        if !self.endpoints.iter().any(|e| e.outlier.is_ejected()) || outlier::panic_mode(settings, &self.hosts()) {
            return Ok(Cow::Borrowed(&self.endpoints));
        }
        let healthy: Vec<_> = self.endpoints.iter().filter(|e| !e.outlier.is_ejected()).cloned().collect();
        if healthy.is_empty() {
            return Err(NoPick::AllEjected);
        }
        Ok(Cow::Owned(healthy))
    }

    /// Picks an endpoint, avoiding those in `avoid` (hosts already tried by this
    /// request, Envoy's `previous_hosts` predicate) while others are left. With a
    /// consistent-hash table and a `hash`, the hash's endpoint, or the next usable one
    /// around the table.
    pub fn pick(
        &self,
        tried: &[Arc<Endpoint>],
        retrying: Retrying,
        hash: Option<u64>,
        rng: &mut impl Rng,
    ) -> Result<Arc<Endpoint>, NoPick> {
        let avoid = if retrying.previous_hosts { &[][..] } else { tried };
        let levels_tried = if retrying.other_levels { self.levels_of(tried) } else { Vec::new() };
        let endpoints = self.candidates(hash, &levels_tried, rng)?;
        let usable = |e: &Arc<Endpoint>| !avoid.iter().any(|a| Arc::ptr_eq(a, e));
        if let (Some(table), Some(hash)) = (&self.table, hash) {
            let all_usable = endpoints.len() == self.endpoints.len();
            let hashed = table
                .preference(hash)
                .map(|i| &self.endpoints[i])
                .find(|e| usable(e) && (all_usable || endpoints.iter().any(|c| Arc::ptr_eq(c, e))));
            if let Some(e) = hashed {
                return Ok(e.clone());
            }
        }
        // Envoy retries host selection up to 5 times before taking a tried host.
        for _ in 0..5 {
            let candidate = self.pick_once(&endpoints, rng);
            if avoid.is_empty() || usable(&candidate) {
                return Ok(candidate);
            }
        }
        Ok(endpoints.iter().find(|e| usable(e)).cloned().unwrap_or_else(|| self.pick_once(&endpoints, rng)))
    }

    fn pick_once(&self, endpoints: &[Arc<Endpoint>], rng: &mut impl Rng) -> Arc<Endpoint> {
        let n = endpoints.len();
        let i = match self.policy {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            LbPolicy::Random => rng.gen_range(0..n),
            LbPolicy::LeastRequest if n == 1 => 0,
            LbPolicy::LeastRequest => {
                let a = rng.gen_range(0..n);
                let b = (a + rng.gen_range(1..n)) % n;
                if endpoints[b].active() < endpoints[a].active() {
                    b
                } else {
                    a
                }
            }
        };
        endpoints[i].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    #[test]
    fn weighted_index_boundaries() {
        let w = WeightedPick::new(&[90, 10]);
        assert_eq!(w.total(), 100);
        assert_eq!(w.index_for(0), 0);
        assert_eq!(w.index_for(89), 0);
        assert_eq!(w.index_for(90), 1);
        assert_eq!(w.index_for(99), 1);
        let w = WeightedPick::new(&[1, 0, 3]);
        assert_eq!(w.index_for(0), 0);
        assert_eq!(w.index_for(1), 2);
    }

    /// Five 5xx eject an endpoint; the review after `baseEjectionTime` brings it
    /// back — on tokio's paused clock, so the test takes no time.
    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_at_the_first_review_after_its_time() {
        let yaml = "apiVersion: weft.dev/v1alpha1\nversion: '1'\nworkload: {name: w, namespace: ns}\nclusters:\n  c:\n    endpoints: [{address: 127.0.0.1:1}, {address: 127.0.0.1:2}]\n    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";
        let config: weft_model::ProxyConfig = serde_yaml::from_str(yaml).unwrap();
        let registry = crate::upstream::endpoint::Registry::default();
        let snapshot = crate::config::snapshot::Snapshot::compile(config, &registry, None).unwrap();
        let b = &snapshot.cluster("c").unwrap().balancer;
        let bad = b.endpoints()[0].clone();
        for _ in 0..4 {
            assert_eq!(b.record(&bad, Outcome::Status(500)), None);
        }
        assert!(b.record(&bad, Outcome::Status(500)).is_some(), "the fifth 5xx ejects");
        assert!(bad.outlier.is_ejected());
        tokio::time::advance(std::time::Duration::from_secs(29)).await;
        assert_eq!(b.tick(), 0, "29 s: still ejected");
        assert!(bad.outlier.is_ejected());
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(b.tick(), 1, "30 s: back at the review");
        assert!(!bad.outlier.is_ejected());
    }

    /// Retries avoid the hosts they tried unless the route says `retryIgnorePreviousHosts:
    /// false`; under `retryRemoteLocalities` they leave the failover level they tried.
    #[test]
    fn where_retries_may_go() {
        let yaml = "apiVersion: weft.dev/v1alpha1\nversion: '1'\nworkload: {name: w, namespace: ns}\nclusters:\n  c:\n    lbPolicy: RANDOM\n    endpoints: [{address: 127.0.0.1:1}, {address: 127.0.0.1:2}, {address: 127.0.0.1:3, priority: 1}]\n";
        let config: weft_model::ProxyConfig = serde_yaml::from_str(yaml).unwrap();
        let registry = crate::upstream::endpoint::Registry::default();
        let snapshot = crate::config::snapshot::Snapshot::compile(config, &registry, None).unwrap();
        let b = &snapshot.cluster("c").unwrap().balancer;
        let tried = vec![b.endpoints()[0].clone()];
        let mut rng = SmallRng::seed_from_u64(9);
        let mut picks = |retrying: Retrying| {
            (0..200).map(|_| b.pick(&tried, retrying, None, &mut rng).unwrap().addr.port()).collect::<Vec<_>>()
        };
        let avoiding = picks(Retrying::default());
        assert!(
            !avoiding.contains(&1) && avoiding.iter().all(|p| *p == 2),
            "level 0 without the tried host: {avoiding:?}"
        );
        let back = picks(Retrying { previous_hosts: true, other_levels: false });
        assert!(back.contains(&1) && back.contains(&2), "{back:?}");
        let remote = picks(Retrying { previous_hosts: false, other_levels: true });
        assert!(remote.iter().all(|p| *p == 3), "the other level: {remote:?}");
    }

    #[test]
    fn weighted_pick_share() {
        let w = WeightedPick::new(&[3, 1]);
        let mut rng = SmallRng::seed_from_u64(7);
        let hits = (0..40_000).filter(|_| w.pick(&mut rng) == 1).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }
}
