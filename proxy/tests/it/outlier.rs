//! Outlier detection under real traffic.

use crate::harness::*;
use http::StatusCode;
use std::time::{Duration, Instant};

const SVC: &str = "svc.test.svc.cluster.local";

async fn failing(name: &str) -> Upstream {
    let n = name.to_string();
    Upstream::with(name, move |_| {
        let n = n.clone();
        Box::pin(async move { status(StatusCode::INTERNAL_SERVER_ERROR, &n) })
    })
    .await
}

fn services() -> String {
    format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: c }} ]\n")
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_after_five_errors() {
    let bad = failing("bad").await;
    let good = [Upstream::named("good1").await, Upstream::named("good2").await];
    let extra = "    lbPolicy: ROUND_ROBIN\n    outlierDetection: { consecutive5xxErrors: 5, interval: 30s, baseEjectionTime: 30s, maxEjectionPercent: 50 }\n";
    let proxy = start(&config_yaml(&services(), &cluster("c", extra, &[&bad, &good[0], &good[1]]))).await;
    let first = tally(proxy.outbound, "svc", "/", &[], 15).await;
    assert_eq!(first.get("500 bad"), Some(&5), "{first:?}");
    let after = tally(proxy.outbound, "svc", "/", &[], 60).await;
    assert_eq!(after.get("500 bad"), None, "no traffic while ejected: {after:?}");
    assert_eq!(bad.requests(), 5);
    let clusters: serde_json::Value = serde_json::from_str(&admin(&proxy, "/clusters").await).unwrap();
    let eps = clusters["clusters"][0]["endpoints"].as_array().unwrap().clone();
    let bad_ep = eps.iter().find(|e| e["address"] == bad.addr.to_string()).unwrap();
    assert_eq!(bad_ep["ejected"], true);
    assert_eq!(bad_ep["times_ejected"], 1);
    assert!(bad_ep["ejected_for_seconds"].as_f64().unwrap() > 25.0);
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "weft_outlier_ejections_total", &[r#"result="ejected""#]), 1.0);
}

#[tokio::test]
async fn max_ejection_percent_keeps_one_of_two_failing_endpoints() {
    let (a, b) = (failing("a").await, failing("b").await);
    let extra = "    lbPolicy: ROUND_ROBIN\n    outlierDetection: { maxEjectionPercent: 50 }\n";
    let proxy = start(&config_yaml(&services(), &cluster("c", extra, &[&a, &b]))).await;
    tally(proxy.outbound, "svc", "/", &[], 40).await;
    let clusters: serde_json::Value = serde_json::from_str(&admin(&proxy, "/clusters").await).unwrap();
    let ejected =
        clusters["clusters"][0]["endpoints"].as_array().unwrap().iter().filter(|e| e["ejected"] == true).count();
    assert_eq!(ejected, 1);
    let text = admin(&proxy, "/stats/prometheus").await;
    assert_eq!(metric(&text, "weft_outlier_ejections_total", &[r#"result="ejected""#]), 1.0);
    assert!(metric(&text, "weft_outlier_ejections_total", &[r#"result="refused""#]) >= 1.0, "{text}");
}

#[tokio::test]
async fn all_ejected_is_503_uh_and_says_so() {
    let bad = failing("bad").await;
    let extra = "    outlierDetection: { consecutive5xxErrors: 3, maxEjectionPercent: 100 }\n";
    let proxy = start(&config_yaml(&services(), &cluster("c", extra, &[&bad]))).await;
    tally(proxy.outbound, "svc", "/", &[], 3).await;
    let got = get(proxy.outbound, "svc", "/", &[]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.body, "no healthy upstream");
    assert!(got.header("x-weft-error").contains("are ejected by outlier detection"), "{got:?}");
    assert_eq!(bad.requests(), 3);
}

#[tokio::test]
async fn an_ejected_endpoint_returns_after_its_time() {
    let bad = failing("bad").await;
    let good = Upstream::named("good").await;
    let extra = "    lbPolicy: ROUND_ROBIN\n    outlierDetection: { consecutive5xxErrors: 2, interval: 100ms, baseEjectionTime: 200ms, maxEjectionPercent: 50 }\n";
    let proxy = start(&config_yaml(&services(), &cluster("c", extra, &[&bad, &good]))).await;
    tally(proxy.outbound, "svc", "/", &[], 4).await;
    assert_eq!(bad.requests(), 2);
    tally(proxy.outbound, "svc", "/", &[], 4).await;
    assert_eq!(bad.requests(), 2, "ejected");
    // The review at an interval tick after baseEjectionTime ends the ejection.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clusters: serde_json::Value = serde_json::from_str(&admin(&proxy, "/clusters").await).unwrap();
        let eps = clusters["clusters"][0]["endpoints"].as_array().unwrap().clone();
        let bad_ep = eps.iter().find(|e| e["address"] == bad.addr.to_string()).unwrap();
        if bad_ep["ejected"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the ejection never ended: {bad_ep}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally(proxy.outbound, "svc", "/", &[], 4).await;
    assert!(bad.requests() > 2, "back in rotation after base ejection time");
}
