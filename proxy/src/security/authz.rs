//! Authorization: Istio's AuthorizationPolicy decision, evaluated per request
//! on the inbound side against the peer's *proven* identity (from the mTLS
//! certificate, never a header). Policies are compiled with the config.
//!
//! Order (shared/ISTIO-SEMANTICS.md §3.2): any DENY match → 403; no ALLOW
//! policy → allow; any ALLOW match → allow; otherwise 403. AUDIT never
//! changes the decision. Dry-run policies are evaluated and logged only.
//!
//! A TCP connection ([`decide_tcp`]) has no HTTP attributes: as in Istio, a rule with an
//! HTTP-only field (hosts, methods, paths, headers, request principals, JWT claims) is
//! dropped from an ALLOW policy, and in DENY and AUDIT rules those fields are ignored.

use http::HeaderMap;
use std::net::IpAddr;
use weft_model::authz::{self as model, AuthzAction, Cidr, Pattern, Values};

/// What a request offers to authorization.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The peer's proven SPIFFE ID (`spiffe://td/ns/x/sa/y`); `None` for plaintext.
    pub principal: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub host: &'a str,
    /// The port the caller was going to (the original destination's).
    pub port: u16,
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The end user of a verified JWT, if the request carried one.
    pub end_user: Option<&'a crate::security::jwt::EndUser>,
}

impl Request<'_> {
    /// The principal as policies write it: without `spiffe://`.
    fn principal(&self) -> Option<&str> {
        self.principal.map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
    }

    /// The namespace in the principal (`…/ns/<ns>/…`).
    fn namespace(&self) -> Option<&str> {
        let p = self.principal()?;
        let i = p.find("/ns/")? + 4;
        Some(p[i..].split('/').next().unwrap_or(""))
    }
}

/// A matcher ready for requests: the model's own, but a header's name parsed once.
#[derive(Debug, Clone)]
enum Matcher {
    Attribute(model::Matcher),
    Header(http::HeaderName, Values<Pattern>),
    /// A JWT claim by path.
    Claim(Vec<String>, Values<Pattern>),
    /// A header name that cannot be looked up (refused by config validation); its policy
    /// fails closed when compiled.
    Never,
}

fn text(v: &Values<Pattern>, value: Option<&str>) -> bool {
    v.admit(value, |p, s| p.matches(s))
}

/// A list attribute (audiences, a list claim): some value must match `anyOf`, none `noneOf`.
fn list(v: &Values<Pattern>, values: &[&str]) -> bool {
    let yes = v.any_of.is_empty() || values.iter().any(|s| v.any_of.iter().any(|p| p.matches(s)));
    yes && !values.iter().any(|s| v.none_of.iter().any(|p| p.matches(s)))
}

impl Matcher {
    /// Whether it reads an HTTP request (a TCP connection has no such attribute).
    fn http_only(&self) -> bool {
        use model::Matcher as M;
        match self {
            Matcher::Attribute(M::Principal(_) | M::Namespace(_) | M::SourceIp(_) | M::Port(_)) => false,
            Matcher::Attribute(_) | Matcher::Header(..) | Matcher::Claim(..) | Matcher::Never => true,
        }
    }

    fn compile(m: &model::Matcher) -> Self {
        match m {
            model::Matcher::Header(h) => match http::HeaderName::from_bytes(h.name.as_bytes()) {
                Ok(name) => Matcher::Header(name, Values { any_of: h.any_of.clone(), none_of: h.none_of.clone() }),
                Err(_) => Matcher::Never,
            },
            model::Matcher::RequestClaim(c) => {
                Matcher::Claim(c.claim.clone(), Values { any_of: c.any_of.clone(), none_of: c.none_of.clone() })
            }
            other => Matcher::Attribute(other.clone()),
        }
    }

    fn matches(&self, req: &Request<'_>, host: &str) -> bool {
        use model::Matcher as M;
        match self {
            Matcher::Attribute(M::Principal(v)) => text(v, req.principal()),
            Matcher::Attribute(M::Namespace(v)) => text(v, req.namespace()),
            Matcher::Attribute(M::SourceIp(v)) => v.admit(req.source_ip, |c: &Cidr, ip| c.contains(ip)),
            Matcher::Attribute(M::Host(v)) => text(v, Some(host)),
            Matcher::Attribute(M::Port(v)) => v.admit(Some(req.port), |p, port| *p == port),
            Matcher::Attribute(M::Method(v)) => text(v, Some(req.method)),
            Matcher::Attribute(M::Path(v)) => text(v, Some(req.path)),
            Matcher::Header(name, v) => text(v, crate::http::headers::header_value(req.headers, name).as_deref()),
            Matcher::Attribute(M::RequestPrincipal(v)) => text(v, req.end_user.and_then(|u| u.principal.as_deref())),
            Matcher::Attribute(M::RequestPresenter(v)) => text(v, req.end_user.and_then(|u| u.presenter.as_deref())),
            Matcher::Attribute(M::RequestAudience(v)) => {
                let audiences: Vec<&str> =
                    req.end_user.map_or(Vec::new(), |u| u.audiences.iter().map(String::as_str).collect());
                list(v, &audiences)
            }
            Matcher::Claim(path, v) => list(v, &req.end_user.map_or(Vec::new(), |u| u.claim(path))),
            // Compiled into `Header`, `Claim` or `Never`.
            Matcher::Attribute(M::Header(_)) | Matcher::Attribute(M::RequestClaim(_)) | Matcher::Never => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    from: Vec<Vec<Matcher>>,
    to: Vec<Vec<Matcher>>,
    when: Vec<Matcher>,
    /// Some matcher reads HTTP: on TCP an ALLOW drops the rule, a DENY ignores those matchers.
    http_only: bool,
}

/// What is being authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Http,
    Tcp,
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub action: AuthzAction,
    pub dry_run: bool,
    rules: Vec<Rule>,
}

impl Policy {
    pub fn compile(p: &model::AuthzPolicy) -> Self {
        let all = |g: &Vec<model::Matcher>| g.iter().map(Matcher::compile).collect::<Vec<_>>();
        let mut rules: Vec<Rule> = p
            .rules
            .iter()
            .map(|r| {
                let (from, to, when) = (
                    r.from.iter().map(all).collect::<Vec<_>>(),
                    r.to.iter().map(all).collect::<Vec<_>>(),
                    all(&r.when),
                );
                let http_only = from.iter().chain(&to).flatten().chain(&when).any(Matcher::http_only);
                Rule { from, to, when, http_only }
            })
            .collect();
        let unusable = rules
            .iter()
            .any(|r| r.from.iter().chain(&r.to).flatten().chain(&r.when).any(|m| matches!(m, Matcher::Never)));
        if unusable {
            // Fail closed: an ALLOW that cannot be evaluated allows nothing, a DENY denies all.
            tracing::error!(policy = %p.name, "authorization policy with an unusable matcher fails closed");
            rules = match p.action {
                AuthzAction::Deny => {
                    vec![Rule { from: Vec::new(), to: Vec::new(), when: Vec::new(), http_only: false }]
                }
                AuthzAction::Allow | AuthzAction::Audit => Vec::new(),
            };
        }
        Policy { id: p.name.clone(), action: p.action, dry_run: p.dry_run, rules }
    }

    /// The index of the first rule that matches.
    fn matching_rule(&self, req: &Request<'_>, layer: Layer) -> Option<usize> {
        let host: std::borrow::Cow<str> = match req.host.bytes().any(|b| b.is_ascii_uppercase()) {
            true => req.host.to_ascii_lowercase().into(),
            false => req.host.into(),
        };
        let tcp = layer == Layer::Tcp;
        // On TCP an ALLOW rule reading HTTP is dropped (the policy narrows).
        self.rules
            .iter()
            .position(|r| !(tcp && r.http_only && self.action == AuthzAction::Allow) && r.matches(req, &host, tcp))
    }
}

impl Rule {
    /// On `tcp`, HTTP-only matchers are ignored (DENY and AUDIT rules broaden).
    fn matches(&self, req: &Request<'_>, host: &str, tcp: bool) -> bool {
        let all = |g: &[Matcher]| g.iter().all(|m| (tcp && m.http_only()) || m.matches(req, host));
        (self.from.is_empty() || self.from.iter().any(|g| all(g)))
            && (self.to.is_empty() || self.to.iter().any(|g| all(g)))
            && all(&self.when)
    }
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied: by which policy and rule (`ns[..]-policy[..]-rule[i]`), or because no ALLOW matched.
    Deny(String),
}

/// Istio's decision for `req` under `policies`.
pub fn decide(policies: &[Policy], req: &Request<'_>) -> Decision {
    decide_on(policies, req, Layer::Http)
}

/// Istio's decision for a TCP connection from `principal` (none: plaintext) at `source_ip`
/// to `port`, under `policies`.
pub(crate) fn decide_tcp(
    policies: &[Policy],
    principal: Option<&str>,
    source_ip: Option<IpAddr>,
    port: u16,
) -> Decision {
    let headers = HeaderMap::new();
    let req = Request { principal, source_ip, host: "", port, method: "", path: "", headers: &headers, end_user: None };
    decide_on(policies, &req, Layer::Tcp)
}

fn decide_on(policies: &[Policy], req: &Request<'_>, layer: Layer) -> Decision {
    for p in policies.iter().filter(|p| p.dry_run) {
        if let Some(i) = p.matching_rule(req, layer) {
            tracing::info!(policy = %p.id, rule = i, action = ?p.action, "dry-run authorization policy matched (not enforced)");
        }
    }
    let live = || policies.iter().filter(|p| !p.dry_run);
    for p in live().filter(|p| p.action == AuthzAction::Deny) {
        if let Some(i) = p.matching_rule(req, layer) {
            return Decision::Deny(format!("{}-rule[{i}]", p.id));
        }
    }
    let mut allows = live().filter(|p| p.action == AuthzAction::Allow).peekable();
    if allows.peek().is_none() {
        return Decision::Allow;
    }
    if allows.any(|p| p.matching_rule(req, layer).is_some()) {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".into())
    }
}

#[cfg(test)]
mod tests {
    //! The matching engine on the typed model. Istio's semantics, from
    //! AuthorizationPolicy YAML through translation to this decision, are
    //! tested table by table in control-plane/tests/authz.rs.
    use super::*;

    const GW: &str = "spiffe://cluster.local/ns/production/sa/api-gateway";

    fn policies(yaml: &str) -> Vec<Policy> {
        let list: Vec<model::AuthzPolicy> = serde_yaml::from_str(yaml).unwrap();
        list.iter().map(Policy::compile).collect()
    }

    fn request<'a>(principal: Option<&'a str>, method: &'a str, path: &'a str, headers: &'a HeaderMap) -> Request<'a> {
        Request {
            principal,
            source_ip: Some("10.1.2.3".parse().unwrap()),
            host: "Order-Service",
            port: 8080,
            method,
            path,
            headers,
            end_user: None,
        }
    }

    #[test]
    fn matchers_and_groups() {
        let ps = policies(
            "- name: p\n  action: ALLOW\n  rules:\n  - from: [[{attribute: principal, anyOf: [{match: suffix, value: /sa/api-gateway}]}, {attribute: sourceIp, anyOf: [10.0.0.0/8]}]]\n    to: [[{attribute: method, anyOf: [{match: exact, value: GET}]}, {attribute: host, anyOf: [{match: exact, value: order-service}]}, {attribute: port, noneOf: [9090]}]]\n    when: [{attribute: header, name: x-tenant, anyOf: [{match: any}]}]\n",
        );
        let mut h = HeaderMap::new();
        assert_eq!(
            decide(&ps, &request(Some(GW), "GET", "/", &h)),
            Decision::Deny("no ALLOW policy matched".into()),
            "the header is absent"
        );
        h.insert("x-tenant", "".parse().unwrap());
        assert_eq!(
            decide(&ps, &request(Some(GW), "GET", "/", &h)),
            Decision::Allow,
            "`any` takes an empty header; hosts compare in lower case"
        );
        assert_ne!(decide(&ps, &request(Some(GW), "POST", "/", &h)), Decision::Allow);
        assert_ne!(decide(&ps, &request(None, "GET", "/", &h)), Decision::Allow, "plaintext has no principal");
    }

    #[test]
    fn a_policy_with_an_unusable_header_name_fails_closed() {
        let h = HeaderMap::new();
        let allow = "- name: a\n  action: ALLOW\n  rules:\n  - when: [{attribute: header, name: ':path', noneOf: [{match: present}]}]\n";
        assert_ne!(decide(&policies(allow), &request(Some(GW), "GET", "/", &h)), Decision::Allow, "allows nothing");
        let deny = "- name: d\n  action: DENY\n  rules:\n  - when: [{attribute: header, name: ':path', anyOf: [{match: present}]}]\n";
        assert_ne!(decide(&policies(deny), &request(Some(GW), "GET", "/", &h)), Decision::Allow, "denies everything");
    }

    #[test]
    fn a_misspelt_field_is_refused_not_read_as_match_anything() {
        let typo = "- name: p\n  action: ALLOW\n  rules:\n  - to: [[{attribute: method, anyof: [{match: exact, value: GET}]}]]\n";
        assert!(serde_yaml::from_str::<Vec<model::AuthzPolicy>>(typo).is_err());
        let header =
            "- name: p\n  action: ALLOW\n  rules:\n  - when: [{attribute: header, name: x, anyof: [{match: any}]}]\n";
        assert!(serde_yaml::from_str::<Vec<model::AuthzPolicy>>(header).is_err());
    }

    #[test]
    fn on_tcp_an_allow_drops_rules_reading_http_and_a_deny_ignores_those_fields() {
        let gw = Some(GW);
        let ip = Some("10.1.2.3".parse().unwrap());
        // ALLOW: the rule with a method is dropped, so only the principal-only rule can allow.
        let allow = policies("- name: a\n  action: ALLOW\n  rules:\n  - to: [[{attribute: method, anyOf: [{match: exact, value: GET}]}]]\n  - from: [[{attribute: principal, anyOf: [{match: suffix, value: /sa/api-gateway}]}]]\n    to: [[{attribute: port, anyOf: [5432]}]]\n");
        assert_eq!(decide_tcp(&allow, gw, ip, 5432), Decision::Allow);
        assert_ne!(decide_tcp(&allow, gw, ip, 6379), Decision::Allow, "the port rule holds");
        assert_ne!(decide_tcp(&allow, None, ip, 5432), Decision::Allow, "plaintext has no principal");
        let methods_only = policies("- name: m\n  action: ALLOW\n  rules:\n  - to: [[{attribute: method, anyOf: [{match: exact, value: GET}]}]]\n");
        assert_ne!(decide_tcp(&methods_only, gw, ip, 5432), Decision::Allow, "an ALLOW of methods allows no TCP");
        // DENY: `methods: [POST], ports: [5432]` denies all TCP on 5432 (the method is ignored).
        let deny = policies("- name: d\n  action: DENY\n  rules:\n  - to: [[{attribute: method, anyOf: [{match: exact, value: POST}]}, {attribute: port, anyOf: [5432]}]]\n");
        assert_eq!(decide_tcp(&deny, gw, ip, 5432), Decision::Deny("d-rule[0]".into()));
        assert_eq!(decide_tcp(&deny, gw, ip, 6379), Decision::Allow);
        let h = HeaderMap::new();
        assert_eq!(decide(&deny, &request(Some(GW), "GET", "/", &h)), Decision::Allow, "on HTTP the method counts");
        let header_deny = policies("- name: h\n  action: DENY\n  rules:\n  - when: [{attribute: header, name: x-evil, anyOf: [{match: any}]}]\n");
        assert!(matches!(decide_tcp(&header_deny, gw, ip, 1), Decision::Deny(_)), "a DENY on a header denies all TCP");
    }

    #[test]
    fn denials_name_the_policy_and_rule() {
        let ps = policies("[{name: 'ns[production]-policy[block]', action: DENY, rules: [{to: [[{attribute: method, anyOf: [{match: exact, value: PUT}]}]]}, {to: [[{attribute: method, anyOf: [{match: exact, value: POST}]}]]}]}]");
        let h = HeaderMap::new();
        assert_eq!(
            decide(&ps, &request(Some(GW), "POST", "/", &h)),
            Decision::Deny("ns[production]-policy[block]-rule[1]".into())
        );
    }
}
