//! [`ProxyConfig::validate`]: every rule a config must satisfy before a sidecar
//! takes it, with the offending field named by its path.
//!
//! Size: one check per schema type, in the order of `lib.rs`, then their tests.

use crate::action::{Cors, DirectResponse, Redirect, MAX_DIRECT_BODY};
use crate::hash::{ConsistentHash, HashKey, HashTable, MAX_MAGLEV_SIZE, MAX_RING_SIZE};
use crate::{
    Cluster, Fault, HeaderOps, Headers, Match, ProxyConfig, Retry, Route, StringMatch, API_VERSION, MAX_REGEX_LEN,
};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A rule a config breaks: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Path of the field, e.g. `services["a.ns.svc.cluster.local"].routes[0].route[1].weight`.
    pub path: String,
    pub message: String,
}

/// Path builder: `Path::root("services").key(host).field("routes").index(0)`.
#[derive(Clone)]
struct Path(String);

impl Path {
    fn root(name: &str) -> Self {
        Path(name.to_string())
    }
    fn field(&self, name: &str) -> Self {
        Path(format!("{}.{name}", self.0))
    }
    fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key:?}]", self.0))
    }
    fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }
    fn err<T>(&self, message: impl fmt::Display) -> Result<T> {
        Err(ValidationError { path: self.0.clone(), message: message.to_string() })
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

pub(crate) fn config(c: &ProxyConfig) -> Result {
    let ProxyConfig {
        api_version,
        version: _,
        workload,
        services,
        clusters,
        inbound,
        outbound_traffic_policy: _,
        trust: _,
        path_normalization: _,
        access_log: _,
        egress,
        tcp,
        gateway,
    } = c;
    if api_version != API_VERSION {
        return Path::root("apiVersion").err(format!("must be {API_VERSION:?}, found {api_version:?}"));
    }
    let w = Path::root("workload");
    if workload.name.is_empty() {
        return w.field("name").err("must not be empty");
    }
    if !is_dns_label(&workload.namespace) {
        return w.field("namespace").err("must be a DNS label (lowercase letters, digits, '-')");
    }
    if workload.service_account.is_empty() {
        return w.field("serviceAccount").err("must not be empty");
    }
    for (name, cluster) in clusters {
        cluster_rules(&Path::root("clusters").key(name), cluster)?;
    }
    for (host, service) in services {
        let p = Path::root("services").key(host);
        if host.is_empty() || host.contains(':') || host.contains('/') {
            return p.err("a service key is a host name without port or path");
        }
        if service.routes.is_empty() && service.ports.is_empty() {
            return p.field("routes").err("a service needs at least one route");
        }
        for (i, route) in service.routes.iter().enumerate() {
            route_rules(&p.field("routes").index(i), route, c)?;
        }
        for (port, routes) in &service.ports {
            let p = p.field("ports").key(&port.to_string());
            if *port == 0 || routes.is_empty() {
                return p.err("a port number (1-65535) with at least one route");
            }
            for (i, route) in routes.iter().enumerate() {
                route_rules(&p.index(i), route, c)?;
            }
        }
    }
    for (i, policy) in inbound.authz.iter().enumerate() {
        for (j, rule) in policy.rules.iter().enumerate() {
            let at = Path::root("inbound").field("authz").index(i).field("rules").index(j);
            let groups = rule.from.iter().map(|g| ("from", g)).chain(rule.to.iter().map(|g| ("to", g)));
            for (side, g) in groups.clone() {
                if g.is_empty() {
                    return at.field(side).err("an empty group would match every request");
                }
            }
            let matchers = groups.flat_map(|(side, g)| g.iter().map(move |m| (side, m)));
            for (side, m) in matchers.chain(rule.when.iter().map(|m| ("when", m))) {
                if let Err(why) = crate::authz::check(m) {
                    return at.field(side).err(why);
                }
            }
        }
    }
    for (i, rule) in inbound.jwt.iter().enumerate() {
        jwt_rule(&Path::root("inbound").field("jwt").index(i), rule)?;
    }
    gateway_servers(gateway)?;
    for (i, e) in egress.iter().enumerate() {
        if e.port == 0 {
            return Path::root("egress").index(i).field("port").err("must be a port number (1-65535)");
        }
    }
    for (i, t) in tcp.iter().enumerate() {
        let p = Path::root("tcp").index(i);
        if t.port == 0 {
            return p.field("port").err("must be a port number (1-65535)");
        }
        if !clusters.contains_key(&t.cluster) {
            return p.field("cluster").err(format!("no cluster named {:?}", t.cluster));
        }
        if tcp[..i].iter().any(|o| o.port == t.port && o.cluster == t.cluster) {
            return p.err("listed twice");
        }
    }
    let ports =
        inbound.tcp_ports.iter().map(|p| ("tcpPorts", p)).chain(inbound.http_ports.iter().map(|p| ("httpPorts", p)));
    for (i, (field, port)) in ports.enumerate() {
        if *port == 0 {
            return Path::root("inbound").field(field).err(format!("entry {i}: must be a port number (1-65535)"));
        }
    }
    if let Some(app) = &inbound.app {
        socket_addr(&Path::root("inbound").field("app"), app)?;
    }
    Ok(())
}

fn cluster_rules(p: &Path, c: &Cluster) -> Result {
    let Cluster {
        service: _,
        lb_policy,
        consistent_hash,
        locality_weights,
        endpoints,
        protocol: _,
        outlier_detection,
        connection_pool,
        tls,
        original_dst: _,
        dns,
        dns_first_only: _,
        tls_origination,
    } = c;
    for locality in locality_weights.iter().flat_map(|w| w.keys()) {
        if locality.is_empty() || locality.contains('*') {
            return p
                .field("localityWeights")
                .key(locality)
                .err("a locality is region[/zone[/subzone]], without wildcards");
        }
    }
    if let Some(h) = consistent_hash {
        if *lb_policy != crate::LbPolicy::default() {
            return p.field("consistentHash").err("set lbPolicy or consistentHash, not both");
        }
        consistent_hash_rules(&p.field("consistentHash"), h)?;
    }
    if let Some(o) = tls_origination {
        if tls.is_some() {
            return p.field("tlsOrigination").err("a cluster speaks mesh mTLS or originates TLS, not both");
        }
        if o.sni.is_empty()
            || o.sni.parse::<std::net::IpAddr>().is_err()
                && !o.sni.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return p.field("tlsOrigination").field("sni").err(format!("{:?} is not a host name", o.sni));
        }
        if o.mutual && o.credential_name.is_none() && (o.client_certificate.is_none() || o.private_key.is_none()) {
            return p.field("tlsOrigination").err("mutual needs clientCertificate and privateKey, or credentialName");
        }
        if o.credential_name.as_deref().is_some_and(|n| !crate::gateway::credential_name_ok(n)) {
            return p.field("tlsOrigination").field("credentialName").err("not a Secret name");
        }
    }
    for (i, name) in dns.iter().enumerate() {
        let ok = name.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return p.field("dns").index(i).err(format!("{name:?} is not host:port"));
        }
    }
    if let Some(t) = tls {
        for (i, id) in t.identities.iter().enumerate() {
            if !id.starts_with("spiffe://") {
                return p.field("tls").field("identities").index(i).err(format!("{id:?} is not a SPIFFE ID"));
            }
        }
    }
    if let Some(od) = outlier_detection {
        let op = p.field("outlierDetection");
        for (name, v) in [("maxEjectionPercent", od.max_ejection_percent), ("minHealthPercent", od.min_health_percent)]
        {
            if v.is_some_and(|v| v > 100) {
                return op.field(name).err("must be between 0 and 100");
            }
        }
        for (name, v) in [("interval", od.interval), ("baseEjectionTime", od.base_ejection_time)] {
            if v.is_some_and(|d| d < Duration::from_millis(1)) {
                return op.field(name).err("must be at least 1ms");
            }
        }
    }
    for (i, e) in endpoints.iter().enumerate() {
        socket_addr(&p.field("endpoints").index(i).field("address"), &e.address)?;
    }
    if connection_pool.tcp.connect_timeout == Some(Duration::ZERO) {
        return p.field("connectionPool").field("tcp").field("connectTimeout").err("must be greater than 0");
    }
    Ok(())
}

fn route_rules(p: &Path, r: &Route, c: &ProxyConfig) -> Result {
    let Route {
        name: _,
        matches,
        route,
        redirect,
        direct_response,
        mirrors,
        cors,
        timeout: _,
        retries,
        fault,
        headers,
        rewrite,
    } = r;
    for (i, m) in matches.iter().enumerate() {
        match_rules(&p.field("match").index(i), m)?;
    }
    let actions = [!route.is_empty(), redirect.is_some(), direct_response.is_some()];
    match actions.iter().filter(|a| **a).count() {
        0 => return p.field("route").err("a route needs destinations, a redirect or a direct response"),
        1 => {}
        _ => return p.err("set one of route, redirect and directResponse"),
    }
    if route.is_empty() && (fault.is_some() || rewrite.is_some() || !mirrors.is_empty()) {
        return p.err("fault, rewrite and mirrors need destinations to forward to");
    }
    if let Some(rd) = redirect {
        redirect_rules(&p.field("redirect"), rd, matches)?;
    }
    if let Some(d) = direct_response {
        direct_response_rules(&p.field("directResponse"), d)?;
    }
    for (i, m) in mirrors.iter().enumerate() {
        let mp = p.field("mirrors").index(i);
        if !c.clusters.contains_key(&m.cluster) {
            return mp.field("cluster").err(format!("no cluster named {:?} in clusters", m.cluster));
        }
        percentage(&mp.field("percentage"), m.percentage)?;
    }
    if let Some(cors) = cors {
        cors_rules(&p.field("cors"), cors)?;
    }
    for (i, d) in route.iter().enumerate() {
        let dp = p.field("route").index(i);
        if !c.clusters.contains_key(&d.cluster) {
            return dp.field("cluster").err(format!("no cluster named {:?} in clusters", d.cluster));
        }
        if let Some(h) = &d.headers {
            headers_rules(&dp.field("headers"), h)?;
        }
        if d.authority.as_ref().is_some_and(|a| a.is_empty() || a.bytes().any(|b| b.is_ascii_control() || b == b' ')) {
            return dp.field("authority").err("must be a host[:port]");
        }
    }
    if route.len() > 1 && route.iter().all(|d| d.weight == 0) {
        return p.field("route").err("with several destinations at least one needs a weight above 0");
    }
    if let Some(retry) = retries {
        retry_rules(&p.field("retries"), retry)?;
    }
    if let Some(f) = fault {
        fault_rules(&p.field("fault"), f)?;
    }
    if let Some(h) = headers {
        headers_rules(&p.field("headers"), h)?;
    }
    if let Some(rw) = rewrite {
        if let Some(uri) = &rw.uri {
            if uri.is_empty() || !uri.starts_with('/') {
                return p.field("rewrite").field("uri").err("must start with '/'");
            }
        }
        if rw.authority.as_deref() == Some("") {
            return p.field("rewrite").field("authority").err("must not be empty");
        }
        if let Some(rr) = &rw.uri_regex {
            if rw.uri.is_some() {
                return p.field("rewrite").err("set uri or uriRegex, not both");
            }
            regex_rules(&p.field("rewrite").field("uriRegex").field("pattern"), &rr.pattern)?;
        }
    }
    Ok(())
}

fn match_rules(p: &Path, m: &Match) -> Result {
    let Match { name: _, uri, ignore_uri_case: _, method, authority, headers, without_headers, query_params } = m;
    if uri.is_none()
        && method.is_none()
        && authority.is_none()
        && headers.is_empty()
        && without_headers.is_empty()
        && query_params.is_empty()
    {
        return p.err("an empty match is not allowed; leave `match` out to match every request");
    }
    if let Some(u) = uri {
        string_match(&p.field("uri"), u, Presence::Refused, true)?;
    }
    if let Some(m) = method {
        string_match(&p.field("method"), m, Presence::Refused, false)?;
    }
    if let Some(a) = authority {
        string_match(&p.field("authority"), a, Presence::Refused, false)?;
    }
    for (field, map) in [("headers", headers), ("withoutHeaders", without_headers)] {
        for (name, sm) in map {
            let hp = p.field(field).key(name);
            header_name(&hp, name)?;
            string_match(&hp, sm, Presence::Allowed, false)?;
        }
    }
    for (name, sm) in query_params {
        let qp = p.field("queryParams").key(name);
        if name.is_empty() {
            return qp.err("query parameter name must not be empty");
        }
        string_match(&qp, sm, Presence::Allowed, false)?;
    }
    Ok(())
}

#[derive(PartialEq)]
enum Presence {
    Allowed,
    Refused,
}

fn string_match(p: &Path, m: &StringMatch, presence: Presence, empty_prefix_ok: bool) -> Result {
    let StringMatch { exact, prefix, regex } = m;
    let set = [exact.is_some(), prefix.is_some(), regex.is_some()].iter().filter(|b| **b).count();
    if set > 1 {
        return p.err("set only one of exact, prefix, regex");
    }
    if set == 0 && presence == Presence::Refused {
        return p.err("needs one of exact, prefix, regex");
    }
    if prefix.as_deref() == Some("") && !empty_prefix_ok {
        return p.field("prefix").err("must not be empty");
    }
    if let Some(re) = regex {
        regex_rules(&p.field("regex"), re)?;
    }
    Ok(())
}

/// Regexes are RE2 syntax (Rust's `regex` is RE2-compatible), full match, at most 1024 characters.
fn regex_rules(p: &Path, re: &str) -> Result {
    if re.is_empty() {
        return p.err("must not be empty");
    }
    if re.len() > MAX_REGEX_LEN {
        return p.err(format!("is {} characters; at most {MAX_REGEX_LEN} are allowed", re.len()));
    }
    if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
        return p.err(format!("invalid regex: {e}"));
    }
    Ok(())
}

fn retry_rules(p: &Path, r: &Retry) -> Result {
    let Retry {
        attempts,
        per_try_timeout,
        retry_on: _,
        retriable_status_codes,
        backoff,
        previous_hosts: _,
        remote_localities: _,
    } = r;
    if *attempts > 100 {
        return p.field("attempts").err("at most 100 retries are allowed");
    }
    if *per_try_timeout == Some(Duration::ZERO) {
        return p.field("perTryTimeout").err("must be greater than 0");
    }
    if let Some(b) = backoff {
        if *b < Duration::from_millis(1) {
            return p.field("backoff").err("must be at least 1ms");
        }
    }
    for (i, code) in retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            return p.field("retriableStatusCodes").index(i).err(format!("{code} is not an HTTP status"));
        }
    }
    Ok(())
}

fn fault_rules(p: &Path, f: &Fault) -> Result {
    if f.delay.is_none() && f.abort.is_none() {
        return p.err("set delay, abort or both");
    }
    if let Some(d) = &f.delay {
        if d.fixed_delay < Duration::from_millis(1) {
            return p.field("delay").field("fixedDelay").err("must be at least 1ms");
        }
        percentage(&p.field("delay").field("percentage"), d.percentage)?;
    }
    if let Some(a) = &f.abort {
        if !(200..=599).contains(&a.http_status) {
            return p.field("abort").field("httpStatus").err("must be between 200 and 599");
        }
        percentage(&p.field("abort").field("percentage"), a.percentage)?;
    }
    Ok(())
}

fn redirect_rules(p: &Path, r: &Redirect, matches: &[Match]) -> Result {
    let Redirect { uri, prefix_rewrite, authority, port, derive_port, scheme, code } = r;
    if port.is_some() && derive_port.is_some() {
        return p.field("derivePort").err("set port or derivePort, not both");
    }
    if uri.is_some() && prefix_rewrite.is_some() {
        return p.err("set uri or prefixRewrite, not both");
    }
    if let Some(u) = uri {
        if !u.starts_with('/') || u.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return p.field("uri").err("must be a path starting with '/'");
        }
    }
    if let Some(pr) = prefix_rewrite {
        if pr.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return p.field("prefixRewrite").err("must be a path without spaces or control characters");
        }
        let all_prefix =
            !matches.is_empty() && matches.iter().all(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_some()));
        if !all_prefix {
            return p.field("prefixRewrite").err("needs a URI prefix match in every match entry");
        }
    }
    if let Some(a) = authority {
        // host, host:port, [v6] or [v6]:port.
        let (host, port) = match a.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => (v6, after.strip_prefix(':')),
                _ => ("", None),
            },
            None => match a.split_once(':') {
                Some((h, port)) => (h, Some(port)),
                None => (a.as_str(), None),
            },
        };
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !host_ok || port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return p.field("authority").err(format!("{a:?} is not a host[:port]"));
        }
    }
    if let Some(s) = scheme {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return p.field("scheme").err(format!("{s:?} is not a URL scheme"));
        }
    }
    if port == &Some(0) {
        return p.field("port").err("must be a port number (1-65535)");
    }
    if ![301, 302, 303, 307, 308].contains(code) {
        return p.field("code").err(format!("{code} is not a redirect code (301, 302, 303, 307, 308)"));
    }
    Ok(())
}

fn direct_response_rules(p: &Path, d: &DirectResponse) -> Result {
    if !(200..=599).contains(&d.status) {
        return p.field("status").err("must be between 200 and 599");
    }
    if let Some(body) = &d.body {
        match body.decode() {
            None => return p.field("body").err("set string, or bytes in base64"),
            Some(b) if b.len() > MAX_DIRECT_BODY => {
                return p.field("body").err(format!("is {} bytes; at most {MAX_DIRECT_BODY}", b.len()))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn cors_rules(p: &Path, c: &Cors) -> Result {
    let Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age: _,
        allow_credentials: _,
        forward_unmatched_preflights: _,
    } = c;
    for (i, o) in allow_origins.iter().enumerate() {
        string_match(&p.field("allowOrigins").index(i), o, Presence::Refused, false)?;
    }
    for (field, list) in
        [("allowMethods", allow_methods), ("allowHeaders", allow_headers), ("exposeHeaders", expose_headers)]
    {
        for (i, v) in list.iter().enumerate() {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return p.field(field).index(i).err(format!("{v:?} is not a token"));
            }
        }
    }
    Ok(())
}

fn consistent_hash_rules(p: &Path, h: &ConsistentHash) -> Result {
    let Some(key) = h.key() else {
        return p.err("set exactly one of header, cookie, sourceIp, queryParameter");
    };
    match key {
        HashKey::Header(name) => header_name(&p.field("header"), &name)?,
        HashKey::Cookie(c) => {
            if c.name.is_empty()
                || !c.name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                return p.field("cookie").field("name").err(format!("{:?} is not a cookie name", c.name));
            }
            if c.path
                .as_ref()
                .is_some_and(|path| !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b';'))
            {
                return p.field("cookie").field("path").err("must be a path starting with '/'");
            }
        }
        HashKey::QueryParameter(name) if name.is_empty() => return p.field("queryParameter").err("must not be empty"),
        HashKey::SourceIp | HashKey::QueryParameter(_) => {}
    }
    if h.ring_hash.is_some() && h.maglev.is_some() {
        return p.err("set ringHash or maglev, not both");
    }
    match h.table() {
        HashTable::RingHash { minimum_ring_size: n } if n == 0 || n > MAX_RING_SIZE => {
            p.field("ringHash").err(format!("must be between 1 and {MAX_RING_SIZE}"))
        }
        HashTable::Maglev { table_size: n } if n > MAX_MAGLEV_SIZE || !crate::hash::is_prime(n) => {
            p.field("maglev").err(format!("must be a prime up to {MAX_MAGLEV_SIZE}"))
        }
        _ => Ok(()),
    }
}

fn percentage(p: &Path, v: f64) -> Result {
    if !(0.0..=100.0).contains(&v) {
        return p.err("must be between 0 and 100");
    }
    Ok(())
}

fn headers_rules(p: &Path, h: &Headers) -> Result {
    header_ops(&p.field("request"), &h.request)?;
    header_ops(&p.field("response"), &h.response)
}

fn header_ops(p: &Path, ops: &HeaderOps) -> Result {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let hp = p.field(field).key(name);
            header_name(&hp, name)?;
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return hp.err("header value must not contain CR, LF or NUL");
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        header_name(&p.field("remove").index(i), name)?;
    }
    Ok(())
}

fn jwt_rule(p: &Path, rule: &crate::jwt::JwtRule) -> Result {
    if rule.issuer.is_empty() {
        return p.field("issuer").err("must not be empty");
    }
    if !rule.jwks.is_empty() {
        let keys = serde_json::from_str::<serde_json::Value>(&rule.jwks).ok();
        if !keys.as_ref().and_then(|k| k.get("keys")).is_some_and(serde_json::Value::is_array) {
            return p.field("jwks").err("is not a JSON Web Key Set ({\"keys\": [...]})");
        }
    }
    for (i, h) in rule.from_headers.iter().enumerate() {
        header_name(&p.field("fromHeaders").index(i).field("name"), &h.name)?;
    }
    for (i, param) in rule.from_params.iter().enumerate() {
        if param.is_empty() {
            return p.field("fromParams").index(i).err("must not be empty");
        }
    }
    let output = |p: &Path, h: &str| -> Result {
        header_name(p, h)?;
        if crate::jwt::reserved_output_header(h) {
            return p.err(format!("{h:?} is reserved; a claim cannot set it"));
        }
        if rule.from_headers.iter().any(|f| f.name == h) {
            return p.err(format!("{h:?} is where tokens are read; a claim cannot set it"));
        }
        Ok(())
    };
    if let Some(h) = &rule.output_payload_to_header {
        output(&p.field("outputPayloadToHeader"), h)?;
    }
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        let at = p.field("outputClaimToHeaders").index(i);
        output(&at.field("header"), &c.header)?;
        if c.claim.is_empty() {
            return at.field("claim").err("must not be empty");
        }
    }
    Ok(())
}

fn header_name(p: &Path, name: &str) -> Result {
    if !crate::authz::header_name_ok(name) {
        return p.err(format!("{name:?} is not a lowercase HTTP header name"));
    }
    Ok(())
}

fn socket_addr(p: &Path, addr: &str) -> Result {
    if addr.parse::<SocketAddr>().is_err() {
        return p.err(format!("{addr:?} is not an IP:port address"));
    }
    Ok(())
}

/// A gateway's servers: real ports and hosts, one kind of server per port (plaintext
/// or TLS, as Istio refuses HTTP and HTTPS on one port), credentials that stay in
/// their directory, and a client CA wherever clients must prove themselves.
fn gateway_servers(servers: &[crate::gateway::Server]) -> Result {
    use crate::gateway::{credential_name_ok, Credential, ServerTlsMode};
    let mut tls_by_port = std::collections::BTreeMap::new();
    for (i, s) in servers.iter().enumerate() {
        let p = Path::root("gateway").index(i);
        if s.port == 0 {
            return p.field("port").err("must be a port number (1-65535)");
        }
        if s.hosts.is_empty() {
            return p.field("hosts").err("a server needs at least one host");
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let ok = h == "*"
                || (!name.is_empty()
                    && name
                        .split('.')
                        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
            if !ok {
                return p.field("hosts").index(j).err(format!("{h:?} is not a host name, `*.suffix` or `*`"));
            }
        }
        if tls_by_port.insert(s.port, s.tls.is_some()).is_some_and(|tls| tls != s.tls.is_some()) {
            return p.field("port").err(format!("port {} has both plaintext and TLS servers", s.port));
        }
        if s.https_redirect && s.tls.is_some() {
            return p.field("httpsRedirect").err("only a plaintext server redirects to https");
        }
        let Some(tls) = &s.tls else { continue };
        let c = p.field("tls").field("credential");
        match &tls.credential {
            Credential::Name(name) if !credential_name_ok(name) => {
                return c.err(format!("{name:?} is not a Secret name (lowercase letters, digits, '-', '.')"));
            }
            Credential::Files { certificate, private_key, ca_certificates } => {
                if certificate.is_empty() || private_key.is_empty() {
                    return c.err("the certificate and its private key are both required");
                }
                if tls.mode == ServerTlsMode::Mutual && ca_certificates.as_deref().is_none_or(str::is_empty) {
                    return c.err("MUTUAL needs caCertificates to verify clients with");
                }
            }
            Credential::Name(_) => {}
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use crate::ProxyConfig;

    const BASE: &str = r#"
apiVersion: weft.dev/v1alpha1
workload: { name: client, namespace: production }
clusters:
  c1: { endpoints: [ { address: "127.0.0.1:1" } ] }
services:
  svc.production.svc.cluster.local:
    routes:
      - route: [ { cluster: c1 } ]
"#;

    fn parse(yaml: &str) -> ProxyConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn error_of(edit: &str) -> String {
        let yaml = BASE.replace("      - route: [ { cluster: c1 } ]", edit);
        parse(&yaml).validate().unwrap_err().to_string()
    }

    #[test]
    fn base_is_valid() {
        parse(BASE).validate().unwrap();
    }

    #[test]
    fn authorization_that_would_match_every_request_is_refused() {
        let with = |rules: &str| {
            let yaml = format!("{BASE}inbound:\n  authz:\n  - name: p\n    action: ALLOW\n    rules:\n{rules}");
            parse(&yaml).validate().map_err(|e| e.to_string())
        };
        let empty_group = with("    - from: [[]]\n").unwrap_err();
        assert!(empty_group.contains("an empty group"), "{empty_group}");
        let no_values = with("    - to: [[{attribute: method}]]\n").unwrap_err();
        assert!(no_values.contains("needs anyOf or noneOf"), "{no_values}");
        with("    - to: [[{attribute: method, anyOf: [{match: exact, value: GET}]}]]\n").unwrap();
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let yaml = BASE.replace("clusters:", "circuitBreaker: {}\nclusters:");
        let err = serde_yaml::from_str::<ProxyConfig>(&yaml).unwrap_err().to_string();
        assert!(err.contains("unknown field `circuitBreaker`"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "      - route: [ { cluster: nope } ]",
                r#"services["svc.production.svc.cluster.local"].routes[0].route[0].cluster: no cluster named "nope""#,
            ),
            (
                "      - { match: [ {} ], route: [ { cluster: c1 } ] }",
                r#"routes[0].match[0]: an empty match is not allowed"#,
            ),
            (
                "      - { match: [ { uri: { regex: '(' } } ], route: [ { cluster: c1 } ] }",
                r#"routes[0].match[0].uri.regex: invalid regex"#,
            ),
            (
                "      - { match: [ { uri: { exact: /a, prefix: /b } } ], route: [ { cluster: c1 } ] }",
                "routes[0].match[0].uri: set only one of exact, prefix, regex",
            ),
            (
                "      - { match: [ { headers: { x-a: { prefix: '' } } } ], route: [ { cluster: c1 } ] }",
                r#"routes[0].match[0].headers["x-a"].prefix: must not be empty"#,
            ),
            (
                "      - { match: [ { headers: { X-Up: { exact: a } } } ], route: [ { cluster: c1 } ] }",
                r#"headers["X-Up"]: "X-Up" is not a lowercase HTTP header name"#,
            ),
            (
                "      - route: [ { cluster: c1 }, { cluster: c1 } ]",
                "routes[0].route: with several destinations at least one needs a weight above 0",
            ),
            (
                "      - { route: [ { cluster: c1 } ], fault: { abort: { httpStatus: 42, percentage: 1 } } }",
                "routes[0].fault.abort.httpStatus: must be between 200 and 599",
            ),
            (
                "      - { route: [ { cluster: c1 } ], fault: { delay: { fixedDelay: 1s, percentage: 101 } } }",
                "routes[0].fault.delay.percentage: must be between 0 and 100",
            ),
        ];
        for (edit, want) in cases {
            let got = error_of(edit);
            assert!(got.contains(want), "got {got:?}, want it to contain {want:?}");
        }
    }

    #[test]
    fn bad_endpoint_address_is_named() {
        let yaml = BASE.replace("127.0.0.1:1", "localhost");
        let err = parse(&yaml).validate().unwrap_err();
        assert_eq!(err.path, r#"clusters["c1"].endpoints[0].address"#);
    }

    #[test]
    fn long_regex_is_refused() {
        let long = "a".repeat(1025);
        let err = error_of(&format!(
            "      - {{ match: [ {{ uri: {{ regex: '{long}' }} }} ], route: [ {{ cluster: c1 }} ] }}"
        ));
        assert!(err.contains("at most 1024"), "{err}");
    }

    #[test]
    fn json_and_yaml_round_trip() {
        let c = parse(BASE);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ProxyConfig>(&json).unwrap(), c);
    }
}
