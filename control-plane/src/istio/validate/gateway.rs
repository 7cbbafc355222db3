//! Gateway: servers, their hosts and TLS (Istio's ValidateGateway), with what Weft's
//! gateway does not do yet (TCP and TLS passthrough servers, …) refused by name.

use super::common::{is_dns1123, unsupported, Problems, NOT_YET};
use crate::istio::types::*;

pub(super) fn check(gw: &Gateway, p: &mut Problems) {
    let Gateway { servers, selector: _ } = gw;
    if servers.is_empty() {
        p.push(("spec.servers".into(), "a Gateway needs at least one server".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, server) in servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        let Server { port, hosts, tls, name, bind, default_endpoint } = server;
        unsupported(p, format!("{at}.bind"), bind);
        unsupported(p, format!("{at}.defaultEndpoint"), default_endpoint);
        if let Some(name) = name {
            if !names.insert(name.as_str()) {
                p.push((format!("{at}.name"), format!("server name {name:?} is used twice")));
            }
        }
        let GatewayPort { number, protocol, name: _, target_port } = port;
        if !(1..=65535).contains(number) {
            p.push((format!("{at}.port.number"), format!("{number} is not a port number (1-65535)")));
        }
        if target_port.is_some() {
            p.push((format!("{at}.port.targetPort"), NOT_YET.into()));
        }
        let protocol = protocol.to_ascii_uppercase();
        let https = match protocol.as_str() {
            "HTTP" | "HTTP2" | "GRPC" => false,
            "HTTPS" => true,
            "TLS" | "TCP" | "MONGO" | "REDIS" | "MYSQL" | "GRPC-WEB" | "HTTP_PROXY" => {
                p.push((format!("{at}.port.protocol"), format!("{protocol} servers are {NOT_YET} (HTTP, HTTPS are)")));
                false
            }
            _ => {
                p.push((format!("{at}.port.protocol"), format!("{protocol:?} is not a protocol Istio knows")));
                false
            }
        };
        if hosts.is_empty() {
            p.push((format!("{at}.hosts"), "a server needs at least one host".into()));
        }
        for (j, h) in hosts.iter().enumerate() {
            if let Err(why) = server_host(h) {
                p.push((format!("{at}.hosts[{j}]"), why));
            }
        }
        match tls {
            None if https => p.push((format!("{at}.tls"), "an HTTPS server needs tls settings".into())),
            None => {}
            Some(t) => server_tls(p, &format!("{at}.tls"), t, https),
        }
    }
}

/// `[namespace/]host`: the namespace `.`, `*` or a name; the host a DNS name, `*.suffix` or `*`.
fn server_host(h: &str) -> Result<(), String> {
    let (ns, host) = match h.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    };
    if let Some(ns) = ns {
        if ns != "." && ns != "*" && !is_dns1123(ns, 63, false) {
            return Err(format!("{ns:?} is not `.`, `*` or a namespace"));
        }
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = host == "*"
        || (!name.is_empty()
            && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name, `*.suffix` or `*`"))
    }
}

fn server_tls(p: &mut Problems, at: &str, t: &ServerTlsSettings, https: bool) {
    let ServerTlsSettings {
        https_redirect,
        mode,
        server_certificate,
        private_key,
        ca_certificates,
        credential_name,
        min_protocol_version,
        max_protocol_version,
        credential_names,
        tls_certificates,
        ca_crl,
        subject_alt_names,
        verify_certificate_spki,
        verify_certificate_hash,
        cipher_suites,
    } = t;
    for (field, value) in [
        ("credentialNames", credential_names),
        ("tlsCertificates", tls_certificates),
        ("caCrl", ca_crl),
        ("subjectAltNames", subject_alt_names),
        ("verifyCertificateSpki", verify_certificate_spki),
        ("verifyCertificateHash", verify_certificate_hash),
        ("cipherSuites", cipher_suites),
    ] {
        unsupported(p, format!("{at}.{field}"), value);
    }
    if *https_redirect && https {
        p.push((format!("{at}.httpsRedirect"), "only an HTTP server redirects to https".into()));
    }
    if !https {
        if mode.is_some() || credential_name.is_some() || server_certificate.is_some() {
            p.push((
                format!("{at}.mode"),
                "TLS settings are for HTTPS servers (an HTTP server may only httpsRedirect)".into(),
            ));
        }
        return;
    }
    match mode {
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual) => {}
        None => p.push((format!("{at}.mode"), "an HTTPS server needs a mode (SIMPLE or MUTUAL)".into())),
        Some(other) => p.push((format!("{at}.mode"), format!("{other:?} is {NOT_YET} (SIMPLE and MUTUAL are)"))),
    }
    match (credential_name, server_certificate, private_key) {
        (Some(name), None, None) => {
            if !weft_model::gateway::credential_name_ok(name) {
                p.push((format!("{at}.credentialName"), format!("{name:?} is not a Secret name")));
            }
        }
        (Some(_), _, _) => p.push((
            format!("{at}.credentialName"),
            "either credentialName or serverCertificate and privateKey, not both".into(),
        )),
        (None, Some(_), Some(_)) => {
            if *mode == Some(ServerTlsMode::Mutual) && ca_certificates.is_none() {
                p.push((format!("{at}.caCertificates"), "MUTUAL needs caCertificates to verify clients with".into()));
            }
        }
        (None, _, _) => p.push((
            format!("{at}.credentialName"),
            "an HTTPS server needs credentialName, or serverCertificate and privateKey".into(),
        )),
    }
    if let Some(v @ (TlsProtocol::V1_0 | TlsProtocol::V1_1)) = min_protocol_version {
        p.push((format!("{at}.minProtocolVersion"), format!("{v:?}: Weft speaks TLS 1.2 and 1.3 only")));
    }
    if max_protocol_version.is_some_and(|v| v != TlsProtocol::Auto && v != TlsProtocol::V1_3) {
        p.push((format!("{at}.maxProtocolVersion"), NOT_YET.into()));
    }
}
