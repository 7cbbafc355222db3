//! AuthorizationPolicy: action, selector, rules.

use super::common::{is_set, unsupported, Problems, NOT_YET};
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
        for (field, empty) in [
            ("from", rule.from.as_ref().is_some_and(Vec::is_empty)),
            ("to", rule.to.as_ref().is_some_and(Vec::is_empty)),
            ("when", rule.when.as_ref().is_some_and(Vec::is_empty)),
        ] {
            if empty {
                p.push((format!("{at}.{field}"), format!("`{field}` must not be empty (leave it out to match any)")));
            }
        }
        for (j, f) in rule.from.iter().flatten().enumerate() {
            let s = &f.source;
            let sp = format!("{at}.from[{j}].source");
            for (field, v) in [
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
            // Empty lists are as absent (Istio): a source naming nothing would match any caller.
            let named =
                [&s.principals, &s.not_principals, &s.namespaces, &s.not_namespaces, &s.ip_blocks, &s.not_ip_blocks]
                    .iter()
                    .any(|v| !v.is_empty())
                    || [&s.request_principals, &s.not_request_principals]
                        .iter()
                        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
                    || [&s.remote_ip_blocks, &s.not_remote_ip_blocks, &s.service_accounts, &s.not_service_accounts]
                        .into_iter()
                        .any(is_set);
            if !named {
                p.push((sp.clone(), "an empty source is not allowed".into()));
            }
            for (field, v) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
            ] {
                no_empty_values(p, &format!("{sp}.{field}"), v);
            }
            for (field, v) in
                [("requestPrincipals", &s.request_principals), ("notRequestPrincipals", &s.not_request_principals)]
            {
                no_empty_values(p, &format!("{sp}.{field}"), v.as_deref().unwrap_or_default());
            }
        }
        for (j, t) in rule.to.iter().flatten().enumerate() {
            if t.operation == AuthzOperation::default() {
                p.push((format!("{at}.to[{j}].operation"), "an empty operation is not allowed".into()));
            }
            let o = &t.operation;
            for (field, v) in [
                ("hosts", &o.hosts),
                ("notHosts", &o.not_hosts),
                ("methods", &o.methods),
                ("notMethods", &o.not_methods),
                ("paths", &o.paths),
                ("notPaths", &o.not_paths),
            ] {
                no_empty_values(p, &format!("{at}.to[{j}].operation.{field}"), v);
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
        for (j, c) in rule.when.iter().flatten().enumerate() {
            let values = [("values", &c.values), ("notValues", &c.not_values)];
            match &c.key {
                ConditionKey::SourcePrincipal
                | ConditionKey::SourceNamespace
                | ConditionKey::RequestPrincipal
                | ConditionKey::RequestAudiences
                | ConditionKey::RequestPresenter => {}
                ConditionKey::RequestClaim(path) if path.iter().all(|n| !n.is_empty()) => {}
                ConditionKey::RequestClaim(_) => {
                    p.push((format!("{at}.when[{j}].key"), "a claim name must not be empty".into()));
                }
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
                    format!("{key:?} is {NOT_YET} (request.headers[..], request.auth.*, source.principal, source.namespace, source.ip, destination.port are)"),
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

/// Istio refuses empty strings among values (`CheckEmptyValues`): `""` would match nothing
/// (or, negated, everything).
fn no_empty_values(p: &mut Problems, at: &str, values: &[String]) {
    for (k, v) in values.iter().enumerate() {
        if v.is_empty() {
            p.push((format!("{at}[{k}]"), "must not be empty".into()));
        }
    }
}
