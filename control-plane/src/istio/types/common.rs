//! What every resource kind's types share: metadata, the object envelope,
//! durations, workload selectors, and the marker for fields Weft lacks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// A field Istio has and Weft does not implement yet: present means an error.
pub type Unsupported = Option<serde_yaml::Value>;

/// Kubernetes object metadata (the parts that matter here; server-set fields are accepted and ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing)]
    pub uid: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing)]
    pub generation: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_yaml::Value>,
}

impl Metadata {
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A whole object: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_yaml::Value>,
}

/// An Istio duration (`"10s"`, `"250ms"`, `"1.5s"`, `"1m30s"`), parsed when the
/// YAML is read; written back in its shortest exact form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&weft_model::duration::format(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        weft_model::duration::parse(&text).map(Duration).map_err(serde::de::Error::custom)
    }
}

/// The security API's workload selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// The networking API's workload selector (`labels`, where the security API says `matchLabels`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
