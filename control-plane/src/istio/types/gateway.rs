//! Gateway: the servers (ports, hosts, TLS) of an ingress gateway deployment that
//! its `selector` picks by labels; VirtualServices bind to it with `gateways:`.

use super::common::Unsupported;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default)]
    pub servers: Vec<Server>,
    /// The gateway workloads (by their labels) that take these servers, in every namespace.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    pub port: GatewayPort,
    /// `host`, `*.suffix`, `*`, each optionally `namespace/` (`./` the Gateway's, `*/` any):
    /// which VirtualServices may bind.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    pub number: u32,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `TLS`, `TCP`, `MONGO` (case-insensitive).
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_names: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificates: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_spki: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_hash: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}
