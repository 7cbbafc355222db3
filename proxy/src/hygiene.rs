//! What every request goes through first, on both listeners, so that nothing
//! a client sends can bend what routing, authorization, metrics and the app
//! see: the request line checked as Envoy does by default (HTTP/1.0 → 426,
//! HTTP/1.1 without `Host` → 400), client-driven hop-by-hop stripping done
//! before the sidecar sets any header of its own (so `Connection:
//! x-forwarded-client-cert` cannot remove the identity header), and the path
//! normalized ([`crate::normalize`]).

use crate::reply::ProxyError;
use weft_model::PathNormalization;

/// Strips what the client named hop-by-hop, checks the request line and
/// normalizes the path in place. Call before anything else reads or sets headers.
pub fn admit(parts: &mut http::request::Parts, mode: PathNormalization) -> Result<(), ProxyError> {
    crate::headers::strip_hop_by_hop(&mut parts.headers);
    if parts.version < http::Version::HTTP_11 {
        return Err(ProxyError::UpgradeRequired);
    }
    if parts.version == http::Version::HTTP_11
        && parts.uri.authority().is_none()
        && !parts.headers.contains_key(http::header::HOST)
    {
        return Err(ProxyError::BadRequest("missing Host header".into()));
    }
    let Some(pq) = parts.uri.path_and_query().map(|p| p.as_str()) else { return Ok(()) };
    let normalized = crate::normalize::normalize(pq, mode).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    if normalized != pq {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query =
            Some(normalized.parse().map_err(|_| ProxyError::BadRequest("path cannot be normalized".into()))?);
        parts.uri =
            http::Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("path cannot be normalized".into()))?;
    }
    Ok(())
}
