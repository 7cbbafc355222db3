//! Route matching, Istio's way: routes in order, first match wins; match entries
//! OR, fields inside one entry AND; regexes are RE2 full matches compiled once,
//! when a config is compiled. Per request this module only compares strings.
//!
//! `weftctl explain` (control plane) runs this very code.
//!
//! Size: about 370 lines of matching and compiling, then their unit tests; kept
//! whole so one route's life (compiled once, matched per request) reads in one place.

use crate::http::answer::Action;
pub use crate::http::matcher::StrMatch;
use crate::http::retry::RetryPolicy;
use crate::upstream::balance::WeightedPick;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use weft_model as model;

/// The parts of a request that routes look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Path with the query string, as received (`/a/b?x=1`).
    pub path_and_query: &'a str,
    /// `:authority` or `Host`, as received (port included).
    pub authority: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    fn path(&self) -> &'a str {
        self.path_and_query.split_once('?').map_or(self.path_and_query, |(p, _)| p)
    }
    fn query(&self) -> Option<&'a str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

/// One compiled `match` entry: every present condition must hold.
#[derive(Debug, Clone)]
pub struct MatchRule {
    pub name: Option<String>,
    uri: Option<StrMatch>,
    ignore_uri_case: bool,
    method: Option<StrMatch>,
    authority: Option<StrMatch>,
    headers: Vec<(HeaderName, StrMatch)>,
    without_headers: Vec<(HeaderName, StrMatch)>,
    query_params: Vec<(String, StrMatch)>,
}

impl MatchRule {
    pub fn compile(m: &model::Match) -> Result<Self, regex::Error> {
        let model::Match { name, uri, ignore_uri_case, method, authority, headers, without_headers, query_params } = m;
        let opt = |s: &Option<model::StringMatch>| s.as_ref().map(StrMatch::compile).transpose();
        let header_list = |map: &std::collections::BTreeMap<String, model::StringMatch>| {
            map.iter()
                .filter_map(|(k, v)| {
                    // Validation guarantees lowercase tokens; skip anything else rather than panic.
                    let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
                    Some(StrMatch::compile(v).map(|m| (name, m)))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(MatchRule {
            name: name.clone(),
            uri: opt(uri)?,
            ignore_uri_case: *ignore_uri_case,
            method: opt(method)?,
            authority: opt(authority)?,
            headers: header_list(headers)?,
            without_headers: header_list(without_headers)?,
            query_params: query_params
                .iter()
                .map(|(k, v)| StrMatch::compile(v).map(|m| (k.clone(), m)))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(uri) = &self.uri {
            let ok = match uri {
                // prefix compares the start of :path, query included, as Envoy does.
                StrMatch::Prefix(_) if self.ignore_uri_case => uri.matches_ignore_case(req.path_and_query),
                StrMatch::Prefix(_) => uri.matches(req.path_and_query),
                StrMatch::Exact(_) if self.ignore_uri_case => uri.matches_ignore_case(req.path()),
                _ => uri.matches(req.path()),
            };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(a) = &self.authority {
            if !a.matches(req.authority) {
                return false;
            }
        }
        for (name, m) in &self.headers {
            match crate::http::headers::header_value(req.headers, name) {
                Some(v) if m.matches(&v) => {}
                _ => return false,
            }
        }
        for (name, m) in &self.without_headers {
            let hit = match (crate::http::headers::header_value(req.headers, name), m) {
                (None, StrMatch::Present) => false,
                // Istio sets treat_missing_header_as_empty for value matchers.
                (None, m) => m.matches(""),
                (Some(v), m) => m.matches(&v),
            };
            if hit {
                return false;
            }
        }
        if !self.query_params.is_empty() {
            let query = req.query().unwrap_or("");
            for (key, m) in &self.query_params {
                match query_value(query, key) {
                    Some(v) if m.matches(&v) => {}
                    _ => return false,
                }
            }
        }
        true
    }

    /// Whether this rule is a URI prefix match (for prefix rewrites).
    pub fn uri_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(StrMatch::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// The percent-decoded value of the first `key` parameter; `?key` gives `""`.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Header operations compiled to typed names and values.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn compile(ops: &model::HeaderOps) -> Self {
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?)))
                .collect()
        };
        HeaderOps {
            set: pairs(&ops.set),
            add: pairs(&ops.add),
            remove: ops.remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Fault injection compiled to per-million thresholds.
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(http::StatusCode, u32)>,
}

/// Istio keeps per-million precision: `value × 10⁴` out of 10⁶.
pub(crate) fn per_million(percentage: f64) -> u32 {
    (percentage * 10_000.0).round().clamp(0.0, 1_000_000.0) as u32
}

/// One destination of a route, resolved to a cluster index of the snapshot.
#[derive(Debug, Clone)]
pub struct RouteDestination {
    pub cluster: Arc<str>,
    pub(crate) request_headers: HeaderOps,
    pub(crate) response_headers: HeaderOps,
    /// This destination's `Host`, over the route's rewrite.
    pub authority: Option<HeaderValue>,
}

/// A mirror of a route: its cluster, and the share of requests copied, per million.
#[derive(Debug, Clone)]
pub struct MirrorTarget {
    pub cluster: Arc<str>,
    pub(crate) per_million: u32,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub matches: Vec<MatchRule>,
    pub destinations: Vec<RouteDestination>,
    pub pick: WeightedPick,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    pub(crate) request_headers: HeaderOps,
    pub(crate) response_headers: HeaderOps,
    pub(crate) rewrite_uri: Option<String>,
    /// `rewrite.uriRegexRewrite`: the pattern and the substitution in the regex crate's form.
    pub(crate) rewrite_regex: Option<(regex::Regex, String)>,
    pub(crate) rewrite_authority: Option<HeaderValue>,
    /// Forward, redirect or answer.
    pub action: Action,
    pub mirrors: Vec<MirrorTarget>,
    pub cors: Option<crate::http::cors::Policy>,
}

impl Route {
    pub fn compile(index: usize, r: &model::Route) -> Result<Self, String> {
        let model::Route {
            name,
            matches,
            route,
            redirect: _,
            direct_response: _, // these two: `Action::compile`
            mirrors,
            cors,
            timeout,
            retries,
            fault,
            headers,
            rewrite,
        } = r;
        let regex = |e: regex::Error| e.to_string();
        let (req_h, resp_h) = match headers {
            Some(h) => (HeaderOps::compile(&h.request), HeaderOps::compile(&h.response)),
            None => Default::default(),
        };
        // With several destinations, weight 0 removes one (Istio).
        let kept: Vec<&model::Destination> =
            if route.len() == 1 { route.iter().collect() } else { route.iter().filter(|d| d.weight > 0).collect() };
        let weights: Vec<u32> = if kept.len() == 1 { vec![1] } else { kept.iter().map(|d| d.weight).collect() };
        Ok(Route {
            name: name.clone().unwrap_or_else(|| format!("route-{index}")).into(),
            matches: matches.iter().map(MatchRule::compile).collect::<Result<_, _>>().map_err(regex)?,
            destinations: kept
                .iter()
                .map(|d| {
                    let (rq, rs) = match &d.headers {
                        Some(h) => (HeaderOps::compile(&h.request), HeaderOps::compile(&h.response)),
                        None => Default::default(),
                    };
                    RouteDestination {
                        cluster: d.cluster.as_str().into(),
                        request_headers: rq,
                        response_headers: rs,
                        authority: d.authority.as_deref().and_then(|a| HeaderValue::from_str(a).ok()),
                    }
                })
                .collect(),
            pick: WeightedPick::new(&weights),
            timeout: *timeout,
            retry: RetryPolicy::compile(retries.as_ref()),
            fault: fault.as_ref().map(|f| Fault {
                delay: f.delay.as_ref().map(|d| (d.fixed_delay, per_million(d.percentage))),
                abort: f
                    .abort
                    .as_ref()
                    .and_then(|a| Some((http::StatusCode::from_u16(a.http_status).ok()?, per_million(a.percentage)))),
            }),
            request_headers: req_h,
            response_headers: resp_h,
            rewrite_uri: rewrite.as_ref().and_then(|rw| rw.uri.clone()),
            rewrite_regex: match rewrite.as_ref().and_then(|rw| rw.uri_regex.as_ref()) {
                Some(rr) => Some((regex::Regex::new(&rr.pattern).map_err(regex)?, substitution(&rr.substitution))),
                None => None,
            },
            rewrite_authority: rewrite
                .as_ref()
                .and_then(|rw| rw.authority.as_deref())
                .and_then(|a| HeaderValue::from_str(a).ok()),
            action: Action::compile(r)?,
            mirrors: mirrors
                .iter()
                .map(|m| MirrorTarget { cluster: m.cluster.as_str().into(), per_million: per_million(m.percentage) })
                .collect(),
            cors: cors.as_ref().map(crate::http::cors::Policy::compile).transpose().map_err(regex)?,
        })
    }

    /// Which match entry (if any) accepts the request. `Some(None)` means the
    /// route has no match entries and takes everything.
    pub fn matching(&self, req: &RequestView<'_>) -> Option<Option<&MatchRule>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().find(|m| m.matches(req)).map(Some)
    }

    /// The upstream path after `rewrite.uri`: a prefix match replaces the
    /// matched prefix, any other match the whole path; the query is kept.
    pub(crate) fn rewritten_path(&self, hit: Option<&MatchRule>, path_and_query: &str) -> Option<String> {
        if let Some((re, with)) = &self.rewrite_regex {
            let (path, query) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
            let new = re.replace_all(path, with.as_str());
            return Some(match query {
                Some(q) => format!("{new}?{q}"),
                None => new.into_owned(),
            });
        }
        let new = self.rewrite_uri.as_deref()?;
        Some(match hit.and_then(MatchRule::uri_prefix) {
            Some(prefix) if path_and_query.len() >= prefix.len() => {
                format!("{new}{}", &path_and_query[prefix.len()..])
            }
            _ => match path_and_query.split_once('?') {
                Some((_, q)) => format!("{new}?{q}"),
                None => new.to_string(),
            },
        })
    }
}

/// An RE2 substitution (`\1` for a group, Envoy's form) in the regex crate's form
/// (`${1}`, and a literal `$` as `$$`).
fn substitution(envoy: &str) -> String {
    let mut out = String::with_capacity(envoy.len());
    let mut chars = envoy.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                out.push('\\');
            }
            c => out.push(c),
        }
    }
    out
}

/// The routes of one service (Envoy: virtual host).
#[derive(Debug)]
pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Vec<Route>,
    /// The routes of the service's other HTTP ports, by port.
    pub ports: Vec<(u16, Vec<Route>)>,
}

impl VirtualHost {
    /// First route whose match accepts the request, and the match entry that did: among the
    /// routes of `port` when it is one of the service's other ports, else the service's own.
    pub fn select(&self, port: Option<u16>, req: &RequestView<'_>) -> Option<(&Route, Option<&MatchRule>)> {
        let routes = match port {
            Some(port) if !self.ports.is_empty() => {
                self.ports.iter().find(|(p, _)| *p == port).map_or(&self.routes, |(_, routes)| routes)
            }
            _ => &self.routes,
        };
        routes.iter().find_map(|r| r.matching(req).map(|m| (r, m)))
    }
}

/// Fault decision, drawn per request: `n` is uniform in 0..1_000_000.
pub(crate) fn fault_hits(per_million: u32, n: u32) -> bool {
    n < per_million
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> MatchRule {
        MatchRule::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn view<'a>(method: &'a str, pq: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView { method, path_and_query: pq, authority: "svc:80", headers }
    }

    #[test]
    fn uri_forms() {
        let h = HeaderMap::new();
        assert!(rule("uri: {exact: /a}").matches(&view("GET", "/a?x=1", &h)));
        assert!(!rule("uri: {exact: /a}").matches(&view("GET", "/ab", &h)));
        assert!(rule("uri: {prefix: /api}").matches(&view("GET", "/api/v1", &h)));
        assert!(rule("uri: {regex: '/u/[0-9]+'}").matches(&view("GET", "/u/42?x", &h)));
        assert!(!rule("uri: {regex: '/u/[0-9]+'}").matches(&view("GET", "/u/42/x", &h)), "regex is a full match");
        assert!(rule("{uri: {prefix: /API}, ignoreUriCase: true}").matches(&view("GET", "/api/x", &h)));
        assert!(!rule("uri: {prefix: /API}").matches(&view("GET", "/api/x", &h)));
    }

    #[test]
    fn headers_and_without_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("true"));
        assert!(rule("headers: {x-canary: {exact: 'true'}}").matches(&view("GET", "/", &h)));
        assert!(rule("headers: {x-canary: {}}").matches(&view("GET", "/", &h)));
        assert!(!rule("headers: {x-other: {}}").matches(&view("GET", "/", &h)));
        assert!(!rule("withoutHeaders: {x-canary: {}}").matches(&view("GET", "/", &h)));
        let empty = HeaderMap::new();
        assert!(rule("withoutHeaders: {x-canary: {}}").matches(&view("GET", "/", &empty)));
        assert!(rule("withoutHeaders: {x-canary: {exact: 'true'}}").matches(&view("GET", "/", &empty)));
        assert!(rule("{method: {exact: GET}, headers: {x-canary: {prefix: tr}}}").matches(&view("GET", "/", &h)));
        assert!(!rule("{method: {exact: POST}, headers: {x-canary: {prefix: tr}}}").matches(&view("GET", "/", &h)));
    }

    #[test]
    fn query_params_decoded_full_match() {
        let h = HeaderMap::new();
        assert!(rule("queryParams: {id: {regex: '\\d+'}}").matches(&view("GET", "/?id=123", &h)));
        assert!(!rule("queryParams: {id: {regex: '\\d+'}}").matches(&view("GET", "/?id=a123", &h)));
        assert!(rule("queryParams: {q: {exact: 'a b'}}").matches(&view("GET", "/?q=a%20b", &h)));
        assert!(rule("queryParams: {flag: {exact: ''}}").matches(&view("GET", "/?flag", &h)));
        assert!(rule("queryParams: {flag: {}}").matches(&view("GET", "/?x=1&flag=2", &h)));
        assert!(!rule("queryParams: {flag: {}}").matches(&view("GET", "/?x=1", &h)));
    }

    #[test]
    fn percent_decode_is_total() {
        assert_eq!(percent_decode("a%2Fb+c%"), "a/b c%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    /// Envoy's regex_rewrite: every match in the path replaced, `\1` a group, the query kept.
    #[test]
    fn regex_rewrite_replaces_every_match_in_the_path() {
        let r = Route::compile(
            0,
            &serde_yaml::from_str(
                "{route: [{cluster: c}], rewrite: {uriRegex: {pattern: '^/service/([^/]+)(/.*)$', substitution: '\\2/instance/\\1'}}}",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.rewritten_path(None, "/service/foo/v1/api?x=1").unwrap(), "/v1/api/instance/foo?x=1");
        let r = Route::compile(
            0,
            &serde_yaml::from_str("{route: [{cluster: c}], rewrite: {uriRegex: {pattern: 'a', substitution: '$b'}}}")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r.rewritten_path(None, "/aXa").unwrap(), "/$bX$b", "a `$` is literal");
    }

    #[test]
    fn prefix_rewrite_keeps_the_rest() {
        let r = Route::compile(
            0,
            &serde_yaml::from_str(
                "{match: [{uri: {prefix: /api/orders}}], route: [{cluster: c}], rewrite: {uri: /orders}}",
            )
            .unwrap(),
        )
        .unwrap();
        let hit = r.matches.first();
        assert_eq!(r.rewritten_path(hit, "/api/orders/7?x=1").unwrap(), "/orders/7?x=1");
        assert_eq!(r.rewritten_path(None, "/z?q").unwrap(), "/orders?q");
    }
}
