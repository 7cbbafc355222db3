//! Attempts per account: at most `limit` in each `window` per key (an email),
//! so one account cannot be guessed at or flooded from many addresses (the
//! gateway limits each address). Kept per instance; the table is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most; past it, expired windows are dropped, then the oldest.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct Attempts {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Attempts {
    pub fn new(limit: u32, window: Duration) -> Self {
        Attempts { limit, window, seen: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt for `key`; `Err(wait)` when its window is used up.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_KEYS && !seen.contains_key(key) {
            seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if seen.len() >= MAX_KEYS {
                if let Some(oldest) = seen.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| k.clone()) {
                    seen.remove(&oldest);
                }
            }
        }
        let (start, count) = seen.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            (*start, *count) = (now, 0);
        }
        if *count >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_limit_per_window() {
        let a = Attempts::new(2, Duration::from_secs(60));
        let t = Instant::now();
        assert!(a.take("x", t).is_ok() && a.take("x", t).is_ok());
        assert_eq!(a.take("x", t + Duration::from_secs(10)), Err(Duration::from_secs(50)));
        assert!(a.take("y", t).is_ok(), "other keys are not affected");
        assert!(a.take("x", t + Duration::from_secs(60)).is_ok(), "a new window");
    }
}
