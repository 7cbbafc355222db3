//! `weftctl explain`: which route a request takes and what applies to it,
//! decided by the sidecar's own matching code on the config the sidecar
//! would get — not by a second implementation that could disagree.
//!
//! Size: one walk through every decision the sidecar makes for a request (route,
//! destinations, timeouts, retries, fault, CORS, mirrors, hash key, locality,
//! authorization, the gateway's server), kept together in the sidecar's order.

use serde::Serialize;
use weft_model::authz::{AuthzRule, Matcher};
use weft_model::ProxyConfig;
use weft_proxy::config::snapshot::Snapshot;
use weft_proxy::http::answer::{Action, Origin};
use weft_proxy::http::cors::Verdict;
use weft_proxy::http::route::RequestView;
use weft_proxy::upstream::endpoint::Registry as EndpointRegistry;

/// A request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub host: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// Where the request goes and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub service: Option<String>,
    pub route: Option<String>,
    /// The route's match entry that accepted the request (`None`: the route matches everything).
    pub matched: Option<serde_json::Value>,
    pub destinations: Vec<DestinationView>,
    pub timeout: Option<String>,
    pub retries: Option<serde_json::Value>,
    pub fault: Option<serde_json::Value>,
    /// What the sidecar answers when nothing matches.
    pub local_reply: Option<String>,
    /// What the route answers itself (a redirect or a direct response), instead of forwarding.
    pub answer: Option<String>,
    /// What the route's CORS policy makes of this request.
    pub cors: Option<String>,
    /// Copies of the request: cluster and share.
    pub mirrors: Vec<String>,
    /// The destination sidecar's authorization decision, when it was asked for.
    pub authorization: Option<String>,
    /// When the source is an ingress gateway: the server the request's host reaches, and
    /// the gateway's own end-user authentication and authorization of it.
    pub gateway: Option<GatewayView>,
}

/// What an ingress gateway does with a request before routing it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayView {
    /// `name :port (TLS mode …)` of the servers that take the host; empty: 404 there.
    pub servers: Vec<String>,
    /// The end-user token check (RequestAuthentication) and the gateway's AuthorizationPolicy.
    pub decision: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationView {
    pub cluster: String,
    pub weight: u32,
    /// Share of requests, percent.
    pub share: f64,
    pub endpoints: Vec<String>,
    pub cluster_settings: serde_json::Value,
    /// Consistent hashing: the request's key and the endpoint it goes to.
    pub hash: Option<String>,
    /// Locality load balancing: the failover levels, or each locality's share.
    pub locality: Option<String>,
}

pub fn explain(config: &ProxyConfig, req: &Request) -> Result<Explanation, String> {
    let snapshot = Snapshot::compile(config.clone(), &EndpointRegistry::default(), None).map_err(|e| e.to_string())?;
    let mut e = route(config, &snapshot, req)?;
    if !config.gateway.is_empty() {
        e.gateway = Some(gateway(config, &snapshot, req));
    }
    Ok(e)
}

/// An ingress gateway's view of a request from outside, as `gateway::edge::admit` decides
/// it: on each port, the server the host reaches (Envoy's filter-chain order; over TLS the
/// client's SNI must name the same server, else 421), a redirect, whether a VirtualService
/// bound to that server's Gateway routes the service the request takes; then the gateway's
/// own token check and authorization.
fn gateway(config: &ProxyConfig, snapshot: &Snapshot, req: &Request) -> GatewayView {
    use weft_model::gateway::server_for;
    let host = weft_proxy::http::headers::split_port(&req.host).0.to_ascii_lowercase();
    let key = snapshot.vhost(&req.host).map(|v| v.name.to_string());
    let mut ports: Vec<u16> = config.gateway.iter().map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut servers = Vec::new();
    let mut served_on = None;
    for port in ports {
        let Some(s) = server_for(config.gateway.iter().filter(|s| s.port == port), Some(&host)) else { continue };
        let how = match s.tls.as_ref().map(|t| t.mode) {
            Some(weft_model::gateway::ServerTlsMode::Simple) => {
                "TLS SIMPLE; the client's SNI must name this server, else 421"
            }
            Some(weft_model::gateway::ServerTlsMode::Mutual) => {
                "TLS MUTUAL; the client's SNI must name this server, else 421"
            }
            None => "plaintext",
        };
        let outcome = if s.https_redirect {
            "301 to https".to_string()
        } else if key.as_ref().is_some_and(|k| s.routes.contains(k)) {
            served_on.get_or_insert(port);
            "routed".to_string()
        } else {
            "404: no VirtualService bound to its Gateway routes this host".to_string()
        };
        servers.push(format!("{} :{port} ({how}) → {outcome}", s.name));
    }
    let Some(port) = served_on else {
        return GatewayView { servers, decision: "not routed: no token or authorization check".into() };
    };
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(req.path.as_str());
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let decision = match builder.body(()) {
        Err(e) => format!("the request cannot be built: {e}"),
        Ok(request) => {
            let (mut parts, ()) = request.into_parts();
            match snapshot.jwt.authenticate(&mut parts) {
                Err(refused) => format!("401 {}", refused.text()),
                Ok(user) => {
                    let who = user.as_ref().and_then(|u| u.principal.clone()).unwrap_or_else(|| "no end user".into());
                    format!("token: {who}; authz: {}", authorize_as(config, None, user.as_ref(), Some(port), req))
                }
            }
        }
    };
    GatewayView { servers, decision }
}

fn route(config: &ProxyConfig, snapshot: &Snapshot, req: &Request) -> Result<Explanation, String> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &req.headers {
        let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("header {k:?}: {e}"))?;
        let value = http::HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
        headers.append(name, value);
    }
    let view = RequestView { method: &req.method, path_and_query: &req.path, authority: &req.host, headers: &headers };
    let none = |why: String| Explanation {
        service: None,
        route: None,
        matched: None,
        destinations: vec![],
        timeout: None,
        retries: None,
        fault: None,
        local_reply: Some(why),
        answer: None,
        cors: None,
        mirrors: vec![],
        authorization: None,
        gateway: None,
    };
    let Some(vhost) = snapshot.vhost(&req.host) else {
        return Ok(none(format!("404 NR: no service for host {:?}", req.host)));
    };
    let service = vhost.name.to_string();
    // The port the request is for (its authority's): a multi-port service's other port has routes of its own.
    let port = weft_proxy::http::headers::split_port(&req.host).1.and_then(|p| p.parse::<u16>().ok());
    let Some((route, hit)) = vhost.select(port, &view) else {
        return Ok(Explanation {
            service: Some(service.clone()),
            ..none(format!("404 NR: no route of {service} matches"))
        });
    };
    // The model's view of the same route, for printing what was written.
    let model_service = &config.services[&service];
    let model_routes = port.and_then(|p| model_service.ports.get(&p)).unwrap_or(&model_service.routes);
    let model_route = model_routes
        .iter()
        .enumerate()
        .find(|(i, r)| r.name.clone().unwrap_or_else(|| format!("route-{i}")) == *route.name);
    let matched = model_route.and_then(|(_, r)| {
        let entry = r
            .matches
            .iter()
            .find(|m| weft_proxy::http::route::MatchRule::compile(m).is_ok_and(|rule| rule.matches(&view)))?;
        serde_json::to_value(entry).ok()
    });
    let total: u64 =
        model_route.map_or(
            0,
            |(_, r)| {
                if r.route.len() == 1 {
                    1
                } else {
                    r.route.iter().map(|d| u64::from(d.weight)).sum()
                }
            },
        );
    let destinations = model_route
        .map(|(_, r)| {
            r.route
                .iter()
                .filter(|d| r.route.len() == 1 || d.weight > 0)
                .map(|d| {
                    let cluster = &config.clusters[&d.cluster];
                    let weight = if r.route.len() == 1 { 1 } else { d.weight };
                    let mut settings = serde_json::to_value(cluster).unwrap_or_default();
                    if let Some(obj) = settings.as_object_mut() {
                        obj.remove("endpoints");
                    }
                    DestinationView {
                        cluster: d.cluster.clone(),
                        weight: d.weight,
                        share: if total == 0 { 0.0 } else { 100.0 * f64::from(weight) / total as f64 },
                        endpoints: cluster.endpoints.iter().map(|e| e.address.clone()).collect(),
                        cluster_settings: settings,
                        hash: snapshot.cluster(&d.cluster).and_then(|c| hashed_endpoint(c, &headers, &req.path)),
                        locality: locality_of(cluster),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let r = model_route.map(|(_, r)| r);
    let origin = Origin {
        authority: &req.host,
        path_and_query: &req.path,
        matched_prefix: hit.and_then(weft_proxy::http::route::MatchRule::uri_prefix),
    };
    let answer = match &route.action {
        Action::Forward => None,
        Action::Redirect(rd) => Some(format!("redirect {} to {}", rd.code().as_u16(), rd.location(&origin))),
        Action::Respond(d) => Some(format!("direct response {}", d.describe())),
    };
    let method = http::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
    let cors = route.cors.as_ref().map(|policy| match policy.check(&method, &headers) {
        Verdict::Pass if headers.contains_key(http::header::ORIGIN) => {
            "origin not allowed: forwarded without CORS headers from the sidecar".to_string()
        }
        Verdict::Pass => "not a CORS request (no Origin)".to_string(),
        Verdict::Allowed(o) => format!("origin {o:?} allowed: the response gets access-control-allow-origin"),
        Verdict::Answer(_) => "preflight answered by the sidecar (200); the app never sees it".to_string(),
    });
    let mirrors = r
        .map(|r| r.mirrors.iter().map(|m| format!("copy to {} ({} % of requests)", m.cluster, m.percentage)).collect())
        .unwrap_or_default();
    Ok(Explanation {
        service: Some(service),
        route: Some(route.name.to_string()),
        matched,
        destinations,
        timeout: r.and_then(|r| r.timeout).map(weft_model::duration::format),
        retries: Some(match r.and_then(|r| r.retries.as_ref()) {
            Some(rt) => serde_json::to_value(rt).unwrap_or_default(),
            None => serde_json::json!("Istio default: 2 retries on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"),
        }),
        fault: r.and_then(|r| r.fault.as_ref()).and_then(|f| serde_json::to_value(f).ok()),
        local_reply: None,
        answer,
        cors,
        mirrors,
        authorization: None,
        gateway: None,
    })
}

/// `failover: level 0 region1/zone1 (1), level 2 region1/zone2 (1) …` or
/// `localities: us/a/ 80, us/b/ 20`; `None` without locality load balancing.
fn locality_of(cluster: &weft_model::Cluster) -> Option<String> {
    if let Some(weights) = &cluster.locality_weights {
        let shares: Vec<String> = weights.iter().map(|(l, w)| format!("{l} {w}")).collect();
        return Some(format!("localities by weight: {} (others get none)", shares.join(", ")));
    }
    if cluster.endpoints.iter().all(|e| e.priority == 0) {
        return None;
    }
    let mut levels: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for e in &cluster.endpoints {
        levels.entry(e.priority).or_default().push(e.locality.clone().unwrap_or_else(|| "-".into()));
    }
    let text: Vec<String> = levels
        .iter()
        .map(|(p, ls)| {
            let mut ls = ls.clone();
            ls.sort();
            ls.dedup();
            format!("level {p} {}", ls.join(" "))
        })
        .collect();
    Some(format!("failover (the next level takes over as the one before loses health): {}", text.join("; ")))
}

/// The consistent-hash key of the request and the endpoint it picks (the sidecar's own code).
fn hashed_endpoint(
    cluster: &weft_proxy::config::snapshot::Cluster,
    headers: &http::HeaderMap,
    path: &str,
) -> Option<String> {
    let policy = cluster.hash.as_ref()?;
    let key = match policy.key()? {
        weft_model::HashKey::Header(h) => format!("header {h}"),
        weft_model::HashKey::Cookie(c) => format!("cookie {}", c.name),
        weft_model::HashKey::SourceIp => "the caller's IP".to_string(),
        weft_model::HashKey::QueryParameter(q) => format!("query parameter {q}"),
    };
    let hashed = weft_proxy::upstream::hash::request_hash(policy, headers, path, None, None);
    Some(match hashed.hash {
        _ if matches!(policy.key(), Some(weft_model::HashKey::SourceIp)) => {
            format!("consistent hash on {key}: one endpoint per caller")
        }
        None => format!("consistent hash on {key}: the request has none, so a random endpoint"),
        Some(h) => {
            let picked = cluster.balancer.pick(&[], Default::default(), Some(h), &mut rand::thread_rng()).ok()?;
            format!("consistent hash on {key} → {}", picked.addr)
        }
    })
}

/// The destination sidecar's decision for a caller proving `principal`: its
/// inbound config (`destination`) evaluated by the sidecar's own authz code.
pub fn authorize(destination: &ProxyConfig, principal: Option<&str>, req: &Request) -> String {
    authorize_as(destination, principal, None, None, req)
}

/// [`authorize`] with the request's end user and the port it came to (default the app's).
fn authorize_as(
    destination: &ProxyConfig,
    principal: Option<&str>,
    end_user: Option<&weft_proxy::security::jwt::EndUser>,
    port: Option<u16>,
    req: &Request,
) -> String {
    let policies: Vec<weft_proxy::security::authz::Policy> =
        destination.inbound.authz.iter().map(weft_proxy::security::authz::Policy::compile).collect();
    let mut headers = http::HeaderMap::new();
    for (k, v) in &req.headers {
        if let (Ok(n), Ok(v)) =
            (http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()), http::HeaderValue::from_str(v))
        {
            headers.append(n, v);
        }
    }
    let app_port = || destination.inbound.app.as_deref().and_then(|a| a.rsplit(':').next()?.parse().ok());
    let port = port.or_else(app_port).unwrap_or(80);
    let path = req.path.split('?').next().unwrap_or("/");
    let view = weft_proxy::security::authz::Request {
        principal,
        source_ip: None,
        host: &req.host,
        port,
        method: &req.method,
        path,
        headers: &headers,
        end_user,
    };
    match weft_proxy::security::authz::decide(&policies, &view) {
        weft_proxy::security::authz::Decision::Allow if policies.is_empty() => {
            "allowed (no AuthorizationPolicy applies)".into()
        }
        weft_proxy::security::authz::Decision::Allow => "allowed".into(),
        weft_proxy::security::authz::Decision::Deny(why) => format!("denied: 403 RBAC: access denied ({why})"),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(g) = &self.gateway {
            for s in &g.servers {
                writeln!(f, "gateway:  server {s}")?;
            }
            if g.servers.is_empty() {
                writeln!(f, "gateway:  no server takes this host: 404")?;
            }
            writeln!(f, "edge:     {}", g.decision)?;
        }
        if let Some(reply) = &self.local_reply {
            if let Some(s) = &self.service {
                writeln!(f, "service:  {s}")?;
            }
            return writeln!(f, "result:   {reply}");
        }
        writeln!(f, "service:  {}", self.service.as_deref().unwrap_or("-"))?;
        writeln!(f, "route:    {}", self.route.as_deref().unwrap_or("-"))?;
        match &self.matched {
            Some(m) => writeln!(f, "matched:  {m}")?,
            None => writeln!(f, "matched:  (route has no match: takes every request)")?,
        }
        writeln!(f, "timeout:  {}", self.timeout.as_deref().unwrap_or("none"))?;
        if let Some(r) = &self.retries {
            writeln!(f, "retries:  {r}")?;
        }
        if let Some(x) = &self.fault {
            writeln!(f, "fault:    {x}")?;
        }
        if let Some(x) = &self.cors {
            writeln!(f, "cors:     {x}")?;
        }
        if let Some(x) = &self.answer {
            writeln!(f, "answer:   {x} (not forwarded)")?;
        }
        for m in &self.mirrors {
            writeln!(f, "mirror:   {m}")?;
        }
        if let Some(a) = &self.authorization {
            writeln!(f, "authz:    {a}")?;
        }
        for d in &self.destinations {
            writeln!(
                f,
                "→ {:>5.1} %  {}  ({} endpoints: {})",
                d.share,
                d.cluster,
                d.endpoints.len(),
                d.endpoints.join(", ")
            )?;
            writeln!(f, "           {}", d.cluster_settings)?;
            if let Some(h) = &d.hash {
                writeln!(f, "           {h}")?;
            }
            if let Some(l) = &d.locality {
                writeln!(f, "           {l}")?;
            }
        }
        Ok(())
    }
}

/// One request from `source` (calling as `principal`), explained end to end: the route,
/// destinations and settings from the source's outbound config, then the destination
/// sidecar's authorization decision on its own inbound config. What `weftctl explain`
/// prints and the dashboard shows for an edge.
pub fn call(
    resources: &[crate::istio::Resource],
    registry: &crate::registry::Registry,
    source: &weft_model::Workload,
    principal: &str,
    req: &Request,
) -> Result<Explanation, String> {
    let config = crate::translate::translate(resources, registry, source, "explain").config;
    let mut e = explain(&config, req)?;
    let service = e.service.as_deref().and_then(|s| registry.service(s));
    if let Some(dest) = service.as_ref().and_then(workload_of) {
        let dest_config = crate::translate::translate(resources, registry, &dest, "explain").config;
        e.authorization = Some(authorize(&dest_config, Some(principal), req));
    }
    Ok(e)
}

/// The workload a service's first instance runs as: what its sidecars' inbound side is translated for.
pub fn workload_of(svc: &crate::registry::ServiceView<'_>) -> Option<weft_model::Workload> {
    let inst = svc.instances.first()?;
    Some(weft_model::Workload {
        name: svc.name.to_string(),
        namespace: svc.namespace.to_string(),
        service_account: inst.service_account.clone(),
        labels: inst.labels.clone(),
    })
}

/// Who may call one service, read from the inbound authorization its sidecars get.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Access {
    pub service: String,
    /// One line per policy rule: `ALLOW <callers> → <methods> <paths>  (policy)`;
    /// empty when no AuthorizationPolicy applies (every caller is allowed).
    pub rules: Vec<String>,
}

/// For every service of the registry: which identities may call which
/// operations, as its first instance's sidecar would enforce it.
pub fn access(resources: &[crate::istio::Resource], registry: &crate::registry::Registry) -> Vec<Access> {
    let mut out = Vec::new();
    for svc in registry.services() {
        let Some(workload) = workload_of(&svc) else { continue };
        let config = crate::translate::translate(resources, registry, &workload, "access").config;
        let mut rules = Vec::new();
        for p in &config.inbound.authz {
            let action = format!("{:?}", p.action).to_uppercase();
            let dry = if p.dry_run { " (dry run)" } else { "" };
            if p.rules.is_empty() {
                let what = if p.action == weft_model::authz::AuthzAction::Allow { "nothing" } else { "no request" };
                rules.push(format!("{action:<5} {what}  ({}{dry})", p.name));
            }
            for r in &p.rules {
                rules.push(format!(
                    "{action:<5} {} → {}{}  ({}{dry})",
                    callers(r),
                    operations(r),
                    conditions(r),
                    p.name
                ));
            }
        }
        out.push(Access { service: format!("{}.{}", svc.name, svc.namespace), rules });
    }
    out
}

/// The allowed and refused values of the group's matchers for one attribute (`a | b`, empty when none).
fn values_of(group: &[Matcher], attribute: &str) -> (String, String) {
    group.iter().find(|m| m.attribute() == attribute).map(Matcher::values).unwrap_or_default()
}

fn or_any(values: String, any: &str) -> String {
    if values.is_empty() {
        any.to_string()
    } else {
        values
    }
}

fn callers(r: &AuthzRule) -> String {
    if r.from.is_empty() {
        return "any caller".into();
    }
    let each: Vec<String> = r
        .from
        .iter()
        .map(|g| {
            let (principals, not_principals) = values_of(g, "source.principal");
            let (namespaces, not_namespaces) = values_of(g, "source.namespace");
            let (ips, not_ips) = values_of(g, "source.ip");
            let mut parts = Vec::new();
            if !principals.is_empty() || not_principals.is_empty() && namespaces.is_empty() && ips.is_empty() {
                parts.push(or_any(principals, "any identity"));
            }
            for (what, v) in [
                ("not", not_principals),
                ("namespace", namespaces),
                ("not namespace", not_namespaces),
                ("ip", ips),
                ("not ip", not_ips),
            ] {
                if !v.is_empty() {
                    parts.push(format!("{what} {v}"));
                }
            }
            parts.join(", ")
        })
        .collect();
    each.join("; or ")
}

fn operations(r: &AuthzRule) -> String {
    if r.to.is_empty() {
        return "any operation".into();
    }
    let each: Vec<String> =
        r.to.iter()
            .map(|g| {
                let (methods, not_methods) = values_of(g, "request.method");
                let (paths, not_paths) = values_of(g, "request.path");
                let (hosts, not_hosts) = values_of(g, "request.host");
                let (ports, not_ports) = values_of(g, "destination.port");
                let mut s = format!("{} {}", or_any(methods, "any method"), or_any(paths, "any path"));
                for (what, v) in [
                    ("not methods", not_methods),
                    ("not paths", not_paths),
                    ("hosts", hosts),
                    ("not hosts", not_hosts),
                    ("ports", ports),
                    ("not ports", not_ports),
                ] {
                    if !v.is_empty() {
                        s.push_str(&format!(" ({what} {v})"));
                    }
                }
                s
            })
            .collect();
    each.join("; or ")
}

fn conditions(r: &AuthzRule) -> String {
    r.when
        .iter()
        .map(|m| {
            let (yes, no) = m.values();
            let mut s = format!(" when {}", m.attribute());
            if !yes.is_empty() {
                s.push_str(&format!(" in [{yes}]"));
            }
            if !no.is_empty() {
                s.push_str(&format!(" not in [{no}]"));
            }
            s
        })
        .collect()
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.service)?;
        if self.rules.is_empty() {
            return writeln!(f, "  any caller, any operation (no AuthorizationPolicy applies)");
        }
        for r in &self.rules {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}
