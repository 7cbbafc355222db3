//! WorkloadGroup: which service accounts may register as a service's endpoints.

use super::common::Unsupported;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Istio's WorkloadGroup: in Weft, the explicit rule that lets workloads of a
/// service account register as endpoints of a service (Istio's
/// auto-registration model). The group's workloads run as
/// `template.serviceAccount` and carry `metadata.labels`; its `app` label names
/// the service they serve (Istio's canonical service). The rest is refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    #[serde(default)]
    pub metadata: WorkloadGroupMetadata,
    #[serde(default)]
    pub template: WorkloadTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupMetadata {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A WorkloadEntry's template: only `serviceAccount` is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Unsupported,
}
