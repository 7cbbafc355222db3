//! Micro-benchmarks of the per-request lookups and of a config reload, on the
//! sidecar's own code (`weft_proxy::{snapshot, route, balance}`).
//!
//! - `select/{last,middle}/N`: service by `Host`, then route by Istio's rules,
//!   in one service of N routes; route i matches `uri prefix /svc{i}/` AND
//!   header `x-route: r{i}`. The request for the last route walks every route
//!   first (the worst case of first-match-wins).
//! - `weighted_pick/K`: a weighted destination out of K.
//! - `consistent_hash/{ring,maglev}/100`: the request's key (a header) hashed and an
//!   endpoint picked out of 100 by the cluster's table (issue target: < 200 ns).
//! - `compile/100`, `compile_and_swap/100`: what a reload costs, validation
//!   included; the swap also drops the snapshot it replaces.
//!
//! `cargo bench -p weft-bench --bench route_match`

use arc_swap::ArcSwap;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::json;
use std::sync::Arc;
use weft_model as model;
use weft_proxy::config::snapshot::Snapshot;
use weft_proxy::http::route::RequestView;
use weft_proxy::upstream::balance::WeightedPick;
use weft_proxy::upstream::endpoint::Registry;

const SERVICE: &str = "app.bench.svc.cluster.local";
/// As the app sends it: the short name from its own namespace, with a port.
const AUTHORITY: &str = "app:80";
const ROUTE_COUNTS: [usize; 3] = [10, 100, 1000];

/// One service with `routes` routes, each to its own cluster of one endpoint.
/// Built as JSON and parsed, as the proxy reads its config, so fields the schema
/// gains later keep their defaults.
fn config(routes: usize) -> model::ProxyConfig {
    let cluster_name = |i: usize| format!("outbound|80|r{i}|{SERVICE}");
    let route_list: Vec<_> = (0..routes)
        .map(|i| {
            json!({
                "name": format!("r{i}"),
                "match": [{ "uri": { "prefix": format!("/svc{i}/") }, "headers": { "x-route": { "exact": format!("r{i}") } } }],
                "route": [{ "cluster": cluster_name(i) }],
            })
        })
        .collect();
    let clusters: serde_json::Map<_, _> = (0..routes)
        .map(|i| {
            let cluster =
                json!({ "service": SERVICE, "endpoints": [{ "address": format!("127.0.0.1:{}", 20000 + i) }] });
            (cluster_name(i), cluster)
        })
        .collect();
    let config = json!({
        "apiVersion": model::API_VERSION,
        "version": format!("{routes}-routes"),
        "workload": { "name": "bench", "namespace": "bench" },
        "services": { SERVICE: { "routes": route_list } },
        "clusters": clusters,
    });
    serde_json::from_value(config).expect("the bench config parses")
}

fn compile(config: model::ProxyConfig, registry: &Registry) -> Snapshot {
    Snapshot::compile(config, registry, None).expect("the bench config is valid")
}

/// Path and headers of a request that only route `i` accepts.
fn request_for(i: usize) -> (String, HeaderMap) {
    let mut headers = HeaderMap::new();
    headers.insert("x-route", HeaderValue::from_str(&format!("r{i}")).unwrap());
    headers.insert("user-agent", HeaderValue::from_static("weft-bench"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    (format!("/svc{i}/items/42?expand=true"), headers)
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in ROUTE_COUNTS {
        let snapshot = compile(config(n), &Registry::default());
        for (case, target) in [("last", n - 1), ("middle", n / 2)] {
            let (path, headers) = request_for(target);
            let view = RequestView { method: "GET", path_and_query: &path, authority: AUTHORITY, headers: &headers };
            let expected = format!("r{target}");
            let (route, _) = snapshot.vhost(AUTHORITY).unwrap().select(None, &view).unwrap();
            assert_eq!(&*route.name, expected, "the request must reach the route it is meant for");
            group.bench_with_input(BenchmarkId::new(case, n), &view, |b, view| {
                b.iter(|| {
                    snapshot
                        .vhost(black_box(view.authority))
                        .unwrap()
                        .select(None, black_box(view))
                        .map(|(r, _)| Arc::as_ptr(&r.name))
                })
            });
        }
    }
    group.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("weighted_pick");
    for weights in [vec![90u32, 10], (1..=10).collect::<Vec<u32>>()] {
        let pick = WeightedPick::new(&weights);
        let mut rng = SmallRng::seed_from_u64(7);
        group
            .bench_function(BenchmarkId::from_parameter(weights.len()), |b| b.iter(|| black_box(&pick).pick(&mut rng)));
    }
    group.finish();
}

/// One cluster of 100 endpoints balanced by a consistent hash on `x-user`.
fn hashed_cluster(table: &str) -> Snapshot {
    let endpoints: Vec<_> =
        (0..100).map(|i| json!({"address": format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)})).collect();
    let config: model::ProxyConfig = serde_json::from_value(json!({
        "apiVersion": model::API_VERSION,
        "version": "1",
        "workload": {"name": "bench", "namespace": "bench", "serviceAccount": "bench"},
        "clusters": {"c": {"endpoints": endpoints, "consistentHash": serde_json::from_str::<serde_json::Value>(table).unwrap()}},
    }))
    .unwrap();
    compile(config, &Registry::default())
}

fn consistent_hash(c: &mut Criterion) {
    for (name, table) in [("ring", r#"{"header": "x-user"}"#), ("maglev", r#"{"header": "x-user", "maglev": 65537}"#)] {
        let snapshot = hashed_cluster(table);
        let cluster = snapshot.cluster("c").unwrap();
        let policy = cluster.hash.clone().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice@example.com"));
        let mut rng = SmallRng::seed_from_u64(1);
        c.bench_function(&format!("consistent_hash/{name}/100"), |b| {
            b.iter(|| {
                let h = weft_proxy::upstream::hash::request_hash(&policy, black_box(&headers), "/", None, None);
                cluster.balancer.pick(&[], Default::default(), h.hash, &mut rng).unwrap()
            })
        });
    }
}

fn reload(c: &mut Criterion) {
    let cfg = config(100);
    // Endpoint state survives reloads through the registry, as in the proxy.
    let registry = Registry::default();
    c.bench_function("compile/100", |b| {
        b.iter_batched(|| cfg.clone(), |cfg| compile(cfg, &registry), BatchSize::SmallInput)
    });
    let live = ArcSwap::from_pointee(compile(cfg.clone(), &registry));
    c.bench_function("compile_and_swap/100", |b| {
        b.iter_batched(|| cfg.clone(), |cfg| live.store(Arc::new(compile(cfg, &registry))), BatchSize::SmallInput)
    });
}

/// Authorization for one request: the seed's policy (two principals), allowed and denied.
fn authz(c: &mut Criterion) {
    let policy: model::authz::AuthzPolicy = serde_yaml::from_str(
        "{name: 'ns[production]-policy[order-service-auth]', action: ALLOW, rules: [{from: [[{attribute: principal, anyOf: [{match: exact, value: cluster.local/ns/production/sa/user-service}]}], [{attribute: principal, anyOf: [{match: exact, value: cluster.local/ns/production/sa/product-service}]}]]}]}",
    )
    .expect("policy");
    let policies = vec![weft_proxy::security::authz::Policy::compile(&policy)];
    let headers = HeaderMap::new();
    for (case, principal) in [
        ("allowed", "spiffe://cluster.local/ns/production/sa/product-service"),
        ("denied", "spiffe://cluster.local/ns/production/sa/notification-service"),
    ] {
        let req = weft_proxy::security::authz::Request {
            principal: Some(principal),
            source_ip: None,
            host: "order-service",
            port: 8080,
            method: "GET",
            path: "/orders",
            headers: &headers,
            end_user: None,
        };
        c.bench_function(&format!("authz/{case}"), |b| {
            b.iter(|| black_box(weft_proxy::security::authz::decide(&policies, black_box(&req))))
        });
    }
}

/// Reading, validating and translating the policies/ folder for one workload.
fn translate(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let registry: weft_control_plane::registry::Registry = serde_yaml::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../control-plane/tests/fixtures/registry.yaml"),
        )
        .expect("registry fixture"),
    )
    .expect("registry");
    let w = model::Workload {
        name: "api-gateway".into(),
        namespace: "production".into(),
        service_account: "api-gateway".into(),
        labels: Default::default(),
    };
    c.bench_function("translate/policies", |b| {
        b.iter(|| {
            let resources = weft_control_plane::istio::load_paths(std::slice::from_ref(&dir)).expect("policies");
            black_box(weft_control_plane::translate::translate(&resources, &registry, &w, "1"))
        })
    });
}

criterion_group!(benches, select, weighted_pick, consistent_hash, reload, authz, translate);
criterion_main!(benches);
