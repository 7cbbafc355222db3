//! Telemetry: which workloads write an access log (`accessLogging`).

use super::common::{Unsupported, WorkloadSelector};
use serde::{Deserialize, Serialize};

/// Istio's Telemetry resource. Weft reads its selector and `accessLogging`;
/// metrics and tracing overrides are refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Unsupported,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// The providers this applies to; empty means MeshConfig's default providers (none in Istio's default install).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Unsupported,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    pub name: String,
}

/// Istio's built-in access-log provider (a line per request on the proxy's stdout): the one Weft has.
pub const ENVOY_PROVIDER: &str = "envoy";
