//! Upstream clusters (Istio's DestinationRule, translated): endpoints, load balancing,
//! connection pools, outlier detection, and the TLS spoken to them.

use crate::{authz, duration, hash, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

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
