//! What a matched route does besides (or instead of) forwarding: answer with a
//! redirect or a fixed response, copy the request to mirrors, answer CORS.

use crate::duration;
use crate::StringMatch;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Answer with a redirect instead of forwarding (Istio `HTTPRedirect`): `Location` is
/// the request's own URL with the parts set here replaced; the query string is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the prefix the route matched (the match entry must be a URI prefix match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Replaces the host (and its port, when it names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Or: derives it (not with `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<DerivePort>,
    /// Replaces `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// 301 (Istio's default), 302, 303, 307 or 308.
    #[serde(default = "moved_permanently")]
    pub code: u16,
}

fn moved_permanently() -> u16 {
    301
}

/// Istio's `derivePort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    /// No port: the scheme's default.
    FromProtocolDefault,
    /// The port the request was sent to.
    FromRequestPort,
}

/// Which port a redirect's `Location` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    Number(u16),
    ProtocolDefault,
    RequestPort,
}

impl Redirect {
    /// `port` or `derivePort` as one rule (validation refuses both).
    pub fn port_rule(&self) -> Option<RedirectPort> {
        match (self.port, self.derive_port) {
            (Some(n), _) => Some(RedirectPort::Number(n)),
            (None, Some(DerivePort::FromProtocolDefault)) => Some(RedirectPort::ProtocolDefault),
            (None, Some(DerivePort::FromRequestPort)) => Some(RedirectPort::RequestPort),
            (None, None) => None,
        }
    }
}

/// Answer with this status and body instead of forwarding (Istio `HTTPDirectResponse`).
/// The route's response header operations apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<DirectBody>,
}

/// `string` or `bytes` (base64), as Istio writes it; at most [`MAX_DIRECT_BODY`] bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

pub const MAX_DIRECT_BODY: usize = 1024 * 1024;

impl DirectBody {
    /// The body's bytes; `None` when both or neither are set, or `bytes` is not base64.
    pub fn decode(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        match (&self.string, &self.bytes) {
            (Some(s), None) => Some(s.clone().into_bytes()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            _ => None,
        }
    }
}

/// A copy of the request sent to another cluster, its answer ignored (Istio `mirror`,
/// `mirrors`): fire and forget, never delaying the request it copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests copied, 0–100 (per-million precision); default 100.
    #[serde(default = "all")]
    pub percentage: f64,
}

fn all() -> f64 {
    100.0
}

/// Cross-origin resource sharing, answered by the sidecar (Istio `corsPolicy`, Envoy's
/// CORS filter): a preflight from an allowed origin gets 200 with the allowances; an
/// actual request from one gets `access-control-allow-origin` and the exposed headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed; a matcher that matches `*` allows every origin.
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, with = "duration::opt", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// A preflight from an origin not allowed goes on to the app (Istio's default,
    /// `FORWARD`); `false` answers it with 200 and no allowances (`IGNORE`).
    #[serde(default = "forward", skip_serializing_if = "is_true")]
    pub forward_unmatched_preflights: bool,
}

fn forward() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}
