//! PeerAuthentication → the inbound mTLS mode; RequestAuthentication → the
//! JWT issuers it accepts; AuthorizationPolicy → the policies its sidecar enforces.

use super::common::{by_precedence, ROOT_NAMESPACE};
use crate::istio::types::{
    Action, AuthorizationPolicy, AuthzCondition, AuthzFrom, AuthzOperation, AuthzRule, AuthzSource, AuthzTo,
    ClaimToHeader, ConditionKey, JwtHeader, JwtRule, MtlsMode, PeerAuthentication, PeerMtls, RequestAuthentication,
    WorkloadSelector,
};
use crate::istio::Spec;
use weft_model as model;
use weft_model::authz as az;

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

/// Whether a namespaced, optionally selecting policy applies to `workload`: one of
/// its namespace whose selector matches (or that has none), or one of the root namespace.
fn applies(r: &crate::istio::Resource, selector: Option<&WorkloadSelector>, workload: &model::Workload) -> bool {
    let ns_ok = r.namespace() == workload.namespace || r.namespace() == ROOT_NAMESPACE;
    ns_ok
        && selector.is_none_or(|WorkloadSelector { match_labels }| {
            match_labels.iter().all(|(k, v)| workload.labels.get(k) == Some(v))
        })
}

/// The JWT rules of every RequestAuthentication that applies to `workload` (Istio
/// merges them all), ordered by policy name. A `jwksUri` whose key set the control
/// plane has not fetched gives a rule without keys: its tokens are refused.
pub fn request_authentication(
    resources: &[crate::istio::Resource],
    workload: &model::Workload,
    warnings: &mut Vec<String>,
) -> Vec<model::jwt::JwtRule> {
    let mut policies: Vec<(&crate::istio::Resource, &RequestAuthentication)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::RequestAuthentication(ra) if applies(r, ra.selector.as_ref(), workload) => Some((r, ra)),
            _ => None,
        })
        .collect();
    policies.sort_by_key(|(r, _)| (r.namespace().to_string(), r.name().to_string()));
    let mut out = Vec::new();
    for (r, ra) in policies {
        // `targetRef(s)` are refused by validation.
        let RequestAuthentication { selector: _, target_ref: _, target_refs: _, jwt_rules } = ra;
        for rule in jwt_rules {
            let JwtRule {
                issuer,
                audiences,
                jwks_uri,
                jwks,
                from_headers,
                from_params,
                // Refused by validation.
                from_cookies: _,
                output_payload_to_header,
                forward_original_token,
                output_claim_to_headers,
                // Used by the control plane's fetch (`jwks`).
                timeout: _,
                space_delimited_claims: _,
            } = rule;
            // One rule per issuer, the first by namespace/name (Envoy has one provider per issuer).
            if out.iter().any(|o: &model::jwt::JwtRule| o.issuer == *issuer) {
                warnings.push(format!(
                    "RequestAuthentication {}/{}: issuer {issuer:?} is already configured by an earlier policy; this rule is ignored",
                    r.namespace(),
                    r.name()
                ));
                continue;
            }
            let jwks = match (jwks, jwks_uri) {
                (Some(jwks), _) => jwks.clone(),
                (None, uri) => {
                    warnings.push(format!(
                        "RequestAuthentication {}/{}: issuer {issuer:?} has no key set yet ({}); until it has, its tokens are refused (401)",
                        r.namespace(),
                        r.name(),
                        uri.as_deref().map_or("no jwksUri".to_string(), |u| format!("the control plane fetches {u}")),
                    ));
                    String::new()
                }
            };
            out.push(model::jwt::JwtRule {
                issuer: issuer.clone(),
                audiences: audiences.clone(),
                jwks,
                from_headers: from_headers
                    .iter()
                    .map(|JwtHeader { name, prefix }| model::jwt::JwtHeader {
                        name: name.to_ascii_lowercase(),
                        prefix: prefix.clone(),
                    })
                    .collect(),
                from_params: from_params.clone(),
                forward_original_token: *forward_original_token,
                output_payload_to_header: output_payload_to_header.as_ref().map(|h| h.to_ascii_lowercase()),
                output_claim_to_headers: output_claim_to_headers
                    .iter()
                    .map(|ClaimToHeader { header, claim }| model::jwt::ClaimToHeader {
                        header: header.to_ascii_lowercase(),
                        claim: claim.clone(),
                    })
                    .collect(),
            });
        }
    }
    out
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
        if !applies(r, selector.as_ref(), workload) {
            continue;
        }
        let action = match action {
            Some(Action::Deny) => az::AuthzAction::Deny,
            Some(Action::Audit) => az::AuthzAction::Audit,
            Some(Action::Allow) | None => az::AuthzAction::Allow,
            // Refused by validation; were one to get here, it denies (fail closed).
            Some(Action::Custom) => az::AuthzAction::Deny,
        };
        // A value that does not parse is refused by validation; were one to get here, the
        // policy fails closed: an ALLOW allows nothing, a DENY denies every request.
        let rules = match rules.iter().flatten().map(rule).collect::<Result<Vec<_>, String>>() {
            Ok(rules) => rules,
            Err(why) => {
                tracing::error!(policy = r.name(), "authorization policy fails closed: {why}");
                match action {
                    az::AuthzAction::Deny => vec![az::AuthzRule::default()],
                    az::AuthzAction::Allow | az::AuthzAction::Audit => Vec::new(),
                }
            }
        };
        out.push(az::AuthzPolicy {
            name: format!("ns[{}]-policy[{}]", r.namespace(), r.name()),
            action,
            rules,
            dry_run: r.metadata.annotations.get("istio.io/dry-run").is_some_and(|v| v == "true"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

type Matchers = Result<Vec<az::Matcher>, String>;

fn rule(rule: &AuthzRule) -> Result<az::AuthzRule, String> {
    let AuthzRule { from, to, when } = rule;
    Ok(az::AuthzRule {
        from: from.iter().flatten().map(|AuthzFrom { source: s }| self::source(s)).collect::<Result<_, _>>()?,
        to: to.iter().flatten().map(|AuthzTo { operation: o }| self::operation(o)).collect::<Result<_, _>>()?,
        when: when.iter().flatten().map(condition).collect::<Result<_, _>>()?,
    })
}

/// Istio's wildcard forms: `abc` exact, `abc*` prefix, `*abc` suffix, `*` any non-empty value.
fn pattern(v: &str) -> az::Pattern {
    if v == "*" {
        az::Pattern::Present
    } else if let Some(s) = v.strip_prefix('*') {
        az::Pattern::Suffix(s.to_string())
    } else if let Some(p) = v.strip_suffix('*') {
        az::Pattern::Prefix(p.to_string())
    } else {
        az::Pattern::Exact(v.to_string())
    }
}

fn patterns(yes: &[String], no: &[String], each: fn(&str) -> az::Pattern) -> az::Values<az::Pattern> {
    az::Values { any_of: yes.iter().map(|v| each(v)).collect(), none_of: no.iter().map(|v| each(v)).collect() }
}

fn parsed<T>(yes: &[String], no: &[String], each: fn(&str) -> Option<T>) -> Result<az::Values<T>, String> {
    let all = |list: &[String]| -> Result<Vec<T>, String> {
        list.iter().map(|v| each(v).ok_or_else(|| format!("{v:?} does not parse"))).collect()
    };
    Ok(az::Values { any_of: all(yes)?, none_of: all(no)? })
}

fn port(v: &str) -> Option<u16> {
    v.parse().ok().filter(|p| *p > 0)
}

/// Adds a matcher for an attribute that the policy names (values or not-values).
fn push<T>(
    out: &mut Vec<az::Matcher>,
    yes: &[String],
    no: &[String],
    make: impl FnOnce() -> Result<T, String>,
    wrap: fn(T) -> az::Matcher,
) -> Result<(), String> {
    if !(yes.is_empty() && no.is_empty()) {
        out.push(wrap(make()?));
    }
    Ok(())
}

fn source(s: &AuthzSource) -> Matchers {
    let AuthzSource {
        principals,
        not_principals,
        namespaces,
        not_namespaces,
        ip_blocks,
        not_ip_blocks,
        request_principals,
        not_request_principals,
        // Refused by validation (remote addresses come with the ingress gateway):
        remote_ip_blocks: _,
        not_remote_ip_blocks: _,
        service_accounts: _,
        not_service_accounts: _,
    } = s;
    let mut out = Vec::new();
    push(
        &mut out,
        principals,
        not_principals,
        || Ok(patterns(principals, not_principals, pattern)),
        az::Matcher::Principal,
    )?;
    push(
        &mut out,
        namespaces,
        not_namespaces,
        || Ok(patterns(namespaces, not_namespaces, pattern)),
        az::Matcher::Namespace,
    )?;
    push(
        &mut out,
        ip_blocks,
        not_ip_blocks,
        || parsed(ip_blocks, not_ip_blocks, az::Cidr::parse),
        az::Matcher::SourceIp,
    )?;
    let (yes, no) =
        (request_principals.as_deref().unwrap_or_default(), not_request_principals.as_deref().unwrap_or_default());
    push(&mut out, yes, no, || Ok(patterns(yes, no, pattern)), az::Matcher::RequestPrincipal)?;
    nonempty(out, "source")
}

fn operation(o: &AuthzOperation) -> Matchers {
    let AuthzOperation { hosts, not_hosts, ports, not_ports, methods, not_methods, paths, not_paths } = o;
    let lower = |v: &str| pattern(&v.to_ascii_lowercase());
    let mut out = Vec::new();
    push(&mut out, hosts, not_hosts, || Ok(patterns(hosts, not_hosts, lower)), az::Matcher::Host)?;
    push(&mut out, ports, not_ports, || parsed(ports, not_ports, port), az::Matcher::Port)?;
    push(&mut out, methods, not_methods, || Ok(patterns(methods, not_methods, pattern)), az::Matcher::Method)?;
    push(&mut out, paths, not_paths, || Ok(patterns(paths, not_paths, pattern)), az::Matcher::Path)?;
    nonempty(out, "operation")
}

fn condition(c: &AuthzCondition) -> Result<az::Matcher, String> {
    let AuthzCondition { key, values, not_values } = c;
    Ok(match key {
        ConditionKey::SourcePrincipal => az::Matcher::Principal(patterns(values, not_values, pattern)),
        ConditionKey::SourceNamespace => az::Matcher::Namespace(patterns(values, not_values, pattern)),
        ConditionKey::SourceIp => az::Matcher::SourceIp(parsed(values, not_values, az::Cidr::parse)?),
        ConditionKey::DestinationPort => az::Matcher::Port(parsed(values, not_values, port)?),
        // On a header, `*` means present, even empty (Istio's `present_match`).
        ConditionKey::RequestHeader(name) => {
            let header = |v: &str| if v == "*" { az::Pattern::Any } else { pattern(v) };
            let az::Values { any_of, none_of } = patterns(values, not_values, header);
            az::Matcher::Header(az::HeaderValues { name: name.to_ascii_lowercase(), any_of, none_of })
        }
        ConditionKey::RequestPrincipal => az::Matcher::RequestPrincipal(patterns(values, not_values, pattern)),
        ConditionKey::RequestAudiences => az::Matcher::RequestAudience(patterns(values, not_values, pattern)),
        ConditionKey::RequestPresenter => az::Matcher::RequestPresenter(patterns(values, not_values, pattern)),
        ConditionKey::RequestClaim(path) => {
            let az::Values { any_of, none_of } = patterns(values, not_values, pattern);
            az::Matcher::RequestClaim(az::ClaimValues { claim: path.clone(), any_of, none_of })
        }
        ConditionKey::Other(key) => return Err(format!("condition key {key:?} is not supported")),
    })
}

/// A source or operation that names nothing would match every request: refused by
/// validation, and failed closed here should one get through.
fn nonempty(matchers: Vec<az::Matcher>, what: &str) -> Matchers {
    if matchers.is_empty() {
        return Err(format!("an empty {what}"));
    }
    Ok(matchers)
}
