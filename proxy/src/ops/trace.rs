//! Trace context, as Envoy propagates it under Istio: every request through a
//! sidecar is a span. The context a request brings (W3C `traceparent`, else
//! B3's `x-b3-*` headers or its single `b3` header) is continued — same trace,
//! the caller's span as parent, a new span id — and a request without one
//! starts a trace, sampled at the mesh's rate (Istio's default: 1 %). Both
//! forms are written on, so W3C and Zipkin-instrumented apps each find theirs;
//! `tracestate` is passed on untouched. The ids are in the access log.
//!
//! Invalid contexts (wrong length, not hex, all-zero ids, version `ff`) are
//! ignored as the W3C specification says: a new trace starts.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// Istio's default `meshConfig.defaultConfig.tracing.sampling`: 1 %.
pub const DEFAULT_SAMPLING_PERCENT: f64 = 1.0;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// This hop's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    pub(crate) parent_id: Option<u64>,
    pub sampled: bool,
}

/// A context a request brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Incoming {
    trace_id: u128,
    span_id: u64,
    /// `None`: the caller left the decision to us.
    sampled: Option<bool>,
}

fn hex_u128(s: &str) -> Option<u128> {
    (s.len() == 32).then(|| crate::text::parse_hex(s.as_bytes()))?
}

fn hex_u64(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| crate::text::parse_hex(s.as_bytes()).map(|n| n as u64))?
}

/// `00-<trace>-<parent>-<flags>` (a later version may append fields; `ff` is invalid).
fn from_traceparent(headers: &HeaderMap) -> Option<Incoming> {
    let v = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = v.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
    let (trace_id, span_id) = (hex_u128(trace)?, hex_u64(span)?);
    (trace_id != 0 && span_id != 0).then_some(Incoming { trace_id, span_id, sampled: Some(flags & 1 == 1) })
}

/// B3: a 64- or 128-bit trace id (64-bit ids are widened with zeros, as Zipkin does).
fn b3_trace(s: &str) -> Option<u128> {
    match s.len() {
        16 => hex_u64(s).map(u128::from),
        _ => hex_u128(s),
    }
}

fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `x-b3-traceid` + `x-b3-spanid` (+ `x-b3-sampled`), or the single `b3: trace-span[-sampled]`.
fn from_b3(headers: &HeaderMap) -> Option<Incoming> {
    let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let (trace, span, sampled) = match (text(&B3_TRACE), text(&B3_SPAN)) {
        (Some(t), Some(s)) => (t, s, text(&B3_SAMPLED)),
        _ => {
            let mut parts = text(&B3)?.split('-');
            (parts.next()?, parts.next()?, parts.next())
        }
    };
    let (trace_id, span_id) = (b3_trace(trace)?, hex_u64(span)?);
    (trace_id != 0 && span_id != 0).then_some(Incoming { trace_id, span_id, sampled: sampled.and_then(b3_sampled) })
}

/// A header value sharing `all`'s one allocation (hex digits and dashes: always valid).
fn value(all: &bytes::Bytes, range: std::ops::Range<usize>) -> HeaderValue {
    HeaderValue::from_maybe_shared(all.slice(range)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Continues the request's trace (or starts one, sampled at `sampling_per_million`),
/// writes this hop's span into `headers` for the next hop, and returns it.
pub(crate) fn propagate(headers: &mut HeaderMap, sampling_per_million: u32) -> Span {
    let incoming = from_traceparent(headers).or_else(|| from_b3(headers));
    let mut rng = rand::thread_rng();
    let span_id = rng.gen::<u64>().max(1);
    let span = match incoming {
        Some(i) => Span {
            trace_id: i.trace_id,
            span_id,
            parent_id: Some(i.span_id),
            sampled: i.sampled.unwrap_or_else(|| rng.gen_range(0..1_000_000) < sampling_per_million),
        },
        None => Span {
            trace_id: rng.gen::<u128>().max(1),
            span_id,
            parent_id: None,
            sampled: rng.gen_range(0..1_000_000) < sampling_per_million,
        },
    };
    // traceparent, then the parent span id: one buffer, one allocation shared by every value.
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-000000000000000000";
    crate::text::hex_into(&mut buf[3..35], span.trace_id);
    crate::text::hex_into(&mut buf[36..52], u128::from(span.span_id));
    buf[54] = if span.sampled { b'1' } else { b'0' };
    crate::text::hex_into(&mut buf[55..71], u128::from(span.parent_id.unwrap_or(0)));
    let all = bytes::Bytes::copy_from_slice(&buf);
    headers.reserve(5);
    headers.insert(TRACEPARENT.clone(), value(&all, 0..55));
    headers.insert(B3_TRACE.clone(), value(&all, 3..35));
    headers.insert(B3_SPAN.clone(), value(&all, 36..52));
    if span.parent_id.is_some() {
        headers.insert(B3_PARENT.clone(), value(&all, 55..71));
    } else {
        headers.remove(&B3_PARENT);
    }
    headers.insert(B3_SAMPLED.clone(), HeaderValue::from_static(if span.sampled { "1" } else { "0" }));
    // The single-header form would now contradict the multi-header one.
    headers.remove(&B3);
    span
}

/// A sampling rate in percent (Istio's form) as a per-million threshold.
pub(crate) fn per_million(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_w3c_context_is_continued_with_a_new_span() {
        let mut h = headers(&[("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")), ("tracestate", "x=1")]);
        let span = propagate(&mut h, 0);
        assert_eq!(format!("{:032x}", span.trace_id), TRACE);
        assert_eq!(span.parent_id, Some(0x00f067aa0ba902b7));
        assert!(span.sampled, "the caller's decision stands");
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(tp, format!("00-{TRACE}-{:016x}-01", span.span_id));
        assert_eq!(h["x-b3-traceid"], TRACE);
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-sampled"], "1");
        assert_eq!(h["tracestate"], "x=1", "passed on untouched");
    }

    #[test]
    fn b3_contexts_are_continued_and_written_as_w3c_too() {
        let mut h = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        let span = propagate(&mut h, 1_000_000);
        assert_eq!(span.trace_id, 0xa3ce929d0e0e4736, "a 64-bit id is widened");
        assert!(!span.sampled);
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
        let mut single = headers(&[("b3", &format!("{TRACE}-00f067aa0ba902b7-1"))]);
        let span = propagate(&mut single, 0);
        assert_eq!((format!("{:032x}", span.trace_id), span.sampled), (TRACE.to_string(), true));
        assert!(single.get("b3").is_none(), "replaced by the multi-header form");
    }

    #[test]
    fn invalid_contexts_start_a_new_trace_sampled_at_the_mesh_rate() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            "00-xyz-00f067aa0ba902b7-01".to_string(),
        ] {
            let mut h = headers(&[("traceparent", &bad)]);
            let span = propagate(&mut h, 0);
            assert_eq!(span.parent_id, None, "{bad}");
            assert_ne!(format!("{:032x}", span.trace_id), TRACE, "{bad}");
            assert!(!span.sampled, "0 % sampling");
            assert!(h.get("x-b3-parentspanid").is_none());
        }
        let always = propagate(&mut HeaderMap::new(), per_million(100.0));
        assert!(always.sampled);
        assert_eq!(per_million(DEFAULT_SAMPLING_PERCENT), 10_000);
    }
}
