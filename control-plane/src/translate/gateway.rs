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

/// The Gateways whose selector picks `workload`, in every namespace (Istio's default), when
/// the workload is a gateway (it carries [`model::gateway::ROLE_LABEL`]): a Gateway whose
/// selector matches a sidecar's labels changes nothing there. A Gateway without a selector
/// picks none.
pub(super) fn selecting<'a>(resources: &'a [Resource], workload: &model::Workload) -> Vec<Selected<'a>> {
    let (role, gateway) = model::gateway::ROLE_LABEL;
    if workload.labels.get(role).map(String::as_str) != Some(gateway) {
        return Vec::new();
    }
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

/// What a server binds VirtualServices by: its Gateway's `namespace/name`, that namespace,
/// and its hosts with the namespace each admits (`*`, or one).
type Binding<'a> = (String, &'a str, Vec<(String, &'a str)>);

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

/// A `gateways` entry written in namespace `ns` as `namespace/name` (a bare name is `ns`'s).
fn gateway_name(entry: &str, ns: &str) -> String {
    if entry.contains('/') {
        entry.to_string()
    } else {
        format!("{ns}/{entry}")
    }
}

impl<'a> Translator<'a> {
    /// Whether a `gateways` entry written in namespace `ns` names one of this workload's Gateways.
    pub(super) fn names_our_gateway(&self, entry: &str, ns: &str) -> bool {
        self.gateways.contains(&gateway_name(entry, ns))
    }

    /// The servers of `selected`, and the routes of every VirtualService bound to them into
    /// `services`; a host two VirtualServices claim goes to the oldest (warned).
    pub(super) fn gateway(
        &mut self,
        selected: &[Selected<'a>],
        services: &mut BTreeMap<String, model::Service>,
    ) -> Vec<model::gateway::Server> {
        let mut servers: Vec<model::gateway::Server> = Vec::new();
        // Per server (same order as `servers`): what VirtualServices bind by.
        let mut binding: Vec<Binding<'_>> = Vec::new();
        // What a port already holds: plaintext or TLS, and its hosts (the oldest Gateway keeps them).
        let mut taken: BTreeMap<u16, (bool, Vec<String>)> = BTreeMap::new();
        for g in selected {
            for (i, s) in g.spec.servers.iter().enumerate() {
                let Server { port, hosts, tls, name, bind: _, default_endpoint: _ } = s;
                let GatewayPort { number, protocol: _, name: _, target_port: _ } = port;
                let Ok(number) = u16::try_from(*number) else { continue };
                let name = format!("{}/{}", g.name, name.clone().unwrap_or_else(|| i.to_string()));
                let (https_redirect, tls) = match tls {
                    Some(t) => match server_tls(t) {
                        Some(done) => done,
                        None => continue, // validation refuses every other shape: never plaintext instead
                    },
                    None => (false, None),
                };
                let (port_tls, port_hosts) = taken.entry(number).or_insert((tls.is_some(), Vec::new()));
                if *port_tls != tls.is_some() {
                    self.warnings.push(format!(
                        "gateway server {name}: port {number} already serves {} (an older server); this one is ignored",
                        if *port_tls { "TLS" } else { "plaintext" }
                    ));
                    continue;
                }
                let mut own = Vec::new();
                let mut patterns = Vec::new();
                for h in hosts {
                    let (ns, host) = h.split_once('/').unwrap_or(("*", h));
                    let ns = if ns == "." { g.namespace } else { ns };
                    let host = host.to_ascii_lowercase();
                    if port_hosts.contains(&host) {
                        self.warnings.push(format!(
                            "gateway server {name}: {host} on port {number} is an older server's; ignored here"
                        ));
                        continue;
                    }
                    port_hosts.push(host.clone());
                    patterns.push((host.clone(), ns));
                    own.push(host);
                }
                if own.is_empty() {
                    continue;
                }
                binding.push((g.name.clone(), g.namespace, patterns));
                servers.push(model::gateway::Server {
                    name,
                    port: number,
                    hosts: own,
                    routes: Vec::new(),
                    https_redirect,
                    tls,
                });
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
            let VirtualService { hosts, gateways, http: _, tls: _, tcp: _, export_to } = vs;
            let vs_ns = r.namespace();
            // Each host the VirtualService shares with a server, and the servers that share it:
            // only the servers of the Gateways this VirtualService names route its hosts.
            let mut names: Vec<(String, Vec<usize>)> = Vec::new();
            for (i, (gateway, gw_ns, patterns)) in binding.iter().enumerate() {
                let names_it = gateways.iter().any(|e| gateway_name(e, vs_ns) == *gateway);
                if !names_it || !visible(export_to, vs_ns, gw_ns) {
                    continue;
                }
                for vs_host in hosts {
                    for (pattern, ns_rule) in patterns {
                        if *ns_rule != "*" && *ns_rule != vs_ns {
                            continue;
                        }
                        let Some(h) = intersect(pattern, vs_host) else { continue };
                        match names.iter_mut().find(|(n, _)| *n == h) {
                            Some((_, at)) if !at.contains(&i) => at.push(i),
                            Some(_) => {}
                            None => names.push((h, vec![i])),
                        }
                    }
                }
            }
            let who = format!("{vs_ns}/{}", r.name());
            for (host, at) in names {
                if let Some(first) = claimed.get(&host) {
                    self.warnings.push(format!(
                        "gateway host {host} is claimed by several VirtualServices ({first}, {who}); {first} is used"
                    ));
                    continue;
                }
                let routes = self.gateway_routes(vs, vs_ns, &ports);
                if routes.is_empty() {
                    continue;
                }
                // Only the winner's servers route the host: a newer Gateway naming the same host
                // does not serve the older VirtualService's routes.
                for i in at {
                    if !servers[i].routes.contains(&host) {
                        servers[i].routes.push(host.clone());
                    }
                }
                claimed.insert(host.clone(), who.clone());
                services.insert(host, model::Service { routes, ports: Default::default() });
            }
        }
        servers
    }
}

/// A server's `tls`: its redirect, and its termination on an HTTPS server; `None` for a
/// shape validation refuses (the server is then left out, never served in plaintext).
fn server_tls(t: &ServerTlsSettings) -> Option<(bool, Option<model::gateway::ServerTls>)> {
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
        None if server_certificate.is_none() && credential_name.is_none() => return Some((*https_redirect, None)),
        Some(ServerTlsMode::Simple) => model::gateway::ServerTlsMode::Simple,
        Some(ServerTlsMode::Mutual) => model::gateway::ServerTlsMode::Mutual,
        _ => return None,
    };
    let credential = match (credential_name, server_certificate, private_key) {
        (Some(name), _, _) => model::gateway::Credential::Name(name.clone()),
        (None, Some(certificate), Some(key)) => model::gateway::Credential::Files {
            certificate: certificate.clone(),
            private_key: key.clone(),
            ca_certificates: ca_certificates.clone(),
        },
        _ => return None,
    };
    let min_protocol_version = match min_protocol_version {
        Some(TlsProtocol::V1_3) => Some(model::gateway::TlsVersion::Tls13),
        _ => None,
    };
    Some((*https_redirect, Some(model::gateway::ServerTls { mode, credential, min_protocol_version })))
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
