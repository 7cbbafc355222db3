//! CORS answered by the sidecar, as Envoy's CORS filter does under Istio's `corsPolicy`:
//! a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//! allowed origin is answered 200 with the allowances and never reaches the app; an
//! actual request from an allowed origin goes on, and its response gets
//! `Access-Control-Allow-Origin` (the caller's origin) and the exposed headers. An origin
//! not allowed gets no CORS headers from the sidecar.

use crate::http::body::{self, Body};
use crate::http::matcher::StrMatch;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use weft_model as model;

#[derive(Debug)]
pub struct Policy {
    origins: Vec<StrMatch>,
    /// A matcher matches `*`: every origin is allowed (decided when compiled).
    any_origin: bool,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    forward_unmatched_preflights: bool,
}

/// What the policy makes of a request.
pub enum Verdict {
    /// Not a CORS request, or one whose origin is not allowed: forward it untouched.
    Pass,
    /// An actual request from an allowed origin: forward it, then decorate the response.
    Allowed(HeaderValue),
    /// A preflight the sidecar answers.
    Answer(Response<Body>),
}

impl Policy {
    pub fn compile(c: &model::Cors) -> Result<Self, regex::Error> {
        let model::Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials,
            forward_unmatched_preflights,
        } = c;
        // Istio joins the lists with ","; Envoy sends them as given.
        let joined =
            |list: &[String]| (!list.is_empty()).then(|| HeaderValue::from_str(&list.join(",")).ok()).flatten();
        let origins: Vec<StrMatch> = allow_origins.iter().map(StrMatch::compile).collect::<Result<_, _>>()?;
        Ok(Policy {
            any_origin: origins.iter().any(|m| m.matches("*")),
            origins,
            allow_methods: joined(allow_methods),
            allow_headers: joined(allow_headers),
            expose_headers: joined(expose_headers),
            max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
            allow_credentials: *allow_credentials,
            forward_unmatched_preflights: *forward_unmatched_preflights,
        })
    }

    /// Envoy's rule: a matcher allows an origin when it matches it, or matches `*`.
    fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|m| m.matches(origin))
    }

    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN).filter(|o| !o.is_empty()) else { return Verdict::Pass };
        let preflight = method == Method::OPTIONS
            && headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).is_some_and(|m| !m.is_empty());
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        match (preflight, allowed) {
            (false, false) => Verdict::Pass,
            (false, true) => Verdict::Allowed(origin.clone()),
            (true, false) if self.forward_unmatched_preflights => Verdict::Pass,
            (true, false) => Verdict::Answer(ok()),
            (true, true) => {
                let mut response = ok();
                let h = response.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if self.allow_credentials {
                    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
                }
                for (name, value) in [
                    (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
                    (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
                    (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
                ] {
                    if let Some(v) = value {
                        h.insert(name, v.clone());
                    }
                }
                Verdict::Answer(response)
            }
        }
    }

    /// The response to an allowed actual request.
    pub(crate) fn decorate(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

fn ok() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    const ISTIO_EXAMPLE: &str = "{allowOrigins: [{exact: 'https://example.com'}], allowMethods: [POST, GET], allowHeaders: [X-Foo-Bar], maxAge: 24h}";

    #[test]
    fn an_allowed_preflight_is_answered_with_the_allowances() {
        let p = policy(ISTIO_EXAMPLE);
        let h = headers(&[("origin", "https://example.com"), ("access-control-request-method", "POST")]);
        let Verdict::Answer(r) = p.check(&Method::OPTIONS, &h) else { panic!("not answered") };
        assert_eq!(r.status(), 200);
        let got = r.headers();
        assert_eq!(got["access-control-allow-origin"], "https://example.com");
        assert_eq!(got["access-control-allow-methods"], "POST,GET");
        assert_eq!(got["access-control-allow-headers"], "X-Foo-Bar");
        assert_eq!(got["access-control-max-age"], "86400");
        assert!(got.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn other_origins_get_nothing_and_unmatched_preflights_go_on_unless_ignored() {
        let p = policy(ISTIO_EXAMPLE);
        let evil = headers(&[("origin", "https://evil.example"), ("access-control-request-method", "POST")]);
        assert!(matches!(p.check(&Method::OPTIONS, &evil), Verdict::Pass));
        assert!(matches!(p.check(&Method::GET, &evil), Verdict::Pass));
        // Case matters in an exact origin, and a prefix of it is not it.
        let upper = headers(&[("origin", "https://EXAMPLE.com")]);
        assert!(matches!(p.check(&Method::GET, &upper), Verdict::Pass));
        let ignoring = policy("{allowOrigins: [{exact: 'https://example.com'}], forwardUnmatchedPreflights: false}");
        let Verdict::Answer(r) = ignoring.check(&Method::OPTIONS, &evil) else { panic!() };
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // No Origin: not CORS at all.
        assert!(matches!(
            p.check(&Method::OPTIONS, &headers(&[("access-control-request-method", "GET")])),
            Verdict::Pass
        ));
    }

    #[test]
    fn an_allowed_actual_request_is_decorated_and_star_allows_every_origin() {
        let p = policy("{allowOrigins: [{exact: '*'}], exposeHeaders: [x-total], allowCredentials: true}");
        let Verdict::Allowed(origin) = p.check(&Method::GET, &headers(&[("origin", "https://any.example")])) else {
            panic!()
        };
        let mut h = HeaderMap::new();
        p.decorate(origin, &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://any.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-total");
    }
}
