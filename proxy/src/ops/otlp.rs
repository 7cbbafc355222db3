//! Span export over OTLP/HTTP (protobuf), as Envoy's OpenTelemetry tracer does
//! under Istio: every sampled request through the sidecar becomes one span —
//! CLIENT on the caller's side, SERVER on the callee's — with the ids the trace
//! context carried ([`super::trace`]) and Envoy's tags (method, URL, status,
//! response flags, upstream cluster, request id, canonical service).
//!
//! Off the request path: a request's span goes into a bounded queue and a
//! background task sends batches (the OpenTelemetry batch processor's defaults:
//! a queue of 2,048, batches of up to 512, at least every 5 s, each export within
//! 10 s). A full queue or a collector that is down loses spans, counted in
//! `weft_trace_spans_total{result}`, and never slows or fails a request.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use prometheus::IntCounterVec;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Spans waiting to be sent (the batch processor's `maxQueueSize`).
pub(crate) const MAX_QUEUE: usize = 2048;
/// Spans per export (`maxExportBatchSize`).
pub(crate) const MAX_BATCH: usize = 512;
/// The longest a span waits to be sent (`scheduledDelayMillis`).
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// One export's deadline (the OTLP exporter's default timeout).
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer body read at most (a collector's error message).
const MAX_ANSWER: usize = 64 * 1024;

/// One finished request's span, as the request path hands it over.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub context: super::trace::Span,
    /// CLIENT on the caller's side, SERVER on the callee's.
    pub kind: SpanKind,
    /// Envoy's operation name: `<service host>:<port>/*` (or the authority).
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `service.name` of the resource: `<app>.<namespace>`, as Istio names it.
    pub service: String,
    pub namespace: String,
    pub status: u16,
    pub attributes: Vec<(&'static str, String)>,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Exporter {
    tx: mpsc::Sender<Finished>,
    counted: IntCounterVec,
}

/// Where spans go: `http://host:port/path`. A URL without a path gets OTLP's `/v1/traces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub authority: String,
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url}: only http:// is spoken; send spans to a collector on the node or in the pod, which forwards them over TLS"
                ))
            }
            _ => return Err(format!("{url}: not an http:// URL")),
        }
        let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?;
        let authority =
            if authority.port().is_some() { authority.to_string() } else { format!("{}:80", authority.host()) };
        let path = match uri.path() {
            "" | "/" => "/v1/traces".to_string(),
            p => p.to_string(),
        };
        Ok(Endpoint { authority, path })
    }
}

impl Exporter {
    /// Starts the sending task; `counted` is `weft_trace_spans_total{result}`.
    pub(crate) fn start(endpoint: Endpoint, counted: IntCounterVec) -> Self {
        let (tx, rx) = mpsc::channel(MAX_QUEUE);
        tokio::spawn(send_batches(rx, endpoint, counted.clone()));
        Exporter { tx, counted }
    }

    /// Queues a span; a full queue drops it (counted), never waits.
    pub(crate) fn record(&self, span: Finished) {
        if self.tx.try_send(span).is_err() {
            self.counted.with_label_values(&["dropped"]).inc();
        }
    }
}

async fn send_batches(mut rx: mpsc::Receiver<Finished>, endpoint: Endpoint, counted: IntCounterVec) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) if batch.is_empty() => return,
                Ok(None) | Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        let body = prost::Message::encode_to_vec(&request(std::mem::take(&mut batch)));
        match tokio::time::timeout(EXPORT_TIMEOUT, post(&endpoint, body)).await {
            Ok(Ok(())) => counted.with_label_values(&["exported"]).inc_by(n),
            Ok(Err(e)) => {
                counted.with_label_values(&["failed"]).inc_by(n);
                tracing::warn!("OTLP export to {}{} failed: {e}", endpoint.authority, endpoint.path);
            }
            Err(_) => {
                counted.with_label_values(&["failed"]).inc_by(n);
                tracing::warn!(
                    "OTLP export to {}{}: no answer within {EXPORT_TIMEOUT:?}",
                    endpoint.authority,
                    endpoint.path
                );
            }
        }
    }
}

/// One POST of an encoded `ExportTraceServiceRequest`; a 2xx is success.
async fn post(endpoint: &Endpoint, body: Vec<u8>) -> Result<(), String> {
    let req = http::Request::post(&endpoint.path)
        .header(http::header::HOST, &endpoint.authority)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = crate::net::client::send_to(endpoint.authority.as_str(), req).await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = crate::net::client::read_body(resp, MAX_ANSWER).await;
    Err(format!("{status} {}", text.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default()))
}

fn string(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The export request: spans grouped by the resource (service and namespace) they come from.
pub(crate) fn request(spans: Vec<Finished>) -> ExportTraceServiceRequest {
    let mut by_resource: BTreeMap<(String, String), Vec<Span>> = BTreeMap::new();
    for f in spans {
        let mut attributes: Vec<KeyValue> = f.attributes.into_iter().map(|(k, v)| string(k, v)).collect();
        attributes.push(string("http.status_code", f.status.to_string()));
        // Envoy marks a span an error from a 5xx (or no answer).
        let error = f.status >= 500 || f.status == 0;
        if error {
            attributes.push(string("error", "true".into()));
        }
        let span = Span {
            trace_id: f.context.trace_id.to_be_bytes().to_vec(),
            span_id: f.context.span_id.to_be_bytes().to_vec(),
            parent_span_id: f.context.parent_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
            trace_state: String::new(),
            flags: 1,
            name: f.name,
            kind: f.kind as i32,
            start_time_unix_nano: nanos(f.start),
            end_time_unix_nano: nanos(f.end),
            attributes,
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(Status {
                message: String::new(),
                code: if error { StatusCode::Error } else { StatusCode::Unset } as i32,
            }),
        };
        by_resource.entry((f.service, f.namespace)).or_default().push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: by_resource
            .into_iter()
            .map(|((service, namespace), spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service), string("k8s.namespace.name", namespace)],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_and_a_bare_one_gets_the_traces_path() {
        let e: Endpoint = "http://127.0.0.1:4318".parse().unwrap();
        assert_eq!(e, Endpoint { authority: "127.0.0.1:4318".into(), path: "/v1/traces".into() });
        let e: Endpoint = "http://collector/custom/traces".parse().unwrap();
        assert_eq!(e, Endpoint { authority: "collector:80".into(), path: "/custom/traces".into() });
        assert!("https://collector:4318".parse::<Endpoint>().unwrap_err().contains("only http://"));
        assert!("collector:4318".parse::<Endpoint>().is_err());
    }

    #[test]
    fn spans_carry_the_trace_context_kind_and_status_grouped_by_resource() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let span = |kind, service: &str, status| Finished {
            context: crate::ops::trace::Span { trace_id: 0xabc, span_id: 7, parent_id: Some(3), sampled: true },
            kind,
            name: "svc.ns.svc.cluster.local:80/*".into(),
            start: t,
            end: t + Duration::from_millis(2),
            service: service.into(),
            namespace: "ns".into(),
            status,
            attributes: vec![("http.method", "GET".into())],
        };
        let req = request(vec![
            span(SpanKind::Client, "a.ns", 200),
            span(SpanKind::Server, "b.ns", 503),
            span(SpanKind::Client, "a.ns", 404),
        ]);
        assert_eq!(req.resource_spans.len(), 2);
        let a = &req.resource_spans[0];
        assert_eq!(a.resource.as_ref().unwrap().attributes[0], string("service.name", "a.ns".into()));
        let spans = &a.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].trace_id, 0xabc_u128.to_be_bytes().to_vec());
        assert_eq!(spans[0].parent_span_id, 3_u64.to_be_bytes().to_vec());
        assert_eq!(spans[0].kind, SpanKind::Client as i32);
        assert_eq!(spans[0].end_time_unix_nano - spans[0].start_time_unix_nano, 2_000_000);
        assert_eq!(spans[1].status.as_ref().unwrap().code, StatusCode::Unset as i32, "a 404 is not an error");
        let b = &req.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(b.kind, SpanKind::Server as i32);
        assert_eq!(b.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert!(b.attributes.contains(&string("error", "true".into())));
        // The wire form decodes back to the same request.
        let bytes = prost::Message::encode_to_vec(&req);
        assert_eq!(<ExportTraceServiceRequest as prost::Message>::decode(&bytes[..]).unwrap(), req);
    }
}
