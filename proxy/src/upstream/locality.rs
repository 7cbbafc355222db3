//! Locality-aware balancing, Envoy's way, on what the control plane decided for this
//! client (Istio's locality failover and `distribute`): endpoints come in priority
//! levels, and a level takes traffic in proportion to its health with Envoy's
//! overprovisioning factor 1.4 (a level 72 % healthy still takes all of it; below, the
//! rest spills to the next level); within a level, localities with weights are drawn by
//! weight, scaled down the same way as they lose health. Then the cluster's policy picks
//! among that locality's healthy endpoints.

use std::collections::BTreeMap;

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u64 = 140;

/// Priority levels and locality weights over a cluster's endpoints (by index).
#[derive(Debug)]
pub(crate) struct Plan {
    /// Endpoint indices per level, level 0 first; one level when there are no priorities.
    levels: Vec<Vec<usize>>,
    /// Per level: (weight, endpoint indices) per locality; empty without locality weights.
    localities: Vec<Vec<(u32, Vec<usize>)>>,
}

impl Plan {
    /// `None` when there is nothing to plan: one level and no weights. `weights`, when
    /// given, name every locality that gets traffic: endpoints elsewhere get none, and an
    /// empty map leaves no endpoint at all (Istio's `distribute` to localities that are empty).
    pub(crate) fn new(
        priorities: &[u32],
        localities: &[Option<String>],
        weights: Option<&BTreeMap<String, u32>>,
    ) -> Option<Plan> {
        let distinct: std::collections::BTreeSet<u32> = priorities.iter().copied().collect();
        if distinct.len() <= 1 && weights.is_none() {
            return None;
        }
        let empty = BTreeMap::new();
        let weighted = weights.is_some();
        let weights = weights.unwrap_or(&empty);
        // Endpoints in a locality without a weight get no traffic (Istio drops them).
        let reachable =
            |i: usize| !weighted || localities[i].as_ref().is_some_and(|l| weights.get(l).is_some_and(|w| *w > 0));
        let levels: Vec<Vec<usize>> = distinct
            .iter()
            .map(|p| (0..priorities.len()).filter(|&i| priorities[i] == *p && reachable(i)).collect::<Vec<_>>())
            .filter(|level| !level.is_empty())
            .collect();
        let localities = levels
            .iter()
            .map(|level| {
                let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                if weighted {
                    for &i in level {
                        if let Some(l) = &localities[i] {
                            groups.entry(l.as_str()).or_default().push(i);
                        }
                    }
                }
                groups.into_iter().map(|(l, members)| (weights[l], members)).collect()
            })
            .collect();
        Some(Plan { levels, localities })
    }

    /// The endpoints this request may go to (the ejected among them too: the caller
    /// decides on panic). `healthy(i)`: endpoint `i` is not ejected. `draw` decides the
    /// level and the locality: random per request, or the request's consistent hash, so a
    /// key keeps its level and locality while health stays the same. Empty when the plan
    /// leaves no endpoint.
    pub(crate) fn choose(&self, healthy: impl Fn(usize) -> bool, draw: u64, skip: &[usize]) -> &[usize] {
        let Some(level) = self.level(&healthy, draw % 100, skip) else { return &[] };
        let groups = &self.localities[level];
        if groups.is_empty() {
            return &self.levels[level];
        }
        let effective: Vec<u64> =
            groups.iter().map(|(w, members)| u64::from(*w) * health_percent(members, &healthy)).collect();
        // No locality healthy at all: by configured weight (Envoy's panic).
        let weights: Vec<u64> = if effective.iter().all(|w| *w == 0) {
            groups.iter().map(|(w, _)| u64::from(*w)).collect()
        } else {
            effective
        };
        let total: u64 = weights.iter().sum();
        let mut draw = (draw / 100) % total.max(1);
        for (i, w) in weights.iter().enumerate() {
            if draw < *w {
                return &groups[i].1;
            }
            draw -= w;
        }
        &groups[groups.len() - 1].1
    }

    /// Envoy's priority load: each level's health (healthy share × 1.4, at most 100 %),
    /// normalized when the levels together fall short of 100 %, given out level by level.
    /// Levels in `skip` (tried by this request, under `retryRemoteLocalities`) take no
    /// load while another level has health (Envoy's `previous_priorities`).
    fn level(&self, healthy: &impl Fn(usize) -> bool, draw: u64, skip: &[usize]) -> Option<usize> {
        if self.levels.len() <= 1 {
            return (!self.levels.is_empty()).then_some(0);
        }
        let mut health: Vec<u64> = self.levels.iter().map(|l| health_percent(l, healthy)).collect();
        let others = (0..health.len()).any(|i| !skip.contains(&i) && health[i] > 0);
        if others {
            for &i in skip {
                if let Some(h) = health.get_mut(i) {
                    *h = 0;
                }
            }
        }
        let total = health.iter().sum::<u64>().min(100);
        if total == 0 {
            return Some(0);
        }
        let mut draw = draw;
        let mut remaining = 100u64;
        for (i, h) in health.iter().enumerate() {
            let load = (h * 100 / total).min(remaining);
            if draw < load {
                return Some(i);
            }
            draw -= load;
            remaining -= load;
        }
        // Rounding leftovers go to the first level that takes load.
        health.iter().position(|h| *h > 0)
    }
}

impl Plan {
    /// The level endpoint `i` is in.
    pub(crate) fn level_of(&self, i: usize) -> Option<usize> {
        self.levels.iter().position(|l| l.contains(&i))
    }
}

/// min(100, 1.4 × healthy share), in percent.
fn health_percent(members: &[usize], healthy: &impl Fn(usize) -> bool) -> u64 {
    if members.is_empty() {
        return 0;
    }
    let up = members.iter().filter(|&&i| healthy(i)).count() as u64;
    (OVERPROVISIONING * up / members.len() as u64).min(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn shares(plan: &Plan, healthy: impl Fn(usize) -> bool + Copy, n: usize) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut counts = vec![0; n];
        for _ in 0..10_000 {
            for &i in plan.choose(healthy, rng.gen(), &[]) {
                counts[i] += 1;
            }
        }
        counts
    }

    /// Four endpoints at level 0, one at level 1: all traffic stays at level 0 until fewer
    /// than 72 % of it is healthy; with 2 of 4 healthy (1.4 × 50 % = 70 %) 30 % spills.
    #[test]
    fn a_level_keeps_its_traffic_until_its_health_falls_below_72_percent() {
        let plan = Plan::new(&[0, 0, 0, 0, 1], &[None, None, None, None, None], None).unwrap();
        let all = shares(&plan, |_| true, 5);
        assert_eq!(all[4], 0, "{all:?}");
        let three_of_four = shares(&plan, |i| i != 0, 5);
        assert_eq!(three_of_four[4], 0, "75 % healthy × 1.4 ≥ 100 %: {three_of_four:?}");
        let half = shares(&plan, |i| i >= 2, 5);
        let spilled = half[4] as f64 / 10_000.0;
        assert!((0.27..0.33).contains(&spilled), "{half:?}");
        let none = shares(&plan, |i| i == 4, 5);
        assert_eq!(none[4], 10_000, "{none:?}");
    }

    #[test]
    fn locality_weights_split_the_traffic_and_drop_unweighted_localities() {
        let loc = |s: &str| Some(s.to_string());
        let localities = [loc("r/z1"), loc("r/z1"), loc("r/z2"), loc("r/z3")];
        let weights: BTreeMap<String, u32> = [("r/z1".to_string(), 80), ("r/z2".to_string(), 20)].into();
        let plan = Plan::new(&[0, 0, 0, 0], &localities, Some(&weights)).unwrap();
        let counts = shares(&plan, |_| true, 4);
        assert_eq!(counts[3], 0, "r/z3 has no weight");
        // A draw gives a locality: both of z1's endpoints count it.
        let z1 = counts[0] as f64 / 10_000.0;
        assert!((0.77..0.83).contains(&z1), "{counts:?}");
        // z1 half ejected: its effective weight is 80 × 0.7 = 56 against 20.
        let counts = shares(&plan, |i| i != 0, 4);
        let z1 = counts[1] as f64 / 10_000.0;
        assert!((0.70..0.77).contains(&z1), "{counts:?}");
        // Weights that name no endpoint's locality leave nothing (Istio: 503), never everything.
        let nowhere: BTreeMap<String, u32> = [("eu/x".to_string(), 100)].into();
        let plan = Plan::new(&[0, 0, 0, 0], &localities, Some(&nowhere)).unwrap();
        assert!(plan.choose(|_| true, 7, &[]).is_empty());
        // The same draw (a consistent hash) gives the same locality.
        let plan = Plan::new(&[0, 0, 0, 0], &localities, Some(&weights)).unwrap();
        assert_eq!(plan.choose(|_| true, 12_345, &[]), plan.choose(|_| true, 12_345, &[]));
        // A retry under retryRemoteLocalities skips the level it tried while another is healthy.
        let levels = Plan::new(&[0, 1], &[None, None], None).unwrap();
        assert_eq!(levels.choose(|_| true, 5, &[0]), &[1]);
        assert_eq!(levels.choose(|i| i == 0, 5, &[0]), &[0], "no other level is healthy");
    }
}
