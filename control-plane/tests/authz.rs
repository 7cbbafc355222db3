//! Istio's AuthorizationPolicy semantics end to end: the YAML a user writes,
//! validated and translated by the control plane into the sidecar's typed
//! model, decided by the sidecar's engine (shared/ISTIO-SEMANTICS.md §3).
//! The tables write each policy in a compact form, `{name, action, rules,
//! dryRun}` with a rule's `from` entries being Istio's `source` and its `to`
//! entries Istio's `operation`; `istio()` turns them into real resources.

use http::HeaderMap;
use std::path::Path;
use weft_control_plane::istio::load_str;
use weft_control_plane::translate::authorization;
use weft_model as model;
use weft_proxy::security::authz::{decide, Decision, Policy, Request};

const GW: &str = "spiffe://cluster.local/ns/production/sa/api-gateway";
const USER: &str = "spiffe://cluster.local/ns/production/sa/user-service";
const PRODUCT: &str = "spiffe://cluster.local/ns/production/sa/product-service";
const NOTIFY: &str = "spiffe://cluster.local/ns/production/sa/notification-service";
const DEV: &str = "spiffe://cluster.local/ns/dev/sa/tester";

/// The compact table form as AuthorizationPolicy resources in namespace `production`.
fn istio(compact: &str) -> String {
    let list: Vec<serde_yaml::Value> = serde_yaml::from_str(compact).unwrap();
    let mut docs = Vec::new();
    for p in list {
        let name = p["name"].as_str().unwrap_or_else(|| panic!("{compact}"));
        let name = name.strip_prefix("ns[production]-policy[").and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        let mut spec = serde_yaml::Mapping::new();
        spec.insert("action".into(), p["action"].clone());
        if let Some(rules) = p.get("rules").and_then(|r| r.as_sequence()) {
            let wrap = |list: Option<&serde_yaml::Value>, key: &str| -> serde_yaml::Value {
                let items = list.and_then(|l| l.as_sequence()).cloned().unwrap_or_default();
                serde_yaml::Value::Sequence(
                    items
                        .into_iter()
                        .map(|i| {
                            let mut m = serde_yaml::Mapping::new();
                            m.insert(key.into(), i);
                            serde_yaml::Value::Mapping(m)
                        })
                        .collect(),
                )
            };
            let rules: Vec<serde_yaml::Value> = rules
                .iter()
                .map(|r| {
                    let mut m = serde_yaml::Mapping::new();
                    if r.get("from").is_some() {
                        m.insert("from".into(), wrap(r.get("from"), "source"));
                    }
                    if r.get("to").is_some() {
                        m.insert("to".into(), wrap(r.get("to"), "operation"));
                    }
                    if let Some(w) = r.get("when") {
                        m.insert("when".into(), w.clone());
                    }
                    serde_yaml::Value::Mapping(m)
                })
                .collect();
            spec.insert("rules".into(), serde_yaml::Value::Sequence(rules));
        }
        let dry = if p.get("dryRun").and_then(|d| d.as_bool()) == Some(true) {
            "\n  annotations: {istio.io/dry-run: 'true'}"
        } else {
            ""
        };
        docs.push(format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: production{dry}\nspec:\n{}",
            serde_yaml::to_string(&spec).unwrap().lines().map(|l| format!("  {l}\n")).collect::<String>()
        ));
    }
    docs.join("---\n")
}

/// What order-service's sidecar enforces for the compact policies.
fn policies(compact: &str) -> Vec<Policy> {
    let resources = load_str(Path::new("table.yaml"), &istio(compact)).unwrap_or_else(|d| panic!("{compact}: {d:#?}"));
    let workload = model::Workload {
        name: "order-service".into(),
        namespace: "production".into(),
        service_account: "order-service".into(),
        labels: [("app".to_string(), "order-service".to_string())].into(),
    };
    let translated = authorization(&resources, &workload);
    let config = model::Inbound { authz: translated.clone(), ..Default::default() };
    assert_eq!(config.authz, translated);
    translated.iter().map(Policy::compile).collect()
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
            end_user: None,
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
        end_user: None,
    };
    assert_eq!(decide(&ps, &req), Decision::Deny("ns[production]-policy[block]-rule[1]".into()));
}
