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
            for (k, b) in s.ip_blocks.iter().chain(&s.not_ip_blocks).enumerate() {
                if weft_model::authz::parse_cidr(b).is_none() {
                    p.push((format!("{sp}.ipBlocks[{k}]"), format!("{b:?} is not an IP or CIDR")));
                }
            }
            if *s == AuthzSource::default() {
                p.push((sp, "an empty source is not allowed".into()));
            }
        }
        for (j, t) in rule.to.iter().enumerate() {
            if t.operation == AuthzOperation::default() {
                p.push((format!("{at}.to[{j}].operation"), "an empty operation is not allowed".into()));
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
            if !weft_model::authz::supported_condition_key(&c.key) {
                p.push((
                    format!("{at}.when[{j}].key"),
                    format!("{:?} is {NOT_YET} (request.headers[..], source.principal, source.namespace, source.ip, destination.port are)", c.key),
                ));
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                p.push((format!("{at}.when[{j}]"), "a condition needs values or notValues".into()));
            }
        }
    }
}
