//! Authorization: Istio's AuthorizationPolicy decision, evaluated per request
//! on the inbound side against the peer's *proven* identity (from the mTLS
//! certificate, never a header). Policies are compiled with the config.
//!
//! Order (shared/ISTIO-SEMANTICS.md §3.2): any DENY match → 403; no ALLOW
//! policy → allow; any ALLOW match → allow; otherwise 403. AUDIT never
//! changes the decision. Dry-run policies are evaluated and logged only.

use http::HeaderMap;
use std::net::IpAddr;
use weft_model::authz::{self as model, AuthzAction};

/// Istio's wildcard forms: `abc` exact, `abc*` prefix, `*abc` suffix, `*` present and non-empty.
#[derive(Debug, Clone)]
enum Pat {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any non-empty value.
    Present,
    /// `*` on a header: present at all, even empty.
    Any,
}

impl Pat {
    fn new(v: &str, lowercase: bool) -> Self {
        let v = if lowercase { v.to_ascii_lowercase() } else { v.to_string() };
        if v == "*" {
            Pat::Present
        } else if let Some(s) = v.strip_prefix('*') {
            Pat::Suffix(s.to_string())
        } else if let Some(p) = v.strip_suffix('*') {
            Pat::Prefix(p.to_string())
        } else {
            Pat::Exact(v)
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pat::Exact(e) => s == e,
            Pat::Prefix(p) => s.starts_with(p.as_str()),
            Pat::Suffix(x) => s.ends_with(x.as_str()),
            Pat::Present => !s.is_empty(),
            Pat::Any => true,
        }
    }
}

/// A field: some of `yes` must match (if any), none of `no` may.
#[derive(Debug, Clone, Default)]
struct Field {
    yes: Vec<Pat>,
    no: Vec<Pat>,
}

impl Field {
    fn new(yes: &[String], no: &[String], lowercase: bool) -> Self {
        Field {
            yes: yes.iter().map(|v| Pat::new(v, lowercase)).collect(),
            no: no.iter().map(|v| Pat::new(v, lowercase)).collect(),
        }
    }

    /// A header condition: `*` means present (an empty value too), as Istio's `present_match`.
    fn header(yes: &[String], no: &[String]) -> Self {
        let pats = |v: &[String]| v.iter().map(|v| if v == "*" { Pat::Any } else { Pat::new(v, false) }).collect();
        Field { yes: pats(yes), no: pats(no) }
    }

    /// `None` is an absent value: it satisfies only the negative half.
    fn matches(&self, value: Option<&str>) -> bool {
        let yes = self.yes.is_empty() || value.is_some_and(|v| self.yes.iter().any(|p| p.matches(v)));
        let no = value.is_none_or(|v| !self.no.iter().any(|p| p.matches(v)));
        yes && no
    }
}

#[derive(Debug, Clone, Default)]
struct Cidrs {
    yes: Vec<(IpAddr, u8)>,
    no: Vec<(IpAddr, u8)>,
}

fn in_cidr(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl Cidrs {
    fn new(yes: &[String], no: &[String]) -> Self {
        Cidrs {
            yes: yes.iter().filter_map(|c| model::parse_cidr(c)).collect(),
            no: no.iter().filter_map(|c| model::parse_cidr(c)).collect(),
        }
    }

    fn matches(&self, ip: Option<IpAddr>) -> bool {
        let yes = self.yes.is_empty() || ip.is_some_and(|ip| self.yes.iter().any(|c| in_cidr(ip, *c)));
        let no = ip.is_none_or(|ip| !self.no.iter().any(|c| in_cidr(ip, *c)));
        yes && no
    }
}

/// What a request offers to authorization.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The peer's proven SPIFFE ID (`spiffe://td/ns/x/sa/y`); `None` for plaintext.
    pub principal: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub host: &'a str,
    /// The workload port the request is for.
    pub port: u16,
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
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

#[derive(Debug, Clone)]
struct Source {
    principals: Field,
    namespaces: Field,
    ips: Cidrs,
}

#[derive(Debug, Clone)]
struct Operation {
    hosts: Field,
    ports: Field,
    methods: Field,
    paths: Field,
}

#[derive(Debug, Clone)]
enum Condition {
    Header(http::HeaderName, Field),
    Principal(Field),
    Namespace(Field),
    SourceIp(Cidrs),
    Port(Field),
}

#[derive(Debug, Clone)]
struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
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
        let rules = p
            .rules
            .iter()
            .map(|r| Rule {
                from: r
                    .from
                    .iter()
                    .map(|s| Source {
                        principals: Field::new(&s.principals, &s.not_principals, false),
                        namespaces: Field::new(&s.namespaces, &s.not_namespaces, false),
                        ips: Cidrs::new(&s.ip_blocks, &s.not_ip_blocks),
                    })
                    .collect(),
                to: r
                    .to
                    .iter()
                    .map(|o| Operation {
                        hosts: Field::new(&o.hosts, &o.not_hosts, true),
                        ports: Field::new(&o.ports, &o.not_ports, false),
                        methods: Field::new(&o.methods, &o.not_methods, false),
                        paths: Field::new(&o.paths, &o.not_paths, false),
                    })
                    .collect(),
                when: r
                    .when
                    .iter()
                    .filter_map(|c| {
                        let field = || Field::new(&c.values, &c.not_values, false);
                        Some(match c.key.as_str() {
                            "source.principal" => Condition::Principal(field()),
                            "source.namespace" => Condition::Namespace(field()),
                            "source.ip" => Condition::SourceIp(Cidrs::new(&c.values, &c.not_values)),
                            "destination.port" => Condition::Port(field()),
                            k => {
                                let name = k.strip_prefix("request.headers[")?.strip_suffix(']')?;
                                // Validation admits only names that parse (no pseudo-headers).
                                Condition::Header(
                                    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?,
                                    Field::header(&c.values, &c.not_values),
                                )
                            }
                        })
                    })
                    .collect(),
            })
            .collect();
        Policy { id: p.name.clone(), action: p.action, dry_run: p.dry_run, rules }
    }

    /// The index of the first rule that matches.
    fn matching_rule(&self, req: &Request<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(req))
    }
}

impl Rule {
    fn matches(&self, req: &Request<'_>) -> bool {
        let port = req.port.to_string();
        let host = req.host.to_ascii_lowercase();
        let from = self.from.is_empty()
            || self.from.iter().any(|s| {
                s.principals.matches(req.principal())
                    && s.namespaces.matches(req.namespace())
                    && s.ips.matches(req.source_ip)
            });
        let to = self.to.is_empty()
            || self.to.iter().any(|o| {
                o.hosts.matches(Some(&host))
                    && o.ports.matches(Some(&port))
                    && o.methods.matches(Some(req.method))
                    && o.paths.matches(Some(req.path))
            });
        let when = self.when.iter().all(|c| match c {
            Condition::Header(name, f) => f.matches(crate::http::headers::header_value(req.headers, name).as_deref()),
            Condition::Principal(f) => f.matches(req.principal()),
            Condition::Namespace(f) => f.matches(req.namespace()),
            Condition::SourceIp(c) => c.matches(req.source_ip),
            Condition::Port(f) => f.matches(Some(&port)),
        });
        from && to && when
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
    for p in policies.iter().filter(|p| p.dry_run) {
        if let Some(i) = p.matching_rule(req) {
            tracing::info!(policy = %p.id, rule = i, action = ?p.action, "dry-run authorization policy matched (not enforced)");
        }
    }
    let live = || policies.iter().filter(|p| !p.dry_run);
    for p in live().filter(|p| p.action == AuthzAction::Deny) {
        if let Some(i) = p.matching_rule(req) {
            return Decision::Deny(format!("{}-rule[{i}]", p.id));
        }
    }
    let mut allows = live().filter(|p| p.action == AuthzAction::Allow).peekable();
    if allows.peek().is_none() {
        return Decision::Allow;
    }
    if allows.any(|p| p.matching_rule(req).is_some()) {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: &str = "spiffe://cluster.local/ns/production/sa/api-gateway";
    const USER: &str = "spiffe://cluster.local/ns/production/sa/user-service";
    const PRODUCT: &str = "spiffe://cluster.local/ns/production/sa/product-service";
    const NOTIFY: &str = "spiffe://cluster.local/ns/production/sa/notification-service";
    const DEV: &str = "spiffe://cluster.local/ns/dev/sa/tester";

    fn policies(yaml: &str) -> Vec<Policy> {
        let list: Vec<model::AuthzPolicy> = serde_yaml::from_str(yaml).unwrap();
        list.iter().map(Policy::compile).collect()
    }

    struct Case {
        what: &'static str,
        policies: &'static str,
        principal: Option<&'static str>,
        method: &'static str,
        path: &'static str,
        headers: &'static [(&'static str, &'static str)],
        allow: bool,
    }

    const SEED: &str = r#"
- name: ns[production]-policy[order-service-auth]
  action: ALLOW
  rules:
  - from:
    - principals: ["cluster.local/ns/production/sa/user-service"]
    - principals: ["cluster.local/ns/production/sa/product-service"]
"#;

    fn case(what: &'static str, policies: &'static str, principal: Option<&'static str>, allow: bool) -> Case {
        Case { what, policies, principal, method: "GET", path: "/orders", headers: &[], allow }
    }

    #[test]
    fn conformance_table() {
        let cases = vec![
            // Decision order and empty specs (§3.2).
            case("no policy allows everything", "[]", None, true),
            case("no policy allows mTLS too", "[]", Some(GW), true),
            case("ALLOW with no rules allows nothing", "[{name: p, action: ALLOW}]", Some(GW), false),
            case("ALLOW rules [{}] allows all", "[{name: p, action: ALLOW, rules: [{}]}]", None, true),
            case("DENY with no rules matches nothing", "[{name: p, action: DENY}]", Some(GW), true),
            case("DENY rules [{}] denies all", "[{name: p, action: DENY, rules: [{}]}]", Some(GW), false),
            case("AUDIT never decides", "[{name: p, action: AUDIT, rules: [{}]}]", Some(GW), true),
            case("AUDIT does not count as ALLOW", "[{name: a, action: AUDIT, rules: [{}]}, {name: p, action: ALLOW}]", Some(GW), false),
            case("DENY beats a matching ALLOW", "[{name: a, action: ALLOW, rules: [{}]}, {name: d, action: DENY, rules: [{}]}]", Some(GW), false),
            case("dry-run DENY is not enforced", "[{name: d, action: DENY, dryRun: true, rules: [{}]}]", Some(GW), true),
            case("dry-run ALLOW does not make ALLOW apply", "[{name: a, action: ALLOW, dryRun: true}]", Some(GW), true),
            case("any ALLOW policy matching suffices", "[{name: a, action: ALLOW}, {name: b, action: ALLOW, rules: [{}]}]", Some(GW), true),
            // The seed's policy.
            case("seed: user-service allowed", SEED, Some(USER), true),
            case("seed: product-service allowed", SEED, Some(PRODUCT), true),
            case("seed: notification-service denied", SEED, Some(NOTIFY), false),
            case("seed: plaintext denied", SEED, None, false),
            // principals (§3.3).
            case("principal exact", "[{name: p, action: ALLOW, rules: [{from: [{principals: [cluster.local/ns/production/sa/api-gateway]}]}]}]", Some(GW), true),
            case("principal is compared without spiffe://", "[{name: p, action: ALLOW, rules: [{from: [{principals: ['spiffe://cluster.local/ns/production/sa/api-gateway']}]}]}]", Some(GW), false),
            case("principal * needs an identity", "[{name: p, action: ALLOW, rules: [{from: [{principals: ['*']}]}]}]", None, false),
            case("principal * takes any identity", "[{name: p, action: ALLOW, rules: [{from: [{principals: ['*']}]}]}]", Some(DEV), true),
            case("principal prefix", "[{name: p, action: ALLOW, rules: [{from: [{principals: ['cluster.local/ns/production/*']}]}]}]", Some(USER), true),
            case("principal suffix", "[{name: p, action: ALLOW, rules: [{from: [{principals: ['*/sa/tester']}]}]}]", Some(DEV), true),
            case("a*b is a literal", "[{name: p, action: ALLOW, rules: [{from: [{principals: ['cluster.local*tester']}]}]}]", Some(DEV), false),
            case("notPrincipals * matches plaintext only (allow)", "[{name: p, action: ALLOW, rules: [{from: [{notPrincipals: ['*']}]}]}]", None, true),
            case("notPrincipals * matches plaintext only (mTLS denied)", "[{name: p, action: ALLOW, rules: [{from: [{notPrincipals: ['*']}]}]}]", Some(GW), false),
            case("DENY notPrincipals * denies plaintext", "[{name: d, action: DENY, rules: [{from: [{notPrincipals: ['*']}]}]}]", None, false),
            case("DENY notPrincipals * lets mTLS through", "[{name: d, action: DENY, rules: [{from: [{notPrincipals: ['*']}]}]}]", Some(GW), true),
            // namespaces.
            case("namespace match", "[{name: p, action: ALLOW, rules: [{from: [{namespaces: [production]}]}]}]", Some(USER), true),
            case("namespace mismatch", "[{name: p, action: ALLOW, rules: [{from: [{namespaces: [production]}]}]}]", Some(DEV), false),
            case("namespace needs mTLS", "[{name: p, action: ALLOW, rules: [{from: [{namespaces: ['*']}]}]}]", None, false),
            case("DENY notNamespaces", "[{name: d, action: DENY, rules: [{from: [{notNamespaces: [production]}]}]}]", Some(DEV), false),
            case("fields in one source AND", "[{name: p, action: ALLOW, rules: [{from: [{namespaces: [production], principals: ['*/sa/user-service']}]}]}]", Some(GW), false),
            case("sources OR", "[{name: p, action: ALLOW, rules: [{from: [{namespaces: [dev]}, {principals: ['*/sa/api-gateway']}]}]}]", Some(GW), true),
            // operations.
            Case { what: "methods allow GET", policies: "[{name: p, action: ALLOW, rules: [{to: [{methods: [GET]}]}]}]", principal: None, method: "GET", path: "/", headers: &[], allow: true },
            Case { what: "methods case-sensitive", policies: "[{name: p, action: ALLOW, rules: [{to: [{methods: [get]}]}]}]", principal: None, method: "GET", path: "/", headers: &[], allow: false },
            Case { what: "DENY POST", policies: "[{name: d, action: DENY, rules: [{to: [{methods: [POST]}]}]}]", principal: Some(GW), method: "POST", path: "/orders", headers: &[], allow: false },
            Case { what: "DENY POST lets GET", policies: "[{name: d, action: DENY, rules: [{to: [{methods: [POST]}]}]}]", principal: Some(GW), method: "GET", path: "/orders", headers: &[], allow: true },
            Case { what: "path prefix", policies: "[{name: p, action: ALLOW, rules: [{to: [{paths: ['/api/*']}]}]}]", principal: None, method: "GET", path: "/api/orders", headers: &[], allow: true },
            Case { what: "path exact ignores other paths", policies: "[{name: p, action: ALLOW, rules: [{to: [{paths: ['/health']}]}]}]", principal: None, method: "GET", path: "/healthz", headers: &[], allow: false },
            Case { what: "notPaths", policies: "[{name: d, action: DENY, rules: [{to: [{notPaths: ['/public/*']}]}]}]", principal: None, method: "GET", path: "/public/x", headers: &[], allow: true },
            Case { what: "hosts are case-insensitive", policies: "[{name: p, action: ALLOW, rules: [{to: [{hosts: [Order-Service]}]}]}]", principal: None, method: "GET", path: "/", headers: &[], allow: true },
            Case { what: "ports", policies: "[{name: p, action: ALLOW, rules: [{to: [{ports: ['8080']}]}]}]", principal: None, method: "GET", path: "/", headers: &[], allow: true },
            Case { what: "other ports", policies: "[{name: p, action: ALLOW, rules: [{to: [{ports: ['9090']}]}]}]", principal: None, method: "GET", path: "/", headers: &[], allow: false },
            Case { what: "from AND to", policies: "[{name: p, action: ALLOW, rules: [{from: [{principals: ['*/sa/user-service']}], to: [{methods: [GET]}]}]}]", principal: Some(USER), method: "POST", path: "/", headers: &[], allow: false },
            // when.
            Case { what: "when header value", policies: "[{name: p, action: ALLOW, rules: [{when: [{key: 'request.headers[X-Tenant]', values: [acme]}]}]}]", principal: None, method: "GET", path: "/", headers: &[("x-tenant", "acme")], allow: true },
            Case { what: "when header absent", policies: "[{name: p, action: ALLOW, rules: [{when: [{key: 'request.headers[x-tenant]', values: ['*']}]}]}]", principal: None, method: "GET", path: "/", headers: &[], allow: false },
            Case { what: "when notValues", policies: "[{name: d, action: DENY, rules: [{when: [{key: 'request.headers[x-env]', notValues: [prod]}]}]}]", principal: None, method: "GET", path: "/", headers: &[("x-env", "dev")], allow: false },
            case("when source.namespace", "[{name: p, action: ALLOW, rules: [{when: [{key: source.namespace, values: [dev]}]}]}]", Some(DEV), true),
            case("when source.principal", "[{name: p, action: ALLOW, rules: [{when: [{key: source.principal, values: ['*/sa/api-gateway']}]}]}]", Some(GW), true),
            case("when all conditions AND", "[{name: p, action: ALLOW, rules: [{when: [{key: source.namespace, values: [dev]}, {key: destination.port, values: ['9999']}]}]}]", Some(DEV), false),
            case("rules OR", "[{name: p, action: ALLOW, rules: [{from: [{namespaces: [dev]}]}, {from: [{namespaces: [production]}]}]}]", Some(USER), true),
            case("source.ip CIDR", "[{name: p, action: ALLOW, rules: [{from: [{ipBlocks: ['127.0.0.0/8']}]}]}]", None, true),
            case("notIpBlocks", "[{name: p, action: ALLOW, rules: [{from: [{notIpBlocks: ['127.0.0.1']}]}]}]", None, false),
        ];
        assert!(cases.len() >= 40, "{} cases", cases.len());
        for c in &cases {
            let ps = policies(c.policies);
            let mut headers = HeaderMap::new();
            for (k, v) in c.headers {
                headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            let req = Request {
                principal: c.principal,
                source_ip: Some("127.0.0.1".parse().unwrap()),
                host: "order-service",
                port: 8080,
                method: c.method,
                path: c.path,
                headers: &headers,
            };
            let got = decide(&ps, &req);
            assert_eq!(got == Decision::Allow, c.allow, "{}: got {got:?}", c.what);
        }
    }

    #[test]
    fn denials_name_the_policy_and_rule() {
        let ps = policies("[{name: 'ns[production]-policy[block]', action: DENY, rules: [{to: [{methods: [PUT]}]}, {to: [{methods: [POST]}]}]}]");
        let h = HeaderMap::new();
        let req = Request {
            principal: Some(GW),
            source_ip: None,
            host: "h",
            port: 80,
            method: "POST",
            path: "/",
            headers: &h,
        };
        assert_eq!(decide(&ps, &req), Decision::Deny("ns[production]-policy[block]-rule[1]".into()));
    }
}
