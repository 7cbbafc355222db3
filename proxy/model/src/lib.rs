//! `weft-model`: the proxy's own configuration schema, [`ProxyConfig`].
//!
//! This is the contract between the control plane and the sidecar, the way xDS is
//! Envoy's: the control plane translates Istio resources into it, the sidecar
//! enforces it, and neither side knows the other's internals. It holds data,
//! [`ProxyConfig::validate`] and the push stream's framing — no I/O of its own, no
//! Istio types.
//!
//! Every field is documented with its meaning and its default; defaults equal
//! Istio's (see `shared/ISTIO-SEMANTICS.md`). The serialised form uses camelCase
//! keys like Istio's YAML and refuses unknown fields, so a typo is an error
//! instead of a silently ignored setting.
//!
//! Size: the schema is the contract; one file reads top to bottom like an API
//! reference (authorization, the push stream and durations have their own modules).

pub mod action;
pub mod authz;
pub mod duration;
pub mod gateway;
pub mod hash;
pub mod jwt;
pub mod protocol;
pub mod stream;
mod validate;

pub use action::{Cors, DerivePort, DirectBody, DirectResponse, Mirror, Redirect, RedirectPort};
pub use hash::{ConsistentHash, HashCookie, HashKey, HashTable};
pub use protocol::{AppProtocol, ServicePort};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub use validate::ValidationError;

/// The schema version this crate reads and writes (`apiVersion`).
pub const API_VERSION: &str = "weft.dev/v1alpha1";

/// Envoy's and Istio's default connect timeout (MeshConfig `connectTimeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default upstream HTTP idle timeout (`connectionPool.http.idleTimeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default retry back-off base interval.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Istio's default number of retries when a route sets no retry policy.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Longest regex Istio accepts in a match.
pub const MAX_REGEX_LEN: usize = 1024;

/// Everything one sidecar needs: who it is, where its outbound traffic may go,
/// and where its inbound traffic is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Version label of this content, set by its producer (the control plane
    /// counts up; a static file may say anything). Shown by `/config_dump`.
    #[serde(default)]
    pub version: String,
    /// The workload this sidecar runs next to.
    pub workload: Workload,
    /// Outbound services, keyed by fully qualified host
    /// (`order-service.production.svc.cluster.local`). A request picks its service
    /// by `Host`/`:authority`; see [`Service`] for the names that reach it.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Upstream clusters, keyed by name (Istio's form: `outbound|PORT|SUBSET|HOST`).
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
    /// Where inbound traffic is delivered.
    #[serde(default)]
    pub inbound: Inbound,
    /// What captured traffic to a destination outside the mesh meets (a Sidecar
    /// resource's `outboundTrafficPolicy.mode`); absent: the sidecar's
    /// `--outbound-traffic-policy`, which stands for Istio's MeshConfig (ALLOW_ANY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// The mesh's trust bundle, from the control plane; absent in static files
    /// (the bundle that came with the certificate stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Trust>,
    /// The mesh's path normalization (the control plane's `--path-normalization`);
    /// absent: the sidecar's own `--path-normalization` (BASE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<PathNormalization>,
    /// Whether this workload writes an access log (Istio's Telemetry `accessLogging`);
    /// absent: the sidecar's own default (`--access-log`, off as in Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<bool>,
    /// Captured TCP to destinations outside the mesh that a ServiceEntry names
    /// (by port, and by address when it has any): passed through and reported
    /// under the entry's cluster, whatever `outboundTrafficPolicy` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<TcpEgress>,
    /// Mesh services' TCP ports (Istio's `tcp_proxy` listeners): a captured connection to
    /// one of a cluster's endpoint addresses on `port` goes over mesh mTLS to that
    /// endpoint's sidecar, which relays it to its app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpService>,
    /// An ingress gateway's servers (Istio's `Gateway` resources that select this
    /// workload); empty for a sidecar. Read by `weft-proxy gateway` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<gateway::Server>,
}

/// A mesh service's TCP port and the cluster of its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpService {
    /// The service port (`port.number`), which callers dial on an endpoint's address.
    pub port: u16,
    /// `outbound|PORT||HOST`: its endpoints (each sidecar's inbound address) and identities.
    pub cluster: String,
}

/// A ServiceEntry's TCP port (TLS from the app, a database …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpEgress {
    /// `outbound|PORT||HOST`, named in metrics and the access log.
    pub cluster: String,
    pub port: u16,
    /// The entry's addresses; empty: any address on `port` (Istio's wildcard listener).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<authz::Cidr>,
    /// For a TLS or HTTPS port: the hosts the ClientHello's SNI must name (`*.x` a
    /// suffix); a connection without one is not this entry's. Empty: any (TCP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
}

/// What the control plane says about trust, so a root can be rotated with no
/// failed request: first every sidecar trusts the old and the new root, then
/// certificates come from the new one, then the old one leaves the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trust {
    /// PEM: every root a peer's certificate may chain to.
    pub roots: String,
    /// SHA-256 (hex) of the root new certificates come from. A sidecar whose
    /// certificate came from another root asks for a new one at once.
    pub signer: String,
}

/// What the sidecar does with traffic to a destination the mesh does not know
/// (Istio's `outboundTrafficPolicy.mode`): captured traffic, and under
/// REGISTRY_ONLY a request for an unknown host on the outbound listener too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Pass it through to where it was going (Istio's default; `PassthroughCluster`).
    #[default]
    AllowAny,
    /// Refuse it: HTTP gets 502, other TCP is closed (`BlackHoleCluster`).
    RegistryOnly,
}

impl std::str::FromStr for OutboundTrafficPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ALLOW_ANY" => Ok(Self::AllowAny),
            "REGISTRY_ONLY" => Ok(Self::RegistryOnly),
            other => Err(format!("{other:?}: ALLOW_ANY or REGISTRY_ONLY")),
        }
    }
}

/// How request paths are normalized before routing, authorization, metrics and
/// the app see them (Istio's MeshConfig `pathNormalization`; BASE by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// As received (vulnerable to CVE-2021-31920, as in Istio).
    None,
    /// RFC 3986: dot segments removed, unreserved escapes decoded, `\` → `/`.
    #[default]
    Base,
    /// BASE, then `//` merged.
    MergeSlashes,
    /// `%2F`/`%5C` decoded, then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

impl std::str::FromStr for PathNormalization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "NONE" => Ok(Self::None),
            "BASE" => Ok(Self::Base),
            "MERGE_SLASHES" => Ok(Self::MergeSlashes),
            "DECODE_AND_MERGE_SLASHES" => Ok(Self::DecodeAndMergeSlashes),
            other => Err(format!("{other:?}: NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES")),
        }
    }
}

/// The identity of the workload next to the sidecar. Used for metrics labels
/// now and for the certificate (SPIFFE ID) later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Workload name (Deployment name), e.g. `order-service-v1`.
    pub name: String,
    /// Kubernetes namespace; short host names resolve in it.
    pub namespace: String,
    /// Service account; default `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Pod labels; `app` and `version` feed the metrics labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "default".into()
}

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
    /// Name of a cluster in [`ProxyConfig::clusters`].
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

/// An upstream cluster: a set of endpoints and how to talk to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// The service host this cluster belongs to (metrics `destination_service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Load-balancing policy; default `LEAST_REQUEST` (Istio's default).
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// Consistent hashing instead of `lbPolicy` (which must then be left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<hash::ConsistentHash>,
    /// Istio's `localityLbSetting.distribute` for this client: each locality's share of the
    /// traffic (endpoints by their `locality`); endpoints in other localities get none, so
    /// an empty map leaves no endpoint (503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_weights: Option<BTreeMap<String, u32>>,
    /// Endpoints. An empty list answers 503 `UH` "no endpoints".
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Protocol spoken to the endpoints; default `HTTP1`, as Istio does for a port of protocol `http`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Passive health checking (Istio `outlierDetection`). Unset: no ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Connection-pool limits (Istio `connectionPool`, Envoy circuit breakers).
    #[serde(default)]
    pub connection_pool: ConnectionPool,
    /// Mutual TLS to the endpoints (Istio `ISTIO_MUTUAL`), when this sidecar has
    /// a workload certificate. Unset: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
    /// Requests go where the app was going: the original destination of the
    /// captured connection (Envoy's ORIGINAL_DST; a ServiceEntry with resolution
    /// NONE), when it is one this admits. `endpoints` are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<OriginalDst>,
    /// Endpoints by name (`host:port`), resolved by the sidecar and resolved
    /// again every refresh (a ServiceEntry with resolution DNS); added to `endpoints`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Only the first address of each name (DNS_ROUND_ROBIN: Envoy's LOGICAL_DNS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns_first_only: bool,
    /// TLS to a server outside the mesh (DestinationRule `tls.mode: SIMPLE`): the app
    /// speaks plaintext to its sidecar, which speaks TLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_origination: Option<TlsOrigination>,
}

/// Where an `originalDst` cluster may send a request: a ServiceEntry's port, and its
/// addresses when it has any; a request whose connection went elsewhere is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginalDst {
    /// Absent: any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<authz::Cidr>,
}

impl OriginalDst {
    pub fn admits(&self, dst: std::net::SocketAddr) -> bool {
        let ip = dst.ip().to_canonical();
        self.port.is_none_or(|p| p == dst.port())
            && (self.addresses.is_empty() || self.addresses.iter().any(|c| c.contains(ip)))
    }
}

/// TLS originated by the sidecar (DestinationRule `tls.mode: SIMPLE` or `MUTUAL`): the
/// server's certificate must chain to `caCertificates` (else the system's public roots) and
/// be valid for `sni`, or carry one of `subjectAltNames`; MUTUAL presents a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsOrigination {
    /// The name sent in SNI and, without `subjectAltNames`, checked in the server's certificate.
    pub sni: String,
    /// A PEM file of the roots to trust; absent: `/etc/ssl/certs/ca-certificates.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// MUTUAL: a PEM file of the client certificate chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// MUTUAL: a PEM file of its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// A TLS Secret mounted on the sidecar, read from its `--credentials-dir`: `tls.crt` and
    /// `tls.key` (MUTUAL), `ca.crt` (the roots, when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Present a client certificate (MUTUAL).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mutual: bool,
    /// The server's certificate must name one of these (DNS or URI SAN) instead of `sni`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// The server's certificate is not verified at all (Istio's `insecureSkipVerify`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// Mesh mTLS towards a cluster: the server's certificate must chain to the
/// mesh root and name one of these SPIFFE identities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterTls {
    /// Accepted server identities, `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub identities: Vec<String>,
}

/// How the inbound listener treats plaintext (Istio `PeerAuthentication` mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// mTLS and plaintext on the same port, told apart by the first bytes (Istio's default).
    #[default]
    Permissive,
    /// Only mTLS; plaintext connections are closed.
    Strict,
    /// Only plaintext.
    Disable,
}

/// Istio's `connectionPool`: limits per cluster (all endpoints together) per
/// sidecar, as Envoy enforces them. Unset or 0 means Istio's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    #[serde(default)]
    pub tcp: TcpPool,
    #[serde(default)]
    pub http: HttpPool,
}

/// `connectionPool.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpPool {
    /// Most upstream connections; beyond it HTTP/1.1 requests wait in the
    /// pending queue. Default unlimited (2³²−1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// TCP connect timeout; default 10 s (MeshConfig `connectTimeout`). 503 `UF` on expiry.
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
}

/// `connectionPool.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPool {
    /// Most requests waiting for a connection; beyond it an immediate 503 `UO`. Default unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Most requests in flight to the cluster (HTTP/1.1 and HTTP/2); beyond it an immediate 503 `UO`. Default unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection before it is closed; default unlimited (1 disables keep-alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Most retries in flight across the cluster; beyond it the retry is skipped (flag `UO`). Default unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// How long an unused pooled connection is kept; default 1 h.
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// A limit as Istio sets it: unset or 0 means 2³²−1.
fn limit(v: Option<u32>) -> u32 {
    v.filter(|v| *v > 0).unwrap_or(u32::MAX)
}

impl ConnectionPool {
    pub fn max_connections(&self) -> u32 {
        limit(self.tcp.max_connections)
    }
    pub fn max_pending_requests(&self) -> u32 {
        limit(self.http.http1_max_pending_requests)
    }
    pub fn max_requests(&self) -> u32 {
        limit(self.http.http2_max_requests)
    }
    pub fn max_retries(&self) -> u32 {
        limit(self.http.max_retries)
    }
    /// 0 means unlimited.
    pub fn max_requests_per_connection(&self) -> u32 {
        self.http.max_requests_per_connection.unwrap_or(0)
    }
    pub fn connect_timeout(&self) -> Duration {
        self.tcp.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }
    /// `0s` disables the idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        match self.http.idle_timeout {
            Some(Duration::ZERO) => Duration::MAX,
            Some(d) => d,
            None => DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Consecutive-error ejection, Envoy's algorithm (shared/ISTIO-SEMANTICS.md §2.4).
/// Defaults are Istio's when `outlierDetection` is present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx (connect failures and resets count as 503, timeouts as 504)
    /// that eject an endpoint. Default 5; 0 turns this detector off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive 502/503/504 that eject an endpoint. Default off (0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections are reviewed; default 10 s.
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Ejection time per ejection count; default 30 s.
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Most endpoints (percent) ejected at once; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Below this share of healthy endpoints ejection is ignored (panic); default 0 (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
}

/// The protocol a cluster speaks to its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive, whatever the client spoke (HTTP/2 from the app is downgraded).
    #[default]
    Http1,
    /// HTTP/2 (h2c prior knowledge): one multiplexed connection per endpoint.
    Http2,
    /// Whatever the client spoke (Istio `useClientProtocol`).
    UseClient,
}

/// Load-balancing policies (Istio `loadBalancer.simple`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    /// Power of two random choices, fewer active requests wins. Istio's default.
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// `IP:port` of the endpoint (its sidecar's inbound listener, in a mesh).
    pub address: String,
    /// Endpoint labels (`app`, `version`, ...); feed the `destination_*` metrics labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Failover order (Envoy's priority; Istio's locality failover): level 0 takes the
    /// traffic while it is healthy enough, the next level the rest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// The endpoint's locality (`region/zone/subzone`), for the cluster's `localityWeights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where the sidecar delivers inbound traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// `IP:port` of the local app. The `--app` flag overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// What the app speaks: `HTTP1` (default; HTTP/2 from a peer sidecar is
    /// downgraded), `HTTP2` (h2c, e.g. gRPC servers) or `USE_CLIENT`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// mTLS on the inbound listener; default `PERMISSIVE`.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Authorization policies that apply to this workload (Istio's decision order:
    /// DENY, then ALLOW if any ALLOW policy exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authz: Vec<authz::AuthzPolicy>,
    /// End-user authentication (Istio's RequestAuthentication): the issuers whose
    /// JWTs are verified; an invalid token is refused with 401.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<jwt::JwtRule>,
    /// The app's TCP ports (Istio: ports named `tcp`, `mysql` …): a peer sidecar's mTLS
    /// connection naming one of them is authorized at L4 and relayed to the app's host on
    /// that port; no other port is ever dialled for a peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_ports: Vec<u16>,
    /// The app's other HTTP ports (a multi-port Service): a peer's request whose mesh mTLS
    /// names one of them goes to the app's host on that port; any other name reaches the
    /// app's main port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_ports: Vec<u16>,
}

impl ProxyConfig {
    /// Checks everything that can be checked without I/O. The error names the
    /// offending field by its path, e.g. `services["a"].routes[0].match[1].uri.regex`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::config(self)
    }
}
