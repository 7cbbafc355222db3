//! The push protocol between a sidecar and the control plane: one long-lived
//! HTTP/2 request (`POST /weft.v1.Config/Stream`), newline-delimited JSON in
//! both directions. The sidecar speaks first with a [`Hello`]; the control
//! plane answers with a [`Push`] whenever the sidecar's config changes; the
//! sidecar answers every push with an [`Ack`].
//!
//! A push carries the whole config, or — once the sidecar has ACKed the stream's
//! previous push — only what changed since ([`Delta`], as Envoy's delta xDS): one
//! change to one service is then a few kilobytes to every sidecar, not the mesh.

mod delta;
mod framing;

pub use delta::Delta;
pub use framing::*;

use crate::{ProxyConfig, Workload};
use serde::{Deserialize, Serialize};

/// The request path of the stream.
pub const STREAM_PATH: &str = "/weft.v1.Config/Stream";

/// Who the sidecar is and how peers reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    pub workload: Workload,
    /// Unique id of this instance (pod name); the registry key.
    pub instance: String,
    /// The service this workload serves; with `address` it is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `IP:port` of the sidecar's inbound listener as peers reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The service port (Istio's `port.number`); default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What the port speaks (its name or `appProtocol`); absent: detected per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<crate::AppProtocol>,
    /// The service's other ports (a multi-port Service), each with what it speaks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_ports: Vec<crate::ServicePort>,
    /// The port of the sidecar's `/stats/prometheus` on the registered address's host, when
    /// it listens there (Prometheus finds it through the control plane's service discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// The last version the sidecar applied (after a reconnect), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<String>,
}

/// Sent by a sidecar that reads [`Delta`]s on the stream's request (a header, not a
/// [`Hello`] field: a control plane that knows nothing of deltas ignores it). A stream
/// without it gets whole configs only.
pub const DELTA_HEADER: &str = "x-weft-accept-delta";

/// A new config for the sidecar: whole (`config`) or as a [`Delta`] on one the stream
/// pushed before (`delta`); exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Push {
    pub version: String,
    /// This push's number on its stream, from 1 (0: unnumbered, no delta can name it). A
    /// version may come twice with different content (a key set refreshed, the trust
    /// moved under the same revision); a number names one push.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ProxyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Push {
    /// An unnumbered push of the whole config.
    pub fn full(version: impl Into<String>, config: ProxyConfig) -> Self {
        Push { version: version.into(), seq: 0, config: Some(config), delta: None }
    }

    /// The config this push gives a sidecar that holds `held` (the stream's push it last
    /// applied: its number and raw config), with this push's version; an error (the sidecar
    /// NACKs, keeping what it has) for a delta on another push or none, or a push with both
    /// a config and a delta or neither.
    pub fn resolve(self, held: Option<(u64, &ProxyConfig)>) -> Result<ProxyConfig, String> {
        let mut config = match (self.config, self.delta) {
            (Some(config), None) => config,
            (None, Some(delta)) => match held {
                Some((seq, held)) if seq == delta.base && seq != 0 => delta.apply_to(held),
                Some((seq, _)) => {
                    return Err(format!("a delta on push {}, but this sidecar holds push {seq}", delta.base))
                }
                None => return Err(format!("a delta on push {}, but this stream gave no config yet", delta.base)),
            },
            (Some(_), Some(_)) => return Err("a push with both a config and a delta".into()),
            (None, None) => return Err("a push with neither a config nor a delta".into()),
        };
        config.version = self.version;
        Ok(config)
    }
}

/// The sidecar's answer to a push: applied, or refused with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ack {
    pub version: String,
    /// `None` is an ACK; `Some(reason)` a NACK (the old config stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Set on a refused stream when the sidecar's certificate is from a root that no longer signs:
/// renew it (with the current certificate), then come back.
pub const RENEW_HEADER: &str = "x-weft-renew";

/// The request path for certificates.
pub const SIGN_PATH: &str = "/weft.v1.Certificates/Sign";

/// A sidecar asks for a certificate: its bootstrap token proves who it is;
/// the CSR carries its public key (the private key never leaves the sidecar).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignRequest {
    pub token: String,
    /// PKCS#10 CSR, PEM. Its subject and SANs are ignored: the identity comes from the token.
    pub csr: String,
}

/// The signed certificate and the mesh root it chains to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignResponse {
    /// The workload certificate, PEM.
    pub certificate: String,
    /// The mesh root, PEM (the trust bundle).
    pub root: String,
    /// `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
    pub identity: String,
    /// SHA-256 (hex) of the root that signed `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}
