//! Outbound services and their routes (Istio's VirtualService `http[]`, translated): how a
//! request is matched, where it goes, and what is done to it on the way.

use crate::{action, duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// One outbound service (Envoy: a virtual host).
///
/// For key `name.ns.svc.cluster.local` the sidecar answers to that host,
/// `name.ns.svc` and `name.ns` from anywhere, and to the bare `name` when `ns` is the
/// workload's own namespace, as Istio's virtual-host domains do; each with or
/// without `:port`. Any other key is matched as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Routes, evaluated in order; the first whose match succeeds wins.
    /// No route matching gives 404 with flag `NR`.
    pub routes: Vec<Route>,
    /// The routes of the service's other HTTP ports (a multi-port Service), by port: a
    /// request for one of them (the port in its authority, else the port a captured
    /// connection was going to) is routed by these instead of `routes`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, Vec<Route>>,
}

/// One HTTP route (Istio: one `http[]` rule of a VirtualService).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Name shown in access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match entries, ORed; the fields inside one entry are ANDed.
    /// Empty means the route matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    /// Weighted destinations; one is picked per request with probability
    /// `weight / sum(weights)`. A single destination gets all traffic whatever its weight.
    /// Empty exactly when the route answers itself (`redirect`, `directResponse`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<Destination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<action::Redirect>,
    /// Answer with this status and body instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<action::DirectResponse>,
    /// Copies of the request, sent fire-and-forget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<action::Mirror>,
    /// CORS, answered by the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<action::Cors>,
    /// Whole-request timeout including retries and back-off; 504 `UT` on expiry.
    /// Unset means no timeout (Istio's default).
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy. Unset means Istio's default: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retry>,
    /// Fault injection, applied before routing to a destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Header operations on the request sent upstream and the response sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Path and authority rewrite of the upstream request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
}

/// Conditions on a request (Istio `HTTPMatchRequest`). All set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Name shown in access logs (`route.match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches the path; `exact` and `regex` ignore the query string, `prefix` does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Makes `uri` exact/prefix matching case-insensitive (regex stays as written).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_uri_case: bool,
    /// Matches the method, case-sensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Matches `:authority`/`Host` as sent, port included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Request headers by lowercase name; an empty matcher `{}` means "present".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Inverted header matches: an absent header satisfies a value matcher;
    /// `{}` matches only when the header is absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Decoded query parameters; `{}` means "present", regex is a full match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Istio's `StringMatch`: at most one of `exact`, `prefix`, `regex` (RE2 syntax,
/// full match). None of them means "present" where presence makes sense
/// (headers, query parameters) and is an error elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A weighted destination of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Name of a cluster in [`crate::ProxyConfig::clusters`].
    pub cluster: String,
    /// Relative weight; 0 removes the destination when there are several.
    #[serde(default)]
    pub weight: u32,
    /// Header operations for this destination, applied after the route's; its `set` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Replaces `Host`/`:authority` for requests sent to this destination (Istio: the
    /// destination's `headers.request.set.host`), over the route's rewrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Retry policy (Istio `HTTPRetry`, already translated: conditions as a list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Number of retries (not attempts): at most `attempts + 1` upstream requests. 0 disables retries.
    pub attempts: u32,
    /// Timeout of each try; unset means none (only the route timeout applies).
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Conditions that allow a retry. Empty means Istio's default list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// Status codes retried under `retriable-status-codes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// Base interval of the fully jittered exponential back-off; default 25 ms, cap 10× base.
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Retries may go back to hosts already tried (Istio's `retryIgnorePreviousHosts: false`;
    /// by default they avoid them while others are left).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub previous_hosts: bool,
    /// Retries go to failover levels not yet tried (Istio's `retryRemoteLocalities`, Envoy's
    /// `previous_priorities`), while any is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote_localities: bool,
}

/// A retry condition, named as Envoy's `retry_on` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// Any 5xx response, or no response (connect failure, reset).
    #[serde(rename = "5xx")]
    FiveXx,
    /// 502, 503 or 504, or no response.
    GatewayError,
    /// Any reset or connection failure after the request was sent.
    Reset,
    /// A reset before the request reached the upstream.
    ResetBeforeRequest,
    /// The upstream connection could not be made.
    ConnectFailure,
    /// 409 responses.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// HTTP/2 REFUSED_STREAM from the upstream.
    RefusedStream,
    /// Status codes listed in `retriableStatusCodes`.
    RetriableStatusCodes,
    /// gRPC status CANCELLED in response headers.
    Cancelled,
    /// gRPC status DEADLINE_EXCEEDED in response headers.
    DeadlineExceeded,
    /// gRPC status INTERNAL in response headers.
    Internal,
    /// gRPC status RESOURCE_EXHAUSTED in response headers.
    ResourceExhausted,
    /// gRPC status UNAVAILABLE in response headers.
    Unavailable,
}

impl RetryOn {
    /// Istio's default `retry_on` for outbound routes (Istio ≥ 1.24).
    pub const ISTIO_DEFAULT: [RetryOn; 5] = [
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Unavailable,
        RetryOn::Cancelled,
        RetryOn::RetriableStatusCodes,
    ];
}

/// Fault injection (Istio `HTTPFaultInjection`). Delay and abort are drawn independently; delay first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Delay a share of requests (flag `DI`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long to wait; at least 1 ms.
    #[serde(with = "duration::req")]
    pub fixed_delay: Duration,
    /// Share of requests delayed, 0–100 (per-million precision). Default 0.
    #[serde(default)]
    pub percentage: f64,
}

/// Answer a share of requests locally with a status (flag `FI`, body `fault filter abort`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// Status to answer with, 200–599.
    pub http_status: u16,
    /// Share of requests aborted, 0–100 (per-million precision). Default 0.
    #[serde(default)]
    pub percentage: f64,
}

/// Header operations on requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default)]
    pub request: HeaderOps,
    #[serde(default)]
    pub response: HeaderOps,
}

/// `set` overwrites, `add` appends, `remove` deletes; applied in the order remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Rewrite of the upstream request (Istio `HTTPRewrite`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// After a prefix match, replaces the matched prefix; otherwise replaces the whole path.
    /// The original path goes upstream in `x-envoy-original-path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces `Host`/`:authority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Every match of `pattern` in the path (not the query) replaced by `substitution`
    /// (`\1` names a group), as Envoy's `regex_rewrite`; not with `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewrite>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}
