//! VirtualService: hosts, routes, matches, retries, faults, header operations.
//!
//! Size: one rule per Istio validation of a VirtualService, in the resource's field order,
//! each with its message.

use super::common::{at_least_1ms, is_dns1123, is_set, is_token, unsupported, Problems, NOT_YET};
use crate::istio::types::*;

pub(super) fn check(vs: &VirtualService, p: &mut Problems) {
    let VirtualService { hosts, gateways, http, tls, tcp, export_to } = vs;
    if hosts.is_empty() {
        p.push(("spec.hosts".into(), "at least one host is required".into()));
    }
    // `*` is a gateway's host (every host it serves); Istio refuses it for the mesh.
    let for_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    for (i, h) in hosts.iter().enumerate() {
        if h == "*" && !for_mesh {
            continue;
        }
        if h == "*" {
            p.push((
                format!("spec.hosts[{i}]"),
                "wildcard host * is not allowed for virtual services bound to the mesh gateway".into(),
            ));
        } else if h.is_empty() || h.parse::<std::net::IpAddr>().is_ok() || h.contains('/') || h.contains(':') {
            p.push((
                format!("spec.hosts[{i}]"),
                format!("{h:?} is not a service host (use a name, name.namespace or FQDN)"),
            ));
        }
    }
    gateway_names(p, "spec.gateways", gateways);
    super::common::export_to(p, export_to);
    unsupported(p, "spec.tls".into(), tls);
    unsupported(p, "spec.tcp".into(), tcp);
    if http.is_empty() && !is_set(tls) && !is_set(tcp) {
        p.push(("spec.http".into(), "http, tcp or tls must be provided".into()));
    }
    for (i, route) in http.iter().enumerate() {
        http_route(&format!("spec.http[{i}]"), route, p);
    }
}

fn http_route(at: &str, r: &HttpRoute, p: &mut Problems) {
    let HttpRoute {
        name: _,
        matches,
        route,
        redirect,
        direct_response,
        delegate,
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirrors,
        mirror_percentage,
        mirror_percent,
        cors_policy,
        headers,
    } = r;
    unsupported(p, format!("{at}.delegate"), delegate);
    let answers_itself = redirect.is_some() || direct_response.is_some();
    if route.is_empty() && !answers_itself && !is_set(delegate) {
        p.push((format!("{at}.route"), "HTTP route, redirect or directResponse is required".into()));
    }
    // Istio's validateHTTPRouteConflict (a mirror beside a redirect is accepted, and unused).
    let conflicts = [("route", !route.is_empty()), ("fault", fault.is_some()), ("rewrite", rewrite.is_some())];
    for (action, set) in [("redirect", redirect.is_some()), ("directResponse", direct_response.is_some())] {
        for (other, other_set) in conflicts {
            if set && other_set {
                p.push((format!("{at}.{action}"), format!("HTTP route cannot contain both {other} and {action}")));
            }
        }
    }
    if redirect.is_some() && direct_response.is_some() {
        p.push((format!("{at}.directResponse"), "HTTP route cannot contain both redirect and directResponse".into()));
    }
    if let Some(r) = redirect {
        self::redirect(&format!("{at}.redirect"), r, matches, p);
    }
    if let Some(d) = direct_response {
        self::direct_response(&format!("{at}.directResponse"), d, p);
    }
    mirroring(at, mirror, mirrors, mirror_percentage, mirror_percent, p);
    if let Some(c) = cors_policy {
        cors(&format!("{at}.corsPolicy"), c, p);
    }
    for (j, m) in matches.iter().enumerate() {
        match_request(&format!("{at}.match[{j}]"), m, p);
    }
    for (j, d) in route.iter().enumerate() {
        let dp = format!("{at}.route[{j}]");
        destination(&format!("{dp}.destination"), &d.destination, p);
        if d.weight.is_some_and(|w| w < 0) {
            p.push((format!("{dp}.weight"), "weight must not be negative".into()));
        }
        if let Some(h) = &d.headers {
            header_ops(&format!("{dp}.headers"), h, p);
        }
    }
    if route.len() > 1 && route.iter().all(|d| d.weight.unwrap_or(0) == 0) {
        p.push((format!("{at}.route"), "with several destinations the total weight must be above 0".into()));
    }
    at_least_1ms(p, format!("{at}.timeout"), timeout);
    if let Some(rt) = retries {
        retry(&format!("{at}.retries"), rt, p);
    }
    if let Some(f) = fault {
        fault_rules(&format!("{at}.fault"), f, p);
    }
    // Istio: the authority is rewritten in one place only (rewrite, the route's headers, or
    // each destination's headers).
    let sets_authority = |h: &Option<Headers>| {
        h.as_ref().and_then(|h| h.request.as_ref()).is_some_and(|r| {
            r.set.keys().chain(r.add.keys()).any(|k| k.eq_ignore_ascii_case("host") || k == ":authority")
        })
    };
    let places = usize::from(rewrite.as_ref().is_some_and(|rw| rw.authority.is_some()))
        + usize::from(sets_authority(headers))
        + usize::from(route.iter().any(|d| sets_authority(&d.headers)));
    if places > 1 {
        p.push((
            format!("{at}.rewrite.authority"),
            "the authority is set in more than one place (rewrite, the route's headers, a destination's headers); keep one".into(),
        ));
    }
    if let Some(h) = headers {
        header_ops(&format!("{at}.headers"), h, p);
    }
    if let Some(rw) = rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            if rw.uri.is_some() {
                p.push((format!("{at}.rewrite"), "rewrite may only contain one of uri or uriRegexRewrite".into()));
            }
            let re = StringMatch { regex: Some(rr.pattern.clone()), ..Default::default() };
            string_match(&format!("{at}.rewrite.uriRegexRewrite.match"), &re, false, false, p);
        }
        if rw.uri.as_deref() == Some("") {
            p.push((format!("{at}.rewrite.uri"), "must not be empty".into()));
        }
    }
}

fn destination(at: &str, d: &Destination, p: &mut Problems) {
    if d.host.is_empty() {
        p.push((format!("{at}.host"), "a destination host is required".into()));
    }
    if let Some(s) = &d.subset {
        if !is_dns1123(s, 63, false) {
            p.push((format!("{at}.subset"), format!("{s:?} is not a valid subset name")));
        }
    }
    if let Some(port) = &d.port {
        if port.number == 0 || port.number > 65535 {
            p.push((format!("{at}.port.number"), "must be between 1 and 65535".into()));
        }
    }
}

/// Istio's validateHTTPRedirect, and what Envoy can express.
fn redirect(at: &str, r: &HttpRedirect, matches: &[HttpMatchRequest], p: &mut Problems) {
    let HttpRedirect { uri, prefix_rewrite, authority, port, derive_port, scheme, redirect_code } = r;
    if uri.is_none()
        && prefix_rewrite.is_none()
        && authority.is_none()
        && port.is_none()
        && derive_port.is_none()
        && scheme.is_none()
    {
        p.push((at.into(), "redirect must specify uri, prefixRewrite, authority, scheme, port or derivePort".into()));
    }
    if uri.is_some() && prefix_rewrite.is_some() {
        p.push((format!("{at}.prefixRewrite"), "set uri or prefixRewrite, not both".into()));
    }
    if let Some(u) = uri {
        if !u.starts_with('/') || u.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            p.push((format!("{at}.uri"), format!("{u:?} is not a path starting with '/'")));
        }
    }
    if let Some(pr) = prefix_rewrite {
        if pr.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            p.push((format!("{at}.prefixRewrite"), format!("{pr:?} is not a path")));
        }
        if matches.is_empty() || matches.iter().any(|m| m.uri.as_ref().is_none_or(|u| u.prefix.is_none())) {
            p.push((format!("{at}.prefixRewrite"), "needs a uri prefix in every match entry".into()));
        }
    }
    if let Some(a) = authority {
        let parsed = a.parse::<http::uri::Authority>();
        if a.is_empty() || a.contains('@') || parsed.is_err() {
            p.push((format!("{at}.authority"), format!("{a:?} is not a host[:port]")));
        }
    }
    if let Some(s) = scheme {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            p.push((format!("{at}.scheme"), format!("{s:?} is not a URL scheme")));
        }
    }
    if port.is_some() && derive_port.is_some() {
        p.push((format!("{at}.derivePort"), "set port or derivePort, not both".into()));
    }
    if port.is_some_and(|n| n == 0 || n > 65535) {
        p.push((format!("{at}.port"), "must be between 1 and 65535".into()));
    }
    if let Some(d) = derive_port {
        if !["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"].contains(&d.as_str()) {
            p.push((format!("{at}.derivePort"), format!("{d:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT")));
        }
    }
    match redirect_code {
        Some(c) if !(300..=399).contains(c) => {
            p.push((format!("{at}.redirectCode"), format!("{c} is not a valid redirect code, must be 3xx")))
        }
        Some(c) if ![301, 302, 303, 307, 308].contains(c) => p.push((
            format!("{at}.redirectCode"),
            format!("{c} is not one of 301, 302, 303, 307, 308 (what Envoy sends)"),
        )),
        _ => {}
    }
}

/// Istio's validateHTTPDirectResponse.
fn direct_response(at: &str, d: &HttpDirectResponse, p: &mut Problems) {
    let HttpDirectResponse { status, body } = d;
    if !(200..=599).contains(status) {
        p.push((format!("{at}.status"), format!("{status} is not between 200 and 599")));
    }
    let Some(HttpBody { string, bytes }) = body else { return };
    let size = match (string, bytes) {
        (Some(_), Some(_)) => {
            p.push((format!("{at}.body"), "set string or bytes, not both".into()));
            return;
        }
        (Some(s), None) => s.len(),
        (None, Some(b)) => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(decoded) => decoded.len(),
                Err(e) => {
                    p.push((format!("{at}.body.bytes"), format!("is not base64: {e}")));
                    return;
                }
            }
        }
        (None, None) => 0,
    };
    if size > weft_model::action::MAX_DIRECT_BODY {
        p.push((format!("{at}.body"), format!("is {size} bytes; a direct response body must be less than 1MB")));
    }
}

fn mirroring(
    at: &str,
    mirror: &Option<Destination>,
    mirrors: &[HttpMirrorPolicy],
    percentage: &Option<Percent>,
    percent: &Option<u32>,
    p: &mut Problems,
) {
    if mirror.is_some() && !mirrors.is_empty() {
        p.push((format!("{at}.mirrors"), "mirror and mirrors are mutually exclusive".into()));
    }
    if let Some(d) = mirror {
        destination(&format!("{at}.mirror"), d, p);
    }
    if let Some(x) = percentage {
        if !(0.0..=100.0).contains(&x.value) {
            p.push((format!("{at}.mirrorPercentage.value"), "must be between 0 and 100".into()));
        }
    }
    if percent.is_some_and(|x| x > 100) {
        p.push((format!("{at}.mirrorPercent"), "must be between 0 and 100".into()));
    }
    for (i, m) in mirrors.iter().enumerate() {
        destination(&format!("{at}.mirrors[{i}].destination"), &m.destination, p);
        if m.percentage.as_ref().is_some_and(|x| !(0.0..=100.0).contains(&x.value)) {
            p.push((format!("{at}.mirrors[{i}].percentage.value"), "must be between 0 and 100".into()));
        }
    }
}

const HTTP_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Istio's validateCORSPolicy.
fn cors(at: &str, c: &CorsPolicy, p: &mut Problems) {
    let CorsPolicy {
        allow_origins,
        allow_origin,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials: _,
        unmatched_preflights,
        allow_private_network,
    } = c;
    unsupported(p, format!("{at}.allowPrivateNetwork"), allow_private_network);
    for (i, o) in allow_origins.iter().enumerate() {
        string_match(&format!("{at}.allowOrigins[{i}]"), o, false, false, p);
    }
    for (i, o) in allow_origin.iter().enumerate() {
        if o.is_empty() {
            p.push((format!("{at}.allowOrigin[{i}]"), "must not be empty".into()));
        }
    }
    for (i, m) in allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&m.as_str()) {
            p.push((format!("{at}.allowMethods[{i}]"), format!("{m:?} is not a valid HTTP method")));
        }
    }
    for (field, list) in [("allowHeaders", allow_headers), ("exposeHeaders", expose_headers)] {
        for (i, h) in list.iter().enumerate() {
            if h.is_empty() || !(h == "*" || h.bytes().all(is_token)) {
                p.push((format!("{at}.{field}[{i}]"), format!("{h:?} is not a header name")));
            }
        }
    }
    if let Some(age) = max_age {
        if age.get().subsec_nanos() != 0 {
            p.push((format!("{at}.maxAge"), "max_age duration is accurate only to seconds precision".into()));
        }
    }
    if let Some(u) = unmatched_preflights {
        if !["UNSPECIFIED", "FORWARD", "IGNORE"].contains(&u.as_str()) {
            p.push((format!("{at}.unmatchedPreflights"), format!("{u:?} is not FORWARD or IGNORE")));
        }
    }
}

fn match_request(at: &str, m: &HttpMatchRequest, p: &mut Problems) {
    let HttpMatchRequest {
        name: _,
        uri,
        scheme,
        method,
        authority,
        headers,
        port,
        source_labels: _,
        gateways,
        query_params,
        ignore_uri_case: _,
        without_headers,
        source_namespace,
        stat_prefix,
    } = m;
    unsupported(p, format!("{at}.scheme"), scheme);
    unsupported(p, format!("{at}.statPrefix"), stat_prefix);
    if *m == HttpMatchRequest::default() {
        p.push((at.into(), "an empty match is not allowed; leave `match` out to match every request".into()));
    }
    gateway_names(p, &format!("{at}.gateways"), gateways);
    if port.is_some_and(|n| n == 0 || n > 65535) {
        p.push((format!("{at}.port"), "must be between 1 and 65535".into()));
    }
    if let Some(ns) = source_namespace {
        if !is_dns1123(ns, 63, false) {
            p.push((format!("{at}.sourceNamespace"), format!("{ns:?} is not a namespace")));
        }
    }
    if let Some(u) = uri {
        string_match(&format!("{at}.uri"), u, true, false, p);
    }
    if let Some(x) = method {
        string_match(&format!("{at}.method"), x, false, false, p);
    }
    if let Some(x) = authority {
        string_match(&format!("{at}.authority"), x, false, false, p);
    }
    for (field, map) in [("headers", headers), ("withoutHeaders", without_headers), ("queryParams", query_params)] {
        for (k, v) in map {
            let kp = format!("{at}.{field}.{k}");
            // Header names compare without case (translation lowers them), as in Envoy.
            if field != "queryParams" && (k.is_empty() || !k.bytes().all(is_token)) {
                p.push((kp.clone(), format!("{k:?} is not a header name")));
            }
            if field == "headers" && k.starts_with("@request.auth.claims") {
                p.push((kp.clone(), format!("JWT claim matches are {NOT_YET}")));
            }
            string_match(&kp, v, false, true, p);
        }
    }
}

fn string_match(at: &str, m: &StringMatch, empty_prefix_ok: bool, presence_ok: bool, p: &mut Problems) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()].iter().filter(|b| **b).count();
    if set > 1 {
        p.push((at.into(), "set only one of exact, prefix, regex".into()));
    }
    if set == 0 && !presence_ok {
        p.push((at.into(), "one of exact, prefix, regex is required".into()));
    }
    if m.prefix.as_deref() == Some("") && !empty_prefix_ok {
        p.push((format!("{at}.prefix"), "must not be empty".into()));
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            p.push((format!("{at}.regex"), "must not be empty".into()));
        } else if re.len() > weft_model::MAX_REGEX_LEN {
            p.push((format!("{at}.regex"), format!("is {} characters; Istio allows at most 1024", re.len())));
        } else if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
            p.push((format!("{at}.regex"), format!("invalid RE2 regex: {e}")));
        }
    }
}

/// Conditions Istio accepts in `retryOn` (besides HTTP status codes).
const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn retry(at: &str, r: &HttpRetry, p: &mut Problems) {
    let HttpRetry {
        attempts,
        per_try_timeout,
        retry_on,
        retry_remote_localities: _,
        retry_ignore_previous_hosts: _,
        backoff,
    } = r;
    if *attempts < 0 {
        p.push((format!("{at}.attempts"), "attempts must not be negative".into()));
    }
    if *attempts == 0 && (per_try_timeout.is_some() || retry_on.is_some()) {
        p.push((format!("{at}.attempts"), "attempts is 0 (no retries) but perTryTimeout or retryOn is set".into()));
    }
    at_least_1ms(p, format!("{at}.perTryTimeout"), per_try_timeout);
    at_least_1ms(p, format!("{at}.backoff"), backoff);
    if let Some(on) = retry_on {
        for cond in on.split(',').map(str::trim) {
            let is_code = cond.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !is_code && !RETRY_ON.contains(&cond) {
                p.push((
                    format!("{at}.retryOn"),
                    format!("{cond:?} is not a retry condition ({})", RETRY_ON.join(", ")),
                ));
            } else if ["retriable-headers", "envoy-ratelimited", "http3-post-connect-failure"].contains(&cond) {
                p.push((format!("{at}.retryOn"), format!("{cond:?} is {NOT_YET}")));
            }
        }
    }
}

fn fault_rules(at: &str, f: &HttpFault, p: &mut Problems) {
    if f.delay.is_none() && f.abort.is_none() {
        p.push((at.into(), "set delay, abort or both".into()));
    }
    let pct = |p: &mut Problems, path: String, v: f64| {
        if !(0.0..=100.0).contains(&v) {
            p.push((path, "must be between 0 and 100".into()));
        }
    };
    if let Some(d) = &f.delay {
        unsupported(p, format!("{at}.delay.exponentialDelay"), &d.exponential_delay);
        if d.fixed_delay.is_none() && !is_set(&d.exponential_delay) {
            p.push((format!("{at}.delay.fixedDelay"), "a delay needs fixedDelay".into()));
        }
        at_least_1ms(p, format!("{at}.delay.fixedDelay"), &d.fixed_delay);
        if let Some(x) = &d.percentage {
            pct(p, format!("{at}.delay.percentage.value"), x.value);
        }
        if let Some(x) = d.percent {
            pct(p, format!("{at}.delay.percent"), f64::from(x));
        }
    }
    if let Some(a) = &f.abort {
        unsupported(p, format!("{at}.abort.grpcStatus"), &a.grpc_status);
        unsupported(p, format!("{at}.abort.http2Error"), &a.http2_error);
        match a.http_status {
            Some(s) if !(200..=599).contains(&s) => {
                p.push((format!("{at}.abort.httpStatus"), "must be between 200 and 599".into()))
            }
            None if !is_set(&a.grpc_status) && !is_set(&a.http2_error) => {
                p.push((format!("{at}.abort.httpStatus"), "an abort needs httpStatus".into()))
            }
            _ => {}
        }
        if let Some(x) = &a.percentage {
            pct(p, format!("{at}.abort.percentage.value"), x.value);
        }
    }
}

fn header_ops(at: &str, h: &Headers, p: &mut Problems) {
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (k, v) in map {
                if k.is_empty() || !k.bytes().all(|b| is_token(b) || b == b':') {
                    p.push((format!("{at}.{side}.{field}.{k}"), format!("{k:?} is not a header name")));
                }
                if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    p.push((format!("{at}.{side}.{field}.{k}"), "header values must not contain CR, LF or NUL".into()));
                }
            }
        }
        for (i, k) in ops.remove.iter().enumerate() {
            if k.eq_ignore_ascii_case("host") || k.starts_with(':') {
                p.push((format!("{at}.{side}.remove[{i}]"), format!("{k:?} cannot be removed")));
            }
        }
    }
}

/// `mesh` (the sidecars), or a Gateway as `name` or `namespace/name`. Sidecars read
/// what is bound to `mesh`; the rest is kept for gateways.
fn gateway_names(p: &mut Problems, at: &str, gateways: &[String]) {
    for (i, g) in gateways.iter().enumerate() {
        let ok = match g.split_once('/') {
            _ if g == "mesh" => true,
            Some((ns, name)) => is_dns1123(ns, 63, false) && is_dns1123(name, 253, true),
            None => is_dns1123(g, 253, true),
        };
        if !ok {
            p.push((format!("{at}[{i}]"), format!("{g:?} is not `mesh`, a gateway name or namespace/name")));
        }
    }
}
