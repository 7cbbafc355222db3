//! The load-balancing policies.

use crate::harness::*;
use std::time::Duration;

const SVC: &str = "svc.test.svc.cluster.local";

async fn three(policy: &str) -> ([Upstream; 3], weft_proxy::Running) {
    let ups = [Upstream::named("a").await, Upstream::named("b").await, Upstream::named("c").await];
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    // `LEAST_REQUEST\n    consistentHash: ...` leaves lbPolicy at its default and adds the hash.
    let extra = format!("    lbPolicy: {policy}\n");
    let proxy = start(&config_yaml(&services, &cluster("c", &extra, &[&ups[0], &ups[1], &ups[2]]))).await;
    (ups, proxy)
}

#[tokio::test]
async fn round_robin_takes_turns() {
    let (ups, proxy) = three("ROUND_ROBIN").await;
    let mut c = Client::h1(proxy.outbound).await;
    let mut order = Vec::new();
    for _ in 0..9 {
        order.push(c.get("svc", "/").await.body);
    }
    // Each window of three holds each endpoint once, in a fixed rotation.
    for window in order.chunks(3) {
        let mut w = window.to_vec();
        w.sort();
        assert_eq!(w, ["a", "b", "c"], "{order:?}");
    }
    assert_eq!(order[0..3], order[3..6]);
    assert!(ups.iter().all(|u| u.requests() == 3));
}

#[tokio::test]
async fn random_reaches_every_endpoint_evenly() {
    let (ups, proxy) = three("RANDOM").await;
    tally(proxy.outbound, "svc", "/", &[], 1500).await;
    for u in &ups {
        // 500 expected, sd 18.
        assert!((400..=600).contains(&u.requests()), "{} got {}", u.name, u.requests());
    }
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    // "slow" holds every request for 300 ms; LEAST_REQUEST (P2C) should steer
    // concurrent traffic to the two fast endpoints.
    let slow = Upstream::with("slow", |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ok("slow")
        })
    })
    .await;
    let fast = [Upstream::named("fast1").await, Upstream::named("fast2").await];
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let proxy = start(&config_yaml(&services, &cluster("c", "", &[&slow, &fast[0], &fast[1]]))).await;
    let outbound = proxy.outbound;
    // 8 clients in parallel, 25 requests each.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move { tally(outbound, "svc", "/", &[], 25).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = slow.requests() + fast[0].requests() + fast[1].requests();
    assert_eq!(total, 200);
    // Round robin would send ~67 to "slow"; with P2C on active requests it gets far fewer.
    assert!(slow.requests() < 30, "slow endpoint got {} of 200", slow.requests());
}

/// Consistent hashing on a header: one user always reaches the same endpoint, users
/// spread over all of them, and a request without the header still gets through.
#[tokio::test]
async fn consistent_hash_on_a_header_sticks_each_user_to_one_endpoint() {
    let (ups, proxy) = three("LEAST_REQUEST\n    consistentHash: { header: x-user }").await;
    let mut c = Client::h1(proxy.outbound).await;
    let mut reached = std::collections::HashSet::new();
    for user in 0..30 {
        let id = format!("user-{user}");
        let first = c.send("GET", "svc", "/", &[("x-user", &id)], "").await.body;
        for _ in 0..4 {
            assert_eq!(c.send("GET", "svc", "/", &[("x-user", &id)], "").await.body, first, "{id} moved");
        }
        reached.insert(first);
    }
    assert_eq!(reached.len(), 3, "30 users all on {reached:?}");
    assert_eq!(c.get("svc", "/").await.status, 200);
    let _ = ups;
}

/// `httpCookie` with a ttl: the first answer sets the cookie, and a client that sends it
/// back stays on that endpoint.
#[tokio::test]
async fn consistent_hash_makes_and_honours_its_cookie() {
    let ring = "LEAST_REQUEST\n    consistentHash: { cookie: { name: sticky, path: /, ttl: 3600s }, maglev: 65537 }";
    let (_ups, proxy) = three(ring).await;
    let first = get(proxy.outbound, "svc", "/", &[]).await;
    let set = first.header("set-cookie").to_string();
    assert!(set.starts_with("sticky=\"") && set.ends_with("; Max-Age=3600; Path=/; HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let again = get(proxy.outbound, "svc", "/", &[("cookie", &cookie)]).await;
        assert_eq!(again.body, first.body, "the cookie's endpoint");
        assert_eq!(again.header("set-cookie"), "", "no new cookie when one is sent");
    }
}

/// Locality failover (Envoy priorities): the nearby endpoints take every request while
/// they are healthy; when outlier detection ejects them, the traffic fails over to the
/// next level, and no request is lost on the way.
#[tokio::test]
async fn traffic_fails_over_to_the_next_locality_when_the_near_one_is_ejected() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let broken = std::sync::Arc::new(AtomicBool::new(false));
    let near_one = |name: &'static str| {
        let broken = broken.clone();
        Upstream::with(name, move |_| {
            let bad = broken.load(Ordering::SeqCst);
            Box::pin(async move {
                if bad {
                    status(http::StatusCode::SERVICE_UNAVAILABLE, name)
                } else {
                    ok(name)
                }
            })
        })
    };
    let near = [near_one("near1").await, near_one("near2").await];
    let far = Upstream::named("far").await;
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n        retries: {{ attempts: 2, retryOn: [5xx] }}\n");
    let ep = |u: &Upstream, priority: u32| format!("      - {{ address: \"{}\", priority: {priority} }}\n", u.addr);
    let clusters = format!(
        "  c:\n    service: {SVC}\n    outlierDetection: {{ consecutive5xxErrors: 1, interval: 60s, baseEjectionTime: 60s, maxEjectionPercent: 100 }}\n    endpoints:\n{}{}{}",
        ep(&near[0], 0),
        ep(&near[1], 0),
        ep(&far, 1)
    );
    let proxy = start(&config_yaml(&services, &clusters)).await;
    let counts = tally(proxy.outbound, "svc", "/", &[], 200).await;
    assert_eq!(counts.get("200 far"), None, "healthy nearby endpoints keep all traffic: {counts:?}");
    // Both nearby endpoints go bad: a 5xx ejects each, the retry goes on, and the far level
    // takes over — no request fails on the way.
    broken.store(true, Ordering::SeqCst);
    let counts = tally(proxy.outbound, "svc", "/", &[], 100).await;
    assert_eq!(counts.get("200 far"), Some(&100), "{counts:?}");
}

/// Locality weights (Istio's `distribute`): 80/20 between two localities, none to a third.
#[tokio::test]
async fn locality_weights_split_traffic_between_localities() {
    let ups = [
        Upstream::named("a1").await,
        Upstream::named("a2").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    ];
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n");
    let ep = |u: &Upstream, l: &str| format!("      - {{ address: \"{}\", locality: {l} }}\n", u.addr);
    let clusters = format!(
        "  c:\n    service: {SVC}\n    localityWeights: {{ us/a: 80, us/b: 20 }}\n    endpoints:\n{}{}{}{}",
        ep(&ups[0], "us/a"),
        ep(&ups[1], "us/a"),
        ep(&ups[2], "us/b"),
        ep(&ups[3], "eu/c")
    );
    let proxy = start(&config_yaml(&services, &clusters)).await;
    tally(proxy.outbound, "svc", "/", &[], 2000).await;
    let a = ups[0].requests() + ups[1].requests();
    assert!((1500..=1700).contains(&a), "us/a got {a} of 2000 (80 %)");
    assert_eq!(ups[3].requests(), 0, "a locality without weight gets nothing");
}
