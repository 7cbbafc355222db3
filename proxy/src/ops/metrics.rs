//! Istio's standard metrics and the proxy's own `weft_*` metrics, in a
//! registry passed in (never the global one).
//!
//! Label names and order follow the Envoy stats filter Istio uses
//! (shared/ISTIO-SEMANTICS.md §6); histogram buckets are Envoy's defaults.
//!
//! Size: every metric the sidecar exports, registered in one place with its help and labels.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Envoy's default histogram bucket bounds, used by Istio for all three histograms.
pub(crate) const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Labels of the request metrics, in Istio's order.
pub(crate) const REQUEST_LABELS: [&str; 19] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
    "grpc_response_status",
];

/// Labels of the TCP metrics: the request labels without `response_code`.
pub(crate) const TCP_LABELS: [&str; 17] = {
    let mut l = [""; 17];
    let mut i = 0;
    while i < 17 {
        l[i] = REQUEST_LABELS[i];
        i += 1;
    }
    l
};

/// One request's Istio labels, by name. [`IstioLabels::values`] is the one
/// place that knows their order ([`REQUEST_LABELS`], right above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IstioLabels<'a> {
    pub reporter: &'a str,
    pub source_workload: &'a str,
    pub source_workload_namespace: &'a str,
    pub source_principal: &'a str,
    pub source_app: &'a str,
    pub source_version: &'a str,
    pub destination_workload: &'a str,
    pub(crate) destination_workload_namespace: &'a str,
    pub(crate) destination_principal: &'a str,
    pub(crate) destination_app: &'a str,
    pub destination_version: &'a str,
    pub destination_service: &'a str,
    pub destination_service_name: &'a str,
    pub destination_service_namespace: &'a str,
    pub request_protocol: &'a str,
    pub response_flags: &'a str,
    pub connection_security_policy: &'a str,
    /// Request metrics only; TCP metrics have no response code.
    pub response_code: &'a str,
    /// Request metrics only: a gRPC answer's status (`0`, `14` …), empty for other requests.
    pub grpc_response_status: &'a str,
}

impl<'a> IstioLabels<'a> {
    /// `unknown` everywhere but the reporter (Istio's value for a label it cannot tell).
    pub(crate) fn unknown(reporter: &'a str) -> Self {
        let u = "unknown";
        IstioLabels {
            reporter,
            source_workload: u,
            source_workload_namespace: u,
            source_principal: u,
            source_app: u,
            source_version: u,
            destination_workload: u,
            destination_workload_namespace: u,
            destination_principal: u,
            destination_app: u,
            destination_version: u,
            destination_service: u,
            destination_service_name: u,
            destination_service_namespace: u,
            request_protocol: u,
            response_flags: u,
            connection_security_policy: u,
            response_code: u,
            grpc_response_status: "",
        }
    }

    /// The values in [`REQUEST_LABELS`] order.
    pub(crate) fn values(&self) -> [&'a str; 19] {
        [
            self.reporter,
            self.source_workload,
            self.source_workload_namespace,
            self.source_principal,
            self.source_app,
            self.source_version,
            self.destination_workload,
            self.destination_workload_namespace,
            self.destination_principal,
            self.destination_app,
            self.destination_version,
            self.destination_service,
            self.destination_service_name,
            self.destination_service_namespace,
            self.request_protocol,
            self.response_flags,
            self.connection_security_policy,
            self.response_code,
            self.grpc_response_status,
        ]
    }

    /// The values in [`TCP_LABELS`] order (no response code).
    pub(crate) fn tcp_values(&self) -> [&'a str; 17] {
        let v = self.values();
        std::array::from_fn(|i| v[i])
    }
}

/// The four standard metrics of one label set, looked up once and reused.
#[derive(Debug)]
pub(crate) struct RequestSeries {
    pub total: prometheus::IntCounter,
    pub duration: prometheus::Histogram,
    pub(crate) request_bytes: prometheus::Histogram,
    pub(crate) response_bytes: prometheus::Histogram,
}

/// Label sets seen so far → their series: one hash lookup per request instead
/// of four label-vector lookups. Bounded like the label values themselves.
/// One label set and its series.
type SeriesEntry = (Box<[Box<str>]>, std::sync::Arc<RequestSeries>);

#[derive(Debug, Default)]
pub(crate) struct SeriesCache {
    map: std::sync::RwLock<std::collections::HashMap<u64, Vec<SeriesEntry>>>,
    /// Label sets held.
    count: std::sync::atomic::AtomicUsize,
}

/// Label sets of the request metrics one sidecar keeps; past it, new sets fold
/// into one whose destination service labels read `overflow` (counted in
/// `weft_metric_series_overflow_total`), so no stream of distinct values a
/// caller sends can grow memory or the scrape without bound.
pub const MAX_REQUEST_SERIES: usize = 2048;

/// Every metric the proxy exports.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub registry: Registry,
    pub(crate) requests_total: IntCounterVec,
    pub(crate) request_duration: HistogramVec,
    pub(crate) request_bytes: HistogramVec,
    pub(crate) response_bytes: HistogramVec,
    /// `weft_config_reloads_total{result="applied"|"rejected"}`.
    pub(crate) config_reloads: IntCounterVec,
    /// `weft_gateway_credential_loads_total{result="loaded"|"failed"}`: a gateway's certificates
    /// read (at a config, or when their files changed).
    pub(crate) gateway_credential_loads: IntCounterVec,
    /// `weft_upstream_retries_total{cluster}`: retries sent.
    pub(crate) upstream_retries: IntCounterVec,
    /// `weft_mirror_requests_total{cluster,result="answered"|"failed"|"skipped"}`: request copies
    /// (Istio `mirror`); `skipped` when the body was too large to copy.
    pub(crate) mirror_requests: IntCounterVec,
    /// `weft_outlier_ejections_total{cluster,result="ejected"|"refused"}`.
    pub(crate) outlier_ejections: IntCounterVec,
    /// `weft_upstream_overflow_total{cluster,limit="pending"|"requests"|"retries"}`: circuit-breaker overflows.
    pub(crate) upstream_overflow: IntCounterVec,
    /// `weft_upstream_pending_requests{cluster}`: the pending queue, set at scrape time.
    pub(crate) upstream_pending: prometheus::IntGaugeVec,
    /// `weft_upstream_requests_active{cluster}`, set at scrape time.
    pub(crate) upstream_active: prometheus::IntGaugeVec,
    /// `weft_upstream_connections{cluster}`, set at scrape time.
    pub(crate) upstream_connections: prometheus::IntGaugeVec,
    /// `weft_outlier_ejections_active{cluster}`, set at scrape time.
    pub(crate) outlier_ejected: prometheus::IntGaugeVec,
    /// `weft_authz_denied_total{policy, source_principal}`: 403s by the deciding policy and rule, and
    /// by the caller's mTLS identity (`unknown` without one; only the mesh CA's identities, so bounded).
    pub(crate) authz_denied: IntCounterVec,
    /// `weft_trace_spans_total{result}`: sampled spans exported, failed (collector down or
    /// refusing) and dropped (queue full).
    pub(crate) trace_spans: IntCounterVec,
    /// `weft_inbound_connections_refused_total{reason}`: mTLS refusals.
    pub(crate) inbound_refused: IntCounterVec,
    /// `weft_access_log_dropped_total`: lines dropped because the writer fell behind.
    pub(crate) access_log_dropped: IntCounter,
    /// `weft_metric_series_overflow_total`: requests recorded under the overflow label set.
    pub(crate) series_overflow: IntCounter,
    /// `weft_downstream_connections_total{listener}`: connections accepted.
    pub(crate) downstream_total: IntCounterVec,
    /// `weft_downstream_connections_active{listener}`.
    pub(crate) downstream_active: prometheus::IntGaugeVec,
    /// `weft_config_generation`: configs applied since start.
    pub(crate) config_applied: IntGauge,
    /// `istio_tcp_connections_opened_total` / `_closed_total`, `istio_tcp_received_bytes_total`
    /// (from the app) and `istio_tcp_sent_bytes_total` (back to it): captured non-HTTP traffic.
    pub(crate) tcp_opened: IntCounterVec,
    pub(crate) tcp_closed: IntCounterVec,
    pub(crate) tcp_received_bytes: IntCounterVec,
    pub(crate) tcp_sent_bytes: IntCounterVec,
    series: std::sync::Arc<SeriesCache>,
}

impl Metrics {
    pub(crate) fn new(registry: Registry) -> prometheus::Result<Self> {
        let histogram = |name: &str, help: &str| -> prometheus::Result<HistogramVec> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(ENVOY_BUCKETS.to_vec()), &REQUEST_LABELS)?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let requests_total =
            IntCounterVec::new(Opts::new("istio_requests_total", "Requests, counted at stream end"), &REQUEST_LABELS)?;
        registry.register(Box::new(requests_total.clone()))?;
        let config_reloads =
            IntCounterVec::new(Opts::new("weft_config_reloads_total", "Config changes seen, by result"), &["result"])?;
        registry.register(Box::new(config_reloads.clone()))?;
        let gateway_credential_loads = IntCounterVec::new(
            Opts::new("weft_gateway_credential_loads_total", "Gateway certificates read, by result"),
            &["result"],
        )?;
        registry.register(Box::new(gateway_credential_loads.clone()))?;
        let upstream_retries =
            IntCounterVec::new(Opts::new("weft_upstream_retries_total", "Retries sent upstream"), &["cluster"])?;
        registry.register(Box::new(upstream_retries.clone()))?;
        let mirror_requests = IntCounterVec::new(
            Opts::new("weft_mirror_requests_total", "Request copies sent to mirrors, by outcome"),
            &["cluster", "result"],
        )?;
        registry.register(Box::new(mirror_requests.clone()))?;
        let outlier_ejections = IntCounterVec::new(
            Opts::new("weft_outlier_ejections_total", "Outlier ejections, and ejections refused by maxEjectionPercent"),
            &["cluster", "result"],
        )?;
        registry.register(Box::new(outlier_ejections.clone()))?;
        let upstream_overflow = IntCounterVec::new(
            Opts::new(
                "weft_upstream_overflow_total",
                "Requests turned away by a connection-pool limit (503 UO) or retries skipped",
            ),
            &["cluster", "limit"],
        )?;
        registry.register(Box::new(upstream_overflow.clone()))?;
        let cluster_gauge = |name: &str, help: &str| -> prometheus::Result<prometheus::IntGaugeVec> {
            let g = prometheus::IntGaugeVec::new(Opts::new(name, help), &["cluster"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let upstream_pending =
            cluster_gauge("weft_upstream_pending_requests", "Requests waiting for an upstream connection")?;
        let upstream_active = cluster_gauge("weft_upstream_requests_active", "Requests in flight to the cluster")?;
        let upstream_connections =
            cluster_gauge("weft_upstream_connections", "Open upstream connections of the cluster")?;
        let outlier_ejected = cluster_gauge("weft_outlier_ejections_active", "Endpoints ejected now")?;
        let authz_denied = IntCounterVec::new(
            Opts::new(
                "weft_authz_denied_total",
                "Requests denied by authorization, by deciding policy and rule and by the caller's proven identity",
            ),
            &["policy", "source_principal"],
        )?;
        registry.register(Box::new(authz_denied.clone()))?;
        let trace_spans = IntCounterVec::new(
            Opts::new("weft_trace_spans_total", "Sampled spans sent over OTLP, by result: exported, failed, dropped"),
            &["result"],
        )?;
        registry.register(Box::new(trace_spans.clone()))?;
        let inbound_refused = IntCounterVec::new(
            Opts::new("weft_inbound_connections_refused_total", "Inbound connections refused by mTLS policy"),
            &["reason"],
        )?;
        registry.register(Box::new(inbound_refused.clone()))?;
        let access_log_dropped =
            IntCounter::new("weft_access_log_dropped_total", "Access-log lines dropped under back-pressure")?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let series_overflow = IntCounter::new(
            "weft_metric_series_overflow_total",
            "Requests recorded under the overflow label set (too many distinct label sets)",
        )?;
        registry.register(Box::new(series_overflow.clone()))?;
        let downstream_active = prometheus::IntGaugeVec::new(
            Opts::new("weft_downstream_connections_active", "Open downstream connections"),
            &["listener"],
        )?;
        registry.register(Box::new(downstream_active.clone()))?;
        let downstream_total = IntCounterVec::new(
            Opts::new("weft_downstream_connections_total", "Downstream connections accepted"),
            &["listener"],
        )?;
        registry.register(Box::new(downstream_total.clone()))?;
        let config_applied =
            IntGauge::new("weft_config_generation", "Configs applied since start (1 after the first)")?;
        registry.register(Box::new(config_applied.clone()))?;
        let tcp = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &TCP_LABELS)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Metrics {
            tcp_opened: tcp("istio_tcp_connections_opened_total", "TCP connections opened")?,
            tcp_closed: tcp("istio_tcp_connections_closed_total", "TCP connections closed")?,
            tcp_received_bytes: tcp("istio_tcp_received_bytes_total", "Bytes received from the downstream (TCP)")?,
            tcp_sent_bytes: tcp("istio_tcp_sent_bytes_total", "Bytes sent to the downstream (TCP)")?,
            request_duration: histogram("istio_request_duration_milliseconds", "Request duration in milliseconds")?,
            request_bytes: histogram("istio_request_bytes", "Request size in bytes, headers included")?,
            response_bytes: histogram("istio_response_bytes", "Response size in bytes, headers included")?,
            requests_total,
            config_reloads,
            gateway_credential_loads,
            upstream_retries,
            mirror_requests,
            outlier_ejections,
            upstream_overflow,
            upstream_pending,
            upstream_active,
            upstream_connections,
            outlier_ejected,
            inbound_refused,
            authz_denied,
            trace_spans,
            access_log_dropped,
            series_overflow,
            downstream_active,
            downstream_total,
            config_applied,
            series: Default::default(),
            registry,
        })
    }

    /// The standard request metrics for `labels`, and whether they were folded into the
    /// overflow set (then counted in `weft_metric_series_overflow_total`, once per call).
    pub(crate) fn request_series(&self, named: &IstioLabels) -> (std::sync::Arc<RequestSeries>, bool) {
        use std::hash::{Hash, Hasher};
        let values = named.values();
        let labels = &values;
        let mut h = crate::fxhash::FxHasher::default();
        labels.hash(&mut h);
        let key = h.finish();
        let same = |stored: &[Box<str>]| stored.iter().map(|s| &**s).eq(labels.iter().copied());
        if let Ok(map) = self.series.map.read() {
            if let Some(found) = map.get(&key).and_then(|v| v.iter().find(|(l, _)| same(l))) {
                return (found.1.clone(), false);
            }
        }
        if self.series.count.load(std::sync::atomic::Ordering::Relaxed) >= MAX_REQUEST_SERIES {
            let overflow = "overflow";
            let folded = IstioLabels {
                destination_service: overflow,
                destination_service_name: overflow,
                destination_service_namespace: overflow,
                ..*named
            };
            if folded != *named {
                self.series_overflow.inc();
                return (self.request_series(&folded).0, true);
            }
        }
        let series = std::sync::Arc::new(RequestSeries {
            total: self.requests_total.with_label_values(labels),
            duration: self.request_duration.with_label_values(labels),
            request_bytes: self.request_bytes.with_label_values(labels),
            response_bytes: self.response_bytes.with_label_values(labels),
        });
        if let Ok(mut map) = self.series.map.write() {
            let stored: Box<[Box<str>]> = labels.iter().map(|l| Box::<str>::from(*l)).collect();
            map.entry(key).or_default().push((stored, series.clone()));
            self.series.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        (series, false)
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!("metrics encoding failed: {e}");
        }
        out
    }
}
