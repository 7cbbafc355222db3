//! Service selection by Host, Istio's route semantics, weighted splits, rewrites, headers.

use crate::harness::*;

const SVC: &str = "svc.test.svc.cluster.local";

async fn canary() -> (Upstream, Upstream, weft_proxy::Running) {
    let (v1, v2) = (Upstream::named("v1").await, Upstream::named("v2").await);
    let services = format!(
        r#"  {SVC}:
    routes:
      - name: by-header
        match: [ {{ headers: {{ x-canary: {{ exact: "true" }} }} }} ]
        route: [ {{ cluster: v2 }} ]
      - name: weighted
        route: [ {{ cluster: v1, weight: 90 }}, {{ cluster: v2, weight: 10 }} ]
"#
    );
    let clusters = format!("{}{}", cluster("v1", "", &[&v1]), cluster("v2", "", &[&v2]));
    let proxy = start(&config_yaml(&services, &clusters)).await;
    (v1, v2, proxy)
}

#[tokio::test]
async fn weighted_split_follows_weights() {
    let (_v1, _v2, proxy) = canary().await;
    let n = 4000;
    let counts = tally(proxy.outbound, "svc", "/", &[], n).await;
    let v2 = counts.get("200 v2").copied().unwrap_or(0);
    let v1 = counts.get("200 v1").copied().unwrap_or(0);
    assert_eq!(v1 + v2, n, "every request answered: {counts:?}");
    // 10 % of 4000 = 400, standard deviation 19: ±5 sd.
    assert!((305..=495).contains(&v2), "v2 got {v2} of {n}");
}

#[tokio::test]
async fn header_match_takes_precedence_over_split() {
    let (_v1, _v2, proxy) = canary().await;
    let counts = tally(proxy.outbound, "svc", "/", &[("x-canary", "true")], 200).await;
    assert_eq!(counts.get("200 v2"), Some(&200), "{counts:?}");
    // A different value does not match the exact header rule.
    let counts = tally(proxy.outbound, "svc", "/", &[("x-canary", "TRUE")], 200).await;
    assert!(counts.get("200 v1").copied().unwrap_or(0) > 150, "{counts:?}");
}

#[tokio::test]
async fn weights_need_not_sum_to_100() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: a, weight: 1 }}, {{ cluster: b, weight: 3 }}, {{ cluster: a, weight: 0 }} ]\n");
    let clusters = format!("{}{}", cluster("a", "", &[&a]), cluster("b", "", &[&b]));
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let counts = tally(proxy.outbound, "svc", "/", &[], 2000).await;
    let share_b = counts.get("200 b").copied().unwrap_or(0);
    // 75 % of 2000 = 1500, sd 19.4.
    assert!((1400..=1600).contains(&share_b), "{counts:?}");
}

#[tokio::test]
async fn uri_matches_in_order_first_wins() {
    let ups = [
        Upstream::named("exact").await,
        Upstream::named("regex").await,
        Upstream::named("prefix").await,
        Upstream::named("fallback").await,
    ];
    let services = format!(
        r#"  {SVC}:
    routes:
      - match: [ {{ uri: {{ exact: /api/users/me }} }} ]
        route: [ {{ cluster: exact }} ]
      - match: [ {{ uri: {{ regex: '/api/users/[0-9]+' }} }}, {{ method: {{ exact: DELETE }} }} ]
        route: [ {{ cluster: regex }} ]
      - match: [ {{ uri: {{ prefix: /api/ }}, method: {{ exact: GET }} }} ]
        route: [ {{ cluster: prefix }} ]
      - route: [ {{ cluster: fallback }} ]
"#
    );
    let clusters: String = ups.iter().map(|u| cluster(&u.name, "", &[u])).collect();
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let mut c = Client::h1(proxy.outbound).await;
    let cases = [
        ("GET", "/api/users/me", "exact"),
        ("GET", "/api/users/me?x=1", "exact"),
        ("GET", "/api/users/42", "regex"),
        ("GET", "/api/users/42/orders", "prefix"),
        ("DELETE", "/anything", "regex"),
        ("GET", "/api/products", "prefix"),
        ("POST", "/api/products", "fallback"),
        ("GET", "/", "fallback"),
    ];
    for (method, path, want) in cases {
        let got = c.send(method, "svc", path, &[], "").await;
        assert_eq!(got.body, want, "{method} {path}");
    }
}

#[tokio::test]
async fn under_registry_only_an_unknown_host_is_502_on_the_explicit_listener_too() {
    let up = Upstream::named("v1").await;
    let services = format!("  {SVC}:\n    routes:\n      - name: all\n        route: [ {{ cluster: v1 }} ]\n");
    let yaml = config_yaml(&services, &cluster("v1", "", &[&up]));
    let proxy = start(&yaml.replace("services:\n", "outboundTrafficPolicy: REGISTRY_ONLY\nservices:\n")).await;
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "v1", "the mesh's own hosts still route");
    let got = get(proxy.outbound, "api.github.com", "/", &[]).await;
    assert_eq!(got.status, 502, "Istio's block_all virtual host: {}", got.header("x-weft-error"));
    let metrics = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&metrics, "istio_requests_total", &[r#"response_flags="NR""#, r#"response_code="502""#]), 1.0);
}

#[tokio::test]
async fn host_forms_and_unknown_hosts() {
    let (_v1, _v2, proxy) = canary().await;
    for host in ["svc", "svc:80", "svc.test", "svc.test.svc", "svc.test.svc.cluster.local:8080", "SVC.Test"] {
        let got = get(proxy.outbound, host, "/", &[("x-canary", "true")]).await;
        assert_eq!(got.body, "v2", "host {host}");
    }
    let got = get(proxy.outbound, "other", "/", &[]).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("x-weft-error"), r#"no service for host "other""#);
    let metrics = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&metrics, "istio_requests_total", &[r#"response_flags="NR""#, r#"response_code="404""#]), 1.0);
}

#[tokio::test]
async fn no_matching_route_is_404_nr() {
    let up = Upstream::named("only").await;
    let services = format!("  {SVC}:\n    routes:\n      - match: [ {{ uri: {{ prefix: /only }} }} ]\n        route: [ {{ cluster: c }} ]\n");
    let proxy = start(&config_yaml(&services, &cluster("c", "", &[&up]))).await;
    let got = get(proxy.outbound, "svc", "/other", &[]).await;
    assert_eq!(got.status, 404);
    assert!(got.header("x-weft-error").contains("no route matched"), "{got:?}");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn rewrite_and_header_operations() {
    let up = Upstream::named("up").await;
    let services = format!(
        r#"  {SVC}:
    routes:
      - match: [ {{ uri: {{ prefix: /api/orders }} }} ]
        rewrite: {{ uri: /orders, authority: orders.internal }}
        headers:
          request: {{ set: {{ x-set: route }}, add: {{ x-added: one }}, remove: [ x-secret ] }}
          response: {{ set: {{ x-served-by: weft }}, remove: [ x-upstream ] }}
        route:
          - cluster: c
            headers: {{ request: {{ set: {{ x-set: destination }} }} }}
"#
    );
    let proxy = start(&config_yaml(&services, &cluster("c", "", &[&up]))).await;
    let got = get(proxy.outbound, "svc", "/api/orders/7?full=1", &[("x-secret", "s"), ("x-added", "zero")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-served-by"), "weft");
    assert_eq!(got.header("x-upstream"), "", "removed from the response");
    let seen = up.last();
    assert_eq!(seen.path, "/orders/7?full=1");
    assert_eq!(seen.headers["host"], "orders.internal");
    assert_eq!(seen.headers["x-envoy-original-path"], "/api/orders/7?full=1");
    assert_eq!(seen.headers["x-set"], "destination", "destination set wins over route set");
    let added: Vec<_> = seen.headers.get_all("x-added").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(added, ["zero", "one"]);
    assert!(!seen.headers.contains_key("x-secret"));
}

#[tokio::test]
async fn request_ids_generated_and_passed_through() {
    let up = Upstream::named("up").await;
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let proxy = start(&config_yaml(&services, &cluster("c", "", &[&up]))).await;
    get(proxy.outbound, "svc", "/", &[]).await;
    let generated = up.last().headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(&generated[14..15], "4", "version 4");
    get(proxy.outbound, "svc", "/", &[("x-request-id", "abc-123"), ("x-correlation-id", "corr-9")]).await;
    let seen = up.last();
    assert_eq!(seen.headers["x-request-id"], "abc-123");
    assert_eq!(seen.headers["x-correlation-id"], "corr-9");
}

#[tokio::test]
async fn standard_metrics_carry_istio_labels() {
    let (_v1, _v2, proxy) = canary().await;
    for _ in 0..3 {
        get(proxy.outbound, "svc", "/", &[("x-canary", "true")]).await;
    }
    let text = admin(&proxy, "/stats/prometheus").await;
    let labels = [
        r#"reporter="source""#,
        r#"source_workload="client""#,
        r#"source_workload_namespace="test""#,
        r#"destination_service="svc.test.svc.cluster.local""#,
        r#"destination_service_name="svc""#,
        r#"destination_service_namespace="test""#,
        r#"destination_version="v2""#,
        r#"response_code="200""#,
        r#"response_flags="-""#,
        r#"request_protocol="http""#,
    ];
    assert_eq!(metric(&text, "istio_requests_total", &labels), 3.0, "{text}");
    assert_eq!(metric(&text, "istio_request_duration_milliseconds_count", &labels), 3.0);
    assert!(
        text.contains(r#"istio_request_duration_milliseconds_bucket{"#)
            && text.contains(r#"le="0.5""#)
            && text.contains(r#"le="3600000""#)
    );
    assert!(metric(&text, "istio_response_bytes_sum", &labels) > 3.0 * 2.0);
}

#[tokio::test]
async fn connections_are_reused() {
    let up = Upstream::named("up").await;
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let proxy = start(&config_yaml(&services, &cluster("c", "", &[&up]))).await;
    let counts = tally(proxy.outbound, "svc", "/", &[], 200).await;
    assert_eq!(counts.get("200 up"), Some(&200));
    assert_eq!(up.connections(), 1, "200 sequential requests over one upstream connection");
}

/// A destination's own `Host` (Istio: its `headers.request.set.host`) is what its upstream
/// sees; the other destination keeps the request's.
#[tokio::test]
async fn a_destinations_authority_is_the_host_its_upstream_sees() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let services = "  svc.test.svc.cluster.local:\n    routes:\n      - match: [ { uri: { prefix: /a } } ]\n        route: [ { cluster: a, authority: orders.internal } ]\n      - route: [ { cluster: b } ]\n";
    let clusters = cluster("a", "", &[&a]) + &cluster("b", "", &[&b]);
    let proxy = start(&config_yaml(services, &clusters)).await;
    assert_eq!(get(proxy.outbound, "svc", "/a", &[]).await.body, "a");
    assert_eq!(a.last().headers["host"], "orders.internal");
    assert_eq!(get(proxy.outbound, "svc", "/b", &[]).await.body, "b");
    assert_eq!(b.last().headers["host"], "svc");
}

/// `rewrite.uriRegexRewrite` (Envoy's regex_rewrite) through the sidecar: the upstream sees
/// the rewritten path with the query kept, and the original in `x-envoy-original-path`.
#[tokio::test]
async fn a_regex_rewrite_reaches_the_upstream() {
    let a = Upstream::named("a").await;
    let services = "  svc.test.svc.cluster.local:\n    routes:\n      - route: [ { cluster: a } ]\n        rewrite: { uriRegex: { pattern: '^/service/([^/]+)(/.*)$', substitution: '\\2/instance/\\1' } }\n";
    let proxy = start(&config_yaml(services, &cluster("a", "", &[&a]))).await;
    assert_eq!(get(proxy.outbound, "svc", "/service/foo/v1/api?x=1", &[]).await.body, "a");
    let seen = a.last();
    assert_eq!(seen.path, "/v1/api/instance/foo?x=1");
    assert_eq!(seen.headers["x-envoy-original-path"], "/service/foo/v1/api?x=1");
}
