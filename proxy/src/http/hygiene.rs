//! What every request goes through first, on both listeners, so that nothing
//! a client sends can bend what routing, authorization, metrics and the app
//! see: the request line checked as Envoy does by default (HTTP/1.0 → 426,
//! HTTP/1.1 without `Host` → 400), client-driven hop-by-hop stripping done
//! before the sidecar sets any header of its own (so `Connection:
//! x-forwarded-client-cert` cannot remove the identity header), and the path
//! normalized ([`crate::http::normalize`]).

use crate::http::reply::ProxyError;
use weft_model::PathNormalization;

/// Strips what the client named hop-by-hop, checks the request line and
/// normalizes the path in place. Call before anything else reads or sets headers.
pub(crate) fn admit(parts: &mut http::request::Parts, mode: PathNormalization) -> Result<(), ProxyError> {
    crate::http::headers::strip_hop_by_hop(&mut parts.headers);
    // Set only by the sidecar when it rewrites a path: never the client's word.
    parts.headers.remove("x-envoy-original-path");
    if parts.version < http::Version::HTTP_11 {
        return Err(ProxyError::UpgradeRequired);
    }
    // One authority, as Envoy has: the request target's (absolute form, HTTP/2 `:authority`)
    // replaces any Host header, so a rule on Host sees what the app will see.
    if let Some(authority) = parts.uri.authority() {
        if authority.as_str().contains('@') {
            return Err(ProxyError::BadRequest("userinfo in the authority".into()));
        }
        let host = http::HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority".into()))?;
        parts.headers.insert(http::header::HOST, host);
    }
    let hosts = parts.headers.get_all(http::header::HOST).iter().count();
    let empty = parts.headers.get(http::header::HOST).is_none_or(|h| h.as_bytes().trim_ascii().is_empty());
    if hosts != 1 || empty {
        return Err(ProxyError::BadRequest("missing, empty or repeated Host".into()));
    }
    let Some(pq) = parts.uri.path_and_query().map(|p| p.as_str()) else {
        return match parts.method {
            http::Method::CONNECT => Ok(()),
            _ => Err(ProxyError::BadRequest("authority-form is for CONNECT only".into())),
        };
    };
    let normalized = crate::http::normalize::normalized(pq, mode).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    if let std::borrow::Cow::Owned(normalized) = normalized {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query =
            Some(normalized.parse().map_err(|_| ProxyError::BadRequest("path cannot be normalized".into()))?);
        parts.uri =
            http::Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("path cannot be normalized".into()))?;
    }
    Ok(())
}
