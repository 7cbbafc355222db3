//! ServiceEntry → what the workloads it is exported to may call outside the
//! registry: each host's HTTP port becomes a service like any other (routed by
//! its VirtualService, shaped by its DestinationRule), with the entry's static
//! endpoints or, for resolution NONE, the original destination; every other
//! port becomes a TCP egress entry. Under REGISTRY_ONLY these are the allow-list.

use super::common::{visible, Translator};
use crate::istio::types::{PortKind, Resolution, ServiceEntry, ServicePort, WorkloadEntry};
use crate::istio::{Resource, Spec};
use std::collections::BTreeMap;
use weft_model as model;

/// One host's HTTP port of a ServiceEntry.
pub(super) struct Entry<'a> {
    pub(super) resource: &'a Resource,
    pub(super) entry: &'a ServiceEntry,
    pub(super) port: &'a ServicePort,
}

impl<'a> Translator<'a> {
    /// The ServiceEntries this workload sees, by namespace/name.
    fn service_entries(&self) -> Vec<(&'a Resource, &'a ServiceEntry)> {
        let mut out: Vec<(&'a Resource, &'a ServiceEntry)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::ServiceEntry(se) if visible(&se.export_to, r.namespace(), &self.workload.namespace) => {
                    Some((r, se))
                }
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
        out
    }

    /// The first entry (by namespace/name) that names `host` exactly, with its first HTTP port.
    pub(super) fn service_entry_for(&self, host: &str) -> Option<Entry<'a>> {
        self.service_entries().into_iter().find_map(|(resource, entry)| {
            if !entry.hosts.iter().any(|h| h == host) {
                return None;
            }
            let port = entry.ports.iter().find(|p| matches!(p.kind(), Some(PortKind::Http { .. })))?;
            Some(Entry { resource, entry, port })
        })
    }

    /// Adds a service for every HTTP host of the visible ServiceEntries (a host the
    /// registry or an earlier entry has is left to them) and returns the TCP ports.
    pub(super) fn external(&mut self, services: &mut BTreeMap<String, model::Service>) -> Vec<model::TcpEgress> {
        let mut egress = Vec::new();
        for (r, se) in self.service_entries() {
            let named = format!("{}/{}", r.namespace(), r.name());
            let addresses: Vec<weft_model::authz::Cidr> =
                se.addresses.iter().filter_map(|a| weft_model::authz::Cidr::parse(a)).collect();
            // A TCP port: one entry, by port and addresses, named by the first host.
            if let Some(first) = se.hosts.first() {
                for port in se.ports.iter().filter(|p| p.kind() == Some(PortKind::Tcp)) {
                    egress.push(model::TcpEgress {
                        cluster: format!("outbound|{}||{first}", port.number),
                        port: port.number as u16,
                        addresses: addresses.clone(),
                        sni_hosts: Vec::new(),
                    });
                }
            }
            for host in &se.hosts {
                // A TLS or HTTPS port: the ClientHello must name this host (Istio's SNI match).
                for port in se.ports.iter().filter(|p| p.kind() == Some(PortKind::Tls)) {
                    egress.push(model::TcpEgress {
                        cluster: format!("outbound|{}||{host}", port.number),
                        port: port.number as u16,
                        addresses: addresses.clone(),
                        sni_hosts: vec![host.to_ascii_lowercase()],
                    });
                }
                let http: Vec<&ServicePort> =
                    se.ports.iter().filter(|p| matches!(p.kind(), Some(PortKind::Http { .. }))).collect();
                let Some(first) = http.first() else { continue };
                if host.starts_with("*.") {
                    self.warnings.push(format!(
                        "ServiceEntry {named}: HTTP to the wildcard host {host} is not routed yet (only exact hosts are); its TCP ports are"
                    ));
                    continue;
                }
                if http.len() > 1 {
                    self.warnings.push(format!(
                        "ServiceEntry {named}: {host} has several HTTP ports; requests use port {} (Weft routes a host, not a host and port, yet)",
                        first.number
                    ));
                }
                if services.contains_key(host) || self.registry.service(host).is_some() || self.shadows_a_service(host)
                {
                    self.warnings.push(format!(
                        "ServiceEntry {named}: {host} is already a service; the entry is not used for it"
                    ));
                    continue;
                }
                let routes = match self.virtual_service_for(host) {
                    Some((vs, ns)) => self.routes(vs, ns, first.number as u16),
                    None => vec![self.route_to(host, first.number as u16)],
                };
                if !routes.is_empty() {
                    services.insert(host.clone(), model::Service { routes, ports: Default::default() });
                }
            }
        }
        egress
    }

    /// Whether `host` is another name of a registered service (`name.ns`, `name.ns.svc`):
    /// an entry must not take the name callers use for a service in the mesh.
    fn shadows_a_service(&self, host: &str) -> bool {
        self.registry.services().iter().any(|svc| {
            let short = format!("{}.{}", svc.name, svc.namespace);
            host == short || host == format!("{short}.svc") || (host == svc.name)
        })
    }

    /// Where an entry's cluster sends requests: its static endpoints (those whose labels
    /// the subset selects, on the endpoint's port for the entry's port), names for the
    /// sidecar to resolve (DNS: the endpoints' addresses, else the hosts), or, for
    /// NONE, the original destination.
    pub(super) fn entry_cluster(
        &mut self,
        fqdn: &str,
        e: &Entry<'_>,
        selector: &BTreeMap<String, String>,
        cluster: &mut model::Cluster,
    ) {
        let ServiceEntry {
            hosts: _,
            addresses,
            ports: _,
            location: _,
            resolution,
            endpoints,
            // Refused by validation:
            workload_selector: _,
            export_to: _,
            subject_alt_names: _,
        } = e.entry;
        let chosen: Vec<(&WorkloadEntry, u16)> = endpoints
            .iter()
            .filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .map(|w| (w, w.ports.get(&e.port.name).copied().or(e.port.target_port).unwrap_or(e.port.number) as u16))
            .collect();
        match resolution.unwrap_or(Resolution::None) {
            // Only where the entry says the app goes: its port, and its addresses when it has any
            // (a spoofed Host to any other address or port is not let out).
            Resolution::None => {
                cluster.original_dst = Some(model::OriginalDst {
                    port: Some(e.port.number as u16),
                    addresses: addresses.iter().filter_map(|a| weft_model::authz::Cidr::parse(a)).collect(),
                });
            }
            Resolution::Static => {
                cluster.endpoints = chosen
                    .iter()
                    .filter_map(|(w, port)| {
                        let ip: std::net::IpAddr = w.address.parse().ok()?;
                        Some(model::Endpoint {
                            address: std::net::SocketAddr::new(ip, *port).to_string(),
                            labels: w.labels.clone(),
                            priority: 0,
                            locality: None,
                        })
                    })
                    .collect();
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                cluster.dns_first_only = *resolution == Some(Resolution::DnsRoundRobin);
                if endpoints.is_empty() {
                    // Each host is resolved for its own cluster (Istio), never mixed with the entry's others.
                    cluster.dns = vec![format!("{fqdn}:{}", e.port.target_port.unwrap_or(e.port.number))];
                }
                for (w, port) in &chosen {
                    match w.address.parse::<std::net::IpAddr>() {
                        // An address needs no resolving (and `v6:port` is no name).
                        Ok(ip) => cluster.endpoints.push(model::Endpoint {
                            address: std::net::SocketAddr::new(ip, *port).to_string(),
                            labels: w.labels.clone(),
                            priority: 0,
                            locality: None,
                        }),
                        Err(_) => cluster.dns.push(format!("{}:{port}", w.address)),
                    }
                }
            }
        }
    }
}
