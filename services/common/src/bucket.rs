//! Per-key token buckets in memory: each key may spend `burst` at once and
//! `rate` per second after that. The gateway's per-instance fallback and
//! user-service's per-account limits are this one piece. A bucket that has
//! filled up again is the same as no bucket, so those are what the table drops
//! when it grows; past [`MAX_KEYS`] the fullest one goes first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets kept before full ones are swept.
const SWEEP_AT: usize = 10_000;
/// Buckets kept at most, however many keys callers invent.
pub const MAX_KEYS: usize = 100_000;

impl Limiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Limiter { rate, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    pub fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(key) {
            let level = |b: &Bucket| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * self.rate;
            buckets.retain(|_, b| level(b) < self.burst);
            if buckets.len() >= MAX_KEYS {
                let fullest = buckets.iter().max_by(|x, y| level(x.1).total_cmp(&level(y.1))).map(|(k, _)| k.clone());
                if let Some(k) = fullest {
                    buckets.remove(&k);
                }
            }
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, last: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new(10.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at("a", t0).is_ok());
        }
        let wait = l.take_at("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(l.take_at("b", t0).is_ok(), "clients do not share a bucket");
        assert!(l.take_at("a", t0 + Duration::from_millis(100)).is_ok(), "one token back after 1/rate");
        assert!(l.take_at("a", t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn only_refilled_buckets_are_swept() {
        let l = Limiter::new(1.0, 2.0);
        let t0 = Instant::now();
        assert!(l.take_at("spent", t0).is_ok() && l.take_at("spent", t0).is_ok());
        for i in 0..SWEEP_AT {
            let _ = l.take_at(&format!("k{i}"), t0);
        }
        assert_eq!(l.take_at("spent", t0), Err(Duration::from_secs(1)), "a spent bucket survives the sweep");
        let later = t0 + Duration::from_secs(5);
        let _ = l.take_at("new", later);
        assert!(l.len() < 10, "refilled buckets are dropped: {}", l.len());
    }
}
