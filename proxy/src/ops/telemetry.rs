//! What is recorded about each request, and when: once, at the end of the
//! response stream (Istio records at access-log time), into the standard
//! metrics and the access log.

use crate::config::snapshot::Snapshot;
use crate::http::body::{Body, BoxError};
use crate::http::headers::HeadText;
use crate::http::reply::Flags;
use crate::ops::access_log::Line;
use crate::ops::metrics::IstioLabels;
use crate::state::Shared;
use crate::upstream::endpoint::{ActiveGuard, Endpoint};
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use weft_model::ProxyConfig;

/// Which side of the call this sidecar reports for (Istio's `reporter` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// The client's sidecar (outbound).
    Source,
    /// The server's sidecar (inbound).
    Destination,
}

/// Everything known about one request, filled in as it proceeds.
#[derive(Debug)]
pub(crate) struct Record {
    pub shared: Arc<Shared>,
    /// The config the request is served under (its workload's labels).
    pub(crate) config: Arc<ProxyConfig>,
    /// Its series memo and this workload's service: the snapshot's, held without the
    /// snapshot (a long stream must not keep a reloaded-away config's endpoints open).
    series_memo: Arc<crate::ops::series::Memo>,
    own_service: Arc<str>,
    pub reporter: Reporter,
    pub start: Instant,
    pub method: Method,
    pub(crate) authority: HeadText,
    pub(crate) path: HeadText,
    pub grpc: bool,
    pub request_id: http::HeaderValue,
    /// This hop's span of the request's trace (none with tracing off).
    pub span: Option<crate::ops::trace::Span>,
    pub(crate) request_bytes: u64,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    pub upstream: Option<Arc<Endpoint>>,
    /// Keeps the endpoint's active-request count up until the response ends.
    pub guard: Option<ActiveGuard>,
    /// Keeps the cluster's request slot taken until the response ends.
    pub(crate) permit: Option<crate::upstream::limits::Permit>,
    /// The peer's proven SPIFFE ID (inbound mTLS).
    pub peer: Option<Arc<str>>,
    pub attempts: u32,
    pub status: u16,
    /// A gRPC answer's `grpc-status` (from the headers of a trailers-only answer, or the trailers).
    pub grpc_status: Option<u16>,
    pub flags: Flags,
}

/// Approximate wire size of a header block: name, value, ": " and CRLF per line.
pub(crate) fn header_bytes(headers: &HeaderMap) -> u64 {
    headers.iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum()
}

impl Record {
    /// Starts the record of a request as it arrives; adds `x-request-id` when absent.
    pub(crate) fn begin(
        shared: &Arc<Shared>,
        snap: &Arc<Snapshot>,
        reporter: Reporter,
        parts: &mut http::request::Parts,
    ) -> Self {
        let request_id = crate::http::forward::ensure_request_id(&mut parts.headers);
        let span = shared.trace_sampling.map(|rate| crate::ops::trace::propagate(&mut parts.headers, rate));
        let authority = crate::http::forward::authority_of(parts).unwrap_or_default();
        let path = parts.uri.path_and_query().map_or(HeadText::Static("/"), |p| HeadText::Path(p.clone()));
        let grpc = crate::http::headers::is_grpc(&parts.headers);
        // Request line plus headers, as on the wire.
        let request_bytes = (parts.method.as_str().len() + path.len() + 12) as u64 + header_bytes(&parts.headers);
        Record {
            shared: shared.clone(),
            config: snap.config.clone(),
            series_memo: snap.series.clone(),
            own_service: snap.own_service.clone(),
            reporter,
            start: Instant::now(),
            method: parts.method.clone(),
            authority,
            path,
            grpc,
            request_id,
            span,
            request_bytes,
            route: None,
            cluster: None,
            service: None,
            upstream: None,
            guard: None,
            permit: None,
            peer: None,
            attempts: 0,
            status: 0,
            grpc_status: None,
            flags: Flags::NONE,
        }
    }

    /// Wraps the response so the request is recorded when its body ends.
    pub(crate) fn respond(mut self, response: http::Response<Body>) -> http::Response<Body> {
        self.status = response.status().as_u16();
        if self.grpc {
            self.grpc_status = grpc_status(response.headers());
        }
        let header_size = header_bytes(response.headers()) + 17;
        let (parts, body) = response.into_parts();
        let observed = Observed::new(body, header_size, self);
        http::Response::from_parts(parts, http_body_util::BodyExt::boxed(observed))
    }

    /// Answers with a local reply for `err` and records it.
    pub(crate) fn reply(mut self, err: &crate::http::reply::ProxyError, extra: Flags) -> http::Response<Body> {
        let (response, flags) = crate::http::reply::local_reply(err, extra, self.grpc);
        self.flags |= flags;
        tracing::debug!(request_id = ?self.request_id, "local reply: {err}");
        self.respond(response)
    }

    /// Records the request into metrics and the access log.
    pub(crate) fn finish(self, response_bytes: u64) {
        let Record {
            shared,
            config,
            series_memo,
            own_service,
            reporter,
            start,
            method,
            authority,
            path,
            grpc,
            request_id,
            span,
            request_bytes,
            route,
            cluster,
            service,
            upstream,
            guard,
            permit,
            peer,
            attempts,
            status,
            grpc_status,
            flags,
        } = self;
        drop((guard, permit));
        let elapsed = start.elapsed();
        // No allocation for the common cases: these run once per request.
        let flags_text: std::borrow::Cow<str> = if flags.is_empty() { "-".into() } else { flags.to_string().into() };
        let w = &config.workload;
        let own_app = w.labels.get("app").map_or("unknown", String::as_str);
        let own_version = w.labels.get("version").map_or("unknown", String::as_str);
        // Inbound, the destination service is this workload's own (set from the snapshot), never
        // the caller's Host: no caller mints label values here.
        let host = match reporter {
            Reporter::Destination => &own_service,
            Reporter::Source => service.as_deref().unwrap_or_else(|| authority.split(':').next().unwrap_or("unknown")),
        };
        let protocol = if grpc { "grpc" } else { "http" };
        let reporter_label = match reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        };
        let decided = crate::ops::series::Decided {
            destination: reporter == Reporter::Destination,
            service: service.as_ref(),
            endpoint: upstream.as_ref(),
            peer: peer.as_ref(),
            grpc,
            status,
            grpc_status,
            flags,
        };
        let series = series_memo.series(decided, || {
            let mut code_buf = [0u8; 20];
            let code = crate::text::decimal(u64::from(status), &mut code_buf);
            let mut grpc_buf = [0u8; 20];
            let grpc_code = grpc_status.map_or("", |g| crate::text::decimal(u64::from(g), &mut grpc_buf));
            let ep_label = |k: &str| endpoint_label(upstream.as_deref(), k);
            let mut parts = host.split('.');
            let svc_name = parts.next().filter(|s| !s.is_empty()).unwrap_or("unknown");
            let svc_ns = if host.contains(".svc") { parts.next().unwrap_or("unknown") } else { "unknown" };
            let both = IstioLabels {
                destination_service: host,
                destination_service_name: svc_name,
                destination_service_namespace: svc_ns,
                request_protocol: protocol,
                response_flags: &flags_text,
                response_code: code,
                grpc_response_status: grpc_code,
                ..IstioLabels::unknown(reporter_label)
            };
            let labels = match reporter {
                Reporter::Source => IstioLabels {
                    source_workload: &w.name,
                    source_workload_namespace: &w.namespace,
                    source_app: own_app,
                    source_version: own_version,
                    destination_workload: ep_label("workload"),
                    destination_workload_namespace: svc_ns,
                    destination_app: ep_label("app"),
                    destination_version: ep_label("version"),
                    ..both
                },
                Reporter::Destination => IstioLabels {
                    source_principal: peer.as_deref().unwrap_or("unknown"),
                    destination_workload: &w.name,
                    destination_workload_namespace: &w.namespace,
                    destination_app: own_app,
                    destination_version: own_version,
                    connection_security_policy: if peer.is_some() { "mutual_tls" } else { "none" },
                    ..both
                },
            };
            shared.metrics.request_series(&labels)
        });
        series.total.inc();
        series.duration.observe(elapsed.as_secs_f64() * 1000.0);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
        let logging = shared.access_log.enabled_for(&config);
        let tapping = shared.tap.watching();
        if logging || tapping {
            let line = Line::new()
                .str("reporter", reporter_label)
                .str("method", method.as_str())
                .str("authority", &authority)
                .str("path", &path)
                .str("protocol", protocol)
                .num("status", u64::from(status))
                .str("flags", &flags_text)
                .opt("route", route.as_deref())
                .opt("cluster", cluster.as_deref())
                .addr("upstream", upstream.as_ref().map(|e| e.addr))
                .num("attempts", u64::from(attempts))
                .millis("duration_ms", elapsed)
                .num("bytes_received", request_bytes)
                .num("bytes_sent", response_bytes)
                .str("request_id", &String::from_utf8_lossy(request_id.as_bytes()))
                .hex("trace_id", span.map(|s| s.trace_id), 32)
                .hex("span_id", span.map(|s| u128::from(s.span_id)), 16)
                .finish();
            if tapping {
                shared.tap.send(&line);
            }
            if logging {
                shared.access_log.write(line);
            }
        }
        if let (Some(exporter), Some(span)) = (&shared.otlp, span.filter(|s| s.sampled)) {
            let end = std::time::SystemTime::now();
            let port = authority.rsplit_once(':').map_or("80", |(_, p)| p);
            exporter.record(crate::ops::otlp::Finished {
                context: span,
                kind: match reporter {
                    Reporter::Source => crate::ops::otlp::SpanKind::Client,
                    Reporter::Destination => crate::ops::otlp::SpanKind::Server,
                },
                name: format!("{host}:{port}/*"),
                start: end.checked_sub(elapsed).unwrap_or(end),
                end,
                service: format!("{}.{}", if own_app == "unknown" { &w.name } else { own_app }, w.namespace),
                namespace: w.namespace.clone(),
                status,
                attributes: vec![
                    ("http.method", method.to_string()),
                    ("http.url", format!("http://{authority}{path}")),
                    ("http.protocol", protocol.to_string()),
                    ("response_flags", flags_text.to_string()),
                    ("upstream_cluster", cluster.as_deref().unwrap_or("-").to_string()),
                    ("guid:x-request-id", String::from_utf8_lossy(request_id.as_bytes()).into_owned()),
                    ("istio.canonical_service", own_app.to_string()),
                    ("istio.canonical_revision", own_version.to_string()),
                    ("istio.namespace", w.namespace.clone()),
                ],
            });
        }
    }
}

/// `grpc-status` of a header block, when it is one.
fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// An upstream endpoint's label, `unknown` when absent.
fn endpoint_label<'a>(endpoint: Option<&'a Endpoint>, key: &str) -> &'a str {
    endpoint.and_then(|e| e.label(key)).unwrap_or("unknown")
}

/// A response body that records its request when it ends, fails, or is dropped
/// early (the client went away: flag `DC`).
#[derive(Debug)]
pub(crate) struct Observed {
    inner: Body,
    sent: u64,
    record: Option<Box<Record>>,
}

impl Observed {
    pub(crate) fn new(inner: Body, header_size: u64, record: Record) -> Self {
        Observed { inner, sent: header_size, record: Some(Box::new(record)) }
    }

    fn finish(&mut self, extra: Flags) {
        if let Some(mut r) = self.record.take() {
            r.flags |= extra;
            r.finish(self.sent);
        }
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if let (Some(trailers), Some(record)) = (frame.trailers_ref(), self.record.as_mut()) {
                    if record.grpc {
                        record.grpc_status = grpc_status(trailers).or(record.grpc_status);
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish(Flags::NONE);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let flag = if e.is::<crate::http::body::RouteTimeout>() { Flags::UT } else { Flags::UC };
                self.finish(flag)
            }
            Poll::Ready(None) => self.finish(Flags::NONE),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let flags = if http_body::Body::is_end_stream(&self.inner) { Flags::NONE } else { Flags::DC };
        self.finish(flags);
    }
}
