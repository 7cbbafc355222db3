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
    /// string is kept unless the new `uri` brings its own.
    pub fn location(&self, req: &Origin<'_>) -> String {
        let (path, query) =
            req.path_and_query.split_once('?').map_or((req.path_and_query, None), |(p, q)| (p, Some(q)));
        let path_and_query = match (&self.path, &self.prefix_rewrite, req.matched_prefix) {
            (Some(uri), _, _) if uri.contains('?') => uri.clone(),
            (Some(uri), _, _) => with_query(uri, query),
            (None, Some(new), Some(old)) if path.starts_with(old) => {
                with_query(&format!("{new}{}", &path[old.len()..]), query)
            }
            _ => req.path_and_query.to_string(),
        };
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let request_port = port_of(req.authority);
        let mut host = self.authority.clone().unwrap_or_else(|| req.authority.to_string());
        match self.port {
            Some(model::RedirectPort::Number(n)) => host = format!("{}:{n}", strip_port(&host)),
            Some(model::RedirectPort::ProtocolDefault) => host = strip_port(&host).to_string(),
            Some(model::RedirectPort::RequestPort) => {
                host = match request_port {
                    Some(p) => format!("{}:{p}", strip_port(&host)),
                    None => strip_port(&host).to_string(),
                }
            }
            None => {}
        }
        // A changed scheme drops the old scheme's default port (Envoy).
        if scheme != "http" && port_of(&host) == Some("80") {
            host = strip_port(&host).to_string();
        }
        format!("{scheme}://{host}{path_and_query}")
    }

    pub fn respond(&self, req: &Origin<'_>) -> Response<Body> {
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

fn port_of(authority: &str) -> Option<&str> {
    split_port(authority).1
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

    pub fn respond(&self) -> Response<Body> {
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
        let r = redirect("{scheme: https, port: 8443}");
        assert_eq!(r.location(&at("shop:80", "/", None)), "https://shop:8443/");
        let r = redirect("{authority: 'other:9000', derivePort: FROM_PROTOCOL_DEFAULT}");
        assert_eq!(r.location(&at("shop:80", "/", None)), "http://other/");
        let r = redirect("{authority: other, derivePort: FROM_REQUEST_PORT}");
        assert_eq!(r.location(&at("shop:3000", "/", None)), "http://other:3000/");
        let r = redirect("{authority: '[::1]:81', derivePort: FROM_PROTOCOL_DEFAULT}");
        assert_eq!(r.location(&at("shop", "/", None)), "http://[::1]/");
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
