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

/// Sampled requests become spans at an OTLP/HTTP collector: one CLIENT span from the caller's
/// sidecar and one SERVER span from the callee's, in the app's trace, the callee's span a child
/// of the caller's; a 5xx is an error span; unsampled requests send nothing.
#[tokio::test]
async fn sampled_spans_reach_an_otlp_collector_one_per_hop() {
    use http::StatusCode;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use std::time::Duration;
    let collector = Upstream::named("collector").await;
    let app = Upstream::with("app", |seen| {
        Box::pin(async move {
            if seen.path == "/fail" {
                status(StatusCode::SERVICE_UNAVAILABLE, "app")
            } else {
                ok("app")
            }
        })
    })
    .await;
    let endpoint: weft_proxy::ops::otlp::Endpoint = format!("http://{}", collector.addr).parse().unwrap();
    let with_otlp = |app: Option<std::net::SocketAddr>| {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        weft_proxy::ProxyOptions {
            outbound: any,
            inbound: any,
            admin: any,
            app,
            otlp_endpoint: Some(endpoint.clone()),
            ..Default::default()
        }
    };
    let callee =
        weft_proxy::Proxy::start(with_otlp(Some(app.addr)), parse(&config_yaml("  {}", "  {}")), Default::default())
            .await
            .unwrap();
    let services = format!("  {SVC}:\n    routes:\n      - route: [ {{ cluster: svc }} ]\n");
    let clusters = format!("  svc:\n    service: {SVC}\n    endpoints: [ {{ address: \"{}\" }} ]\n", callee.inbound);
    let caller =
        weft_proxy::Proxy::start(with_otlp(None), parse(&config_yaml(&services, &clusters)), Default::default())
            .await
            .unwrap();

    let sampled = format!("00-{TRACE}-{APP_SPAN}-01");
    assert_eq!(get(caller.outbound, "svc", "/ok", &[("traceparent", &sampled)]).await.status, 200);
    assert_eq!(get(caller.outbound, "svc", "/fail", &[("traceparent", &sampled)]).await.status, 503);
    // The app decided not to sample: no span for it anywhere.
    let unsampled = format!("00-{}-{APP_SPAN}-00", "1".repeat(32));
    get(caller.outbound, "svc", "/ok", &[("traceparent", &unsampled)]).await;

    // Wait for the batches (sent at least every 5 s): four spans, two per sidecar.
    let mut spans = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while spans.len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        spans = collector
            .seen
            .lock()
            .unwrap()
            .iter()
            .inspect(|s| {
                assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/v1/traces"));
                assert_eq!(s.headers["content-type"], "application/x-protobuf");
            })
            .flat_map(|s| <ExportTraceServiceRequest as prost::Message>::decode(s.body.clone()).unwrap().resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect();
    }
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let trace = u128::from_str_radix(TRACE, 16).unwrap().to_be_bytes().to_vec();
    assert!(spans.iter().all(|s| s.trace_id == trace), "every span in the app's trace");
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes.iter().find(|a| a.key == k).and_then(|a| match &a.value.as_ref()?.value {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v)) => Some(v.clone()),
            _ => None,
        })
    };
    for path in ["/ok", "/fail"] {
        let of = |kind: SpanKind| {
            spans
                .iter()
                .find(|s| s.kind == kind as i32 && attr(s, "http.url").is_some_and(|u| u.ends_with(path)))
                .unwrap_or_else(|| panic!("no {kind:?} span for {path}: {spans:#?}"))
        };
        let (client, server) = (of(SpanKind::Client), of(SpanKind::Server));
        assert_eq!(client.parent_span_id, u64::from_str_radix(APP_SPAN, 16).unwrap().to_be_bytes().to_vec());
        assert_eq!(server.parent_span_id, client.span_id, "the callee's span is the caller's child");
        assert!(client.end_time_unix_nano >= client.start_time_unix_nano && client.start_time_unix_nano > 0);
        let code = if path == "/ok" { "200" } else { "503" };
        assert_eq!(attr(client, "http.status_code").as_deref(), Some(code));
        assert_eq!(attr(client, "http.method").as_deref(), Some("GET"));
        let error = client.status.as_ref().unwrap().code == 2;
        assert_eq!(error, path == "/fail", "a 5xx is an error span: {client:?}");
    }
    let exported =
        metric(&admin(&caller, "/stats/prometheus").await, "weft_trace_spans_total", &["result=\"exported\""]);
    assert_eq!(exported, 2.0);
}
