//! Trace context across two sidecars (the caller's outbound, the callee's
//! inbound): one trace from the app's `traceparent` to the upstream, a new span
//! at every hop, and a trace started when the app sent none.

use crate::harness::*;

const SVC: &str = "svc.test.svc.cluster.local";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn one_trace_across_two_sidecars_with_a_span_per_hop() {
    let app = Upstream::named("app").await;
    // The callee's sidecar: its inbound delivers to the app.
    let callee = start_with(&config_yaml("  {}", "  {}"), Some(app.addr)).await;
    // The caller's sidecar: its outbound sends the service to the callee's inbound.
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: svc }} ]\n");
    let clusters = format!("  svc:\n    service: {SVC}\n    endpoints: [ {{ address: \"{}\" }} ]\n", callee.inbound);
    let caller = start(&config_yaml(&services, &clusters)).await;

    let traceparent = format!("00-{TRACE}-{APP_SPAN}-01");
    let got = get(caller.outbound, "svc", "/", &[("traceparent", &traceparent)]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = app.last().headers;
    let text = |h: &str| seen.get(h).map_or("", |v| v.to_str().unwrap()).to_string();
    let tp = text("traceparent");
    assert!(tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-01"), "the app's trace and decision: {tp}");
    assert_eq!(text("x-b3-traceid"), TRACE);
    let (parent, span) = (text("x-b3-parentspanid"), text("x-b3-spanid"));
    assert_ne!(parent, APP_SPAN, "the caller's sidecar made a span between the app and the callee's");
    assert_ne!(span, parent);
    assert_eq!(tp.split('-').nth(2), Some(span.as_str()));

    // No context from the app: the caller's sidecar starts one; both hops carry it.
    get(caller.outbound, "svc", "/", &[]).await;
    let seen = app.last().headers;
    let trace = seen["x-b3-traceid"].to_str().unwrap().to_string();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, TRACE);
    assert!(seen.contains_key("x-b3-parentspanid"), "the callee's span has the caller's as parent");
}
