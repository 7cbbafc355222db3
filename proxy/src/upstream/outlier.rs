//! Outlier detection: Envoy's consecutive-error ejection, as Istio configures it
//! (shared/ISTIO-SEMANTICS.md §2.4).
//!
//! Per endpoint, consecutive 5xx and consecutive gateway-error counters; the
//! Nth error ejects at once for `base × backoff` (backoff +1 per ejection,
//! −1 per healthy interval), reviewed at `interval` ticks. An ejection that
//! would push the ejected share above `maxEjectionPercent` is refused and
//! counted. When the healthy share falls below `minHealthPercent` the balancer
//! ignores ejections (panic). The state lives in the endpoints, so it survives
//! config reloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weft_model::OutlierDetection;

/// Settings with Istio's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub(crate) consecutive_5xx: u32,
    pub(crate) consecutive_gateway: u32,
    pub interval: Duration,
    pub(crate) base_ejection: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
    /// Envoy's `max_ejection_time`: max(300 s, base).
    pub(crate) max_ejection: Duration,
}

impl Settings {
    pub(crate) fn from_model(od: &OutlierDetection) -> Self {
        let base = od.base_ejection_time.unwrap_or(Duration::from_secs(30));
        Settings {
            consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(5),
            consecutive_gateway: od.consecutive_gateway_errors.unwrap_or(0),
            interval: od.interval.unwrap_or(Duration::from_secs(10)),
            base_ejection: base,
            max_ejection_percent: od.max_ejection_percent.unwrap_or(10),
            min_health_percent: od.min_health_percent.unwrap_or(0),
            max_ejection: base.max(Duration::from_secs(300)),
        }
    }
}

/// What one try ended with, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// Connect failure or reset: counted as 503.
    LocalFailure,
    /// Per-try or route timeout: counted as 504.
    Timeout,
}

impl Outcome {
    fn code(self) -> u16 {
        match self {
            Outcome::Status(c) => c,
            Outcome::LocalFailure => 503,
            Outcome::Timeout => 504,
        }
    }
}

/// What a result did to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Ejected,
    /// The threshold was reached but `maxEjectionPercent` refused the ejection.
    Refused,
}

#[derive(Debug, Default)]
struct Counters {
    c5xx: u32,
    gateway: u32,
    ejected_at: Option<Instant>,
    backoff: u32,
    times_ejected: u32,
    last_unejection: Option<Instant>,
}

/// One endpoint's outlier state.
#[derive(Debug, Default)]
pub struct HostState {
    ejected: AtomicBool,
    counters: Mutex<Counters>,
}

/// A snapshot of one endpoint's state for `/clusters`.
#[derive(Debug, Clone, Copy)]
pub struct HostView {
    pub(crate) consecutive_5xx: u32,
    pub(crate) consecutive_gateway: u32,
    pub times_ejected: u32,
    /// When the ejection ends (at the first tick after this).
    pub(crate) ejected_until: Option<Instant>,
}

impl HostState {
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self, s: Option<&Settings>) -> HostView {
        let c = self.lock();
        HostView {
            consecutive_5xx: c.c5xx,
            consecutive_gateway: c.gateway,
            times_ejected: c.times_ejected,
            ejected_until: match (c.ejected_at, s) {
                (Some(at), Some(s)) => Some(at + ejection_time(s, c.backoff)),
                _ => None,
            },
        }
    }
}

fn ejection_time(s: &Settings, backoff: u32) -> Duration {
    (s.base_ejection * backoff).min(s.max_ejection)
}

/// Records a try's outcome at `hosts[index]`; may eject it.
pub(crate) fn on_result(
    s: &Settings,
    hosts: &[&HostState],
    index: usize,
    outcome: Outcome,
    now: Instant,
) -> Option<Event> {
    let host = hosts[index];
    let code = outcome.code();
    let tripped = {
        let mut c = host.lock();
        if !(500..=599).contains(&code) {
            c.c5xx = 0;
            c.gateway = 0;
            return None;
        }
        let mut tripped = false;
        if matches!(code, 502..=504) {
            c.gateway += 1;
            if s.consecutive_gateway > 0 && c.gateway == s.consecutive_gateway {
                c.gateway = 0;
                tripped = true;
            }
        } else {
            c.gateway = 0;
        }
        c.c5xx += 1;
        if s.consecutive_5xx > 0 && c.c5xx == s.consecutive_5xx {
            c.c5xx = 0;
            tripped = true;
        }
        tripped
    };
    if !tripped || host.is_ejected() {
        return None;
    }
    let active = hosts.iter().filter(|h| h.is_ejected()).count() as u64;
    // Envoy ≥ 1.27: eject only if the share after ejecting stays within the maximum.
    if 100 * (active + 1) > u64::from(s.max_ejection_percent) * hosts.len() as u64 {
        return Some(Event::Refused);
    }
    let mut c = host.lock();
    host.ejected.store(true, Ordering::Relaxed);
    c.ejected_at = Some(now);
    c.times_ejected += 1;
    if s.base_ejection * c.backoff < s.max_ejection + s.base_ejection {
        c.backoff += 1;
    }
    Some(Event::Ejected)
}

/// The review at each `interval` tick: un-eject hosts whose time is up, decay
/// the backoff of hosts that stayed healthy. Returns how many were un-ejected.
pub(crate) fn on_tick(s: &Settings, hosts: &[&HostState], now: Instant) -> usize {
    let mut unejected = 0;
    for host in hosts {
        let mut c = host.lock();
        match c.ejected_at {
            Some(at) if now.duration_since(at) >= ejection_time(s, c.backoff) => {
                host.ejected.store(false, Ordering::Relaxed);
                c.ejected_at = None;
                c.c5xx = 0;
                c.gateway = 0;
                c.last_unejection = Some(now);
                unejected += 1;
            }
            Some(_) => {}
            None => {
                if c.last_unejection.is_some_and(|t| now.duration_since(t) >= s.interval) {
                    c.backoff = c.backoff.saturating_sub(1);
                }
            }
        }
    }
    unejected
}

/// Whether the balancer should ignore ejections: the healthy share is below
/// `minHealthPercent` (Istio's default 0 never panics).
pub(crate) fn panic_mode(s: &Settings, hosts: &[&HostState]) -> bool {
    let healthy = hosts.iter().filter(|h| !h.is_ejected()).count() as u64;
    100 * healthy < u64::from(s.min_health_percent) * hosts.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_pct: u32) -> Settings {
        Settings::from_model(&OutlierDetection {
            consecutive_5xx_errors: Some(5),
            interval: Some(Duration::from_secs(30)),
            base_ejection_time: Some(Duration::from_secs(30)),
            max_ejection_percent: Some(max_pct),
            ..Default::default()
        })
    }

    fn fail(s: &Settings, hosts: &[&HostState], i: usize, n: usize, now: Instant) -> Vec<Option<Event>> {
        (0..n).map(|_| on_result(s, hosts, i, Outcome::Status(500), now)).collect()
    }

    #[test]
    fn fifth_consecutive_error_ejects_at_once() {
        let s = settings(100);
        let hs: Vec<HostState> = (0..3).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        let t0 = Instant::now();
        let events = fail(&s, &hosts, 0, 5, t0);
        assert_eq!(events[..4], [None, None, None, None]);
        assert_eq!(events[4], Some(Event::Ejected));
        assert!(hosts[0].is_ejected());
    }

    #[test]
    fn a_success_resets_the_count() {
        let s = settings(100);
        let hs: Vec<HostState> = (0..3).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        let t0 = Instant::now();
        fail(&s, &hosts, 0, 4, t0);
        on_result(&s, &hosts, 0, Outcome::Status(200), t0);
        assert_eq!(fail(&s, &hosts, 0, 4, t0), [None; 4]);
        assert!(!hosts[0].is_ejected());
    }

    #[test]
    fn connect_failures_and_timeouts_count() {
        let s = settings(100);
        let hs: Vec<HostState> = (0..2).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        let t0 = Instant::now();
        for o in [Outcome::LocalFailure, Outcome::Timeout, Outcome::LocalFailure, Outcome::Status(502)] {
            assert_eq!(on_result(&s, &hosts, 1, o, t0), None);
        }
        assert_eq!(on_result(&s, &hosts, 1, Outcome::Timeout, t0), Some(Event::Ejected));
    }

    #[test]
    fn uneject_at_the_tick_and_backoff_grows_then_decays() {
        let s = settings(100);
        let hs: Vec<HostState> = (0..2).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        let t0 = Instant::now();
        let sec = Duration::from_secs;
        fail(&s, &hosts, 0, 5, t0);
        assert_eq!(on_tick(&s, &hosts, t0 + sec(29)), 0, "30 s not yet over");
        assert_eq!(on_tick(&s, &hosts, t0 + sec(30)), 1);
        assert!(!hosts[0].is_ejected());
        // Ejected again at once: the second ejection lasts 2 × 30 s.
        let t1 = t0 + sec(31);
        fail(&s, &hosts, 0, 5, t1);
        assert_eq!(hosts[0].view(Some(&s)).times_ejected, 2);
        assert_eq!(on_tick(&s, &hosts, t1 + sec(59)), 0);
        assert_eq!(on_tick(&s, &hosts, t1 + sec(60)), 1);
        // Healthy ticks decay the backoff: 2 -> 1 -> 0, so the next ejection is 30 s again.
        let t2 = t1 + sec(60);
        on_tick(&s, &hosts, t2 + sec(30));
        on_tick(&s, &hosts, t2 + sec(60));
        let t3 = t2 + sec(61);
        fail(&s, &hosts, 0, 5, t3);
        assert_eq!(hosts[0].view(Some(&s)).ejected_until, Some(t3 + sec(30)));
    }

    #[test]
    fn max_ejection_percent_refuses() {
        let s = settings(50);
        let hs: Vec<HostState> = (0..2).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        let t0 = Instant::now();
        assert_eq!(fail(&s, &hosts, 0, 5, t0)[4], Some(Event::Ejected));
        assert_eq!(fail(&s, &hosts, 1, 5, t0)[4], Some(Event::Refused), "a second ejection would be 100 % > 50 %");
        assert!(!hosts[1].is_ejected());
        // Istio's default 10 % ejects nothing in a cluster of fewer than 10 hosts.
        let s10 = settings(10);
        let hs: Vec<HostState> = (0..3).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        assert_eq!(fail(&s10, &hosts, 0, 5, t0)[4], Some(Event::Refused));
    }

    #[test]
    fn panic_below_min_health() {
        let mut s = settings(100);
        s.min_health_percent = 50;
        let hs: Vec<HostState> = (0..2).map(|_| HostState::default()).collect();
        let hosts: Vec<&HostState> = hs.iter().collect();
        let t0 = Instant::now();
        fail(&s, &hosts, 0, 5, t0);
        assert!(!panic_mode(&s, &hosts), "50 % healthy is not below 50 %");
        fail(&s, &hosts, 1, 5, t0);
        assert!(panic_mode(&s, &hosts));
        s.min_health_percent = 0;
        assert!(!panic_mode(&s, &hosts), "Istio's default never panics");
    }
}
