//! The body type every part of the proxy speaks, and helpers to build one.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Errors a body can yield; boxed so hyper's and ours fit one type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body, streamed or buffered.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Boxes hyper's incoming body.
pub fn incoming(b: hyper::body::Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed()
}
