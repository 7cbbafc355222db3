//! An Istio resource as Weft holds it (kind, metadata, typed spec, where it was
//! read), and the diagnostic that names a problem's file, line and field.

use super::lines::LineIndex;
use super::types::{
    AuthorizationPolicy, DestinationRule, Gateway, Metadata, PeerAuthentication, RequestAuthentication, ServiceEntry,
    Sidecar, Telemetry, VirtualService, WorkloadGroup,
};
use std::fmt;
use std::path::PathBuf;

/// Istio's root namespace: resources there apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// A Kubernetes name (namespace, service account, service: DNS subdomain
/// characters, at most 253): nothing that could change the shape of an etcd key.
pub fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The kinds Weft reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    AuthorizationPolicy,
    PeerAuthentication,
    Sidecar,
    WorkloadGroup,
    Telemetry,
    RequestAuthentication,
    ServiceEntry,
    Gateway,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::Sidecar,
        Kind::WorkloadGroup,
        Kind::Telemetry,
        Kind::RequestAuthentication,
        Kind::ServiceEntry,
        Kind::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Telemetry => "Telemetry",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Gateway => "Gateway",
        }
    }

    /// Parses a kind as written in YAML or on the command line (case-insensitive; `vs`, `dr`, `ap`, `pa` too).
    pub fn parse(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let n = k.name().to_ascii_lowercase();
            let short: String =
                k.name().chars().filter(|c| c.is_ascii_uppercase()).collect::<String>().to_ascii_lowercase();
            l == n || l == format!("{n}s") || l == short
        })
    }

    /// The API group and the versions Istio serves this kind in.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Sidecar
            | Kind::WorkloadGroup
            | Kind::ServiceEntry
            | Kind::Gateway => {
                &["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
            }
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                &["security.istio.io/v1", "security.istio.io/v1beta1"]
            }
            Kind::Telemetry => &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A resource's spec, by kind. Parsed once per apply and kept in lists, never
/// moved per request: the size of the largest variant costs nothing worth a box.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Sidecar(Sidecar),
    WorkloadGroup(WorkloadGroup),
    Telemetry(Telemetry),
    RequestAuthentication(RequestAuthentication),
    ServiceEntry(ServiceEntry),
    Gateway(Gateway),
}

/// Where a resource came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Source {
    pub file: PathBuf,
    /// First line of the document in the file.
    pub line: usize,
}

/// One Istio resource, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
    pub source: Source,
    /// When it was first stored (etcd's create revision): Weft's `creationTimestamp`.
    /// `None` for resources read from files.
    pub created: Option<i64>,
}

impl Resource {
    /// The order Istio breaks ties in (several VirtualServices for a host, DestinationRules
    /// to merge, Sidecars for a workload): the oldest first, then by namespace and name.
    pub fn precedence(&self) -> (i64, &str, &str) {
        (self.created.unwrap_or(i64::MAX), self.namespace(), self.name())
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The resource as a Kubernetes-style YAML/JSON value (what is stored in etcd).
    pub fn to_value(&self) -> serde_json::Value {
        let spec = match &self.spec {
            Spec::VirtualService(s) => serde_json::to_value(s),
            Spec::DestinationRule(s) => serde_json::to_value(s),
            Spec::AuthorizationPolicy(s) => serde_json::to_value(s),
            Spec::PeerAuthentication(s) => serde_json::to_value(s),
            Spec::Sidecar(s) => serde_json::to_value(s),
            Spec::WorkloadGroup(s) => serde_json::to_value(s),
            Spec::Telemetry(s) => serde_json::to_value(s),
            Spec::RequestAuthentication(s) => serde_json::to_value(s),
            Spec::ServiceEntry(s) => serde_json::to_value(s),
            Spec::Gateway(s) => serde_json::to_value(s),
        }
        .unwrap_or_default();
        let mut metadata = self.metadata.clone();
        metadata.namespace = Some(self.namespace().to_string());
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind.name(),
            "metadata": metadata,
            "spec": spec,
        })
    }
}

/// A problem in a file: `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    /// Field path inside the document, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl Diagnostic {
    pub(super) fn at(
        file: &std::path::Path,
        index: &LineIndex,
        fallback_line: usize,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: index.line(field).unwrap_or(fallback_line),
            field: field.to_string(),
            message: message.into(),
        }
    }
}
