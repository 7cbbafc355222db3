//! ServiceEntry: hosts, ports, resolution and endpoints (Istio's
//! ValidateServiceEntry, with what Weft does not do yet refused by name).

use super::common::{unsupported, Problems, NOT_YET};
use crate::istio::types::*;

pub(super) fn check(se: &ServiceEntry, p: &mut Problems) {
    let ServiceEntry {
        hosts,
        addresses,
        ports,
        location: _,
        resolution,
        endpoints,
        workload_selector,
        export_to: _,
        subject_alt_names: _,
    } = se;
    if hosts.is_empty() {
        p.push(("spec.hosts".into(), "a ServiceEntry needs at least one host".into()));
    }
    for (i, h) in hosts.iter().enumerate() {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let ok = !name.is_empty()
            && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if h == "*" {
            p.push((format!("spec.hosts[{i}]"), "`*` would let every host out".into()));
        } else if !h.contains('.') || h.ends_with(".svc") || h.ends_with(".svc.cluster.local") {
            p.push((
                format!("spec.hosts[{i}]"),
                format!("{h:?} is a name of the mesh's own services; a ServiceEntry names hosts outside the registry"),
            ));
        } else if !ok {
            p.push((format!("spec.hosts[{i}]"), format!("{h:?} is not a host name (a wildcard only as `*.` first)")));
        }
    }
    for (i, a) in addresses.iter().enumerate() {
        if weft_model::authz::Cidr::parse(a).is_none() {
            p.push((format!("spec.addresses[{i}]"), format!("{a:?} is not an IP or CIDR")));
        }
    }
    if ports.is_empty() {
        p.push(("spec.ports".into(), "a ServiceEntry needs at least one port".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&port.number) {
            p.push((format!("{at}.number"), format!("{} is not a port number (1-65535)", port.number)));
        }
        if port.target_port.is_some_and(|t| !(1..=65535).contains(&t)) {
            p.push((format!("{at}.targetPort"), "is not a port number (1-65535)".into()));
        }
        if port.kind().is_none() {
            p.push((
                format!("{at}.protocol"),
                format!(
                    "{:?} is {NOT_YET} (HTTP, HTTP2, GRPC, HTTPS, TLS, TCP are)",
                    port.protocol.as_deref().unwrap_or("")
                ),
            ));
        }
        if !port.name.is_empty() && !names.insert(port.name.as_str()) {
            p.push((format!("{at}.name"), format!("{:?} names two ports", port.name)));
        }
    }
    let resolution = resolution.unwrap_or(Resolution::None);
    match resolution {
        Resolution::Dns | Resolution::DnsRoundRobin
            if endpoints.is_empty() && hosts.iter().any(|h| h.starts_with("*.")) =>
        {
            p.push((
                "spec.resolution".into(),
                "DNS resolution of a wildcard host needs endpoints (a name cannot be resolved)".into(),
            ))
        }
        // Istio: LOGICAL_DNS takes one name.
        Resolution::DnsRoundRobin if endpoints.len() > 1 => {
            p.push(("spec.endpoints".into(), "DNS_ROUND_ROBIN takes at most one endpoint (Istio)".into()))
        }
        Resolution::Static if endpoints.is_empty() && workload_selector.is_none() => {
            p.push(("spec.endpoints".into(), "STATIC resolution needs endpoints".into()))
        }
        Resolution::None if !endpoints.is_empty() => {
            p.push(("spec.endpoints".into(), "resolution NONE takes no endpoints (they would be ignored)".into()))
        }
        _ => {}
    }
    if workload_selector.is_some() {
        p.push(("spec.workloadSelector".into(), format!("selecting WorkloadEntries is {NOT_YET}")));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        let ip = e.address.parse::<std::net::IpAddr>().is_ok();
        let name =
            !e.address.is_empty() && e.address.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        match resolution {
            Resolution::Static if !ip => p.push((
                format!("{at}.address"),
                format!("{:?} is not an IP address (STATIC endpoints are addresses; DNS resolves names)", e.address),
            )),
            Resolution::Dns | Resolution::DnsRoundRobin if !ip && !name => {
                p.push((format!("{at}.address"), format!("{:?} is not an IP address or a host name", e.address)))
            }
            _ => {}
        }
        for (name, port) in &e.ports {
            if !(1..=65535).contains(port) {
                p.push((format!("{at}.ports.{name}"), "is not a port number (1-65535)".into()));
            }
        }
        unsupported(p, format!("{at}.network"), &e.network);
        unsupported(p, format!("{at}.locality"), &e.locality);
        unsupported(p, format!("{at}.weight"), &e.weight);
    }
}
