//! Gateway → an ingress gateway workload's servers, and the VirtualServices bound to
//! those Gateways (`gateways: [ns/name]`) → its routes, one service per host the
//! VirtualService's hosts and the servers' hosts have in common.

use super::common::{visible, Translator};
use crate::istio::types::{
    Gateway, GatewayPort, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol, VirtualService,
};
use crate::istio::{Resource, Spec};
use std::collections::BTreeMap;
use weft_model as model;
use weft_model::gateway::host_matches;

/// A Gateway that selects the workload: its `namespace/name`, namespace and spec.
pub(super) struct Selected<'a> {
    pub name: String,
    pub namespace: &'a str,
    pub spec: &'a Gateway,
}

/// The Gateways whose selector picks `workload`, in every namespace (Istio's default). A
/// Gateway without a selector picks none: Weft makes no workload a gateway by accident.
pub(super) fn selecting<'a>(resources: &'a [Resource], workload: &model::Workload) -> Vec<Selected<'a>> {
    let mut found: Vec<(&Resource, &Gateway)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r, g)),
            _ => None,
        })
        .filter(|(_, g)| !g.selector.is_empty() && g.selector.iter().all(|(k, v)| workload.labels.get(k) == Some(v)))
        .collect();
    found.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
    found
        .into_iter()
        .map(|(r, spec)| Selected { name: format!("{}/{}", r.namespace(), r.name()), namespace: r.namespace(), spec })
        .collect()
}

/// The more specific of two host patterns when one covers the other (Istio's intersection
/// of a server's hosts and a VirtualService's).
fn intersect(a: &str, b: &str) -> Option<String> {
    if host_matches(a, b) {
        Some(b.to_ascii_lowercase())
    } else if host_matches(b, a) {
        Some(a.to_ascii_lowercase())
    } else {
        None
    }
}

impl<'a> Translator<'a> {
    /// Whether a `gateways` entry written in namespace `ns` names one of this workload's Gateways.
    pub(super) fn names_our_gateway(&self, entry: &str, ns: &str) -> bool {
        let full = if entry.contains('/') { entry.to_string() } else { format!("{ns}/{entry}") };
        self.gateways.contains(&full)
    }

    /// The servers of `selected`, and the routes of every VirtualService bound to them into
    /// `services`; a host two VirtualServices claim goes to the oldest (warned).
    pub(super) fn gateway(
        &mut self,
        selected: &[Selected<'a>],
        services: &mut BTreeMap<String, model::Service>,
    ) -> Vec<model::gateway::Server> {
        let mut servers = Vec::new();
        // (server host pattern, namespace rule, gateway namespace) for binding.
        let mut patterns: Vec<(String, &str, &str)> = Vec::new();
        for g in selected {
            for (i, s) in g.spec.servers.iter().enumerate() {
                let Server { port, hosts, tls, name, bind: _, default_endpoint: _ } = s;
                let GatewayPort { number, protocol: _, name: _, target_port: _ } = port;
                let Ok(number) = u16::try_from(*number) else { continue };
                let mut own = Vec::new();
                for h in hosts {
                    let (ns, host) = h.split_once('/').unwrap_or(("*", h));
                    let ns = if ns == "." { g.namespace } else { ns };
                    patterns.push((host.to_ascii_lowercase(), ns, g.namespace));
                    if !own.contains(&host.to_ascii_lowercase()) {
                        own.push(host.to_ascii_lowercase());
                    }
                }
                let (https_redirect, tls) = match tls {
                    Some(t) => server_tls(t),
                    None => (false, None),
                };
                let name = format!("{}/{}", g.name, name.clone().unwrap_or_else(|| i.to_string()));
                servers.push(model::gateway::Server { name, port: number, hosts: own, https_redirect, tls });
            }
        }
        let mut bound: Vec<(&'a Resource, &'a VirtualService)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(vs) => Some((r, vs)),
                _ => None,
            })
            .filter(|(r, vs)| vs.gateways.iter().any(|e| self.names_our_gateway(e, r.namespace())))
            .collect();
        bound.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        let mut claimed: BTreeMap<String, String> = BTreeMap::new();
        for (r, vs) in bound {
            let VirtualService { hosts, gateways: _, http: _, tls: _, tcp: _, export_to } = vs;
            let vs_ns = r.namespace();
            let mut names = Vec::new();
            for vs_host in hosts {
                for (pattern, ns_rule, gw_ns) in &patterns {
                    let ns_ok = *ns_rule == "*" || *ns_rule == vs_ns;
                    if !ns_ok || !visible(export_to, vs_ns, gw_ns) {
                        continue;
                    }
                    if let Some(h) = intersect(pattern, vs_host) {
                        if !names.contains(&h) {
                            names.push(h);
                        }
                    }
                }
            }
            let who = format!("{vs_ns}/{}", r.name());
            for host in names {
                if let Some(first) = claimed.get(&host) {
                    self.warnings.push(format!(
                        "gateway host {host} is claimed by several VirtualServices ({first}, {who}); {first} is used"
                    ));
                    continue;
                }
                let routes = self.gateway_routes(vs, vs_ns, &ports);
                if !routes.is_empty() {
                    claimed.insert(host.clone(), who.clone());
                    services.insert(host, model::Service { routes });
                }
            }
        }
        servers
    }
}

/// A server's `tls`: its redirect, and its termination on an HTTPS server (validation has
/// refused every other shape).
fn server_tls(t: &ServerTlsSettings) -> (bool, Option<model::gateway::ServerTls>) {
    let ServerTlsSettings {
        https_redirect,
        mode,
        server_certificate,
        private_key,
        ca_certificates,
        credential_name,
        min_protocol_version,
        // Refused by validation when set (or at their defaults):
        max_protocol_version: _,
        credential_names: _,
        tls_certificates: _,
        ca_crl: _,
        subject_alt_names: _,
        verify_certificate_spki: _,
        verify_certificate_hash: _,
        cipher_suites: _,
    } = t;
    let mode = match mode {
        Some(ServerTlsMode::Simple) => model::gateway::ServerTlsMode::Simple,
        Some(ServerTlsMode::Mutual) => model::gateway::ServerTlsMode::Mutual,
        _ => return (*https_redirect, None),
    };
    let credential = match (credential_name, server_certificate, private_key) {
        (Some(name), _, _) => model::gateway::Credential::Name(name.clone()),
        (None, Some(certificate), Some(key)) => model::gateway::Credential::Files {
            certificate: certificate.clone(),
            private_key: key.clone(),
            ca_certificates: ca_certificates.clone(),
        },
        _ => return (*https_redirect, None),
    };
    let min_protocol_version = match min_protocol_version {
        Some(TlsProtocol::V1_3) => Some(model::gateway::TlsVersion::Tls13),
        _ => None,
    };
    (*https_redirect, Some(model::gateway::ServerTls { mode, credential, min_protocol_version }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_intersect_to_the_narrower() {
        assert_eq!(intersect("*", "shop.example.com").as_deref(), Some("shop.example.com"));
        assert_eq!(intersect("shop.example.com", "*").as_deref(), Some("shop.example.com"));
        assert_eq!(intersect("*.example.com", "a.example.com").as_deref(), Some("a.example.com"));
        assert_eq!(intersect("*.example.com", "other.org"), None);
    }
}
