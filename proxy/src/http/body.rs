//! The body type every part of the proxy speaks, and helpers to build one.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use std::future::Future;

/// Errors a body can yield; boxed so hyper's and ours fit one type.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body, streamed or buffered.
pub type Body = BoxBody<Bytes, BoxError>;

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Boxes hyper's incoming body.
pub(crate) fn incoming(b: hyper::body::Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed()
}

/// The route timeout ran out while the response body was still coming (Envoy's
/// route timeout covers the whole response, not only its headers): the body ends
/// in this error, the connection is cut and the request is recorded with `UT`.
#[derive(Debug)]
pub(crate) struct RouteTimeout;

impl std::fmt::Display for RouteTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream request timeout")
    }
}

impl std::error::Error for RouteTimeout {}

/// `inner` until `deadline`, then [`RouteTimeout`].
pub(crate) fn until(inner: Body, deadline: tokio::time::Instant) -> Body {
    Deadline { inner, sleep: Box::pin(tokio::time::sleep_until(deadline)), expired: false }.boxed()
}

struct Deadline {
    inner: Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(Box::new(RouteTimeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
