//! ServiceEntry: services outside the registry (external APIs, databases) that
//! workloads may call, and, under REGISTRY_ONLY, the allow-list of egress.

use super::common::{Unsupported, WorkloadSelector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// IPs or CIDRs of the service (TCP ports are matched by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u32,
    /// `HTTP`, `HTTP2`, `GRPC`, `HTTPS`, `TLS`, `TCP`, `MONGO` … (case-insensitive, as Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// How a port's traffic is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Routed by Host (HTTP/1.1, h2c, gRPC).
    Http { http2: bool },
    /// TLS from the app (HTTPS, TLS): passed through, matched by the ClientHello's SNI.
    Tls,
    /// Passed through as bytes (databases, …), matched by port and address.
    Tcp,
}

impl ServicePort {
    /// Istio's protocol selection; `None`: a protocol Weft does not know.
    pub fn kind(&self) -> Option<PortKind> {
        let protocol = self.protocol.as_deref().unwrap_or("TCP").to_ascii_uppercase();
        Some(match protocol.as_str() {
            "HTTP" => PortKind::Http { http2: false },
            "HTTP2" | "GRPC" | "GRPC-WEB" => PortKind::Http { http2: true },
            "HTTPS" | "TLS" => PortKind::Tls,
            "TCP" | "MONGO" | "MYSQL" | "REDIS" => PortKind::Tcp,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Where the app was going (the original destination of a captured connection).
    None,
    /// The `endpoints`' addresses.
    Static,
    Dns,
    DnsRoundRobin,
}

/// An endpoint of a ServiceEntry (Istio's WorkloadEntry shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    #[serde(default)]
    pub address: String,
    /// Port name → the endpoint's port for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Unsupported,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}
