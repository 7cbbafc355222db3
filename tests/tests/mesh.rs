//! The mesh end to end: a private etcd, the control plane, sidecars that get
//! their configs pushed, apps behind them, and `weftctl apply` changing live
//! traffic.

mod common;

use common::*;
use std::path::Path;
use weft_control_plane::istio::{load_paths, load_str};
use weft_testkit::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_changes_live_traffic_and_leases_follow_the_workloads() {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (cp, cp_a) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let ctx = cp_a.ctx.clone();

    let (app1, app2) = (app("v1").await, app("v2").await);
    let (s1, _t1) = sidecar(
        &cp,
        workload("order-v1", &[("app", "order-service"), ("version", "v1")]),
        Some("order-service"),
        Some(app1),
    )
    .await;
    let (s2, t2) = sidecar(
        &cp,
        workload("order-v2", &[("app", "order-service"), ("version", "v2")]),
        Some("order-service"),
        Some(app2),
    )
    .await;
    let (gw, _tg) = sidecar(&cp, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("the gateway sees both order-service instances", || async {
        gw.shared.is_ready() && endpoints(&gw, "order-service") == 2
    })
    .await;

    // No policy yet: the default route balances over both.
    let (v1, v2, other) = tally(gw.outbound, &[], 40).await;
    assert_eq!(other, 0);
    assert!(v1 > 0 && v2 > 0, "v1 {v1} v2 {v2}");

    // weftctl apply -f policies/: the seed's canary.
    let report = store.apply(&load_paths(&[policies().join("order-service.yaml")]).unwrap()).await.unwrap();
    assert_eq!(report.created.len(), 2);
    eventually("the canary reaches the gateway", || async {
        endpoints(&gw, "|v2|") == 1 && endpoints(&gw, "|v1|") == 1
    })
    .await;
    let (_, v2, other) = tally(gw.outbound, &[("x-canary", "true")], 30).await;
    assert_eq!((v2, other), (30, 0), "x-canary: true always reaches v2");
    let (v1, v2, _) = tally(gw.outbound, &[], 400).await;
    assert!((300..=390).contains(&v1) && v2 > 10, "about 90/10: v1 {v1} v2 {v2}");

    // A broken policy is refused whole and changes nothing.
    let broken = std::fs::read_to_string(policies().join("order-service.yaml"))
        .unwrap()
        .replace("outlierDetection:", "circuitBreaker:");
    assert!(load_str(Path::new("broken.yaml"), &broken).is_err());

    // Shift everything to v2.
    let all_v2 = std::fs::read_to_string(policies().join("order-service.yaml"))
        .unwrap()
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    store.apply(&load_str(Path::new("p.yaml"), &all_v2).unwrap()).await.unwrap();
    eventually("all traffic on v2", || async { tally(gw.outbound, &[], 20).await.1 == 20 }).await;

    // Status: every sidecar ACKed what it was sent.
    eventually("status shows three sidecars in sync", || async {
        let s = store.statuses().await.unwrap();
        s.len() == 3
            && s.iter()
                .all(|s| s.acked_version.is_some() && s.acked_version == s.sent_version && s.control_plane == "cp-a")
    })
    .await;
    assert!(ctx.metrics.convergence.get_sample_count() >= 3);

    // The changes after the first push went as deltas; a sidecar that followed them holds
    // exactly what a new one of the same workload gets whole.
    assert!(ctx.metrics.delta_pushes.get() >= 2, "deltas pushed: {}", ctx.metrics.delta_pushes.get());
    assert_eq!(ctx.metrics.nacks.get(), 0);
    let (fresh, _tf) = sidecar(&cp, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("the new gateway sidecar holds a config", || async { fresh.shared.is_ready() }).await;
    let (followed, whole) = (gw.shared.snapshot().config.clone(), fresh.shared.snapshot().config.clone());
    assert_eq!(followed, whole);
    drop(fresh);

    // Translation warnings reach each sidecar's status (weftctl status) and the metrics.
    let sidecars = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a, namespace: production}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: b, namespace: production}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n";
    store.apply(&load_str(Path::new("sidecars.yaml"), sidecars).unwrap()).await.unwrap();
    eventually("the gateway's status carries the warning", || async {
        store.statuses().await.unwrap().iter().any(|s| {
            s.workload == "api-gateway"
                && s.warnings.iter().any(|w| w.contains("several Sidecars (production/a, production/b)"))
        })
    })
    .await;
    assert!(ctx.metrics.translation_warnings.get() >= 1);

    // v2's sidecar shuts down (SIGTERM says goodbye first): it is deregistered at once.
    t2.send(true).unwrap();
    eventually("v2 deregistered", || async { endpoints(&gw, "|v2|") == 0 }).await;
    let (status, _) = get(gw.outbound, "order-service", &[]).await;
    assert_eq!(status, 503, "the v2 subset has no endpoints left");
    drop((s1, s2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_dies_under_load_and_no_request_fails() {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    store.apply(&load_paths(&[policies().join("order-service.yaml")]).unwrap()).await.unwrap();
    let mut cps = std::collections::HashMap::new();
    let ca = test_ca();
    let mut urls = Cp { urls: Vec::new(), store: store.clone(), ca: ca.clone() };
    for id in ["cp-a", "cp-b"] {
        let (one, cp) = Cp::start(&etcd, id, ca.clone()).await;
        urls.urls.extend(one.urls);
        cps.insert(id.to_string(), cp);
    }
    let (app1, app2) = (app("v1").await, app("v2").await);
    let (_s1, _g1) = sidecar(
        &urls,
        workload("order-v1", &[("app", "order-service"), ("version", "v1")]),
        Some("order-service"),
        Some(app1),
    )
    .await;
    let (_s2, _g2) = sidecar(
        &urls,
        workload("order-v2", &[("app", "order-service"), ("version", "v2")]),
        Some("order-service"),
        Some(app2),
    )
    .await;
    let (gw, _gg) = sidecar(&urls, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("the gateway has the canary", || async { endpoints(&gw, "|v1|") == 1 && endpoints(&gw, "|v2|") == 1 })
        .await;

    // Steady load through the gateway.
    let load = Load::start(gw.outbound);
    eventually("the load flows through the gateway", || async { sent(&gw).await >= 25.0 }).await;

    // Kill the control plane the gateway is connected to.
    let statuses = store.statuses().await.unwrap();
    let victim = statuses.iter().find(|s| s.workload == "api-gateway").unwrap().control_plane.clone();
    let survivor = if victim == "cp-a" { "cp-b" } else { "cp-a" };
    drop(cps.remove(&victim));
    eventually("the gateway reconnects to the other control plane", || async {
        store
            .statuses()
            .await
            .unwrap()
            .iter()
            .any(|s| s.workload == "api-gateway" && s.control_plane == survivor && s.acked_version.is_some())
    })
    .await;
    // The mesh still takes changes through the survivor.
    let all_v2 = std::fs::read_to_string(policies().join("order-service.yaml"))
        .unwrap()
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    store.apply(&load_str(Path::new("p.yaml"), &all_v2).unwrap()).await.unwrap();
    eventually("the change reaches the gateway through the survivor", || async {
        tally(gw.outbound, &[], 10).await.1 == 10
    })
    .await;
    // And the load goes on after the change (25 + 26 answers: more than the 50 asserted below).
    let before = sent(&gw).await;
    eventually("the load flows on after the change", || async { sent(&gw).await >= before + 26.0 }).await;
    let (done, failures) = load.finish().await;
    assert!(done > 50);
    assert_eq!(failures, 0, "no request failed while a control plane died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_keeps_working_when_an_etcd_member_dies() {
    let mut members = Etcd::cluster3();
    let urls: Vec<String> = members.iter().map(Etcd::url).collect();
    let store = admin_store(&urls, &members[0]).await;
    let (cp, _cp) = Cp::start_with(&urls, &members[0], "cp-a", test_ca(), Default::default()).await;
    let (app1, app2) = (app("v1").await, app("v2").await);
    let (_s1, _g1) = sidecar(
        &cp,
        workload("order-v1", &[("app", "order-service"), ("version", "v1")]),
        Some("order-service"),
        Some(app1),
    )
    .await;
    let (_s2, _g2) = sidecar(
        &cp,
        workload("order-v2", &[("app", "order-service"), ("version", "v2")]),
        Some("order-service"),
        Some(app2),
    )
    .await;
    let (gw, _gg) = sidecar(&cp, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("both instances known", || async { endpoints(&gw, "order-service") == 2 }).await;

    members[0].kill();
    let (_, _, other) = tally(gw.outbound, &[], 20).await;
    assert_eq!(other, 0, "traffic does not depend on etcd");
    // Two of three members still form a quorum: applies and pushes go on.
    store.apply(&load_paths(&[policies().join("order-service.yaml")]).unwrap()).await.unwrap();
    eventually("the canary arrives with one member down", || async { endpoints(&gw, "|v2|") == 1 }).await;
    let (_, v2, other) = tally(gw.outbound, &[("x-canary", "true")], 10).await;
    assert_eq!((v2, other), (10, 0));
}

/// The control plane's status lease can be lost (the process starved of CPU past its
/// TTL, as 10,000 sidecars on two cores did): it grants a new one and the sidecars'
/// statuses are written again, instead of failing into the dead lease forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_status_lease_is_replaced_and_statuses_are_written_again() {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (cp, _cp_a) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let (_gw, _tg) = sidecar(&cp, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let in_sync = || async {
        let s = store.statuses().await.unwrap();
        s.len() == 1 && s[0].acked_version.is_some() && s[0].acked_version == s[0].sent_version
    };
    eventually("the sidecar's status is written", in_sync).await;

    // etcd forgets the lease the statuses live on, as when it expires.
    let root = weft_control_plane::store::Store::connect(&[etcd.url()], "/weft/", Some(&etcd.tls(weft_etcd::ROOT)))
        .await
        .unwrap();
    let mut leases = root.client().lease_client();
    let mut revoked = 0;
    for lease in leases.leases().await.unwrap().leases() {
        let keys = leases
            .time_to_live(lease.id(), Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        if keys.keys().iter().any(|k| String::from_utf8_lossy(k).contains("/status/")) {
            leases.revoke(lease.id()).await.unwrap();
            revoked += 1;
        }
    }
    assert_eq!(revoked, 1, "one lease held the statuses");
    assert!(store.statuses().await.unwrap().is_empty(), "the statuses went with it");

    // The next change is ACKed, and its status written on a new lease.
    let sidecar_policy = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: production}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    store.apply(&load_str(Path::new("sidecar.yaml"), sidecar_policy).unwrap()).await.unwrap();
    eventually("the status is written again, on a new lease", in_sync).await;
}
