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
//! The root holds the config and its inbound side; outbound services and routes are in
//! `route`, clusters in `cluster` (both re-exported here); authorization, gateways, the
//! push stream and durations have modules of their own.

pub mod action;
pub mod authz;
mod cluster;
pub mod duration;
pub mod gateway;
pub mod hash;
pub mod jwt;
pub mod protocol;
mod route;
pub mod stream;
mod validate;

pub use action::{Cors, DerivePort, DirectBody, DirectResponse, Mirror, Redirect, RedirectPort};
pub use cluster::*;
pub use hash::{ConsistentHash, HashCookie, HashKey, HashTable};
pub use protocol::{AppProtocol, ServicePort};
pub use route::*;

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
