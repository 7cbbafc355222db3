//! Fault injection: abort and delay with percentages.

use crate::harness::*;
use std::time::{Duration, Instant};

const SVC: &str = "svc.test.svc.cluster.local";

async fn with_fault(fault: &str) -> (Upstream, weft_proxy::Running) {
    let up = Upstream::named("up").await;
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n        fault: {fault}\n");
    let proxy = start(&config_yaml(&services, &cluster("c", "", &[&up]))).await;
    (up, proxy)
}

#[tokio::test]
async fn abort_all() {
    let (up, proxy) = with_fault("{ abort: { httpStatus: 418, percentage: 100 } }").await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 418);
    assert_eq!(got.body, "fault filter abort");
    assert_eq!(up.requests(), 0, "aborted before reaching the upstream");
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "istio_requests_total", &[r#"response_flags="FI""#]), 1.0);
}

#[tokio::test]
async fn abort_a_share() {
    let (_up, proxy) = with_fault("{ abort: { httpStatus: 503, percentage: 25 } }").await;
    let counts = tally(proxy.outbound, "svc", "/", &[], 2000).await;
    let aborted = counts.get("503 fault filter abort").copied().unwrap_or(0);
    // 500 expected, sd 19.4.
    assert!((400..=600).contains(&aborted), "{counts:?}");
}

#[tokio::test]
async fn delay_all() {
    let (up, proxy) = with_fault("{ delay: { fixedDelay: 200ms, percentage: 100 } }").await;
    let t0 = Instant::now();
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(got.status, 200);
    assert_eq!(up.requests(), 1);
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "istio_requests_total", &[r#"response_flags="DI""#]), 1.0);
}

#[tokio::test]
async fn zero_percent_injects_nothing() {
    let (up, proxy) = with_fault("{ abort: { httpStatus: 500 }, delay: { fixedDelay: 5s } }").await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 200, "an omitted percentage is 0, as in Istio");
    assert_eq!(up.requests(), 1);
}
