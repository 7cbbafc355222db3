//! The etcd store against a real etcd started by the test.

use std::path::Path;
use weft_control_plane::istio::{load_str, Kind};
use weft_control_plane::registry::Instance;
use weft_control_plane::store::Store;
use weft_testkit::Etcd;

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: orders, namespace: prod}\nspec:\n  hosts: [orders]\n  http:\n  - route:\n    - destination: {host: orders}\n";
const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: orders, namespace: prod}\nspec:\n  host: orders\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n";

#[tokio::test]
async fn apply_get_delete_and_reapply_is_a_noop() {
    let etcd = Etcd::start();
    let store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.admin())).await.unwrap();
    let resources = load_str(Path::new("p.yaml"), &format!("{VS}---\n{DR}")).unwrap();
    let first = store.apply(&resources).await.unwrap();
    assert_eq!(first.created.len(), 2);
    let again = store.apply(&resources).await.unwrap();
    assert_eq!(again.unchanged.len(), 2);
    assert_eq!(again.revision, first.revision, "re-applying wrote nothing");
    let (vs, _) = store.policies(Some(Kind::VirtualService), Some("prod")).await.unwrap();
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0], {
        let mut r = resources[0].clone();
        r.source = vs[0].source.clone();
        r.metadata.namespace = Some("prod".into());
        r.created = vs[0].created;
        r
    });
    let changed = load_str(Path::new("p.yaml"), &DR.replace("RANDOM", "ROUND_ROBIN")).unwrap();
    assert_eq!(store.apply(&changed).await.unwrap().configured.len(), 1);
    assert!(store.delete(Kind::VirtualService, "prod", "orders").await.unwrap());
    assert!(!store.delete(Kind::VirtualService, "prod", "orders").await.unwrap());
    let (all, _) = store.policies(None, None).await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn registry_entries_live_and_die_with_their_lease() {
    let etcd = Etcd::start();
    let store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.tls(weft_etcd::CONTROL_PLANE))).await.unwrap();
    let inst = Instance {
        address: "127.0.0.1:1".into(),
        labels: Default::default(),
        service_account: "sa".into(),
        port: 80,
        protocol: None,
        other_ports: Vec::new(),
        metrics_port: None,
    };
    let lease = store.register("prod", "orders", "orders-1", &inst, 2).await.unwrap();
    let (_, reg, _) = store.snapshot().await.unwrap();
    assert!(reg.service("orders.prod.svc.cluster.local").is_some());
    store.revoke(lease).await.unwrap();
    let (_, reg, _) = store.snapshot().await.unwrap();
    assert!(reg.service("orders.prod.svc.cluster.local").is_none(), "a clean shutdown deregisters at once");
    // Not kept alive: gone once its 1 s lease expires (by etcd's clock, so poll for it).
    store.register("prod", "orders", "orders-2", &inst, 1).await.unwrap();
    let (_, reg, _) = store.snapshot().await.unwrap();
    assert!(reg.service("orders.prod.svc.cluster.local").is_some(), "registered");
    let expired = weft_testkit::eventually(std::time::Duration::from_secs(20), || async {
        let (_, reg, _) = store.snapshot().await.unwrap();
        reg.service("orders.prod.svc.cluster.local").is_none()
    })
    .await;
    assert!(expired, "expired with its lease: still registered after 20 s");
}

/// Istio breaks ties by age (`creationTimestamp`): of two VirtualServices for one host, the
/// one applied first wins, whatever their names; etcd's create revision is that age, and
/// re-applying an unchanged or changed resource does not make it younger.
#[tokio::test]
async fn the_oldest_virtual_service_wins_a_tie() {
    let etcd = Etcd::start();
    let store = Store::connect(&[etcd.url()], "/weft/", Some(&etcd.admin())).await.unwrap();
    let vs = |name: &str, subset: &str| {
        load_str(
            Path::new("p.yaml"),
            &VS.replace("name: orders", &format!("name: {name}"))
                .replace("{host: orders}", &format!("{{host: orders, subset: {subset}}}")),
        )
        .unwrap()
    };
    store.apply(&vs("zz-first", "old")).await.unwrap();
    store.apply(&vs("aa-second", "new")).await.unwrap();
    store.apply(&vs("zz-first", "older")).await.unwrap(); // changed, still the first created
    let (resources, mut registry, _) = store.snapshot().await.unwrap();
    registry.insert(
        "prod",
        "orders",
        "o-1",
        Instance {
            address: "127.0.0.1:1".into(),
            labels: Default::default(),
            service_account: "orders".into(),
            port: 80,
            protocol: None,
            other_ports: Vec::new(),
            metrics_port: None,
        },
    );
    let w = weft_model::Workload {
        name: "c".into(),
        namespace: "prod".into(),
        service_account: "c".into(),
        labels: Default::default(),
    };
    let t = weft_control_plane::translate::translate(&resources, &registry, &w, "1");
    let route = &t.config.services["orders.prod.svc.cluster.local"].routes[0];
    assert!(route.route[0].cluster.contains("|older|"), "the oldest wins: {route:?}");
    assert!(t.warnings.iter().any(|w| w.contains("prod/zz-first is used")), "{:?}", t.warnings);
}
