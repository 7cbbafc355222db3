//! `weftctl explain` runs the sidecar's matching code on the translated config.

use std::path::PathBuf;
use weft_control_plane::explain::{explain, Request};
use weft_control_plane::istio::load_paths;
use weft_control_plane::registry::Registry;
use weft_control_plane::translate::translate;

fn config() -> weft_model::ProxyConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let resources = load_paths(&[dir.join("../policies")]).unwrap();
    let registry: Registry =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("tests/fixtures/registry.yaml")).unwrap()).unwrap();
    let w = weft_model::Workload {
        name: "api-gateway".into(),
        namespace: "production".into(),
        service_account: "api-gateway".into(),
        labels: Default::default(),
    };
    translate(&resources, &registry, &w, "1").config
}

fn req(host: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        host: host.into(),
        method: "GET".into(),
        path: "/orders".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[test]
fn canary_header_goes_to_v2() {
    let e = explain(&config(), &req("order-service", &[("x-canary", "true")])).unwrap();
    assert_eq!(e.route.as_deref(), Some("canary-header"));
    assert_eq!(e.destinations.len(), 1);
    assert_eq!(e.destinations[0].share, 100.0);
    assert!(e.destinations[0].cluster.contains("|v2|"));
    assert_eq!(e.destinations[0].cluster_settings["protocol"], "HTTP2");
    assert!(e.to_string().contains("canary-header"));
}

#[test]
fn others_split_ninety_ten() {
    let e = explain(&config(), &req("order-service.production:80", &[])).unwrap();
    assert_eq!(e.route.as_deref(), Some("weighted"));
    let shares: Vec<f64> = e.destinations.iter().map(|d| d.share).collect();
    assert_eq!(shares, [90.0, 10.0]);
    assert_eq!(e.destinations[0].endpoints.len(), 2);
}

#[test]
fn unknown_hosts_say_what_the_sidecar_answers() {
    let e = explain(&config(), &req("nowhere", &[])).unwrap();
    assert!(e.local_reply.unwrap().starts_with("404 NR"));
}

#[test]
fn explain_runs_the_destination_authorization() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let resources = load_paths(&[dir.join("../policies")]).unwrap();
    let registry: Registry =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("tests/fixtures/registry.yaml")).unwrap()).unwrap();
    let order = weft_model::Workload {
        name: "order-service".into(),
        namespace: "production".into(),
        service_account: "order-service".into(),
        labels: [("app".to_string(), "order-service".to_string())].into(),
    };
    let dest = translate(&resources, &registry, &order, "1").config;
    let r = req("order-service", &[]);
    let user =
        weft_control_plane::explain::authorize(&dest, Some("spiffe://cluster.local/ns/production/sa/user-service"), &r);
    assert!(user.starts_with("denied"), "user-service never calls order-service: {user}");
    let gateway =
        weft_control_plane::explain::authorize(&dest, Some("spiffe://cluster.local/ns/production/sa/api-gateway"), &r);
    assert_eq!(gateway, "allowed", "policies/ allows the gateway, unlike the seed's policy as written");
    let notify = weft_control_plane::explain::authorize(
        &dest,
        Some("spiffe://cluster.local/ns/production/sa/notification-service"),
        &r,
    );
    assert!(notify.starts_with("denied: 403 RBAC: access denied"), "{notify}");
}

/// `weftctl explain --access`: for each service, who may call what.
#[test]
fn access_lists_every_services_callers_and_operations() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let resources = load_paths(&[dir.join("../policies")]).unwrap();
    let registry: Registry =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("tests/fixtures/registry.yaml")).unwrap()).unwrap();
    let listed = weft_control_plane::explain::access(&resources, &registry);
    let of = |svc: &str| listed.iter().find(|a| a.service == format!("{svc}.production")).unwrap().to_string();
    let products = of("product-service");
    assert!(products.contains("ALLOW nothing  (ns[production]-policy[deny-by-default])"), "{products}");
    assert!(
        products.contains("cluster.local/ns/production/sa/order-service → POST | DELETE /products/*"),
        "{products}"
    );
    assert!(products.contains("sa/api-gateway → GET /products | /products/*; or POST /products"), "{products}");
    assert!(of("notification-service").contains("sa/user-service → POST /notifications"));
    let gateway = of("api-gateway");
    assert!(
        gateway.contains("ALLOW cluster.local/ns/production/sa/shop-ingress → any operation"),
        "api-gateway: the ingress gateway only\n{gateway}"
    );
    assert_eq!(gateway.lines().count(), 3, "{gateway}");
}

/// Istio YAML with the traffic features users reach for next, translated, then explained
/// by the sidecar's own code: the redirect's Location, the CORS verdict, the mirror, and
/// the endpoint a consistent-hash key picks.
#[test]
fn explain_shows_redirects_cors_mirrors_and_hash_keys() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let registry: Registry =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("tests/fixtures/registry.yaml")).unwrap()).unwrap();
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: production}
spec:
  hosts: [order-service]
  http:
  - match: [{uri: {prefix: /v1/}}]
    redirect: {prefixRewrite: /v2/, redirectCode: 308}
  - route: [{destination: {host: order-service}}]
    mirror: {host: user-service}
    mirrorPercentage: {value: 25}
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}]
      allowMethods: [GET]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: production}
spec:
  host: order-service
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: X-User}
"#;
    let resources = weft_control_plane::istio::load_str(std::path::Path::new("t.yaml"), yaml).unwrap();
    let w = weft_model::Workload {
        name: "api-gateway".into(),
        namespace: "production".into(),
        service_account: "api-gateway".into(),
        labels: Default::default(),
    };
    let config = translate(&resources, &registry, &w, "1").config;
    let mut r = req("order-service", &[]);
    r.path = "/v1/orders/7?x=1".into();
    let e = explain(&config, &r).unwrap();
    assert_eq!(e.answer.as_deref(), Some("redirect 308 to http://order-service/v2/orders/7?x=1"));

    let e =
        explain(&config, &req("order-service", &[("origin", "https://shop.example"), ("x-user", "alice")])).unwrap();
    assert_eq!(
        e.cors.as_deref(),
        Some("origin \"https://shop.example\" allowed: the response gets access-control-allow-origin")
    );
    assert_eq!(e.mirrors, ["copy to outbound|80||user-service.production.svc.cluster.local (25 % of requests)"]);
    let hash = e.destinations[0].hash.clone().unwrap();
    assert!(hash.starts_with("consistent hash on header x-user → "), "{hash}");
    // The same key picks the same endpoint every time; the text says which.
    let again = explain(&config, &req("order-service", &[("x-user", "alice")])).unwrap();
    assert_eq!(again.destinations[0].hash.as_deref(), Some(hash.as_str()));
    let text = e.to_string();
    assert!(text.contains("cors:") && text.contains("mirror:") && text.contains("consistent hash"), "{text}");
    let none = explain(&config, &req("order-service", &[])).unwrap();
    assert!(none.destinations[0].hash.as_deref().unwrap().ends_with("the request has none, so a random endpoint"));
}

#[test]
fn the_shops_ingress_gateway_is_explained_server_first() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let resources = load_paths(&[dir.join("../policies")]).unwrap();
    let registry: Registry =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("tests/fixtures/registry.yaml")).unwrap()).unwrap();
    let (role, gateway) = weft_model::gateway::ROLE_LABEL;
    let w = weft_model::Workload {
        name: "shop-ingress".into(),
        namespace: "production".into(),
        service_account: "shop-ingress".into(),
        labels: [("istio", "ingressgateway"), (role, gateway)].into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
    };
    let config = translate(&resources, &registry, &w, "1").config;
    let mut r = req("127.0.0.1:8443", &[]);
    r.path = "/api/products".into();
    let e = explain(&config, &r).unwrap();
    let g = e.gateway.clone().expect("a gateway's explanation");
    assert_eq!(
        g.servers,
        ["production/shop-gateway/0 :8443 (TLS SIMPLE; the client's SNI must name this server, else 421) → routed"],
        "{e}"
    );
    assert_eq!(g.decision, "token: no end user; authz: allowed", "the gateway's ALLOW for the public: {e}");
    assert!(e.destinations[0].cluster.contains("api-gateway"), "{e}");
    // The same workload without the gateway role is a sidecar: no servers, the mesh's routes.
    let sidecar = weft_model::Workload { labels: [("istio".to_string(), "ingressgateway".to_string())].into(), ..w };
    assert!(translate(&resources, &registry, &sidecar, "1").config.gateway.is_empty());
}
