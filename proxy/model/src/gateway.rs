//! An ingress gateway's servers (Istio's `Gateway`): the ports it listens on, the
//! hosts each port serves, and how it terminates TLS. A sidecar's config has none;
//! `weft-proxy gateway` listens on every server's port, routes by the config's
//! `services` (the VirtualServices bound to the gateway) and forwards into the mesh
//! with its own workload certificate.

use serde::{Deserialize, Serialize};

/// The label `weft-proxy gateway` always carries: only a workload that says it is a gateway
/// takes Gateway resources, so a Gateway whose selector matches a sidecar's labels never
/// replaces that sidecar's routes (Istio's sidecars ignore Gateways too).
pub const ROLE_LABEL: (&str, &str) = ("weft.dev/role", "gateway");

/// One server of a Gateway: a port, the hosts it serves there, and its TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// `namespace/gateway/server` (the server's `name`, else its index): logs and errors.
    pub name: String,
    pub port: u16,
    /// The hosts served (`shop.example.com`, `*.example.com`, `*`), without Istio's
    /// `namespace/` part (that chose the VirtualServices). A request whose `Host` is not
    /// among them gets 404, and on TLS the host the ClientHello named decides the server.
    pub hosts: Vec<String>,
    /// The hosts routed through this server (the VirtualServices bound to its Gateway, as
    /// `services` keys, `*.x` patterns too): a request for another host gets 404 even when
    /// another Gateway's server on the same port routes it. Empty: none (every request 404).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// A plaintext server that answers every request with a 301 to `https` (Istio's
    /// `tls.httpsRedirect`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// TLS termination; absent: plaintext HTTP/1.1 and h2c.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

/// How a server terminates TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    /// The certificate, its key and (MUTUAL) the client CA, as PEM files on the
    /// gateway's host — never in the config itself.
    pub credential: Credential,
    /// The oldest TLS version accepted (Istio's default: TLS 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Server authentication only.
    Simple,
    /// The client must present a certificate that chains to the credential's CA.
    Mutual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSV1_2")]
    Tls12,
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// Where a server's certificate is read from: a name (`credential: shop-cert`) or files
/// (`credential: { certificate: …, privateKey: …, caCertificates: … }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged, rename_all = "camelCase", deny_unknown_fields)]
pub enum Credential {
    /// Istio's `credentialName`: a mounted TLS Secret, the directory
    /// `<--credentials-dir>/<name>` holding `tls.crt`, `tls.key` and (MUTUAL) `ca.crt`,
    /// or `ca.crt` in `<name>-cacert` beside it, as Istio reads a separate CA secret.
    Name(String),
    /// Istio's file form: `serverCertificate`, `privateKey`, `caCertificates`.
    #[serde(rename_all = "camelCase")]
    Files {
        certificate: String,
        private_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_certificates: Option<String>,
    },
}

/// Whether `host` (no port, any letter case) is one `pattern` names: the same name,
/// `*.suffix` for any name ending in `.suffix`, or `*` for every host.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The server of `servers` (one port's) a name reaches, as Envoy picks a filter chain: one
/// naming it exactly, else the longest wildcard that covers it, else `*`; between equals the
/// first (the oldest Gateway's). No name (TLS without SNI) reaches only a `*` server.
pub fn server_for<'a>(servers: impl IntoIterator<Item = &'a Server>, name: Option<&str>) -> Option<&'a Server> {
    let all = servers.into_iter().flat_map(|s| s.hosts.iter().map(move |h| (h.as_str(), s)));
    let Some(name) = name else {
        return all.filter(|(h, _)| *h == "*").map(|(_, s)| s).next();
    };
    let specificity = |h: &str| match h.strip_prefix('*') {
        None => usize::MAX,
        Some(suffix) => suffix.len(),
    };
    let mut best: Option<(usize, &Server)> = None;
    for (h, s) in all.filter(|(h, _)| host_matches(h, name)) {
        if best.is_none_or(|(b, _)| specificity(h) > b) {
            best = Some((specificity(h), s));
        }
    }
    best.map(|(_, s)| s)
}

/// A credential name as Kubernetes names a Secret: lowercase letters, digits, `-` and `.`,
/// starting with a letter or digit — so it never leaves the credentials directory.
pub fn credential_name_ok(name: &str) -> bool {
    name.len() <= 253
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_as_istio_reads_them() {
        assert!(host_matches("shop.example.com", "SHOP.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "evilexample.com"));
        assert!(host_matches("*", "anything"));
        assert!(!host_matches("shop.example.com", "shop.example.com.evil"));
    }

    #[test]
    fn credential_names_stay_in_their_directory() {
        assert!(credential_name_ok("shop-cert"));
        assert!(credential_name_ok("shop.example.com"));
        for bad in ["", "..", ".hidden", "a/b", "../etc", "Shop", "a b"] {
            assert!(!credential_name_ok(bad), "{bad:?}");
        }
    }
}
