//! AuthorizationPolicy: action, selector, rules.

use super::{unsupported, Problems, NOT_YET};
use crate::istio::types::*;
use crate::istio::Resource;

pub(super) fn check(ap: &AuthorizationPolicy, r: &Resource, p: &mut Problems) {
    let AuthorizationPolicy { selector, target_ref, target_refs, action, provider, rules } = ap;
    unsupported(p, "spec.targetRef".into(), target_ref);
    unsupported(p, "spec.targetRefs".into(), target_refs);
    unsupported(p, "spec.provider".into(), provider);
    if *action == Some(Action::Custom) {
        p.push(("spec.action".into(), format!("CUSTOM (external authorization) is {NOT_YET}")));
    }
    if let Some(s) = selector {
        if s.match_labels.is_empty() {
            p.push(("spec.selector.matchLabels".into(), "a selector needs at least one label".into()));
        }
    }
    let _ = r;
    for (i, rule) in rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, f) in rule.from.iter().enumerate() {
            let s = &f.source;
            let sp = format!("{at}.from[{j}].source");
            for (field, v) in [
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
            ] {
                unsupported(p, format!("{sp}.{field}"), v);
            }
            for (field, blocks) in [("ipBlocks", &s.ip_blocks), ("notIpBlocks", &s.not_ip_blocks)] {
                cidrs(p, &format!("{sp}.{field}"), blocks);
            }
            if *s == AuthzSource::default() {
                p.push((sp, "an empty source is not allowed".into()));
            }
        }
        for (j, t) in rule.to.iter().enumerate() {
            if t.operation == AuthzOperation::default() {
                p.push((format!("{at}.to[{j}].operation"), "an empty operation is not allowed".into()));
            }
            for (field, ports) in [("ports", &t.operation.ports), ("notPorts", &t.operation.not_ports)] {
                port_numbers(p, &format!("{at}.to[{j}].operation.{field}"), ports);
            }
            // Istio ≥ 1.20's URI templates: refused by name until built, never taken literally
            // (a DENY on `/admin/{**}` that matched nothing would be a silent hole).
            for (field, paths) in [("paths", &t.operation.paths), ("notPaths", &t.operation.not_paths)] {
                for (k, path) in paths.iter().enumerate() {
                    if path.contains("{*}") || path.contains("{**}") {
                        p.push((
                            format!("{at}.to[{j}].operation.{field}[{k}]"),
                            format!("{path:?}: the {{*}} and {{**}} path templates are {NOT_YET}"),
                        ));
                    }
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let values = [("values", &c.values), ("notValues", &c.not_values)];
            match &c.key {
                ConditionKey::SourcePrincipal | ConditionKey::SourceNamespace => {}
                ConditionKey::SourceIp => {
                    for (field, v) in values {
                        cidrs(p, &format!("{at}.when[{j}].{field}"), v);
                    }
                }
                ConditionKey::DestinationPort => {
                    for (field, v) in values {
                        port_numbers(p, &format!("{at}.when[{j}].{field}"), v);
                    }
                }
                ConditionKey::RequestHeader(name) if weft_model::authz::header_name_ok(&name.to_ascii_lowercase()) => {}
                ConditionKey::RequestHeader(name) => p.push((
                    format!("{at}.when[{j}].key"),
                    format!("{name:?} is not a header name (pseudo-headers such as :path are {NOT_YET})"),
                )),
                ConditionKey::Other(key) => p.push((
                    format!("{at}.when[{j}].key"),
                    format!("{key:?} is {NOT_YET} (request.headers[..], source.principal, source.namespace, source.ip, destination.port are)"),
                )),
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                p.push((format!("{at}.when[{j}]"), "a condition needs values or notValues".into()));
            }
        }
    }
}

fn cidrs(p: &mut Problems, at: &str, blocks: &[String]) {
    for (k, b) in blocks.iter().enumerate() {
        if weft_model::authz::Cidr::parse(b).is_none() {
            p.push((format!("{at}[{k}]"), format!("{b:?} is not an IP or CIDR")));
        }
    }
}

fn port_numbers(p: &mut Problems, at: &str, ports: &[String]) {
    for (k, port) in ports.iter().enumerate() {
        if !port.parse::<u16>().is_ok_and(|n| n > 0) {
            p.push((format!("{at}[{k}]"), format!("{port:?} is not a port number (1-65535)")));
        }
    }
}
