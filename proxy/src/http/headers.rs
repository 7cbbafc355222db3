//! Header rules every part of the sidecar shares: which headers are
//! hop-by-hop, and how a header reads when matched.

use http::header::{self, HeaderMap, HeaderName};
use std::borrow::Cow;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// Removes the hop-by-hop headers and those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names is cheaper than six removals.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// A header as matchers see it: several values joined with `,` (Envoy's rule,
/// so `x-role: user` + `x-role: admin` is `user,admin`, never just `user`);
/// bytes that are not UTF-8 stand as U+FFFD rather than hiding the header.
pub(crate) fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let text = |v: &'a http::HeaderValue| match v.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    };
    match values.next() {
        None => Some(text(first)),
        Some(second) => {
            let mut joined = format!("{},{}", text(first), text(second));
            for v in values {
                joined.push(',');
                joined.push_str(&text(v));
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// An authority split into host and port: `a:80` → (`a`, `80`), `[::1]:80` → (`[::1]`, `80`);
/// no port (or one that is not digits) → (the whole, `None`).
pub fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = match authority.strip_prefix('[') {
        Some(rest) => match rest.find(']') {
            Some(i) => i + 2,
            None => return (authority, None),
        },
        None => match authority.rfind(':') {
            Some(i) => i,
            None => return (authority, None),
        },
    };
    match authority[host_end..].strip_prefix(':') {
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => (&authority[..host_end], Some(port)),
        _ => (authority, None),
    }
}

/// A gRPC request or response: `content-type: application/grpc` or `application/grpc+…`
/// (Envoy's test; gRPC-Web's `application/grpc-web` is not gRPC on the wire).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v == b"application/grpc" || v.starts_with(b"application/grpc+") || v.starts_with(b"application/grpc;")
    })
}

/// gRPC's status as the HTTP status it stands for (Envoy's `grpcToHttpStatus`), for
/// outlier detection: a trailers-only UNAVAILABLE is a 503 to it, as to Envoy.
pub(crate) fn grpc_as_http_status(headers: &HeaderMap) -> Option<u16> {
    let code: u32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    })
}

/// The deadline a gRPC client sent (`grpc-timeout`: at most 8 digits and a unit, `H`
/// `M` `S` `m` `u` `n`); `None` when absent or malformed.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if n == 0 {
        return None; // Envoy: a zero deadline is no deadline (the route's still holds).
    }
    use std::time::Duration;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod grpc_tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("250m"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(t("2S"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(std::time::Duration::from_secs(3600)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", "0m"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}

/// Text of a request's head kept as the head holds it — the `Host` header's or the
/// URI's shared bytes — instead of a `String` copied for every request.
#[derive(Debug, Clone)]
pub(crate) enum HeadText {
    /// A header value, visible ASCII (checked when made).
    Header(http::HeaderValue),
    Authority(http::uri::Authority),
    Path(http::uri::PathAndQuery),
    Static(&'static str),
}

impl HeadText {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            HeadText::Header(v) => v.to_str().unwrap_or_default(),
            HeadText::Authority(a) => a.as_str(),
            HeadText::Path(p) => p.as_str(),
            HeadText::Static(s) => s,
        }
    }

    /// As a header value: the same bytes when it came from one.
    pub(crate) fn to_header_value(&self) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
        match self {
            HeadText::Header(v) => Ok(v.clone()),
            other => http::HeaderValue::from_str(other.as_str()),
        }
    }
}

impl Default for HeadText {
    fn default() -> Self {
        HeadText::Static("")
    }
}

impl std::ops::Deref for HeadText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for HeadText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
