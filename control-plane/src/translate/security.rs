//! PeerAuthentication → the inbound mTLS mode; AuthorizationPolicy → the
//! policies the workload's sidecar enforces.

use super::{by_precedence, ROOT_NAMESPACE};
use crate::istio::types::{
    Action, AuthorizationPolicy, AuthzCondition, AuthzFrom, AuthzOperation, AuthzRule, AuthzSource, AuthzTo, MtlsMode,
    PeerAuthentication, PeerMtls, WorkloadSelector,
};
use crate::istio::Spec;
use weft_model as model;

/// The mTLS mode for `workload`: workload-level (selector matches) over
/// namespace-level over mesh-level (root namespace); UNSET inherits; the
/// default is PERMISSIVE (Istio). Ties go to the first by name.
pub fn peer_authentication(resources: &[crate::istio::Resource], workload: &model::Workload) -> model::MtlsMode {
    let levels = by_precedence(
        resources,
        workload,
        |s| match s {
            Spec::PeerAuthentication(pa) => Some(pa),
            _ => None,
        },
        |pa| pa.selector.as_ref().map(|s| &s.match_labels),
    );
    let mode_of = |pa: &PeerAuthentication| {
        // `selector` chose the level; `portLevelMtls` is refused by validation.
        let PeerAuthentication { selector: _, mtls, port_level_mtls: _ } = pa;
        match mtls.as_ref().and_then(|PeerMtls { mode }| *mode) {
            Some(MtlsMode::Strict) => Some(model::MtlsMode::Strict),
            Some(MtlsMode::Permissive) => Some(model::MtlsMode::Permissive),
            Some(MtlsMode::Disable) => Some(model::MtlsMode::Disable),
            Some(MtlsMode::Unset) | None => None,
        }
    };
    let mode = levels.iter().filter_map(|level| level.first()).find_map(|(_, pa)| mode_of(pa));
    mode.unwrap_or(model::MtlsMode::Permissive)
}

/// The AuthorizationPolicies that apply to `workload`: those of its namespace
/// whose selector matches (or that have none), and those of the root namespace
/// (mesh-wide without a selector, any namespace with one).
pub fn authorization(
    resources: &[crate::istio::Resource],
    workload: &model::Workload,
) -> Vec<model::authz::AuthzPolicy> {
    use model::authz as az;
    let mut out = Vec::new();
    for r in resources {
        let Spec::AuthorizationPolicy(ap) = &r.spec else { continue };
        // `targetRef(s)`, `provider` and CUSTOM are refused by validation.
        let AuthorizationPolicy { selector, target_ref: _, target_refs: _, action, provider: _, rules } = ap;
        let ns_ok = r.namespace() == workload.namespace || r.namespace() == ROOT_NAMESPACE;
        let selected = selector.as_ref().is_none_or(|WorkloadSelector { match_labels }| {
            match_labels.iter().all(|(k, v)| workload.labels.get(k) == Some(v))
        });
        if !ns_ok || !selected {
            continue;
        }
        let action = match action {
            Some(Action::Deny) => az::AuthzAction::Deny,
            Some(Action::Audit) => az::AuthzAction::Audit,
            Some(Action::Allow) | None => az::AuthzAction::Allow,
            // Refused by validation; were one to get here, it denies (fail closed).
            Some(Action::Custom) => az::AuthzAction::Deny,
        };
        out.push(az::AuthzPolicy {
            name: format!("ns[{}]-policy[{}]", r.namespace(), r.name()),
            action,
            rules: rules.iter().flatten().map(rule).collect(),
            dry_run: r.metadata.annotations.get("istio.io/dry-run").is_some_and(|v| v == "true"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn rule(rule: &AuthzRule) -> model::authz::AuthzRule {
    let AuthzRule { from, to, when } = rule;
    model::authz::AuthzRule {
        from: from.iter().map(|AuthzFrom { source }| self::source(source)).collect(),
        to: to.iter().map(|AuthzTo { operation }| self::operation(operation)).collect(),
        when: when
            .iter()
            .map(|AuthzCondition { key, values, not_values }| model::authz::AuthzCondition {
                key: key.clone(),
                values: values.clone(),
                not_values: not_values.clone(),
            })
            .collect(),
    }
}

fn source(s: &AuthzSource) -> model::authz::AuthzSource {
    let AuthzSource {
        principals,
        not_principals,
        namespaces,
        not_namespaces,
        ip_blocks,
        not_ip_blocks,
        // Refused by validation (JWT and remote addresses come with issue 19):
        request_principals: _,
        not_request_principals: _,
        remote_ip_blocks: _,
        not_remote_ip_blocks: _,
        service_accounts: _,
        not_service_accounts: _,
    } = s;
    model::authz::AuthzSource {
        principals: principals.clone(),
        not_principals: not_principals.clone(),
        namespaces: namespaces.clone(),
        not_namespaces: not_namespaces.clone(),
        ip_blocks: ip_blocks.clone(),
        not_ip_blocks: not_ip_blocks.clone(),
    }
}

fn operation(o: &AuthzOperation) -> model::authz::AuthzOperation {
    let AuthzOperation { hosts, not_hosts, ports, not_ports, methods, not_methods, paths, not_paths } = o;
    model::authz::AuthzOperation {
        hosts: hosts.clone(),
        not_hosts: not_hosts.clone(),
        ports: ports.clone(),
        not_ports: not_ports.clone(),
        methods: methods.clone(),
        not_methods: not_methods.clone(),
        paths: paths.clone(),
        not_paths: not_paths.clone(),
    }
}
