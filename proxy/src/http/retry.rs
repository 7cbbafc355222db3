//! When to retry and how long to wait: Istio's default policy, Envoy's retry
//! conditions, and Envoy's fully jittered exponential back-off.
//!
//! One rule is stricter than Istio (shared/ISTIO-SEMANTICS.md §8.1): a request
//! with a non-idempotent method (POST, PATCH, ...) is retried after the
//! upstream may have seen it only if the route's own `retryOn` asks for it.
//! Failures where the upstream provably never saw the request (connect
//! failure, refused stream, reset before the request was written) are retried
//! for every method.
//!
//! Size: the policy, its conditions and the back-off are one decision, tested together.

use crate::upstream::pool::UpstreamError;
use http::{HeaderMap, Method, StatusCode};
use std::time::Duration;
use weft_model::{Retry, RetryOn, DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BACKOFF};

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    on: Vec<RetryOn>,
    codes: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
    pub(crate) backoff_base: Duration,
    /// Set by the route (not Istio's default): allows retrying non-idempotent methods.
    explicit: bool,
    /// Where a retry may go: hosts already tried (`previous_hosts`), levels not yet tried.
    pub(crate) hosts: crate::upstream::balance::Retrying,
}

impl RetryPolicy {
    /// `None` is Istio's default policy.
    pub fn compile(retry: Option<&Retry>) -> Self {
        match retry {
            None => RetryPolicy {
                attempts: DEFAULT_RETRY_ATTEMPTS,
                on: RetryOn::ISTIO_DEFAULT.to_vec(),
                codes: Vec::new(),
                per_try_timeout: None,
                backoff_base: DEFAULT_RETRY_BACKOFF,
                explicit: false,
                hosts: Default::default(),
            },
            Some(Retry {
                attempts,
                per_try_timeout,
                retry_on,
                retriable_status_codes,
                backoff,
                previous_hosts,
                remote_localities,
            }) => RetryPolicy {
                attempts: *attempts,
                on: if retry_on.is_empty() { RetryOn::ISTIO_DEFAULT.to_vec() } else { retry_on.clone() },
                codes: retriable_status_codes.clone(),
                per_try_timeout: *per_try_timeout,
                backoff_base: backoff.unwrap_or(DEFAULT_RETRY_BACKOFF),
                explicit: !retry_on.is_empty(),
                hosts: crate::upstream::balance::Retrying {
                    previous_hosts: *previous_hosts,
                    other_levels: *remote_localities,
                },
            },
        }
    }

    /// No retries (a mirror's copy: its answer is not waited for).
    pub fn none() -> Self {
        RetryPolicy { attempts: 0, explicit: true, ..Self::inbound() }
    }

    /// Istio's inbound default (≥ 1.23): 2 retries on `reset-before-request`.
    pub fn inbound() -> Self {
        RetryPolicy {
            attempts: 2,
            on: vec![RetryOn::ResetBeforeRequest],
            codes: Vec::new(),
            per_try_timeout: None,
            backoff_base: DEFAULT_RETRY_BACKOFF,
            explicit: false,
            hosts: Default::default(),
        }
    }

    fn has(&self, c: RetryOn) -> bool {
        self.on.contains(&c)
    }

    /// Whether a response with these headers should be retried. For a gRPC call
    /// (`grpc_call`: the request was gRPC) the gRPC conditions are not held back by the
    /// method: every gRPC call is a POST, and Istio retries them.
    pub(crate) fn retry_response(
        &self,
        method: &Method,
        grpc_call: bool,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> bool {
        if !self.explicit && !is_idempotent(method) {
            return grpc_call && self.retry_grpc(headers);
        }
        let code = status.as_u16();
        let by_status = (self.has(RetryOn::FiveXx) && status.is_server_error())
            || (self.has(RetryOn::GatewayError) && matches!(code, 502..=504))
            || (self.has(RetryOn::Retriable4xx) && code == 409)
            || (self.has(RetryOn::RetriableStatusCodes) && self.codes.contains(&code));
        by_status || self.retry_grpc(headers)
    }

    /// gRPC conditions look at `grpc-status` in the response headers only (trailers-only responses).
    fn retry_grpc(&self, headers: &HeaderMap) -> bool {
        const GRPC: [RetryOn; 5] = [
            RetryOn::Cancelled,
            RetryOn::DeadlineExceeded,
            RetryOn::ResourceExhausted,
            RetryOn::Internal,
            RetryOn::Unavailable,
        ];
        if !self.on.iter().any(|c| GRPC.contains(c)) {
            return false;
        }
        static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        let Some(status) = headers.get(&GRPC_STATUS).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u32>().ok())
        else {
            return false;
        };
        let wanted = match status {
            1 => RetryOn::Cancelled,
            4 => RetryOn::DeadlineExceeded,
            8 => RetryOn::ResourceExhausted,
            13 => RetryOn::Internal,
            14 => RetryOn::Unavailable,
            _ => return false,
        };
        self.has(wanted)
    }

    /// Whether a failure without response should be retried.
    pub(crate) fn retry_failure(&self, method: &Method, failure: &Failure) -> bool {
        let broad = self.has(RetryOn::FiveXx) || self.has(RetryOn::GatewayError) || self.has(RetryOn::Reset);
        let allowed = match failure {
            Failure::Upstream(UpstreamError::ConnectFailure(_) | UpstreamError::ConnectTimeout(_)) => {
                broad || self.has(RetryOn::ConnectFailure)
            }
            Failure::Upstream(UpstreamError::RefusedStream) => broad || self.has(RetryOn::RefusedStream),
            Failure::Upstream(UpstreamError::ResetBeforeRequest(_)) => broad || self.has(RetryOn::ResetBeforeRequest),
            Failure::Upstream(UpstreamError::Reset(_) | UpstreamError::StaleReset(_)) | Failure::PerTryTimeout => broad,
            // Circuit-breaker overflow is never retried (Envoy).
            Failure::Upstream(UpstreamError::Overflow(_)) => false,
        };
        let processed = match failure {
            Failure::Upstream(e) => !e.not_processed(),
            Failure::PerTryTimeout => true,
        };
        allowed && (!processed || self.explicit || is_idempotent(method))
    }
}

/// What follows one try of a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A reused connection died before answering: the same request again at once, outside
    /// the retry budget (the keep-alive race).
    Resend,
    /// A retry after this back-off, holding a retry permit (`maxRetries`).
    RetryAfter(Duration),
    /// This try's outcome is the answer.
    Done {
        /// It asked for a retry and had tried before: retries exhausted (Envoy's `URX`).
        exhausted: bool,
        /// A retry was refused by the circuit breaker (`maxRetries`; Envoy's `UO`).
        overflowed: bool,
    },
}

/// One request's retries across its tries: the policy, the back-off, the keep-alive
/// resends, the retry permit held while a retry is in flight, the flags a refused retry
/// adds.
#[derive(Debug)]
pub(crate) struct Retries<'a> {
    policy: &'a RetryPolicy,
    backoff: Backoff,
    stale_resends: u32,
    permit: Option<crate::upstream::limits::Permit>,
    overflowed: bool,
}

/// Resends of a request whose reused connection died first, at most (browsers and Go's
/// net/http do the same).
const MAX_STALE_RESENDS: u32 = 2;

/// A try's outcome as retries see it.
pub(crate) enum Tried<'r> {
    Answered { status: StatusCode, headers: &'r HeaderMap },
    Failed(&'r Failure),
}

/// What a request is, as retries see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'m> {
    pub method: &'m Method,
    /// A gRPC call (its conditions are not held back by POST).
    pub grpc: bool,
    /// Tries so far, this one included.
    pub tries: u32,
    /// The body can be sent again.
    pub(crate) replayable: bool,
}

impl<'a> Retries<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy) -> Self {
        Retries {
            policy,
            backoff: Backoff::new(policy.backoff_base),
            stale_resends: 0,
            permit: None,
            overflowed: false,
        }
    }

    /// What follows a try of `attempt` that ended in `tried`; a retry takes a permit from
    /// `limits` (`overflow` counts a refusal) and its back-off from `draw` (uniform).
    pub(crate) fn next(
        &mut self,
        attempt: Attempt<'_>,
        tried: Tried<'_>,
        limits: &std::sync::Arc<crate::upstream::limits::Limits>,
        overflow: impl Fn(crate::upstream::limits::Overflow),
        draw: u64,
    ) -> Next {
        let Attempt { method, grpc, tries, replayable } = attempt;
        if let Tried::Failed(Failure::Upstream(UpstreamError::StaleReset(_))) = tried {
            if self.stale_resends < MAX_STALE_RESENDS && replayable && is_idempotent(method) {
                self.stale_resends += 1;
                return Next::Resend;
            }
        }
        let retry = match tried {
            Tried::Answered { status, headers } => self.policy.retry_response(method, grpc, status, headers),
            Tried::Failed(f) => self.policy.retry_failure(method, f),
        };
        if retry && tries <= self.policy.attempts && replayable {
            match limits.retry() {
                Ok(permit) => {
                    self.permit = Some(permit);
                    return Next::RetryAfter(self.backoff.next(draw));
                }
                Err(limit) => {
                    overflow(limit);
                    self.overflowed = true;
                }
            }
        }
        Next::Done { exhausted: retry && tries > 1 && !self.overflowed, overflowed: self.overflowed }
    }
}

/// A try that ended without a response.
#[derive(Debug)]
pub(crate) enum Failure {
    Upstream(UpstreamError),
    /// The per-try timeout fired; handled as a local reset, as Envoy does.
    PerTryTimeout,
}

/// RFC 9110 idempotent methods.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Envoy's `JitteredExponentialBackOffStrategy`: the n-th wait is uniform in
/// `[0, (2ⁿ − 1) × base)`, capped at `10 × base`. State is per request.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base_ms: u64,
    max_ms: u64,
    k: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration) -> Self {
        let base_ms = (base.as_millis() as u64).max(1);
        Backoff { base_ms, max_ms: base_ms * 10, k: 1 }
    }

    /// The next wait, given a uniform random `draw`.
    pub(crate) fn next(&mut self, draw: u64) -> Duration {
        let span = ((1u64 << self.k.min(62)) - 1) * self.base_ms;
        if span <= self.max_ms {
            self.k += 1;
        }
        Duration::from_millis((draw % span).min(self.max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_envoy() {
        let mut b = Backoff::new(Duration::from_millis(25));
        // A draw one below each span shows the span's upper edge: 25, 75, 175, then capped.
        let edges: Vec<u64> = [24, 74, 174, 374, 1124].iter().map(|d| b.next(*d).as_millis() as u64).collect();
        assert_eq!(edges, [24, 74, 174, 250, 250]);
        let mut b = Backoff::new(Duration::from_millis(25));
        assert_eq!(b.next(25), Duration::ZERO, "the first wait is below 25 ms");
        let mut b = Backoff::new(Duration::from_millis(25));
        assert_eq!(b.next(0), Duration::ZERO);
        assert_eq!(b.next(30), Duration::from_millis(30));
    }

    /// A route's policy: `attempts`, `retryOn`, `retriableStatusCodes`.
    fn route_policy(attempts: u32, retry_on: Vec<RetryOn>, retriable_status_codes: Vec<u16>) -> RetryPolicy {
        RetryPolicy::compile(Some(&Retry {
            attempts,
            per_try_timeout: None,
            retry_on,
            retriable_status_codes,
            backoff: None,
            previous_hosts: false,
            remote_localities: false,
        }))
    }

    #[test]
    fn a_request_is_retried_within_its_budget_and_flagged_when_done() {
        let policy = route_policy(2, vec![RetryOn::FiveXx], vec![]);
        let limits = crate::upstream::limits::Limits::new(&Default::default());
        let get = |tries| Attempt { method: &Method::GET, grpc: false, tries, replayable: true };
        let (h, error) = (HeaderMap::new(), StatusCode::INTERNAL_SERVER_ERROR);
        // (The keep-alive race's resends need a hyper error: `proxy/tests/it` runs them for real.)
        let mut r = Retries::new(&policy);
        let answered = || Tried::Answered { status: error, headers: &h };
        assert!(matches!(r.next(get(1), answered(), &limits, |_| {}, 0), Next::RetryAfter(_)));
        assert!(matches!(r.next(get(2), answered(), &limits, |_| {}, 0), Next::RetryAfter(_)));
        let exhausted = Next::Done { exhausted: true, overflowed: false };
        assert_eq!(r.next(get(3), answered(), &limits, |_| {}, 0), exhausted);
        let fine = Next::Done { exhausted: false, overflowed: false };
        let mut r = Retries::new(&policy);
        let ok = Tried::Answered { status: StatusCode::OK, headers: &h };
        assert_eq!(r.next(get(1), ok, &limits, |_| {}, 0), fine);
        let once = Attempt { replayable: false, ..get(1) };
        assert_eq!(Retries::new(&policy).next(once, answered(), &limits, |_| {}, 0), fine, "a streamed body");
    }

    #[test]
    fn a_retry_the_circuit_breaker_refuses_ends_the_request_with_uo() {
        let policy = RetryPolicy::compile(None);
        let pool = weft_model::ConnectionPool {
            http: weft_model::HttpPool { max_retries: Some(1), ..Default::default() },
            ..Default::default()
        };
        let limits = crate::upstream::limits::Limits::new(&pool);
        let _in_flight = limits.retry().unwrap(); // another request's retry holds the one slot
        let refused = Failure::Upstream(UpstreamError::ConnectFailure(std::io::ErrorKind::ConnectionRefused.into()));
        let counted = std::cell::Cell::new(0);
        let attempt = Attempt { method: &Method::GET, grpc: false, tries: 1, replayable: true };
        let next = Retries::new(&policy).next(
            attempt,
            Tried::Failed(&refused),
            &limits,
            |_| counted.set(counted.get() + 1),
            0,
        );
        assert_eq!((next, counted.get()), (Next::Done { exhausted: false, overflowed: true }, 1));
    }

    #[test]
    fn istio_default_policy() {
        let p = RetryPolicy::compile(None);
        assert_eq!(p.attempts, 2);
        let h = HeaderMap::new();
        assert!(
            !p.retry_response(&Method::GET, false, StatusCode::SERVICE_UNAVAILABLE, &h),
            "503 not retried since Istio 1.24"
        );
        let refused = Failure::Upstream(UpstreamError::ConnectFailure(std::io::ErrorKind::ConnectionRefused.into()));
        assert!(p.retry_failure(&Method::GET, &refused));
        assert!(p.retry_failure(&Method::POST, &refused), "never reached the upstream: safe for POST");
        assert!(!p.retry_failure(&Method::GET, &Failure::PerTryTimeout));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(p.retry_response(&Method::GET, false, StatusCode::OK, &grpc));
    }

    #[test]
    fn non_idempotent_needs_explicit_retry_on() {
        let explicit = route_policy(3, vec![RetryOn::FiveXx], vec![]);
        let h = HeaderMap::new();
        assert!(explicit.retry_response(&Method::POST, false, StatusCode::INTERNAL_SERVER_ERROR, &h));
        assert!(explicit.retry_failure(&Method::POST, &Failure::PerTryTimeout));
        let default_codes = route_policy(3, vec![], vec![503]);
        assert!(default_codes.retry_response(&Method::GET, false, StatusCode::SERVICE_UNAVAILABLE, &h));
        assert!(!default_codes.retry_response(&Method::POST, false, StatusCode::SERVICE_UNAVAILABLE, &h));
        // gRPC is always POST: Istio's default retries UNAVAILABLE and CANCELLED all the same.
        let mut unavailable = HeaderMap::new();
        unavailable.insert("content-type", "application/grpc".parse().unwrap());
        unavailable.insert("grpc-status", "14".parse().unwrap());
        assert!(default_codes.retry_response(&Method::POST, true, StatusCode::OK, &unavailable));
        assert!(
            !default_codes.retry_response(&Method::POST, false, StatusCode::OK, &unavailable),
            "a plain POST answered in gRPC's words is not a gRPC call: not retried"
        );
        unavailable.insert("grpc-status", "3".parse().unwrap());
        assert!(
            !default_codes.retry_response(&Method::POST, true, StatusCode::OK, &unavailable),
            "INVALID_ARGUMENT is final"
        );
    }
}
