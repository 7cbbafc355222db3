//! Outlier detection's periodic review (Envoy's `interval`): one task per cluster that has
//! outlier detection, owned by the sidecar across reloads. A reload neither restarts a
//! cluster's interval — pushes every few seconds would otherwise put off un-ejection for
//! ever — nor runs a second review of the same endpoints. Each tick reviews the cluster of
//! the live snapshot, whose endpoint state outlives reloads in the registry.

use crate::config::snapshot::Snapshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The live snapshot, as the reviews read it at each tick.
pub(crate) type Live = Arc<arc_swap::ArcSwap<Snapshot>>;

/// The running reviews, by cluster name, with their interval.
#[derive(Debug, Default)]
pub(crate) struct Reviews {
    tasks: Mutex<HashMap<Arc<str>, (Duration, tokio::task::AbortHandle)>>,
}

impl Reviews {
    /// Follows `snapshot`: a review starts for each new cluster with outlier detection (or
    /// one whose interval changed), and stops for each cluster that has none any more.
    /// Returns how many reviews started.
    pub(crate) fn follow(&self, snapshot: &Snapshot, live: &Live) -> usize {
        let wanted: HashMap<Arc<str>, Duration> = snapshot
            .clusters()
            .filter_map(|c| Some((c.name.clone(), c.balancer.outlier_settings()?.interval)))
            .collect();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|name, (interval, task)| {
            let keep = wanted.get(name) == Some(interval);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut started = 0;
        for (name, interval) in wanted {
            if tasks.contains_key(&name) {
                continue;
            }
            let (live, cluster) = (live.clone(), name.clone());
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tick.tick().await;
                    if let Some(c) = live.load().cluster(&cluster) {
                        c.balancer.tick();
                    }
                }
            });
            tasks.insert(name, (interval, task.abort_handle()));
            started += 1;
        }
        started
    }
}

impl Drop for Reviews {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, task) in tasks.values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::endpoint::Registry;

    fn snapshot(registry: &Registry, interval: &str, with_outliers: bool) -> Arc<Snapshot> {
        let outliers = if with_outliers {
            format!("    outlierDetection: {{consecutive5xxErrors: 5, interval: {interval}}}\n")
        } else {
            String::new()
        };
        let yaml = format!("apiVersion: weft.dev/v1alpha1\nversion: '1'\nworkload: {{name: w, namespace: ns}}\nclusters:\n  c:\n    endpoints: [{{address: 127.0.0.1:1}}]\n{outliers}");
        Arc::new(Snapshot::compile(serde_yaml::from_str(&yaml).unwrap(), registry, None).unwrap())
    }

    /// Reloads keep a cluster's review (and its interval's phase); a changed interval
    /// restarts it, a cluster without outlier detection stops it (paused time: no waiting).
    #[tokio::test(start_paused = true)]
    async fn a_review_outlives_reloads_and_follows_the_config() {
        let registry = Registry::default();
        let alive = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let before = alive();
        let first = snapshot(&registry, "10s", true);
        let live: Live = Arc::new(arc_swap::ArcSwap::new(first.clone()));
        let reviews = Reviews::default();
        assert_eq!(reviews.follow(&first, &live), 1, "one review per cluster with outlier detection");
        for _ in 0..5 {
            // A push every 3 s, faster than the interval: the review is not started again.
            tokio::time::advance(Duration::from_secs(3)).await;
            let next = snapshot(&registry, "10s", true);
            live.store(next.clone());
            assert_eq!(reviews.follow(&next, &live), 0);
        }
        assert_eq!(alive(), before + 1);
        let longer = snapshot(&registry, "30s", true);
        live.store(longer.clone());
        assert_eq!(reviews.follow(&longer, &live), 1, "a new interval: a new review");
        tokio::task::yield_now().await;
        assert_eq!(alive(), before + 1, "and the old one stopped");
        let none = snapshot(&registry, "", false);
        live.store(none.clone());
        assert_eq!(reviews.follow(&none, &live), 0);
        tokio::task::yield_now().await;
        assert_eq!(alive(), before, "no outlier detection, no review");
        assert_eq!(reviews.follow(&longer, &live), 1);
        drop(reviews);
        tokio::task::yield_now().await;
        assert_eq!(alive(), before, "the sidecar gone, its reviews too");
    }
}
