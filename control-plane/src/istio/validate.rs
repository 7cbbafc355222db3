//! Istio's validation rules (pkg/config/validation in istio/istio), plus
//! Weft's own: a field Weft does not implement yet is refused by name.

use super::types::*;
use super::{Diagnostic, Kind, Resource, Spec};
use std::collections::BTreeMap;
use std::time::Duration;

type Problems = Vec<(String, String)>;

const NOT_YET: &str = "not supported yet by Weft";

/// Checks one resource; returns (field path, message) for each problem.
pub fn resource(r: &Resource) -> Problems {
    let mut p = Problems::new();
    let name = &r.metadata.name;
    if !is_dns1123(name, 253, true) {
        p.push(("metadata.name".into(), format!("{name:?} is not a valid name (lowercase letters, digits, '-', '.')")));
    }
    if let Some(ns) = &r.metadata.namespace {
        if !is_dns1123(ns, 63, false) {
            p.push(("metadata.namespace".into(), format!("{ns:?} is not a valid namespace")));
        }
    }
    match &r.spec {
        Spec::VirtualService(vs) => virtual_service(vs, &mut p),
        Spec::DestinationRule(dr) => destination_rule(dr, &mut p),
        Spec::PeerAuthentication(pa) => {
            unsupported(&mut p, "spec.portLevelMtls".into(), &pa.port_level_mtls);
            match pa.mtls.as_ref().and_then(|m| m.mode.as_deref()) {
                None | Some("UNSET" | "DISABLE" | "PERMISSIVE" | "STRICT") => {}
                Some(o) => {
                    p.push(("spec.mtls.mode".into(), format!("{o:?} is not UNSET, DISABLE, PERMISSIVE or STRICT")))
                }
            }
            if pa.selector.is_some() && r.namespace() == crate::translate::ROOT_NAMESPACE {
                p.push((
                    "spec.selector".into(),
                    "a mesh-wide PeerAuthentication (root namespace) cannot have a selector".into(),
                ));
            }
        }
        Spec::AuthorizationPolicy(ap) => authorization_policy(ap, r, &mut p),
        Spec::Sidecar(sc) => sidecar(sc, r, &mut p),
        Spec::WorkloadGroup(wg) => workload_group(wg, &mut p),
    }
    p
}

fn workload_group(wg: &WorkloadGroup, p: &mut Problems) {
    unsupported(p, "spec.probe".into(), &wg.probe);
    let t = &wg.template;
    for (field, value) in [
        ("address", &t.address),
        ("ports", &t.ports),
        ("labels", &t.labels),
        ("network", &t.network),
        ("locality", &t.locality),
        ("weight", &t.weight),
    ] {
        unsupported(p, format!("spec.template.{field}"), value);
    }
    match t.service_account.as_deref() {
        None => p.push((
            "spec.template.serviceAccount".into(),
            "required: the service account of the group's workloads".into(),
        )),
        Some(sa) if !crate::registry::name_ok(sa) => {
            p.push(("spec.template.serviceAccount".into(), format!("{sa:?} is not a valid service account name")))
        }
        Some(_) => {}
    }
    match wg.metadata.labels.get("app") {
        None => p.push((
            "spec.metadata.labels".into(),
            "an `app` label is required: it names the service the group's workloads serve".into(),
        )),
        Some(app) if !crate::registry::name_ok(app) => {
            p.push(("spec.metadata.labels.app".into(), format!("{app:?} is not a valid service name")))
        }
        Some(_) => {}
    }
}

fn sidecar(sc: &Sidecar, r: &Resource, p: &mut Problems) {
    unsupported(p, "spec.ingress".into(), &sc.ingress);
    unsupported(p, "spec.egress".into(), &sc.egress);
    unsupported(p, "spec.inboundConnectionPool".into(), &sc.inbound_connection_pool);
    if let Some(otp) = &sc.outbound_traffic_policy {
        unsupported(p, "spec.outboundTrafficPolicy.egressProxy".into(), &otp.egress_proxy);
        if let Some(mode) = otp.mode.as_deref().filter(|m| !matches!(*m, "ALLOW_ANY" | "REGISTRY_ONLY")) {
            p.push(("spec.outboundTrafficPolicy.mode".into(), format!("{mode:?} is not ALLOW_ANY or REGISTRY_ONLY")));
        }
    }
    if sc.workload_selector.is_some() && r.namespace() == crate::translate::ROOT_NAMESPACE {
        p.push((
            "spec.workloadSelector".into(),
            "the mesh-wide Sidecar (root namespace) cannot have a workloadSelector".into(),
        ));
    }
}

/// The same kind/namespace/name twice in one apply is an error.
pub fn unique(resources: &[Resource]) -> Result<(), Vec<Diagnostic>> {
    let mut seen: BTreeMap<(Kind, &str, &str), &Resource> = BTreeMap::new();
    let mut diags = Vec::new();
    for r in resources {
        if let Some(first) = seen.insert((r.kind, r.namespace(), r.name()), r) {
            diags.push(Diagnostic {
                file: r.source.file.clone(),
                line: r.source.line,
                field: "metadata.name".into(),
                message: format!(
                    "{} {}/{} is defined twice (first at {}:{})",
                    r.kind,
                    r.namespace(),
                    r.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}

fn unsupported(p: &mut Problems, path: String, value: &Unsupported) {
    if value.is_some() {
        p.push((path, NOT_YET.into()));
    }
}

fn duration(p: &mut Problems, path: String, value: &Option<String>, min: Duration) -> Option<Duration> {
    let text = value.as_ref()?;
    match weft_model::duration::parse(text) {
        Ok(d) if d >= min => Some(d),
        Ok(_) => {
            p.push((path, format!("{text:?} is shorter than the minimum {}", weft_model::duration::format(min))));
            None
        }
        Err(e) => {
            p.push((path, e));
            None
        }
    }
}

fn virtual_service(vs: &VirtualService, p: &mut Problems) {
    let VirtualService { hosts, gateways, http, tls, tcp, export_to } = vs;
    if hosts.is_empty() {
        p.push(("spec.hosts".into(), "at least one host is required".into()));
    }
    for (i, h) in hosts.iter().enumerate() {
        if h.is_empty() || h == "*" || h.parse::<std::net::IpAddr>().is_ok() || h.contains('/') || h.contains(':') {
            p.push((
                format!("spec.hosts[{i}]"),
                format!("{h:?} is not a service host (use a name, name.namespace or FQDN)"),
            ));
        }
    }
    if !(gateways.is_empty() || gateways.len() == 1 && gateways[0] == "mesh") {
        p.push(("spec.gateways".into(), format!("gateways other than `mesh` are {NOT_YET}")));
    }
    for (i, e) in export_to.iter().enumerate() {
        if e != "." && e != "*" && !is_dns1123(e, 63, false) {
            p.push((format!("spec.exportTo[{i}]"), format!("{e:?} is not `.`, `*` or a namespace")));
        }
    }
    unsupported(p, "spec.tls".into(), tls);
    unsupported(p, "spec.tcp".into(), tcp);
    if http.is_empty() && tls.is_none() && tcp.is_none() {
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
    for (field, v) in [
        ("redirect", redirect),
        ("directResponse", direct_response),
        ("delegate", delegate),
        ("mirror", mirror),
        ("mirrors", mirrors),
        ("mirrorPercentage", mirror_percentage),
        ("mirror_percent", mirror_percent),
        ("corsPolicy", cors_policy),
    ] {
        unsupported(p, format!("{at}.{field}"), v);
    }
    if route.is_empty() && redirect.is_none() && direct_response.is_none() && delegate.is_none() {
        p.push((format!("{at}.route"), "HTTP route, redirect or directResponse is required".into()));
    }
    for (j, m) in matches.iter().enumerate() {
        match_request(&format!("{at}.match[{j}]"), m, p);
    }
    for (j, d) in route.iter().enumerate() {
        let dp = format!("{at}.route[{j}]");
        if d.destination.host.is_empty() {
            p.push((format!("{dp}.destination.host"), "a destination host is required".into()));
        }
        if let Some(s) = &d.destination.subset {
            if !is_dns1123(s, 63, false) {
                p.push((format!("{dp}.destination.subset"), format!("{s:?} is not a valid subset name")));
            }
        }
        if let Some(port) = &d.destination.port {
            if port.number == 0 || port.number > 65535 {
                p.push((format!("{dp}.destination.port.number"), "must be between 1 and 65535".into()));
            }
        }
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
    duration(p, format!("{at}.timeout"), timeout, Duration::from_millis(1));
    if let Some(rt) = retries {
        retry(&format!("{at}.retries"), rt, p);
    }
    if let Some(f) = fault {
        fault_rules(&format!("{at}.fault"), f, p);
    }
    if let Some(h) = headers {
        header_ops(&format!("{at}.headers"), h, p);
        let sets_authority = h.request.as_ref().is_some_and(|r| {
            r.set.keys().chain(r.add.keys()).any(|k| k.eq_ignore_ascii_case("host") || k == ":authority")
        });
        if sets_authority && rewrite.as_ref().is_some_and(|rw| rw.authority.is_some()) {
            p.push((
                format!("{at}.rewrite.authority"),
                "the authority is set both by rewrite and by headers; keep one".into(),
            ));
        }
    }
    if let Some(rw) = rewrite {
        unsupported(p, format!("{at}.rewrite.uriRegexRewrite"), &rw.uri_regex_rewrite);
        if rw.uri.as_deref() == Some("") {
            p.push((format!("{at}.rewrite.uri"), "must not be empty".into()));
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
    if !(gateways.is_empty() || gateways.len() == 1 && gateways[0] == "mesh") {
        p.push((format!("{at}.gateways"), format!("gateways other than `mesh` are {NOT_YET}")));
    }
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
            if field != "queryParams" && (k.is_empty() || k.bytes().any(|b| b.is_ascii_uppercase() || !is_token(b))) {
                p.push((kp.clone(), format!("header name {k:?} must be lowercase and hyphenated")));
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
pub const RETRY_ON: [&str; 16] = [
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
        retry_remote_localities,
        retry_ignore_previous_hosts: _,
        backoff,
    } = r;
    unsupported(p, format!("{at}.retryRemoteLocalities"), retry_remote_localities);
    if *attempts < 0 {
        p.push((format!("{at}.attempts"), "attempts must not be negative".into()));
    }
    if *attempts == 0 && (per_try_timeout.is_some() || retry_on.is_some()) {
        p.push((format!("{at}.attempts"), "attempts is 0 (no retries) but perTryTimeout or retryOn is set".into()));
    }
    duration(p, format!("{at}.perTryTimeout"), per_try_timeout, Duration::from_millis(1));
    duration(p, format!("{at}.backoff"), backoff, Duration::from_millis(1));
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
        if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
            p.push((format!("{at}.delay.fixedDelay"), "a delay needs fixedDelay".into()));
        }
        duration(p, format!("{at}.delay.fixedDelay"), &d.fixed_delay, Duration::from_millis(1));
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
            None if a.grpc_status.is_none() && a.http2_error.is_none() => {
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

fn destination_rule(dr: &DestinationRule, p: &mut Problems) {
    let DestinationRule { host, traffic_policy, subsets, export_to, workload_selector } = dr;
    if host.is_empty() || host == "*" {
        p.push(("spec.host".into(), "a service host is required".into()));
    }
    unsupported(p, "spec.workloadSelector".into(), workload_selector);
    for (i, e) in export_to.iter().enumerate() {
        if e != "." && e != "*" && !is_dns1123(e, 63, false) {
            p.push((format!("spec.exportTo[{i}]"), format!("{e:?} is not `.`, `*` or a namespace")));
        }
    }
    if let Some(tp) = traffic_policy {
        traffic("spec.trafficPolicy", tp, p);
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if !is_dns1123(&s.name, 63, false) {
            p.push((format!("{at}.name"), format!("{:?} is not a valid subset name", s.name)));
        }
        if !names.insert(&s.name) {
            p.push((format!("{at}.name"), format!("subset {:?} is defined twice", s.name)));
        }
        if let Some(tp) = &s.traffic_policy {
            traffic(&format!("{at}.trafficPolicy"), tp, p);
        }
    }
}

fn traffic(at: &str, tp: &TrafficPolicy, p: &mut Problems) {
    let TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        tls,
        port_level_settings,
        tunnel,
        proxy_protocol,
        retry_budget,
    } = tp;
    if *tp == TrafficPolicy::default() {
        p.push((at.into(), "trafficPolicy must have at least one field".into()));
    }
    for (field, v) in [
        ("portLevelSettings", port_level_settings),
        ("tunnel", tunnel),
        ("proxyProtocol", proxy_protocol),
        ("retryBudget", retry_budget),
    ] {
        unsupported(p, format!("{at}.{field}"), v);
    }
    if tls.is_some() {
        p.push((format!("{at}.tls"), format!("tls is {NOT_YET} (mesh mTLS comes with workload identity)")));
    }
    if let Some(lb) = load_balancer {
        let at = format!("{at}.loadBalancer");
        unsupported(p, format!("{at}.consistentHash"), &lb.consistent_hash);
        unsupported(p, format!("{at}.localityLbSetting"), &lb.locality_lb_setting);
        unsupported(p, format!("{at}.warmupDurationSecs"), &lb.warmup_duration_secs);
        unsupported(p, format!("{at}.warmup"), &lb.warmup);
        match lb.simple.as_deref() {
            None | Some("UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" | "ROUND_ROBIN" | "RANDOM") => {}
            Some("PASSTHROUGH") => p.push((format!("{at}.simple"), format!("PASSTHROUGH is {NOT_YET}"))),
            Some(other) => p.push((
                format!("{at}.simple"),
                format!(
                    "{other:?} is not one of UNSPECIFIED, LEAST_REQUEST, LEAST_CONN, ROUND_ROBIN, RANDOM, PASSTHROUGH"
                ),
            )),
        }
    }
    if let Some(cp) = connection_pool {
        let at = format!("{at}.connectionPool");
        let non_negative = |p: &mut Problems, path: String, v: Option<i32>| {
            if v.is_some_and(|v| v < 0) {
                p.push((path, "must not be negative".into()));
            }
        };
        if let Some(tcp) = &cp.tcp {
            non_negative(p, format!("{at}.tcp.maxConnections"), tcp.max_connections);
            duration(p, format!("{at}.tcp.connectTimeout"), &tcp.connect_timeout, Duration::from_millis(1));
            unsupported(p, format!("{at}.tcp.tcpKeepalive"), &tcp.tcp_keepalive);
            unsupported(p, format!("{at}.tcp.maxConnectionDuration"), &tcp.max_connection_duration);
            unsupported(p, format!("{at}.tcp.idleTimeout"), &tcp.idle_timeout);
        }
        if let Some(http) = &cp.http {
            non_negative(p, format!("{at}.http.http1MaxPendingRequests"), http.http1_max_pending_requests);
            non_negative(p, format!("{at}.http.http2MaxRequests"), http.http2_max_requests);
            non_negative(p, format!("{at}.http.maxRequestsPerConnection"), http.max_requests_per_connection);
            non_negative(p, format!("{at}.http.maxRetries"), http.max_retries);
            unsupported(p, format!("{at}.http.maxConcurrentStreams"), &http.max_concurrent_streams);
            if let Some(t) = &http.idle_timeout {
                if weft_model::duration::parse(t).is_err() {
                    duration(p, format!("{at}.http.idleTimeout"), &http.idle_timeout, Duration::ZERO);
                }
            }
            match http.h2_upgrade_policy.as_deref() {
                None | Some("DEFAULT" | "DO_NOT_UPGRADE" | "UPGRADE") => {}
                Some(o) => p.push((
                    format!("{at}.http.h2UpgradePolicy"),
                    format!("{o:?} is not DEFAULT, DO_NOT_UPGRADE or UPGRADE"),
                )),
            }
            if http.use_client_protocol == Some(true) && http.h2_upgrade_policy.as_deref() == Some("UPGRADE") {
                p.push((
                    format!("{at}.http.useClientProtocol"),
                    "useClientProtocol cannot be combined with h2UpgradePolicy UPGRADE".into(),
                ));
            }
        }
    }
    if let Some(od) = outlier_detection {
        let at = format!("{at}.outlierDetection");
        if od.consecutive_errors.is_some() {
            p.push((
                format!("{at}.consecutiveErrors"),
                "consecutiveErrors is deprecated and Istio ignores it; use consecutive5xxErrors".into(),
            ));
        }
        unsupported(p, format!("{at}.splitExternalLocalOriginErrors"), &od.split_external_local_origin_errors);
        unsupported(p, format!("{at}.consecutiveLocalOriginFailures"), &od.consecutive_local_origin_failures);
        duration(p, format!("{at}.interval"), &od.interval, Duration::from_millis(1));
        duration(p, format!("{at}.baseEjectionTime"), &od.base_ejection_time, Duration::from_millis(1));
        for (field, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)]
        {
            if v.is_some_and(|v| !(0..=100).contains(&v)) {
                p.push((format!("{at}.{field}"), "must be between 0 and 100".into()));
            }
        }
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 1123 names: lowercase alphanumerics and '-', and '.' when `dots`.
fn is_dns1123(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn authorization_policy(ap: &AuthorizationPolicy, r: &Resource, p: &mut Problems) {
    let AuthorizationPolicy { selector, target_ref, target_refs, action, provider, rules } = ap;
    unsupported(p, "spec.targetRef".into(), target_ref);
    unsupported(p, "spec.targetRefs".into(), target_refs);
    unsupported(p, "spec.provider".into(), provider);
    match action.as_deref() {
        None | Some("ALLOW" | "DENY" | "AUDIT") => {}
        Some("CUSTOM") => p.push(("spec.action".into(), format!("CUSTOM (external authorization) is {NOT_YET}"))),
        Some(o) => p.push(("spec.action".into(), format!("{o:?} is not ALLOW, DENY, AUDIT or CUSTOM"))),
    }
    if let Some(s) = selector {
        if s.match_labels.is_empty() {
            p.push(("spec.selector.matchLabels".into(), "a selector needs at least one label".into()));
        }
    }
    let _ = r;
    for (i, rule) in rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, f) in rule.from.iter().enumerate() {
            let s = &f.source;
            let sp = format!("{at}.from[{j}].source");
            for (field, v) in [
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
            ] {
                unsupported(p, format!("{sp}.{field}"), v);
            }
            for (k, b) in s.ip_blocks.iter().chain(&s.not_ip_blocks).enumerate() {
                if weft_model::authz::parse_cidr(b).is_none() {
                    p.push((format!("{sp}.ipBlocks[{k}]"), format!("{b:?} is not an IP or CIDR")));
                }
            }
            if *s == super::types::AuthzSource::default() {
                p.push((sp, "an empty source is not allowed".into()));
            }
        }
        for (j, t) in rule.to.iter().enumerate() {
            if t.operation == super::types::AuthzOperation::default() {
                p.push((format!("{at}.to[{j}].operation"), "an empty operation is not allowed".into()));
            }
            // Istio ≥ 1.20's URI templates: refused by name until built, never taken literally
            // (a DENY on `/admin/{**}` that matched nothing would be a silent hole).
            for (field, paths) in [("paths", &t.operation.paths), ("notPaths", &t.operation.not_paths)] {
                for (k, path) in paths.iter().enumerate() {
                    if path.contains("{*}") || path.contains("{**}") {
                        p.push((
                            format!("{at}.to[{j}].operation.{field}[{k}]"),
                            format!("{path:?}: the {{*}} and {{**}} path templates are {NOT_YET}"),
                        ));
                    }
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            if !weft_model::authz::supported_condition_key(&c.key) {
                p.push((
                    format!("{at}.when[{j}].key"),
                    format!("{:?} is {NOT_YET} (request.headers[..], source.principal, source.namespace, source.ip, destination.port are)", c.key),
                ));
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                p.push((format!("{at}.when[{j}]"), "a condition needs values or notValues".into()));
            }
        }
    }
}
