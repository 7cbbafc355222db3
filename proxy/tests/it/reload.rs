//! Hot reload: swaps are atomic and lose no request; bad configs change nothing.

use crate::harness::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SVC: &str = "svc.test.svc.cluster.local";

fn to(cluster_name: &str, v1: &Upstream, v2: &Upstream) -> String {
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: {cluster_name} }} ]\n");
    config_yaml(&services, &format!("{}{}", cluster("v1", "", &[v1]), cluster("v2", "", &[v2])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_lose_nothing() {
    let (v1, v2) = (Upstream::named("v1").await, Upstream::named("v2").await);
    let (a, b) = (to("v1", &v1, &v2), to("v2", &v1, &v2));
    let proxy = start(&a).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, done, addr) = (stop.clone(), failures.clone(), done.clone(), proxy.outbound);
        clients.push(tokio::spawn(async move {
            let mut c = Client::h1(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let got = c.get("svc", "/").await;
                if got.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let (ca, cb) = (parse(&a), parse(&b));
    for i in 0..100 {
        let next = if i % 2 == 0 { cb.clone() } else { ca.clone() };
        let before = done.load(Ordering::Relaxed);
        proxy.shared.apply(next).unwrap();
        // Every swap happens under traffic: the next one waits for requests served after this one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::Relaxed) < before + 4 {
            assert!(tokio::time::Instant::now() < deadline, "no request served after swap {i}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(done.load(Ordering::Relaxed) >= 400, "load ran throughout");
    assert!(v1.requests() > 0 && v2.requests() > 0, "both configs served");
    // Pools carry over reloads: a rebuilt pool would reconnect on most of the 100 swaps.
    // (A few extra connections come from requests that beat a connection's return to the pool.)
    assert!(v1.connections() <= 12 && v2.connections() <= 12, "v1 {} v2 {}", v1.connections(), v2.connections());
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "weft_config_reloads_total", &[r#"result="applied""#]), 100.0);
}

#[tokio::test]
async fn watched_file_bad_changes_are_rejected_and_the_old_config_kept() {
    let (v1, v2) = (Upstream::named("v1").await, Upstream::named("v2").await);
    let dir = std::env::temp_dir().join(format!("weft-reload-{}-{}", std::process::id(), v1.addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.yaml");
    std::fs::write(&file, to("v1", &v1, &v2)).unwrap();
    let (config, bytes) = weft_proxy::config::file::read(&file).unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let options = weft_proxy::ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        app: None,
        access_log: false,
        drain_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let proxy = weft_proxy::Proxy::start(options, config, prometheus::Registry::new()).await.unwrap();
    tokio::spawn(weft_proxy::config::file::watch(file.clone(), proxy.shared.clone(), bytes, Duration::from_millis(20)));

    let rejected = |text: &str| metric(text, "weft_config_reloads_total", &[r#"result="rejected""#]);
    let wait_for = |n: f64| {
        let proxy = &proxy;
        async move {
            for _ in 0..200 {
                if rejected(&admin(proxy, "/stats/prometheus").await) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("rejection {n} never counted");
        }
    };

    // Broken YAML, an unknown field, a dangling cluster: each refused whole.
    std::fs::write(&file, "apiVersion: [").unwrap();
    wait_for(1.0).await;
    std::fs::write(&file, to("v2", &v1, &v2).replace("version: t1", "version: t2\nsurprise: 1")).unwrap();
    wait_for(2.0).await;
    std::fs::write(&file, to("nope", &v1, &v2)).unwrap();
    wait_for(3.0).await;
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "v1", "old config still serves");
    assert!(admin(&proxy, "/config_dump").await.contains(r#""version": "t1""#));

    std::fs::write(&file, to("v2", &v1, &v2).replace("version: t1", "version: t2")).unwrap();
    for _ in 0..200 {
        if get(proxy.outbound, "svc", "/", &[]).await.body == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "v2");
    assert!(admin(&proxy, "/config_dump").await.contains(r#""version": "t2""#));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rejection_names_file_and_field() {
    let yaml = "apiVersion: weft.dev/v1alpha1\nworkload: { name: a, namespace: test }\nservices:\n  s:\n    routes:\n      - route: [ { cluster: missing } ]\n";
    let path = std::path::Path::new("/etc/weft/proxy.yaml");
    let config = weft_proxy::config::file::parse(path, yaml).unwrap();
    let err = weft_proxy::config::snapshot::Snapshot::compile(config, &Default::default(), None).unwrap_err();
    assert_eq!(err.to_string(), r#"services["s"].routes[0].route[0].cluster: no cluster named "missing" in clusters"#);
    let err = weft_proxy::config::file::parse(
        path,
        "apiVersion: weft.dev/v1alpha1\nworkload: { name: a, namespace: test }\nclusterz: {}\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("/etc/weft/proxy.yaml: unknown field `clusterz`"), "{text}");
    assert!(text.contains("line 3"), "{text}");
}

#[test]
fn shipped_examples_are_valid() {
    for file in ["examples/canary.yaml", "examples/resilience.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let (config, _) = weft_proxy::config::file::read(&path).unwrap();
        config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
