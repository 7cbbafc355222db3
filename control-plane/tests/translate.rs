//! Translation: Istio YAML + registry in, ProxyConfig out. A golden file pins
//! the whole output; the other tests assert the semantics one by one.
//!
//! Size: one test per translation rule, over the same fixtures and golden file;
//! the rules are read best side by side with the translator's modules they pin.

use std::path::{Path, PathBuf};
use weft_control_plane::istio::load_paths;
use weft_control_plane::registry::Registry;
use weft_control_plane::translate::{translate, Translation};
use weft_model as model;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn registry() -> Registry {
    serde_yaml::from_str(&std::fs::read_to_string(dir().join("tests/fixtures/registry.yaml")).unwrap()).unwrap()
}

fn gateway() -> model::Workload {
    model::Workload {
        name: "api-gateway".into(),
        namespace: "production".into(),
        service_account: "api-gateway".into(),
        labels: [("app".to_string(), "api-gateway".to_string())].into(),
    }
}

/// The seed's canary: policies/order-service.yaml.
fn seed_policies() -> Translation {
    let resources = load_paths(&[dir().join("../policies/order-service.yaml")]).unwrap();
    translate(&resources, &registry(), &gateway(), "7")
}

fn from_yaml(yaml: &str) -> Translation {
    let resources = weft_control_plane::istio::load_str(Path::new("t.yaml"), yaml).unwrap_or_else(|d| panic!("{d:#?}"));
    translate(&resources, &registry(), &gateway(), "1")
}

const V1: &str = "outbound|80|v1|order-service.production.svc.cluster.local";
const V2: &str = "outbound|80|v2|order-service.production.svc.cluster.local";

#[test]
fn golden_seed_policies_for_the_gateway() {
    let t = seed_policies();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    t.config.validate().unwrap();
    let got = serde_yaml::to_string(&t.config).unwrap();
    let golden = dir().join("tests/golden/api-gateway.yaml");
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (run with WEFT_BLESS=1 once to create it)");
    assert_eq!(got, want, "translation changed; review and re-bless with WEFT_BLESS=1");
}

#[test]
fn canary_routes_in_order_with_weights() {
    let c = seed_policies().config;
    let svc = &c.services["order-service.production.svc.cluster.local"];
    assert_eq!(svc.routes.len(), 2);
    let header = &svc.routes[0];
    assert_eq!(header.matches[0].headers["x-canary"].exact.as_deref(), Some("true"));
    assert_eq!(header.route[0].cluster, V2);
    let weighted = &svc.routes[1];
    assert!(weighted.matches.is_empty());
    let split: Vec<(&str, u32)> = weighted.route.iter().map(|d| (d.cluster.as_str(), d.weight)).collect();
    assert_eq!(split, [(V1, 90), (V2, 10)]);
}

#[test]
fn subsets_select_endpoints_and_the_seed_pool_applies() {
    let c = seed_policies().config;
    let v1 = &c.clusters[V1];
    assert_eq!(v1.endpoints.len(), 2);
    assert!(v1.endpoints.iter().all(|e| e.labels["version"] == "v1"));
    assert_eq!(c.clusters[V2].endpoints.len(), 1);
    assert_eq!(v1.protocol, model::UpstreamProtocol::Http2, "h2UpgradePolicy: UPGRADE");
    assert_eq!(v1.connection_pool.tcp.max_connections, Some(100));
    assert_eq!(v1.connection_pool.http.http1_max_pending_requests, Some(100));
    assert_eq!(v1.connection_pool.http.http2_max_requests, Some(1000));
    let od = v1.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(5));
    assert_eq!(od.max_ejection_percent, Some(50));
    assert_eq!(od.base_ejection_time, Some(std::time::Duration::from_secs(30)));
    assert_eq!(v1.lb_policy, model::LbPolicy::LeastRequest, "Istio's default");
}

#[test]
fn a_service_without_virtual_service_gets_the_default_route() {
    let c = seed_policies().config;
    let user = &c.services["user-service.production.svc.cluster.local"];
    assert_eq!(user.routes.len(), 1);
    assert!(user.routes[0].matches.is_empty());
    assert_eq!(user.routes[0].route[0].cluster, "outbound|80||user-service.production.svc.cluster.local");
    assert!(user.routes[0].retries.is_none(), "the proxy applies Istio's default retry policy");
    assert_eq!(c.clusters["outbound|80||user-service.production.svc.cluster.local"].endpoints.len(), 1);
}

const HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: orders, namespace: production}\nspec:\n  hosts: [order-service]\n  http:\n";

#[test]
fn retries_faults_headers_and_rewrites_translate() {
    let t = from_yaml(&format!(
        "{HEAD}  - match:\n    - uri: {{prefix: /api/orders}}\n    rewrite: {{uri: /orders}}\n    timeout: 2s\n    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: 'gateway-error,503,connect-failure'}}\n    fault: {{abort: {{httpStatus: 503, percentage: {{value: 0.5}}}}, delay: {{fixedDelay: 1s, percent: 10}}}}\n    headers:\n      request: {{set: {{Host: orders.internal, X-Env: prod}}, remove: [x-debug]}}\n    route:\n    - destination: {{host: order-service}}\n"
    ));
    let r = &t.config.services["order-service.production.svc.cluster.local"].routes[0];
    assert_eq!(r.timeout, Some(std::time::Duration::from_secs(2)));
    let retry = r.retries.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(
        retry.retry_on,
        [model::RetryOn::GatewayError, model::RetryOn::RetriableStatusCodes, model::RetryOn::ConnectFailure]
    );
    assert_eq!(retry.retriable_status_codes, [503]);
    let fault = r.fault.as_ref().unwrap();
    assert_eq!(fault.abort.as_ref().unwrap().percentage, 0.5);
    assert_eq!(fault.delay.as_ref().unwrap().percentage, 10.0, "deprecated percent is the fallback");
    let h = r.headers.as_ref().unwrap();
    assert_eq!(h.request.set["x-env"], "prod");
    assert!(!h.request.set.contains_key("host"));
    let rw = r.rewrite.as_ref().unwrap();
    assert_eq!((rw.uri.as_deref(), rw.authority.as_deref()), (Some("/orders"), Some("orders.internal")));
    t.config.validate().unwrap();
}

#[test]
fn attempts_zero_disables_retries() {
    let t = from_yaml(&format!(
        "{HEAD}  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: order-service}}\n"
    ));
    let r = &t.config.services["order-service.production.svc.cluster.local"].routes[0];
    assert_eq!(r.retries.as_ref().unwrap().attempts, 0);
}

#[test]
fn source_labels_select_routes_per_workload() {
    let yaml = format!(
        "{HEAD}  - match:\n    - sourceLabels: {{app: other}}\n    route:\n    - destination: {{host: order-service, subset: v2}}\n  - route:\n    - destination: {{host: order-service}}\n"
    );
    let t = from_yaml(&yaml);
    let routes = &t.config.services["order-service.production.svc.cluster.local"].routes;
    assert_eq!(routes.len(), 1, "the sourceLabels rule is not for the gateway");
    assert_eq!(routes[0].route[0].cluster, "outbound|80||order-service.production.svc.cluster.local");
}

/// Istio turns a match entry with only config-time selectors into a catch-all; an
/// empty match in the sidecar's config would be refused and the workload would NACK.
#[test]
fn a_match_with_only_config_time_selectors_is_a_catch_all_for_the_selected_workload() {
    for selector in ["sourceLabels: {app: api-gateway}", "sourceNamespace: production", "port: 80", "gateways: [mesh]"]
    {
        let yaml = format!(
            "{HEAD}  - match:\n    - {selector}\n    route:\n    - destination: {{host: order-service, subset: v2}}\n  - route:\n    - destination: {{host: order-service}}\n"
        );
        let t = from_yaml(&yaml);
        t.config.validate().unwrap_or_else(|e| panic!("{selector}: the sidecar would NACK: {e}"));
        let routes = &t.config.services["order-service.production.svc.cluster.local"].routes;
        assert_eq!(routes.len(), 1, "{selector}: the catch-all makes the later rule unreachable");
        assert!(routes[0].matches.is_empty(), "{selector}");
        assert_eq!(routes[0].route[0].cluster, V2, "{selector}");
    }
}

#[test]
fn undefined_subsets_and_unknown_hosts_are_reported() {
    let t = from_yaml(&format!("{HEAD}  - route:\n    - destination: {{host: order-service, subset: v9}}\n      weight: 50\n    - destination: {{host: ghost}}\n      weight: 50\n"));
    assert!(t.warnings.iter().any(|w| w.contains("subset \"v9\"")), "{:?}", t.warnings);
    assert!(t.warnings.iter().any(|w| w.contains("ghost.production.svc.cluster.local")), "{:?}", t.warnings);
    assert!(t.config.clusters["outbound|80|v9|order-service.production.svc.cluster.local"].endpoints.is_empty());
}

#[test]
fn several_virtual_services_for_one_host_are_deterministic_and_reported() {
    let second = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: aaa, namespace: production}\nspec:\n  hosts: [order-service.production.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: order-service, subset: v1}\n";
    let t = from_yaml(&format!("{HEAD}  - route:\n    - destination: {{host: order-service}}\n{second}"));
    assert!(t.warnings.iter().any(|w| w.contains("IST0109")), "{:?}", t.warnings);
    let r = &t.config.services["order-service.production.svc.cluster.local"].routes[0];
    assert_eq!(r.route[0].cluster, V1, "production/aaa sorts first");
}

#[test]
fn subset_traffic_policy_replaces_components_wholesale() {
    let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: orders, namespace: production}\nspec:\n  host: order-service\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n    connectionPool: {tcp: {maxConnections: 10}, http: {http2MaxRequests: 5}}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      connectionPool: {http: {http1MaxPendingRequests: 7}}\n";
    let t = from_yaml(&format!("{HEAD}  - route:\n    - destination: {{host: order-service, subset: v1}}\n{dr}"));
    let c = &t.config.clusters[V1];
    assert_eq!(c.lb_policy, model::LbPolicy::Random, "inherited: the subset sets no loadBalancer");
    assert_eq!(c.connection_pool.http.http1_max_pending_requests, Some(7));
    assert_eq!(c.connection_pool.tcp.max_connections, None, "replaced wholesale, not deep-merged");
    assert_eq!(c.connection_pool.http.http2_max_requests, None);
}

/// The whole policies/ folder (five services, STRICT mTLS, deny by default and
/// one ALLOW per called service) compiles for every workload of the shop without a warning.
#[test]
fn the_policies_folder_compiles_for_every_workload() {
    let resources = load_paths(&[dir().join("../policies")]).unwrap();
    for (name, version) in [
        ("api-gateway", "v1"),
        ("user-service", "v1"),
        ("order-service", "v1"),
        ("order-service", "v2"),
        ("product-service", "v1"),
        ("notification-service", "v1"),
    ] {
        let w = model::Workload {
            name: name.into(),
            namespace: "production".into(),
            service_account: name.into(),
            labels: [("app".to_string(), name.to_string()), ("version".to_string(), version.to_string())].into(),
        };
        let t = translate(&resources, &registry(), &w, "1");
        assert!(t.warnings.is_empty(), "{name}: {:?}", t.warnings);
        t.config.validate().unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let inbound = &t.config.inbound;
        assert_eq!(inbound.mtls, model::MtlsMode::Strict, "{name}: STRICT mTLS");
        let names: Vec<&str> = inbound.authz.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"ns[production]-policy[deny-by-default]"), "{name}: deny by default: {names:?}");
        assert_eq!(names.len(), 2, "{name}: one ALLOW naming its callers (api-gateway's: the ingress gateway)");
    }
}

#[test]
fn the_sidecar_resource_sets_the_outbound_traffic_policy_as_istio_picks_it() {
    let sidecar = |name: &str, ns: &str, selector: &str, mode: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  outboundTrafficPolicy: {{mode: {mode}}}\n---\n")
    };
    let policy = |yaml: String| from_yaml(&yaml).config.outbound_traffic_policy;
    assert_eq!(policy(String::new()), None, "no Sidecar: the sidecar's own default (MeshConfig's ALLOW_ANY)");
    let mesh = sidecar("default", "istio-system", "", "REGISTRY_ONLY");
    assert_eq!(policy(mesh.clone()), Some(model::OutboundTrafficPolicy::RegistryOnly), "mesh-wide");
    let namespace = sidecar("default", "production", "", "ALLOW_ANY");
    assert_eq!(policy(mesh.clone() + &namespace), Some(model::OutboundTrafficPolicy::AllowAny), "namespace over mesh");
    let mine = sidecar("gw", "production", "  workloadSelector:\n    labels: {app: api-gateway}\n", "REGISTRY_ONLY");
    let other = sidecar("other", "production", "  workloadSelector:\n    labels: {app: user-service}\n", "ALLOW_ANY");
    assert_eq!(
        policy(mesh.clone() + &namespace + &mine + &other),
        Some(model::OutboundTrafficPolicy::RegistryOnly),
        "the workload's own over its namespace's"
    );
    assert_eq!(
        policy(mesh + &namespace + &other),
        Some(model::OutboundTrafficPolicy::AllowAny),
        "another workload's Sidecar does not apply"
    );
    // The chosen Sidecar decides alone: `outboundTrafficPolicy: {}` is the proto's default mode,
    // REGISTRY_ONLY (as Istio reads it), not the namespace's.
    let silent = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: gw, namespace: production}\nspec:\n  workloadSelector:\n    labels: {app: api-gateway}\n  outboundTrafficPolicy: {}\n---\n";
    let namespace_only = sidecar("default", "production", "", "ALLOW_ANY");
    assert_eq!(policy(namespace_only + silent), Some(model::OutboundTrafficPolicy::RegistryOnly));
    // Two for one workload: Istio leaves it undefined; Weft takes the first by name and says so.
    let also = sidecar("also", "production", "  workloadSelector:\n    labels: {app: api-gateway}\n", "ALLOW_ANY");
    let t = from_yaml(&(also + &mine));
    assert_eq!(t.config.outbound_traffic_policy, Some(model::OutboundTrafficPolicy::AllowAny));
    assert_eq!(
        t.warnings,
        ["workload production/api-gateway is selected by several Sidecars (production/also, production/gw); production/also is used (Istio IST0110)"]
    );
}

/// Istio's Telemetry `accessLogging`: root namespace, then namespace, then the
/// workload's selector; a level that sets it replaces the ones above.
#[test]
fn telemetry_turns_the_access_log_on_and_off_as_istio_inherits_it() {
    let telemetry = |name: &str, ns: &str, selector: &str, logging: &str| {
        format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}{logging}---\n")
    };
    let on = "  accessLogging:\n  - providers:\n    - name: envoy\n";
    let off = "  accessLogging:\n  - providers:\n    - name: envoy\n    disabled: true\n";
    let log = |yaml: String| from_yaml(&yaml).config.access_log;
    assert_eq!(log(String::new()), None, "no Telemetry: the sidecar's default (off, as in Istio)");
    let mesh = telemetry("mesh-default", "istio-system", "", on);
    assert_eq!(log(mesh.clone()), Some(true), "mesh-wide (istio.io's own example)");
    let namespace = telemetry("quiet", "production", "", off);
    assert_eq!(log(mesh.clone() + &namespace), Some(false), "the namespace's replaces the mesh's");
    let gateway = telemetry("gw", "production", "  selector:\n    matchLabels: {app: api-gateway}\n", on);
    assert_eq!(log(mesh.clone() + &namespace + &gateway), Some(true), "the workload's own over its namespace's");
    let other = telemetry("users", "production", "  selector:\n    matchLabels: {app: user-service}\n", on);
    assert_eq!(log(namespace.clone() + &other), Some(false), "another workload's does not apply");
    let metrics_only = telemetry("nothing", "production", "", "  accessLogging: []\n");
    assert_eq!(
        log(mesh.clone() + &metrics_only),
        Some(true),
        "a Telemetry without accessLogging leaves it to the level above"
    );
    let no_provider = telemetry("default-providers", "production", "", "  accessLogging:\n  - disabled: true\n");
    assert_eq!(log(mesh + &no_provider), Some(false), "no provider named: the default one, which is Weft's");
}

#[test]
fn telemetry_providers_weft_lacks_are_refused_by_name() {
    let yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: otel, namespace: production}\nspec:\n  accessLogging:\n  - providers:\n    - name: otel\n";
    let err = weft_control_plane::istio::load_str(Path::new("t.yaml"), yaml).unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!((err[0].line, err[0].field.as_str()), (7, "spec.accessLogging[0].providers[0].name"));
    assert!(err[0].message.contains("\"otel\" is not supported yet"), "{}", err[0]);
}

const ORDERS: &str = "outbound|80||order-service.production.svc.cluster.local";

fn resource(kind: &str, name: &str, spec: &str) -> String {
    let api = match kind {
        "PeerAuthentication" => "security.istio.io/v1",
        _ => "networking.istio.io/v1",
    };
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: production}}\nspec:\n{spec}---\n")
}

/// DestinationRule `tls`: ISTIO_MUTUAL is the mesh mTLS Weft speaks anyway (Bookinfo's
/// destination-rule-all-mtls.yaml loads); DISABLE sends plaintext.
#[test]
fn destination_rule_tls_istio_mutual_and_disable() {
    let corpus = dir().join("../../shared/istio-corpus/bookinfo-destination-rule-all-mtls.yaml");
    let text = std::fs::read_to_string(&corpus).expect("the shared Istio corpus beside the repository");
    let bookinfo = weft_control_plane::istio::load_str(&corpus, &text).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(bookinfo.len(), 4);
    let tls = |mode: &str| {
        let t = from_yaml(&resource(
            "DestinationRule",
            "orders",
            &format!("  host: order-service\n  trafficPolicy:\n    tls: {{mode: {mode}}}\n"),
        ));
        t.config.clusters[ORDERS].tls.clone()
    };
    assert!(
        tls("ISTIO_MUTUAL").is_some_and(|t| t.identities == ["spiffe://cluster.local/ns/production/sa/order-service"])
    );
    assert_eq!(tls("DISABLE"), None, "plaintext to order-service");
}

/// Istio's auto-mTLS: a client sends plaintext to endpoints whose PeerAuthentication is
/// DISABLE (they would refuse TLS: every call would fail with 503 UF).
#[test]
fn auto_mtls_follows_the_servers_peer_authentication() {
    let pa = |name: &str, selector: &str, mode: &str| {
        resource("PeerAuthentication", name, &format!("{selector}  mtls: {{mode: {mode}}}\n"))
    };
    let orders = "  selector:\n    matchLabels: {app: order-service}\n";
    let t = from_yaml(&pa("orders", orders, "DISABLE"));
    assert_eq!(t.config.clusters[ORDERS].tls, None, "DISABLE server: plaintext");
    assert!(
        t.config.clusters["outbound|80||user-service.production.svc.cluster.local"].tls.is_some(),
        "others keep mTLS"
    );
    assert!(from_yaml(&pa("orders", orders, "STRICT")).config.clusters[ORDERS].tls.is_some());
    assert!(from_yaml(&pa("orders", orders, "PERMISSIVE")).config.clusters[ORDERS].tls.is_some());
    // The namespace says DISABLE, a DR insists on ISTIO_MUTUAL: the DR wins (Istio).
    let forced = pa("default", "", "DISABLE")
        + &resource(
            "DestinationRule",
            "orders",
            "  host: order-service\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n",
        );
    assert!(from_yaml(&forced).config.clusters[ORDERS].tls.is_some());
    // Only v2 is DISABLE: its subset's cluster is plaintext; the whole service's is mTLS, and says so.
    let v2 = pa("v2", "  selector:\n    matchLabels: {app: order-service, version: v2}\n", "DISABLE")
        + &resource("DestinationRule", "orders", "  host: order-service\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n")
        + &format!("{HEAD}  - route:\n    - {{destination: {{host: order-service, subset: v2}}, weight: 50}}\n    - {{destination: {{host: order-service}}, weight: 50}}\n");
    let t = from_yaml(&v2);
    assert_eq!(t.config.clusters[V2].tls, None);
    assert!(t.config.clusters[ORDERS].tls.is_some());
    assert!(
        t.warnings.iter().any(|w| w.contains(
            "1 of 3 endpoints of order-service.production.svc.cluster.local have PeerAuthentication DISABLE"
        )),
        "{:?}",
        t.warnings
    );
}

/// Several DestinationRules for one host: Istio merges them (subsets appended, the first
/// trafficPolicy kept) instead of leaving the later ones' subsets undefined (503 NC).
#[test]
fn destination_rules_for_one_host_are_merged() {
    let yaml = resource("DestinationRule", "a-orders", "  host: order-service\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n")
        + &resource("DestinationRule", "b-orders", "  host: order-service.production.svc.cluster.local\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n  subsets:\n  - {name: v2, labels: {version: v2}}\n  - {name: v1, labels: {version: v2}}\n")
        + &format!("{HEAD}  - route:\n    - {{destination: {{host: order-service, subset: v1}}, weight: 50}}\n    - {{destination: {{host: order-service, subset: v2}}, weight: 50}}\n");
    let t = from_yaml(&yaml);
    assert_eq!(t.config.clusters[V2].endpoints.len(), 1, "b's subset v2 is defined");
    assert_eq!(t.config.clusters[V1].endpoints.len(), 2, "a's v1 wins over b's");
    assert_eq!(t.config.clusters[V2].lb_policy, model::LbPolicy::RoundRobin, "a's trafficPolicy is kept");
    assert!(t.warnings.iter().any(|w| w.contains("both set a trafficPolicy")), "{:?}", t.warnings);
    assert!(t.warnings.iter().any(|w| w.contains("subset \"v1\"") && w.contains("defined again")), "{:?}", t.warnings);
    t.config.validate().unwrap();
}

/// `gateways: [mesh, ns/gw]` binds a VirtualService to the sidecars and a gateway; a match
/// entry naming only gateways is not for sidecars; header names compare without case.
#[test]
fn gateways_beside_mesh_and_header_names_in_any_case() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: orders, namespace: production}\nspec:\n  hosts: [order-service]\n  gateways: [mesh, istio-system/ingress]\n  http:\n  - match:\n    - headers: {X-Canary: {exact: 'true'}}\n      gateways: [istio-system/ingress]\n    route:\n    - destination: {host: order-service, subset: v1}\n  - match:\n    - headers: {X-Canary: {exact: 'true'}}\n    route:\n    - destination: {host: order-service, subset: v2}\n  - route:\n    - destination: {host: order-service}\n";
    let t = from_yaml(vs);
    let routes = &t.config.services["order-service.production.svc.cluster.local"].routes;
    assert_eq!(routes.len(), 2, "the gateway-only entry is not for sidecars: {routes:?}");
    assert_eq!(routes[0].route[0].cluster, V2);
    assert!(routes[0].matches[0].headers.contains_key("x-canary"), "lower-cased: {:?}", routes[0].matches[0]);
    t.config.validate().unwrap();
    let gateway_only = vs.replace("gateways: [mesh, istio-system/ingress]", "gateways: [istio-system/ingress]");
    assert_eq!(
        from_yaml(&gateway_only).config.services["order-service.production.svc.cluster.local"].routes[0]
            .name
            .as_deref(),
        Some("default"),
        "bound to a gateway only: not the sidecars' routes"
    );
}

#[test]
fn consecutive_errors_is_accepted_and_ignored_as_istio_does() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: orders, namespace: production}\nspec:\n  host: order-service\n  trafficPolicy:\n    outlierDetection: {consecutiveErrors: 7, interval: 5s}\n";
    let t = from_yaml(dr);
    let od = t.config.clusters[ORDERS].outlier_detection.clone().unwrap();
    assert_eq!(od.consecutive_5xx_errors, None, "not read as consecutive5xxErrors");
    assert!(t.warnings.iter().any(|w| w.contains("consecutiveErrors") && w.contains("ignored")), "{:?}", t.warnings);
}

/// `weftctl apply`'s check: every registered workload's config translated with the set
/// about to be stored; a config a sidecar would refuse blocks the set, naming the workload
/// and the field; warnings are reported once each.
#[test]
fn analysis_refuses_a_set_a_sidecar_would_nack_and_reports_warnings() {
    use weft_control_plane::analyze::{analyze, merged};
    let load = |yaml: &str| weft_control_plane::istio::load_str(Path::new("t.yaml"), yaml).unwrap();
    let stored = load(&format!("{HEAD}  - route:\n    - destination: {{host: order-service, subset: v9}}\n"));
    let a = analyze(&stored, &registry(), "cluster.local");
    assert!(a.refusals.is_empty(), "{:?}", a.refusals);
    assert_eq!(
        a.warnings.iter().filter(|w| w.contains("subset \"v9\"")).count(),
        1,
        "once, not per workload: {:?}",
        a.warnings
    );
    // Istio's validation has no retry limit; the sidecar allows at most 100: the set is refused.
    let new = load(&format!(
        "{HEAD}  - route:\n    - destination: {{host: order-service}}\n    retries: {{attempts: 500}}\n"
    ));
    let all = merged(&stored, &new);
    assert_eq!(all.len(), 1, "the stored VirtualService is replaced");
    let a = analyze(&all, &registry(), "cluster.local");
    assert!(!a.refusals.is_empty());
    assert!(
        a.refusals.iter().all(|r| r.contains("would refuse its config") && r.contains("retries.attempts")),
        "{:?}",
        a.refusals
    );
    assert!(a.refusals.iter().any(|r| r.starts_with("workload production/api-gateway")), "{:?}", a.refusals);
}

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: payments, namespace: production}\nspec:\n";

#[test]
fn service_entries_become_services_clusters_and_tcp_egress() {
    let t = from_yaml(&format!(
        "{SE}  hosts: [api.payments.example]\n  addresses: [203.0.113.0/24]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  - {{number: 443, name: https, protocol: HTTPS}}\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints:\n  - {{address: 203.0.113.7, labels: {{version: v1}}}}\n  - {{address: 203.0.113.8, ports: {{http: 8080}}, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: payments, namespace: production}}\nspec:\n  host: api.payments.example\n  subsets: [{{name: v2, labels: {{version: v2}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: payments, namespace: production}}\nspec:\n  hosts: [api.payments.example]\n  http:\n  - timeout: 3s\n    route:\n    - destination: {{host: api.payments.example, subset: v2}}\n"
    ));
    let svc = &t.config.services["api.payments.example"];
    assert_eq!(svc.routes[0].timeout, Some(std::time::Duration::from_secs(3)));
    let cluster = &t.config.clusters["outbound|80|v2|api.payments.example"];
    let addrs: Vec<&str> = cluster.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addrs, ["203.0.113.8:8080"], "the subset's endpoint, on its port for `http`");
    assert!(cluster.tls.is_none() && cluster.original_dst.is_none(), "plaintext to outside the mesh");
    assert_eq!(t.config.egress.len(), 1);
    assert_eq!(t.config.egress[0].cluster, "outbound|443||api.payments.example");
    assert_eq!(t.config.egress[0].addresses[0].to_string(), "203.0.113.0/24");
    assert!(t.warnings.iter().all(|w| !w.contains("no registered instances")), "{:?}", t.warnings);
    t.config.validate().unwrap();

    let dns = from_yaml(&format!("{SE}  hosts: [api.example]\n  ports: [{{number: 443, name: http, protocol: HTTP, targetPort: 8443}}]\n  resolution: DNS\n"));
    assert_eq!(
        dns.config.clusters["outbound|443||api.example"].dns,
        ["api.example:8443"],
        "the host itself, on the target port"
    );
    let rr = from_yaml(&format!("{SE}  hosts: [db.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: replica.db.example}}]\n"));
    let c = &rr.config.clusters["outbound|80||db.example"];
    assert_eq!((c.dns.as_slice(), c.dns_first_only), (&["replica.db.example:80".to_string()][..], true));
    let simple = from_yaml(&format!("{SE}  hosts: [api.example]\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 443}}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: production}}\nspec:\n  host: api.example\n  trafficPolicy:\n    tls: {{mode: SIMPLE}}\n"));
    let c = &simple.config.clusters["outbound|80||api.example"];
    assert_eq!(c.tls_origination.as_ref().map(|o| o.sni.as_str()), Some("api.example"), "TLS originated, SNI the host");
    assert_eq!(c.dns, ["api.example:443"]);
    let grpc = from_yaml(&format!(
        "{SE}  hosts: [grpc.example]\n  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]\n  resolution: DNS\n"
    ));
    assert_eq!(
        grpc.config.clusters["outbound|50051||grpc.example"].protocol,
        model::UpstreamProtocol::Http2,
        "a gRPC port speaks HTTP/2"
    );
    let none = from_yaml(&format!(
        "{SE}  hosts: [httpbin.org]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: NONE\n"
    ));
    let only = none.config.clusters["outbound|80||httpbin.org"].original_dst.clone();
    assert_eq!(only.and_then(|o| o.port), Some(80), "where the app was going, on the entry's port only");
    assert!(none.config.services.contains_key("httpbin.org"), "a two-label host stays as written (Istio)");
}

#[test]
fn service_entries_that_would_open_everything_or_need_dns_are_refused() {
    let refused = |spec: &str| {
        let d = weft_control_plane::istio::load_str(Path::new("se.yaml"), &format!("{SE}{spec}")).expect_err("refused");
        d.iter().map(|d| format!("{}: {}", d.field, d.message)).collect::<Vec<_>>().join("\n")
    };
    assert!(refused("  hosts: ['*']\n  ports: [{number: 80, name: http, protocol: HTTP}]\n").contains("every host"));
    assert!(refused(
        "  hosts: ['*.example.com']\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n"
    )
    .contains("spec.resolution: DNS resolution of a wildcard host needs endpoints"));
    assert!(refused("  hosts: [a.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: db.example}]\n")
        .contains("is not an IP address"));
    assert!(refused("  hosts: [a.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a.example}, {address: b.example}]\n")
        .contains("at most one endpoint"));
    assert!(refused(
        "  hosts: [a.example]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n"
    )
    .contains("spec.endpoints"));
    assert!(refused("  hosts: [a.example]\n  ports: [{number: 80, name: x, protocol: UDP}]\n")
        .contains("spec.ports[0].protocol"));
}

/// The traffic features Istio users reach for next, as Istio writes them (deprecated
/// spellings included), become the sidecar's config.
#[test]
fn redirects_direct_responses_cors_mirrors_and_hashing_translate() {
    let t = from_yaml(&format!(
        "{HEAD}  - match: [{{uri: {{prefix: /old/}}}}]\n    redirect: {{prefix_rewrite: /new/, derivePort: FROM_REQUEST_PORT}}\n    mirror: {{host: user-service}}\n  - match: [{{uri: {{exact: /down}}}}]\n    directResponse: {{status: 503, body: {{bytes: ZG93bg==}}}}\n  - route: [{{destination: {{host: order-service}}}}]\n    mirror: {{host: user-service}}\n    mirrorPercent: 30\n    corsPolicy: {{allowOrigin: ['*'], unmatchedPreflights: IGNORE, maxAge: 24h}}\n"
    ));
    let routes = &t.config.services["order-service.production.svc.cluster.local"].routes;
    let rd = routes[0].redirect.as_ref().unwrap();
    assert_eq!(
        (rd.prefix_rewrite.as_deref(), rd.derive_port, rd.code),
        (Some("/new/"), Some(model::DerivePort::FromRequestPort), 301)
    );
    assert!(routes[0].mirrors.is_empty(), "a redirect forwards nothing to copy");
    assert!(t.warnings.iter().any(|w| w.contains("its mirror is never used")), "{:?}", t.warnings);
    let direct = routes[1].direct_response.as_ref().unwrap();
    assert_eq!((direct.status, direct.body.as_ref().unwrap().decode().unwrap()), (503, b"down".to_vec()));
    assert_eq!(
        routes[2].mirrors,
        [model::Mirror { cluster: "outbound|80||user-service.production.svc.cluster.local".into(), percentage: 30.0 }]
    );
    let cors = routes[2].cors.as_ref().unwrap();
    assert_eq!(cors.allow_origins[0].exact.as_deref(), Some("*"));
    assert!(!cors.forward_unmatched_preflights);
    assert_eq!(cors.max_age, Some(std::time::Duration::from_secs(86400)));

    let hashing = |lb: &str| {
        let t = from_yaml(&resource(
            "DestinationRule",
            "orders",
            &format!("  host: order-service\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {lb}\n"),
        ));
        t.config.clusters[ORDERS].consistent_hash.clone().unwrap()
    };
    let h = hashing("{httpHeaderName: X-User, minimumRingSize: 4096}");
    assert_eq!(
        (h.key(), h.table()),
        (Some(model::HashKey::Header("x-user".into())), model::HashTable::RingHash { minimum_ring_size: 4096 })
    );
    let h = hashing("{httpCookie: {name: user, ttl: 0s}, maglev: {tableSize: 65537}}");
    assert_eq!(
        h.key(),
        Some(model::HashKey::Cookie(model::HashCookie {
            name: "user".into(),
            path: None,
            ttl: Some(std::time::Duration::ZERO)
        }))
    );
    assert_eq!(h.table(), model::HashTable::Maglev { table_size: 65537 });
    assert_eq!(hashing("{useSourceIp: true}").key(), Some(model::HashKey::SourceIp));
    assert_eq!(hashing("{httpQueryParameterName: u}").table(), model::HashTable::RingHash { minimum_ring_size: 1024 });
}

/// Istio's protocol selection by port: `http2`/`grpc` ports are HTTP/2 to the endpoints
/// and to the app, `http` ports HTTP/1.1 (HTTP/2 with `UPGRADE`), unnamed ports keep the
/// caller's protocol and speak HTTP/1.1 to the app; `useClientProtocol` keeps the caller's.
#[test]
fn the_port_protocol_picks_what_is_spoken() {
    let resources: Vec<weft_control_plane::istio::Resource> = Vec::new();
    let with = |protocol: Option<&str>, dr: &str| {
        let mut reg = registry();
        for inst in reg.namespaces.get_mut("production").unwrap().get_mut("order-service").unwrap().values_mut() {
            inst.protocol = protocol.map(|p| model::AppProtocol::from_port(p).unwrap().unwrap());
        }
        let resources = if dr.is_empty() {
            resources.clone()
        } else {
            let text = resource(
                "DestinationRule",
                "orders",
                &format!("  host: order-service\n  trafficPolicy:\n    connectionPool: {{http: {dr}}}\n"),
            );
            weft_control_plane::istio::load_str(Path::new("t.yaml"), &text).unwrap()
        };
        let client = translate(&resources, &reg, &gateway(), "1").config.clusters[ORDERS].protocol;
        let orders = model::Workload {
            name: "order-service".into(),
            namespace: "production".into(),
            service_account: "order-service".into(),
            labels: [("app".to_string(), "order-service".to_string())].into(),
        };
        (client, translate(&resources, &reg, &orders, "1").config.inbound.protocol)
    };
    use model::UpstreamProtocol::{Http1, Http2, UseClient};
    assert_eq!(with(Some("grpc-orders"), ""), (Http2, Http2));
    assert_eq!(with(Some("http2"), "{h2UpgradePolicy: DO_NOT_UPGRADE}"), (Http2, Http2), "nothing to upgrade");
    assert_eq!(with(Some("http"), ""), (Http1, Http1));
    assert_eq!(with(Some("http"), "{h2UpgradePolicy: UPGRADE}"), (Http2, Http1), "the hop between sidecars only");
    assert_eq!(with(None, ""), (UseClient, Http1));
    assert_eq!(with(Some("grpc"), "{useClientProtocol: true}"), (UseClient, Http2));
}

/// istio.io's locality failover task, unchanged from the shared corpus: the helloworld
/// instances in four localities get the priorities the task lists for a client in
/// region1/zone1 (0, 2, 3 for the failover region, 4 for the rest).
#[test]
fn the_locality_failover_task_gives_the_priorities_istio_lists() {
    let file = dir().join("../../shared/istio-corpus/istio-io-locality-failover-destination-rule.yaml");
    // Applied into the sample namespace, as the task does (`kubectl apply -n sample`).
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("  name: helloworld\n", "  name: helloworld\n  namespace: sample\n");
    let resources = weft_control_plane::istio::load_str(&file, &text).unwrap();
    let mut registry = Registry::default();
    {
        let r = &mut registry;
        for (i, (region, zone)) in
            [("region1", "zone1"), ("region1", "zone2"), ("region2", "zone3"), ("region3", "zone4")].iter().enumerate()
        {
            let labels = [
                ("app".to_string(), "helloworld".to_string()),
                ("topology.kubernetes.io/region".to_string(), region.to_string()),
                ("topology.kubernetes.io/zone".to_string(), zone.to_string()),
            ]
            .into();
            let inst = weft_control_plane::registry::Instance {
                address: format!("10.0.0.{i}:15006"),
                labels,
                service_account: "helloworld".into(),
                port: 5000,
                protocol: None,
                other_ports: Vec::new(),
                metrics_port: None,
            };
            r.insert("sample", "helloworld", &format!("hw-{i}"), inst);
        }
    }
    let curl = model::Workload {
        name: "curl".into(),
        namespace: "sample".into(),
        service_account: "curl".into(),
        labels: [
            ("app".to_string(), "curl".to_string()),
            ("topology.kubernetes.io/region".to_string(), "region1".to_string()),
            ("topology.kubernetes.io/zone".to_string(), "zone1".to_string()),
        ]
        .into(),
    };
    let t = translate(&resources, &registry, &curl, "1");
    let cluster = &t.config.clusters["outbound|5000||helloworld.sample.svc.cluster.local"];
    let mut by_zone: Vec<(String, u32)> =
        cluster.endpoints.iter().map(|e| (e.locality.clone().unwrap(), e.priority)).collect();
    by_zone.sort();
    assert_eq!(
        by_zone,
        [
            ("region1/zone1/".into(), 0),
            ("region1/zone2/".into(), 2),
            ("region2/zone3/".into(), 3),
            ("region3/zone4/".into(), 4)
        ]
    );
    // `weftctl explain` says so.
    let request = weft_control_plane::explain::Request {
        host: "helloworld.sample:5000".into(),
        method: "GET".into(),
        path: "/hello".into(),
        headers: vec![],
    };
    let e = weft_control_plane::explain::explain(&t.config, &request).unwrap();
    let locality = e.destinations[0].locality.clone().unwrap();
    assert!(
        locality
            .contains("level 0 region1/zone1/; level 2 region1/zone2/; level 3 region2/zone3/; level 4 region3/zone4/"),
        "{locality}"
    );
}

/// `retryIgnorePreviousHosts: false` and `retryRemoteLocalities: true` reach the sidecar.
#[test]
fn where_retries_may_go_translates() {
    let t = from_yaml(&format!(
        "{HEAD}  - route: [{{destination: {{host: order-service}}}}]\n    retries: {{attempts: 2, retryOn: 5xx, retryIgnorePreviousHosts: false, retryRemoteLocalities: true}}\n"
    ));
    let r = t.config.services["order-service.production.svc.cluster.local"].routes[0].retries.clone().unwrap();
    assert!(r.previous_hosts && r.remote_localities, "{r:?}");
    let t = from_yaml(&format!(
        "{HEAD}  - route: [{{destination: {{host: order-service}}}}]\n    retries: {{attempts: 2}}\n"
    ));
    let r = t.config.services["order-service.production.svc.cluster.local"].routes[0].retries.clone().unwrap();
    assert!(!r.previous_hosts && !r.remote_localities, "Istio's defaults: avoid tried hosts, stay local");
}

/// A destination's `headers.request.set.host` rewrites the authority of that destination's
/// requests; set in two places it is refused, as by Istio.
#[test]
fn a_destinations_host_header_is_its_authority() {
    let t = from_yaml(&format!(
        "{HEAD}  - route:\n    - destination: {{host: order-service}}\n      headers: {{request: {{set: {{Host: orders.internal, x-a: b}}}}}}\n"
    ));
    let d = &t.config.services["order-service.production.svc.cluster.local"].routes[0].route[0];
    assert_eq!(d.authority.as_deref(), Some("orders.internal"));
    assert_eq!(d.headers.as_ref().unwrap().request.set.keys().collect::<Vec<_>>(), ["x-a"]);
    let twice = format!(
        "{HEAD}  - route:\n    - destination: {{host: order-service}}\n      headers: {{request: {{set: {{host: a.internal}}}}}}\n    rewrite: {{authority: b.internal}}\n"
    );
    let e = weft_control_plane::istio::load_str(Path::new("t.yaml"), &twice).unwrap_err();
    assert!(e[0].to_string().contains("the authority is set in more than one place"), "{e:?}");
}

/// `uriRegexRewrite`, istio.io's example: `/service/foo/v1/api` → `/v1/api/instance/foo`.
#[test]
fn uri_regex_rewrite_translates_to_the_sidecars_regex_rewrite() {
    let t = from_yaml(&format!(
        "{HEAD}  - route: [{{destination: {{host: order-service}}}}]\n    rewrite:\n      uriRegexRewrite: {{match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}\n"
    ));
    let rr = t.config.services["order-service.production.svc.cluster.local"].routes[0]
        .rewrite
        .clone()
        .unwrap()
        .uri_regex
        .unwrap();
    assert_eq!((rr.pattern.as_str(), rr.substitution.as_str()), ("^/service/([^/]+)(/.*)$", "\\2/instance/\\1"));
}

/// An ingress gateway workload (it carries the role label `weft-proxy gateway` adds).
fn ingress() -> model::Workload {
    let (role, gateway) = model::gateway::ROLE_LABEL;
    model::Workload {
        name: "ingress".into(),
        namespace: "production".into(),
        service_account: "ingress".into(),
        labels: [("istio", "ingressgateway"), (role, gateway)].into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
    }
}

#[test]
fn each_gateway_server_routes_only_what_is_bound_to_its_own_gateway() {
    let gw = |ns: &str, name: &str, port: u16, hosts: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: https, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {tls}\n---\n"
        )
    };
    let vs = |name: &str, hosts: &str, gateway: &str, dest: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: production}}\nspec:\n  hosts: {hosts}\n  gateways: [{gateway}]\n  http:\n  - route: [{{destination: {{host: {dest}}}}}]\n---\n"
        )
    };
    let yaml = [
        gw("production", "a-admin", 443, "['admin.example.com']", "{mode: MUTUAL, credentialName: admin}"),
        gw("production", "b-shop", 443, "['*.example.com']", "{mode: SIMPLE, credentialName: shop}"),
        // Another namespace repeats the admin name on the same port, as SIMPLE: left out.
        gw(
            "zzz",
            "c-takeover",
            443,
            "['admin.example.com', 'other.example.org']",
            "{mode: SIMPLE, credentialName: admin}",
        ),
        vs("admin", "[admin.example.com]", "a-admin", "order-service"),
        vs("shop", "['*.example.com']", "b-shop", "product-service"),
        vs("zz-late", "[other.example.org]", "zzz/c-takeover", "user-service"),
        // A newer Gateway on a plaintext port with the admin name, and a newer VirtualService bound
        // to it claiming that name: the older VirtualService keeps the host, and this server
        // does not route it at all.
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: d-plain, namespace: zzz}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*/admin.example.com']\n---\n".to_string(),
        vs("zz-plain", "[admin.example.com]", "zzz/d-plain", "user-service"),
    ]
    .concat();
    let resources =
        weft_control_plane::istio::load_str(Path::new("t.yaml"), &yaml).unwrap_or_else(|d| panic!("{d:#?}"));
    let t = translate(&resources, &registry(), &ingress(), "1");
    let routes = |name: &str| t.config.gateway.iter().find(|s| s.name == name).map(|s| s.routes.clone());
    assert_eq!(routes("production/a-admin/0"), Some(vec!["admin.example.com".to_string()]));
    assert_eq!(routes("production/b-shop/0"), Some(vec!["*.example.com".to_string()]), "not the admin host");
    let takeover = t.config.gateway.iter().find(|s| s.name == "zzz/c-takeover/0").expect("other.example.org stays");
    assert_eq!(takeover.hosts, ["other.example.org"], "admin.example.com on 443 is the oldest server's");
    assert_eq!(takeover.routes, ["other.example.org"], "never the admin VirtualService's routes");
    assert!(
        t.warnings.iter().any(|w| w.contains("admin.example.com on port 443 is an older server's")),
        "{:?}",
        t.warnings
    );
    assert!(t.warnings.iter().any(|w| w.contains("claimed by several VirtualServices")), "{:?}", t.warnings);
    assert_eq!(routes("zzz/d-plain/0"), Some(vec![]), "the losing VirtualService's server routes nothing");
    let admin_cluster = &t.config.services["admin.example.com"].routes[0].route[0].cluster;
    assert!(admin_cluster.contains("order-service"), "{admin_cluster}");
    t.config.validate().unwrap();
    // Without the role label the same workload is a sidecar: no servers, no gateway routes.
    let sidecar = model::Workload { labels: [("istio".to_string(), "ingressgateway".to_string())].into(), ..ingress() };
    let t = translate(&resources, &registry(), &sidecar, "1");
    assert!(t.config.gateway.is_empty() && !t.config.services.contains_key("admin.example.com"));
}

/// Istio's TCP ports: a service port named `tcp`/`redis`/… (or another TCP port of a
/// multi-port service) becomes a `tcp_proxy` to `outbound|PORT||HOST` with the endpoints'
/// identities; a service whose port is TCP gets no HTTP routes; the server's sidecar is told
/// its app's TCP ports, and no other.
#[test]
fn tcp_ports_become_mesh_tcp_clusters_and_the_servers_inbound_ports() {
    let mut reg = registry();
    for inst in reg.namespaces.get_mut("production").unwrap().get_mut("order-service").unwrap().values_mut() {
        inst.other_ports = ["tcp-db:5432", "http-admin:9090"].map(|p| model::ServicePort::parse(p).unwrap()).to_vec();
    }
    let cache = weft_control_plane::registry::Instance {
        address: "10.0.0.9:15006".into(),
        labels: [("app".to_string(), "cache".to_string())].into(),
        service_account: "cache".into(),
        port: 6379,
        protocol: Some(model::AppProtocol::Tcp),
        other_ports: Vec::new(),
        metrics_port: None,
    };
    reg.insert("production", "cache", "cache-0", cache);
    let strict = resource("PeerAuthentication", "default", "  mtls: {mode: STRICT}\n");
    let resources = weft_control_plane::istio::load_str(Path::new("t.yaml"), &strict).unwrap();
    let client = translate(&resources, &reg, &gateway(), "1").config;
    let db = "outbound|5432||order-service.production.svc.cluster.local";
    let cache = "outbound|6379||cache.production.svc.cluster.local";
    assert_eq!(
        client.tcp,
        vec![
            model::TcpService { port: 6379, cluster: cache.into() },
            model::TcpService { port: 5432, cluster: db.into() }
        ]
    );
    assert_eq!(client.clusters[db].endpoints.len(), client.clusters[ORDERS].endpoints.len());
    assert_eq!(
        client.clusters[cache].tls.as_ref().unwrap().identities,
        ["spiffe://cluster.local/ns/production/sa/cache"],
        "the server must prove its service account"
    );
    assert!(client.services.contains_key("order-service.production.svc.cluster.local"), "HTTP stays on port 80");
    assert!(!client.services.contains_key("cache.production.svc.cluster.local"), "a TCP service has no HTTP routes");
    client.validate().unwrap();

    let own = |name: &str, sa: &str, labels: &[(&str, &str)]| model::Workload {
        name: name.into(),
        namespace: "production".into(),
        service_account: sa.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let cache_side = translate(&resources, &reg, &own("cache", "cache", &[("app", "cache")]), "1").config;
    assert_eq!(cache_side.inbound.tcp_ports, [6379]);
    let orders_v1 = reg.namespaces["production"]["order-service"].values().next().unwrap().labels.clone();
    let labels: Vec<(&str, &str)> = orders_v1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let orders_side = translate(&resources, &reg, &own("order-service", "order-service", &labels), "1").config;
    assert_eq!(orders_side.inbound.tcp_ports, [5432]);
    assert_eq!(orders_side.inbound.http_ports, [9090]);
    // The other HTTP port has routes of its own, to its own cluster.
    let orders = &client.services["order-service.production.svc.cluster.local"];
    assert_eq!(orders.ports.keys().collect::<Vec<_>>(), [&9090]);
    assert_eq!(orders.ports[&9090][0].route[0].cluster, "outbound|9090||order-service.production.svc.cluster.local");
    assert_eq!(orders.routes[0].route[0].cluster, ORDERS);
    // A VirtualService's destination without `port` takes the port being routed (Istio's
    // listener port); a match on `port` is that port's only.
    let vs = resource(
        "VirtualService",
        "orders",
        "  hosts: [order-service]\n  http:\n  - match:\n    - port: 9090\n    route:\n    - destination: {host: order-service, subset: v2}\n  - route:\n    - destination: {host: order-service, subset: v1}\n",
    );
    let resources = weft_control_plane::istio::load_str(Path::new("t.yaml"), &(strict + &vs)).unwrap();
    let client = translate(&resources, &reg, &gateway(), "1").config;
    let orders = &client.services["order-service.production.svc.cluster.local"];
    assert_eq!(orders.routes.len(), 1, "the port-9090 rule is not the service port's");
    assert_eq!(orders.routes[0].route[0].cluster, V1);
    assert_eq!(orders.ports[&9090].len(), 1, "a catch-all for 9090: later rules unreachable");
    assert_eq!(orders.ports[&9090][0].route[0].cluster, "outbound|9090|v2|order-service.production.svc.cluster.local");
    // Another workload claiming the app label under another service account gets no port to dial.
    let impostor = translate(&resources, &reg, &own("cache-impostor", "intruder", &[("app", "cache")]), "1").config;
    assert!(impostor.inbound.tcp_ports.is_empty());
}
