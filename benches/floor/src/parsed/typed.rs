//! The heads as the `http` crate's types on the way through (`--engine
//! httparse-http`): what keeping the sidecar's logic on `http::Request` over an
//! own codec would cost. Values share one copy of the head, as hyper's do.

use super::{headers_out, three_digits, Framing, Head, MAX_HEADERS, REFUSED_400, REFUSED_501, REFUSED_502};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

pub(super) fn request_head(buf: &[u8], out: &mut Vec<u8>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Refused(REFUSED_400),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Refused(REFUSED_400);
    };
    let head = Bytes::copy_from_slice(&buf[..head_len]);
    let (Ok(method), Ok(uri), Some(map)) = (
        Method::from_bytes(method.as_bytes()),
        Uri::from_maybe_shared(shared(&head, buf, path.as_bytes())),
        header_map(&head, buf, req.headers),
    ) else {
        return Head::Refused(REFUSED_400);
    };
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let bodiless_response = method == Method::HEAD;
    match headers_out(typed(&map), version, out) {
        Some((body_len, close)) => Head::Complete(Framing { head_len, body_len, close, bodiless_response }),
        None => Head::Refused(REFUSED_501),
    }
}

pub(super) fn response_head(buf: &[u8], out: &mut Vec<u8>) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Refused(REFUSED_502),
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else { return Head::Refused(REFUSED_502) };
    let head = Bytes::copy_from_slice(&buf[..head_len]);
    let (Ok(status), Some(map)) = (StatusCode::from_u16(code), header_map(&head, buf, resp.headers)) else {
        return Head::Refused(REFUSED_502);
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&three_digits(status.as_u16()));
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    match headers_out(typed(&map), version, out) {
        Some((body_len, close)) => Head::Complete(Framing {
            head_len,
            body_len: if bodiless { 0 } else { body_len },
            close,
            bodiless_response: false,
        }),
        None => Head::Refused(REFUSED_502),
    }
}

/// `part` of `buf` as the same bytes of `head`, `buf`'s copy.
fn shared(head: &Bytes, buf: &[u8], part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    head.slice(start..start + part.len())
}

fn header_map(head: &Bytes, buf: &[u8], headers: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(shared(head, buf, h.value)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

fn typed(map: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    map.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
}
