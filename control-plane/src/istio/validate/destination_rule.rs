//! DestinationRule: host, subsets, traffic policies.

use super::common::{at_least_1ms, is_dns1123, is_token, unsupported, Problems, NOT_YET};
use crate::istio::types::*;

pub(super) fn check(dr: &DestinationRule, p: &mut Problems) {
    let DestinationRule { host, traffic_policy, subsets, export_to, workload_selector } = dr;
    if host.is_empty() || host == "*" {
        p.push(("spec.host".into(), "a service host is required".into()));
    }
    unsupported(p, "spec.workloadSelector".into(), workload_selector);
    super::common::export_to(p, export_to);
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
    if let Some(ClientTls {
        mode,
        client_certificate,
        private_key,
        ca_certificates,
        credential_name,
        subject_alt_names,
        sni,
        insecure_skip_verify,
    }) = tls
    {
        let at = format!("{at}.tls");
        let originates = matches!(mode, Some(TlsMode::Simple | TlsMode::Mutual));
        if !originates {
            let set = [
                ("caCertificates", ca_certificates.is_some()),
                ("sni", sni.is_some()),
                ("clientCertificate", client_certificate.is_some()),
                ("privateKey", private_key.is_some()),
                ("credentialName", credential_name.is_some()),
                ("subjectAltNames", !subject_alt_names.is_empty()),
                ("insecureSkipVerify", insecure_skip_verify.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, set)| *set) {
                p.push((format!("{at}.{field}"), "applies to modes SIMPLE and MUTUAL only".into()));
            }
        }
        for (field, path) in [
            ("caCertificates", ca_certificates),
            ("clientCertificate", client_certificate),
            ("privateKey", private_key),
        ] {
            if path.as_ref().is_some_and(|c| !c.starts_with('/')) {
                p.push((format!("{at}.{field}"), "must be an absolute path to a PEM file on the sidecar".into()));
            }
        }
        if let Some(name) = credential_name {
            if !weft_model::gateway::credential_name_ok(name) {
                p.push((format!("{at}.credentialName"), format!("{name:?} is not a Secret name")));
            }
            if client_certificate.is_some() || private_key.is_some() || ca_certificates.is_some() {
                p.push((
                    format!("{at}.credentialName"),
                    "either credentialName or clientCertificate, privateKey and caCertificates, not both".into(),
                ));
            }
        }
        if client_certificate.is_some() != private_key.is_some() {
            p.push((format!("{at}.privateKey"), "clientCertificate and privateKey go together".into()));
        }
        match mode {
            Some(TlsMode::Mutual) if credential_name.is_none() && client_certificate.is_none() => p.push((
                format!("{at}.clientCertificate"),
                "MUTUAL needs a client certificate: clientCertificate and privateKey, or credentialName".into(),
            )),
            Some(TlsMode::Simple) if client_certificate.is_some() => {
                p.push((format!("{at}.clientCertificate"), "a client certificate is for mode MUTUAL".into()))
            }
            _ => {}
        }
        if let Some(sni) = sni.as_deref().filter(|s| rustls::pki_types::ServerName::try_from(*s).is_err()) {
            p.push((format!("{at}.sni"), format!("{sni:?} is not a host name")));
        }
    }
    if let Some(lb) = load_balancer {
        let at = format!("{at}.loadBalancer");
        if let Some(ch) = &lb.consistent_hash {
            consistent_hash(&format!("{at}.consistentHash"), ch, lb.simple.is_some(), p);
        }
        if let Some(l) = &lb.locality_lb_setting {
            locality_lb(&format!("{at}.localityLbSetting"), l, p);
        }
        unsupported(p, format!("{at}.warmupDurationSecs"), &lb.warmup_duration_secs);
        unsupported(p, format!("{at}.warmup"), &lb.warmup);
        if lb.simple == Some(SimpleLb::Passthrough) {
            p.push((format!("{at}.simple"), format!("PASSTHROUGH is {NOT_YET}")));
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
            at_least_1ms(p, format!("{at}.tcp.connectTimeout"), &tcp.connect_timeout);
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
            if http.use_client_protocol == Some(true) && http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
                p.push((
                    format!("{at}.http.useClientProtocol"),
                    "useClientProtocol cannot be combined with h2UpgradePolicy UPGRADE".into(),
                ));
            }
        }
    }
    if let Some(od) = outlier_detection {
        let at = format!("{at}.outlierDetection");
        // `consecutiveErrors` is deprecated and ignored, as by Istio (translation warns).
        unsupported(p, format!("{at}.splitExternalLocalOriginErrors"), &od.split_external_local_origin_errors);
        unsupported(p, format!("{at}.consecutiveLocalOriginFailures"), &od.consecutive_local_origin_failures);
        at_least_1ms(p, format!("{at}.interval"), &od.interval);
        at_least_1ms(p, format!("{at}.baseEjectionTime"), &od.base_ejection_time);
        for (field, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)]
        {
            if v.is_some_and(|v| !(0..=100).contains(&v)) {
                p.push((format!("{at}.{field}"), "must be between 0 and 100".into()));
            }
        }
    }
}

/// Istio's checks of `consistentHash`, and the ones Envoy would otherwise fail on.
fn consistent_hash(at: &str, ch: &ConsistentHashLb, simple: bool, p: &mut Problems) {
    let ConsistentHashLb {
        http_header_name,
        http_cookie,
        use_source_ip,
        http_query_parameter_name,
        ring_hash,
        maglev,
        minimum_ring_size,
    } = ch;
    if simple {
        p.push((at.into(), "set simple or consistentHash, not both".into()));
    }
    let keys = [
        http_header_name.is_some(),
        http_cookie.is_some(),
        *use_source_ip == Some(true),
        http_query_parameter_name.is_some(),
    ];
    match keys.iter().filter(|k| **k).count() {
        0 => p.push((
            at.into(),
            "one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required".into(),
        )),
        1 => {}
        _ => p.push((at.into(), "set only one hash key".into())),
    }
    if let Some(h) = http_header_name {
        if h.is_empty() || !h.bytes().all(is_token) {
            p.push((format!("{at}.httpHeaderName"), format!("{h:?} is not a header name")));
        }
    }
    if let Some(q) = http_query_parameter_name {
        if q.is_empty() {
            p.push((format!("{at}.httpQueryParameterName"), "must not be empty".into()));
        }
    }
    if let Some(HttpCookie { name, path, ttl, attributes }) = http_cookie {
        unsupported(p, format!("{at}.httpCookie.attributes"), attributes);
        if name.is_empty() {
            p.push((format!("{at}.httpCookie.name"), "name required for HttpCookie".into()));
        } else if !name.bytes().all(is_token) {
            p.push((format!("{at}.httpCookie.name"), format!("{name:?} is not a cookie name")));
        }
        if ttl.is_none() {
            p.push((format!("{at}.httpCookie.ttl"), "ttl required for HttpCookie".into()));
        }
        if path.as_ref().is_some_and(|x| !x.starts_with('/') || x.bytes().any(|b| b.is_ascii_control() || b == b';')) {
            p.push((format!("{at}.httpCookie.path"), "must be a path starting with '/'".into()));
        }
    }
    if ring_hash.is_some() && maglev.is_some() {
        p.push((format!("{at}.maglev"), "set ringHash or maglev, not both".into()));
    }
    if minimum_ring_size.is_some_and(|n| n > 0) && (ring_hash.is_some() || maglev.is_some()) {
        p.push((
            format!("{at}.minimumRingSize"),
            "only one of MinimumRingSize or Maglev/Ringhash can be specified".into(),
        ));
    }
    let ring_size = ring_hash.as_ref().and_then(|r| r.minimum_ring_size).or(*minimum_ring_size);
    if ring_size.is_some_and(|n| n > weft_model::hash::MAX_RING_SIZE) {
        p.push((
            format!("{at}.ringHash.minimumRingSize"),
            format!("must be at most {}", weft_model::hash::MAX_RING_SIZE),
        ));
    }
    if let Some(Maglev { table_size }) = maglev {
        let at = format!("{at}.maglev.tableSize");
        match *table_size {
            None | Some(0) => p.push((at, "tableSize must be set for maglev".into())),
            // The bound first: a prime near 2^64 would take minutes to prove prime.
            Some(n) if n > weft_model::hash::MAX_MAGLEV_SIZE => {
                p.push((at, format!("must be at most {}", weft_model::hash::MAX_MAGLEV_SIZE)))
            }
            Some(n) if !weft_model::hash::is_prime(n) => {
                p.push((at, "tableSize must be prime number for maglev".into()))
            }
            Some(_) => {}
        }
    }
}

/// Istio's validateLocalityLbSetting.
fn locality_lb(at: &str, l: &LocalityLbSetting, p: &mut Problems) {
    let LocalityLbSetting { distribute, failover, failover_priority, enabled: _ } = l;
    if !distribute.is_empty() && !failover.is_empty() {
        p.push((at.into(), "can not simultaneously specify 'distribute' and 'failover'".into()));
    }
    if !distribute.is_empty() && !failover_priority.is_empty() {
        p.push((at.into(), "can not simultaneously specify 'distribute' and 'failoverPriority'".into()));
    }
    let mut froms = Vec::new();
    for (i, d) in distribute.iter().enumerate() {
        let dp = format!("{at}.distribute[{i}]");
        froms.push((format!("{dp}.from"), d.from.as_str()));
        let mut total = 0u32;
        for (to, w) in &d.to {
            if *w == 0 || *w > 100 {
                p.push((format!("{dp}.to.{to}"), "locality weight must be in range [1, 100]".into()));
            }
            total = total.saturating_add(*w);
        }
        if total != 100 {
            p.push((format!("{dp}.to"), format!("total locality weight {total} != 100")));
        }
        let tos: Vec<(String, &str)> = d.to.keys().map(|k| (format!("{dp}.to.{k}"), k.as_str())).collect();
        localities(&tos, p);
    }
    localities(&froms, p);
    for (i, f) in failover.iter().enumerate() {
        let fp = format!("{at}.failover[{i}]");
        if f.from.is_empty() || f.to.is_empty() {
            p.push((fp.clone(), "from and to are required".into()));
        } else if f.from == f.to {
            p.push((fp.clone(), "locality lb failover settings must specify different regions".into()));
        }
        if f.from.contains('/') || f.to.contains('/') {
            p.push((fp.clone(), "locality lb failover only specify region".into()));
        }
        if f.from.contains('*') || f.to.contains('*') {
            p.push((fp, "locality lb failover region should not contain '*' wildcard".into()));
        }
    }
    for (i, label) in failover_priority.iter().enumerate() {
        if label.contains('=') {
            p.push((format!("{at}.failoverPriority[{i}]"), format!("label=value overrides are {NOT_YET}")));
        } else if label.is_empty() {
            p.push((format!("{at}.failoverPriority[{i}]"), "must not be empty".into()));
        }
    }
}

/// Localities are `region[/zone[/subzone]]`, `*` only as the last part, and none overlaps
/// one before it (`us/*` and `us/a/*` name the same endpoints; Istio refuses that too).
fn localities(list: &[(String, &str)], p: &mut Problems) {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for (at, l) in list {
        let parts: Vec<&str> = l.split('/').collect();
        let star_inside = parts.iter().take(parts.len().saturating_sub(1)).any(|x| x.contains('*'));
        let bad_star = parts.last().is_some_and(|x| x.contains('*') && *x != "*");
        if l.is_empty() || parts.len() > 3 || parts.iter().any(|x| x.is_empty()) || star_inside || bad_star {
            p.push((at.clone(), format!("{l:?} is not region[/zone[/subzone]] with `*` only as the last part")));
            continue;
        }
        // What it names: its parts before a `*`; one overlaps another when either is a prefix.
        let named: Vec<&str> = parts.into_iter().take_while(|x| *x != "*").collect();
        let overlaps = |other: &Vec<&str>| {
            let n = named.len().min(other.len());
            named[..n] == other[..n]
        };
        if seen.iter().any(overlaps) {
            p.push((at.clone(), format!("locality {l} overlaps with one specified before")));
        }
        seen.push(named);
    }
}
