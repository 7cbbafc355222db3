//! AuthorizationPolicy: who may call what.

use super::common::{Unsupported, WorkloadSelector};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_refs: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<AuthzRule>>,
}

/// What a matching policy does (Istio's default: ALLOW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    /// `Some([])` (written `from: []`) is refused, as by Istio: never read as "any source".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<AuthzFrom>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<AuthzTo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<AuthzCondition>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzFrom {
    pub source: AuthzSource,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// End-user JWT principals (`iss/sub`); need a RequestAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_principals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_request_principals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_blocks: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_remote_ip_blocks: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_service_accounts: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzTo {
    pub operation: AuthzOperation,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzOperation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzCondition {
    pub key: ConditionKey,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// A `when` key. The ones the sidecar evaluates are parsed here; any other is
/// kept as written and refused by validation by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    SourcePrincipal,
    SourceNamespace,
    SourceIp,
    DestinationPort,
    /// `request.headers[NAME]`, the name as written.
    RequestHeader(String),
    /// `request.auth.principal`, `request.auth.audiences`, `request.auth.presenter`.
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    /// `request.auth.claims[a][b]`: the path, one name per level.
    RequestClaim(Vec<String>),
    Other(String),
}

impl ConditionKey {
    pub fn parse(key: &str) -> ConditionKey {
        match key {
            "source.principal" => ConditionKey::SourcePrincipal,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.ip" => ConditionKey::SourceIp,
            "destination.port" => ConditionKey::DestinationPort,
            "request.auth.principal" => ConditionKey::RequestPrincipal,
            "request.auth.audiences" => ConditionKey::RequestAudiences,
            "request.auth.presenter" => ConditionKey::RequestPresenter,
            _ => {
                if let Some(name) = key.strip_prefix("request.headers[").and_then(|k| k.strip_suffix(']')) {
                    return ConditionKey::RequestHeader(name.to_string());
                }
                match key.strip_prefix("request.auth.claims[").and_then(|k| k.strip_suffix(']')) {
                    Some(path) if !path.is_empty() => {
                        ConditionKey::RequestClaim(path.split("][").map(String::from).collect())
                    }
                    _ => ConditionKey::Other(key.to_string()),
                }
            }
        }
    }
}

impl std::fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConditionKey::SourcePrincipal => f.write_str("source.principal"),
            ConditionKey::SourceNamespace => f.write_str("source.namespace"),
            ConditionKey::SourceIp => f.write_str("source.ip"),
            ConditionKey::DestinationPort => f.write_str("destination.port"),
            ConditionKey::RequestHeader(name) => write!(f, "request.headers[{name}]"),
            ConditionKey::RequestPrincipal => f.write_str("request.auth.principal"),
            ConditionKey::RequestAudiences => f.write_str("request.auth.audiences"),
            ConditionKey::RequestPresenter => f.write_str("request.auth.presenter"),
            ConditionKey::RequestClaim(path) => {
                write!(f, "request.auth.claims")?;
                path.iter().try_for_each(|n| write!(f, "[{n}]"))
            }
            ConditionKey::Other(key) => f.write_str(key),
        }
    }
}

impl Default for ConditionKey {
    fn default() -> Self {
        ConditionKey::Other(String::new())
    }
}

impl Serialize for ConditionKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConditionKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|k| ConditionKey::parse(&k))
    }
}
