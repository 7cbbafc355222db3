//! Endpoints by DNS name (a ServiceEntry with resolution DNS): the sidecar
//! resolves them itself, and a name it cannot resolve answers 503 without
//! stopping the others.

use crate::harness::*;

const HOST: &str = "api.external.test";

fn external(names: &[String]) -> String {
    let services = format!("  {HOST}:\n    routes:\n      - route: [ {{ cluster: ext }} ]\n");
    let dns: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let clusters = format!("  ext:\n    service: {HOST}\n    dns: [{}]\n", dns.join(", "));
    config_yaml(&services, &clusters)
}

#[tokio::test]
async fn endpoints_named_by_dns_are_resolved_by_the_sidecar() {
    let up = Upstream::named("external").await;
    let name = format!("localhost:{}", up.addr.port());
    let proxy = start(&external(std::slice::from_ref(&name))).await;
    // Resolved in the background at start: wait for the answer, not for time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = get(proxy.outbound, HOST, "/", &[]).await;
        if got.status == 200 {
            assert_eq!(got.body, "external");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never resolved: {} {}", got.status, got.body);
        tokio::task::yield_now().await;
    }
    assert!(proxy.shared.dns.answers()[&name].iter().any(|a| a.ip().is_loopback()));
    // A new config naming a name that does not resolve: 503 for it, and the sidecar keeps serving.
    let bad = "no-such-host.invalid:80".to_string();
    proxy.shared.apply(parse(&external(&[bad]))).unwrap();
    let got = get(proxy.outbound, HOST, "/", &[]).await;
    assert_eq!(got.status, 503, "{}", got.body);
}
