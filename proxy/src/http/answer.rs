//! Routes that answer without forwarding: a redirect (Istio `redirect`, Envoy's
//! `RedirectAction`) or a fixed response (`directResponse`). Compiled once per config;
//! per request only the `Location` is put together.

use crate::http::body::{self, Body};
use crate::http::headers::split_port;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use weft_model as model;

/// What a matched route does with the request.
#[derive(Debug)]
pub enum Action {
    /// Forward it to one of the route's destinations.
    Forward,
    Redirect(Redirect),
    Respond(Direct),
}

impl Action {
    pub fn compile(r: &model::Route) -> Result<Self, String> {
        Ok(match (&r.redirect, &r.direct_response) {
            (Some(rd), _) => Action::Redirect(Redirect::compile(rd)?),
            (None, Some(d)) => Action::Respond(Direct::compile(d)?),
            (None, None) => Action::Forward,
        })
    }
}

#[derive(Debug)]
pub struct Redirect {
    path: Option<String>,
    prefix_rewrite: Option<String>,
    authority: Option<String>,
    port: Option<model::RedirectPort>,
    scheme: Option<String>,
    code: StatusCode,
}

/// The parts of the request a redirect reads.
pub struct Origin<'a> {
    pub authority: &'a str,
    pub path_and_query: &'a str,
    /// The prefix the route's match entry matched, for `prefixRewrite`.
    pub matched_prefix: Option<&'a str>,
}

impl Redirect {
    fn compile(r: &model::Redirect) -> Result<Self, String> {
        let model::Redirect { uri, prefix_rewrite, authority, port: _, derive_port: _, scheme, code } = r;
        Ok(Redirect {
            path: uri.clone(),
            prefix_rewrite: prefix_rewrite.clone(),
            authority: authority.clone(),
            port: r.port_rule(),
            scheme: scheme.as_ref().map(|s| s.to_ascii_lowercase()),
            code: StatusCode::from_u16(*code).map_err(|e| e.to_string())?,
        })
    }

    /// `Location`: the request's URL with the configured parts replaced; the query
    /// string is kept unless the new `uri` brings its own. Ports as Envoy's `newUri`: a
    /// configured port replaces the request's; otherwise the request's port stays, unless
    /// the scheme changes away from `http` and the port was http's default.
    pub fn location(&self, req: &Origin<'_>) -> String {
        let (path, query) =
            req.path_and_query.split_once('?').map_or((req.path_and_query, None), |(p, q)| (p, Some(q)));
        let path_and_query = match (&self.path, &self.prefix_rewrite, req.matched_prefix) {
            (Some(uri), _, _) if uri.contains('?') => uri.clone(),
            (Some(uri), _, _) => with_query(uri, query),
            // The match may have ignored case: compare the same way.
            (None, Some(new), Some(old)) if path.get(..old.len()).is_some_and(|p| p.eq_ignore_ascii_case(old)) => {
                with_query(&format!("{new}{}", &path[old.len()..]), query)
            }
            _ => req.path_and_query.to_string(),
        };
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let (request_host, request_port) = split_port(req.authority);
        let port = match self.port {
            Some(model::RedirectPort::Number(n)) => Some(n.to_string()),
            Some(model::RedirectPort::RequestPort) => Some(request_port.unwrap_or("80").to_string()),
            Some(model::RedirectPort::ProtocolDefault) | None => None,
        };
        let host = match (&self.authority, &port) {
            (Some(a), Some(_)) => strip_port(a).to_string(),
            (Some(a), None) => a.clone(),
            (None, Some(_)) => request_host.to_string(),
            (None, None) if scheme != "http" && request_port == Some("80") => request_host.to_string(),
            (None, None) => req.authority.to_string(),
        };
        match port {
            Some(p) => format!("{scheme}://{host}:{p}{path_and_query}"),
            None => format!("{scheme}://{host}{path_and_query}"),
        }
    }

    pub fn code(&self) -> StatusCode {
        self.code
    }

    pub(crate) fn respond(&self, req: &Origin<'_>) -> Response<Body> {
        let mut response = Response::new(body::empty());
        *response.status_mut() = self.code;
        match HeaderValue::from_str(&self.location(req)) {
            Ok(v) => {
                response.headers_mut().insert(LOCATION, v);
            }
            // Only a request's own odd bytes can get here; a redirect without a target is no redirect.
            Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
        }
        response
    }
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

fn strip_port(authority: &str) -> &str {
    split_port(authority).0
}

/// A fixed response: status and body (`text/plain` when there is one, as Envoy sends).
#[derive(Debug)]
pub struct Direct {
    status: StatusCode,
    body: Bytes,
}

impl Direct {
    fn compile(d: &model::DirectResponse) -> Result<Self, String> {
        let body = match &d.body {
            Some(b) => b.decode().ok_or("directResponse.body.bytes is not base64")?.into(),
            None => Bytes::new(),
        };
        Ok(Direct { status: StatusCode::from_u16(d.status).map_err(|e| e.to_string())?, body })
    }

    /// `503 with a 12-byte body`, for `weftctl explain`.
    pub fn describe(&self) -> String {
        format!("{} with a {}-byte body", self.status.as_u16(), self.body.len())
    }

    pub(crate) fn respond(&self) -> Response<Body> {
        let mut response = Response::new(body::full(self.body.clone()));
        *response.status_mut() = self.status;
        if !self.body.is_empty() {
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(yaml: &str) -> Redirect {
        Redirect::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn at<'a>(authority: &'a str, path_and_query: &'a str, prefix: Option<&'a str>) -> Origin<'a> {
        Origin { authority, path_and_query, matched_prefix: prefix }
    }

    #[test]
    fn location_replaces_only_what_is_set() {
        let r = redirect("{uri: /new/path, authority: redirect2.test.istio.io}");
        assert_eq!(
            r.location(&at("redirect.test.istio.io", "/old?x=1", None)),
            "http://redirect2.test.istio.io/new/path?x=1"
        );
        let r = redirect("{uri: '/new?y=2'}");
        assert_eq!(r.location(&at("a:8080", "/old?x=1", None)), "http://a:8080/new?y=2", "the new uri's query wins");
        let r = redirect("{prefixRewrite: /, authority: foo.example.com}");
        assert_eq!(r.location(&at("example.com", "/foo/bar?q", Some("/foo/"))), "http://foo.example.com/bar?q");
        let r = redirect("{scheme: https}");
        assert_eq!(r.location(&at("shop:80", "/cart", None)), "https://shop/cart", "http's default port goes");
        assert_eq!(r.location(&at("shop:8080", "/cart", None)), "https://shop:8080/cart", "another port stays");
        let r = redirect("{scheme: https, port: 8443}");
        assert_eq!(r.location(&at("shop:80", "/", None)), "https://shop:8443/");
        let r = redirect("{scheme: https, port: 80}");
        assert_eq!(r.location(&at("shop", "/", None)), "https://shop:80/", "a configured port is kept as written");
        let r = redirect("{authority: 'other:9000'}");
        assert_eq!(r.location(&at("shop:80", "/", None)), "http://other:9000/", "the authority as written");
        let r = redirect("{authority: 'other:9000', port: 81}");
        assert_eq!(r.location(&at("shop:80", "/", None)), "http://other:81/");
        let r = redirect("{authority: other, derivePort: FROM_REQUEST_PORT}");
        assert_eq!(r.location(&at("shop:3000", "/", None)), "http://other:3000/");
        assert_eq!(r.location(&at("shop", "/", None)), "http://other:80/");
        let r = redirect("{uri: /x, derivePort: FROM_PROTOCOL_DEFAULT}");
        assert_eq!(r.location(&at("shop:8080", "/", None)), "http://shop:8080/x", "Envoy: nothing to derive");
        let r = redirect("{port: 9}");
        assert_eq!(r.location(&at("[::1]:81", "/", None)), "http://[::1]:9/");
        // A prefix matched without regard to case is replaced the same way (no redirect loop).
        let r = redirect("{prefixRewrite: /bar/}");
        assert_eq!(r.location(&at("h", "/FOO/x", Some("/foo/"))), "http://h/bar/x");
    }

    #[test]
    fn a_redirect_is_301_by_default_and_a_direct_response_is_plain_text() {
        let r = redirect("{uri: /x}").respond(&at("h", "/", None));
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()[LOCATION], "http://h/x");
        let d =
            Direct::compile(&serde_yaml::from_str("{status: 503, body: {string: down}}").unwrap()).unwrap().respond();
        assert_eq!(d.status(), 503);
        assert_eq!(d.headers()[CONTENT_TYPE], "text/plain");
        let bytes = Direct::compile(&serde_yaml::from_str("{status: 200, body: {bytes: aGk=}}").unwrap()).unwrap();
        assert_eq!(bytes.body, Bytes::from_static(b"hi"));
    }
}
