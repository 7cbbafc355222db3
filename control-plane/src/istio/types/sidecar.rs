//! Sidecar: the workload's outbound traffic policy.

use super::common::{LabelSelector, Unsupported};
use serde::{Deserialize, Serialize};

/// Istio's Sidecar resource. Weft reads which workloads it selects and its
/// `outboundTrafficPolicy.mode`; the rest is refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Unsupported,
}

/// Where a workload may call: only registered services, or anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    RegistryOnly,
    AllowAny,
}
