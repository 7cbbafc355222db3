//! Forwarding one request to a cluster: body buffering for replays, the try
//! loop (each try under the per-try timeout, fed to outlier detection; what follows
//! it is `retry`'s decision), and header hygiene. Used
//! by both listeners; what differs between them (routing, policy) is decided
//! before this module is called.
//!
//! Size: the request body, the try loop and the upstream request they share are one
//! path; the tests of the authority it sends are at the end.

use crate::config::snapshot::Cluster;
use crate::http::body::{self, Body};
use crate::http::headers::HeadText;
use crate::http::reply::{Flags, ProxyError};
use crate::http::retry::{Attempt, Failure, Next, Retries, RetryPolicy, Tried};
use crate::upstream::balance::NoPick;
use crate::upstream::endpoint::{ActiveGuard, Endpoint};
use crate::upstream::limits::{Overflow, Permit};
use crate::upstream::outlier::{Event, Outcome};
use crate::upstream::pool::{Protocol, UpstreamError};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::IntCounter;
use rand::Rng;
use std::sync::Arc;

/// Request bodies up to this size are kept so the request can be retried
/// (Envoy buffers for retries too). Larger or unsized bodies stream through
/// and get only the pool's resend of a request that was never written.
pub(crate) const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// The request body, kept for replays when small enough.
pub(crate) enum RequestBody {
    Buffered(Bytes),
    Streaming(Option<Body>),
}

impl RequestBody {
    /// Reads the body up to [`RETRY_BUFFER_LIMIT`]: a body that ends within it
    /// is kept whole (and can be replayed); a longer one streams on, with what
    /// was read so far in front. A body that breaks while being read is a 400.
    pub(crate) async fn prepare(mut incoming: Incoming) -> Result<Self, ProxyError> {
        if incoming.is_end_stream() {
            return Ok(RequestBody::Buffered(Bytes::new()));
        }
        if incoming.size_hint().lower() > RETRY_BUFFER_LIMIT {
            return Ok(RequestBody::Streaming(Some(body::incoming(incoming))));
        }
        let mut read: Vec<Bytes> = Vec::new();
        let mut total = 0u64;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| ProxyError::BadRequest(format!("reading request body: {e}")))?;
            // Trailers are dropped when a body is buffered.
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                read.push(data);
                if total > RETRY_BUFFER_LIMIT {
                    return Ok(RequestBody::Streaming(Some(Prefixed { read: read.into(), rest: incoming }.boxed())));
                }
            }
        }
        Ok(RequestBody::Buffered(match read.len() {
            1 => read.pop().unwrap_or_default(),
            _ => read.concat().into(),
        }))
    }

    pub(crate) fn len_hint(&self) -> u64 {
        match self {
            RequestBody::Buffered(b) => b.len() as u64,
            RequestBody::Streaming(Some(b)) => b.size_hint().lower(),
            RequestBody::Streaming(None) => 0,
        }
    }

    fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Buffered(b) => Some(body::full(b.clone())),
            RequestBody::Streaming(b) => b.take(),
        }
    }

    /// The whole body, when it was small enough to keep.
    pub(crate) fn bytes(&self) -> Option<Bytes> {
        match self {
            RequestBody::Buffered(b) => Some(b.clone()),
            RequestBody::Streaming(_) => None,
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Buffered(_))
    }
}

/// A body whose first chunks were already read.
struct Prefixed {
    read: std::collections::VecDeque<Bytes>,
    rest: Incoming,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
        if let Some(chunk) = self.read.pop_front() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx).map_err(|e| Box::new(e) as body::BoxError)
    }
}

/// What goes upstream, minus the body: method, target, authority, headers.
/// Built once per request; each attempt copies it.
pub(crate) struct Outgoing {
    pub parts: Parts,
    pub authority: HeaderValue,
    pub protocol: Protocol,
    /// The request's consistent-hash value, when its cluster hashes and it has the key.
    pub hash: Option<u64>,
    /// The request target upstream: origin-form for HTTP/1.1, absolute for HTTP/2.
    uri: http::Uri,
}

impl Outgoing {
    /// `rewritten`: the path and query a route rewrote, else the request's own.
    pub(crate) fn new(
        parts: Parts,
        rewritten: Option<String>,
        authority: HeaderValue,
        protocol: Protocol,
    ) -> Result<Self, ProxyError> {
        let bad = |e: http::Error| ProxyError::BadRequest(format!("bad upstream uri: {e}"));
        let path_and_query = match rewritten {
            Some(p) => p.parse::<http::uri::PathAndQuery>().map_err(|e| bad(e.into()))?,
            None => parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        };
        let uri = match protocol {
            // The request's own target when it is already origin-form (shares its bytes).
            Protocol::Http1
                if parts.uri.authority().is_none() && parts.uri.path_and_query() == Some(&path_and_query) =>
            {
                parts.uri.clone()
            }
            Protocol::Http1 => http::Uri::from(path_and_query),
            Protocol::Http2 => http::Uri::builder()
                .scheme("http")
                .authority(authority.as_bytes())
                .path_and_query(path_and_query)
                .build()
                .map_err(bad)?,
        };
        Ok(Outgoing { parts, authority, protocol, hash: None, uri })
    }

    /// A copy for a mirror: the same request to `-shadow` of its host (Envoy's shadow
    /// host suffix), spoken as the mirror's cluster wants.
    pub(crate) fn shadow(&self, protocol: Protocol) -> Result<Outgoing, ProxyError> {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.parts.method.clone();
        parts.version = self.parts.version;
        parts.headers = self.parts.headers.clone();
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let shadow = match crate::http::headers::split_port(self.authority.to_str().unwrap_or_default()) {
            (host, Some(port)) => format!("{host}-shadow:{port}"),
            (host, None) => format!("{host}-shadow"),
        };
        let authority = HeaderValue::from_str(&shadow).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        Outgoing::new(parts, Some(path), authority, protocol)
    }

    fn request(&self, body: Body) -> Result<Request<Body>, ProxyError> {
        let mut req = Request::new(body);
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.parts.headers.clone();
        match self.protocol {
            Protocol::Http1 => {
                *req.version_mut() = Version::HTTP_11;
                req.headers_mut().insert(header::HOST, self.authority.clone());
            }
            Protocol::Http2 => {
                *req.version_mut() = Version::HTTP_2;
                req.headers_mut().remove(header::HOST);
            }
        }
        Ok(req)
    }
}

/// How a forward ended well: the response, the endpoint, and how many tries it took.
pub(crate) struct Forwarded {
    pub response: Response<Incoming>,
    pub endpoint: Arc<Endpoint>,
    pub guard: ActiveGuard,
    /// The cluster's `http2MaxRequests` slot, held until the response ends.
    pub(crate) permit: Permit,
    pub tries: u32,
    pub flags: Flags,
}

/// How a forward ended badly.
pub(crate) struct ForwardError {
    pub error: ProxyError,
    pub endpoint: Option<Arc<Endpoint>>,
    pub tries: u32,
    pub flags: Flags,
}

/// Sends `out` to an endpoint of `cluster`, retrying per `policy`, and feeds
/// each try's outcome to outlier detection. The caller bounds the whole call
/// with the route timeout.
pub(crate) async fn forward(
    out: &Outgoing,
    body: &mut RequestBody,
    cluster: &Cluster,
    policy: &RetryPolicy,
    metrics: &crate::ops::metrics::Metrics,
) -> Result<Forwarded, ForwardError> {
    let balancer = &cluster.balancer;
    let retried: IntCounter = metrics.upstream_retries.with_label_values(&[&cluster.name]);
    let overflow = |limit: Overflow| {
        metrics.upstream_overflow.with_label_values(&[&cluster.name, limit.label()]).inc();
    };
    let permit = cluster.limits.request().map_err(|limit| {
        overflow(limit);
        ForwardError {
            error: ProxyError::Overflow { cluster: cluster.name.to_string(), limit: limit.label() },
            endpoint: None,
            tries: 0,
            flags: Flags::NONE,
        }
    })?;
    let grpc = crate::http::headers::is_grpc(&out.parts.headers);
    let mut retries = Retries::new(policy);
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    let mut tries = 0;
    loop {
        let endpoint = {
            let mut rng = rand::thread_rng();
            balancer.pick(&tried, policy.hosts, out.hash, &mut rng)
        };
        let endpoint = match endpoint {
            Ok(e) => e,
            Err(no) => {
                let name = cluster.name.to_string();
                let error = match no {
                    NoPick::NoEndpoints => ProxyError::NoEndpoints { cluster: name },
                    NoPick::AllEjected => ProxyError::AllEjected { cluster: name },
                };
                return Err(ForwardError { error, endpoint: None, tries, flags: Flags::NONE });
            }
        };
        tries += 1;
        let fail = |error: ProxyError, endpoint: &Arc<Endpoint>, flags: Flags| ForwardError {
            error,
            endpoint: Some(endpoint.clone()),
            tries,
            flags,
        };
        let Some(req_body) = body.take() else {
            // A streamed body is gone after the first try.
            return Err(fail(ProxyError::BadRequest("request body already consumed".into()), &endpoint, Flags::NONE));
        };
        let req = out.request(req_body).map_err(|e| fail(e, &endpoint, Flags::NONE))?;
        let guard = endpoint.start_request();
        let outcome = try_once(&endpoint, req, out.protocol, policy.per_try_timeout).await;
        observe(cluster, &endpoint, &outcome, grpc, metrics, &overflow);
        let tried_as = match &outcome {
            Ok(resp) => Tried::Answered { status: resp.status(), headers: resp.headers() },
            Err(f) => Tried::Failed(f),
        };
        let attempt = Attempt { method: &out.parts.method, grpc, tries, replayable: body.replayable() };
        let draw: u64 = rand::thread_rng().gen();
        match retries.next(attempt, tried_as, &cluster.limits, overflow, draw) {
            Next::Resend => tries -= 1,
            Next::RetryAfter(wait) => {
                drop((outcome, guard));
                retried.inc();
                tried.push(endpoint);
                tokio::time::sleep(wait).await;
            }
            Next::Done { exhausted, overflowed } => {
                let flags = (if exhausted { Flags::URX } else { Flags::NONE })
                    | (if overflowed { Flags::UO } else { Flags::NONE });
                return match outcome {
                    Ok(mut response) => {
                        crate::http::headers::strip_hop_by_hop(response.headers_mut());
                        Ok(Forwarded { response, endpoint, guard, permit, tries, flags })
                    }
                    Err(Failure::PerTryTimeout) => Err(fail(ProxyError::Timeout, &endpoint, flags)),
                    Err(Failure::Upstream(error)) => {
                        let addr = endpoint.addr;
                        Err(fail(ProxyError::Upstream { endpoint: addr, error }, &endpoint, flags))
                    }
                };
            }
        }
    }
}

/// One try on `endpoint`, within the per-try timeout.
async fn try_once(
    endpoint: &Endpoint,
    req: Request<Body>,
    protocol: Protocol,
    per_try_timeout: Option<std::time::Duration>,
) -> Result<Response<Incoming>, Failure> {
    let sent = endpoint.pool.send(req, protocol);
    match per_try_timeout {
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(result) => result.map_err(Failure::Upstream),
            Err(_) => Err(Failure::PerTryTimeout),
        },
        None => sent.await.map_err(Failure::Upstream),
    }
}

/// Feeds a try's outcome to outlier detection (a gRPC answer's health is its `grpc-status`:
/// a trailers-only UNAVAILABLE is a 503); a stale connection or a full pending queue says
/// nothing about the endpoint's health.
fn observe(
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    outcome: &Result<Response<Incoming>, Failure>,
    grpc: bool,
    metrics: &crate::ops::metrics::Metrics,
    overflow: &impl Fn(Overflow),
) {
    let seen = match outcome {
        Ok(resp) if grpc => Some(Outcome::Status(
            crate::http::headers::grpc_as_http_status(resp.headers()).unwrap_or(resp.status().as_u16()),
        )),
        Ok(resp) => Some(Outcome::Status(resp.status().as_u16())),
        Err(Failure::PerTryTimeout) => Some(Outcome::Timeout),
        Err(Failure::Upstream(UpstreamError::StaleReset(_))) => None,
        Err(Failure::Upstream(UpstreamError::Overflow(limit))) => {
            overflow(*limit);
            None
        }
        Err(Failure::Upstream(_)) => Some(Outcome::LocalFailure),
    };
    if let Some(event) = seen.and_then(|seen| cluster.balancer.record(endpoint, seen)) {
        let result = if event == Event::Ejected { "ejected" } else { "refused" };
        metrics.outlier_ejections.with_label_values(&[&cluster.name, result]).inc();
        tracing::warn!(cluster = %cluster.name, endpoint = %endpoint.addr, "outlier detection: {result}");
    }
}

/// Adds `x-request-id` when absent; returns its value (sharing the header's bytes).
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID) {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// `x-request-id`, named once (a `&str` key is parsed again on every lookup).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A random UUID v4, as Envoy generates.
fn new_request_id() -> HeaderValue {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    use crate::text::HEX;
    let mut out = [0u8; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The authority a request names: `:authority` for HTTP/2 and absolute-form,
/// else `Host`.
pub(crate) fn authority_of(parts: &Parts) -> Option<HeadText> {
    match parts.uri.authority() {
        Some(a) => Some(HeadText::Authority(a.clone())),
        None => parts.headers.get(header::HOST).filter(|h| h.to_str().is_ok()).map(|h| HeadText::Header(h.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&[u8]>) -> Parts {
        let mut req = Request::builder().uri(uri);
        if let Some(h) = host {
            req = req.header(header::HOST, HeaderValue::from_bytes(h).unwrap());
        }
        req.body(()).unwrap().into_parts().0
    }

    /// The URI's authority (HTTP/2's `:authority`, absolute-form) wins over `Host`; a `Host`
    /// that is not visible ASCII names nothing; the text is the request's own bytes.
    #[test]
    fn the_authority_a_request_names() {
        let of = |p: &Parts| authority_of(p).map(|a| a.to_string());
        assert_eq!(of(&parts("http://a.example:8080/x", Some(b"b.example"))).as_deref(), Some("a.example:8080"));
        assert_eq!(of(&parts("/x", Some(b"b.example:80"))).as_deref(), Some("b.example:80"));
        assert_eq!(of(&parts("/x", None)), None);
        assert_eq!(of(&parts("/x", Some(b"caf\xc3\xa9.example"))), None);
        let host = parts("/x", Some(b"b.example"));
        let value = authority_of(&host).unwrap().to_header_value().unwrap();
        assert_eq!(value.as_bytes().as_ptr(), host.headers[header::HOST].as_bytes().as_ptr(), "shared, not copied");
    }
}
