//! Istio resources + the service registry → one workload's `ProxyConfig`.
//! Pure functions: no I/O, no clock, the same input gives the same output
//! (golden-tested). Semantics follow shared/ISTIO-SEMANTICS.md §1–§2.

use crate::istio::types::{self as istio, DestinationRule, HttpRoute, TrafficPolicy, VirtualService};
use crate::istio::{Resource, Spec};
use crate::registry::{host_matches, resolve_host, Registry, ServiceView};
use std::collections::BTreeMap;
use weft_model as model;

/// Istio's root namespace: DestinationRules there apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The result, with what the user should know about (IST0109-like conflicts,
/// routes to hosts or subsets that do not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub config: model::ProxyConfig,
    pub warnings: Vec<String>,
}

/// Compiles the config of `workload` in the default trust domain (`cluster.local`).
pub fn translate(
    resources: &[Resource],
    registry: &Registry,
    workload: &model::Workload,
    version: &str,
) -> Translation {
    translate_in(resources, registry, workload, version, crate::ca::DEFAULT_TRUST_DOMAIN)
}

/// Compiles the config of `workload`; server identities are SPIFFE IDs of `trust_domain`.
pub fn translate_in(
    resources: &[Resource],
    registry: &Registry,
    workload: &model::Workload,
    version: &str,
    trust_domain: &str,
) -> Translation {
    let mut t =
        Translator { resources, registry, workload, trust_domain, warnings: Vec::new(), clusters: BTreeMap::new() };
    let mut services = BTreeMap::new();
    for svc in registry.services() {
        let fqdn = svc.fqdn();
        let routes = match t.virtual_service_for(&fqdn) {
            Some((vs, ns)) => t.routes(vs, ns, &svc),
            None => vec![t.default_route(&svc)],
        };
        if !routes.is_empty() {
            services.insert(fqdn, model::Service { routes });
        }
    }
    let clusters = std::mem::take(&mut t.clusters);
    Translation {
        config: model::ProxyConfig {
            api_version: model::API_VERSION.into(),
            version: version.into(),
            workload: workload.clone(),
            services,
            clusters,
            inbound: model::Inbound {
                mtls: peer_authentication(resources, workload),
                authz: authorization(resources, workload),
                ..Default::default()
            },
            outbound_traffic_policy: outbound_traffic_policy(resources, workload, &mut t.warnings),
            trust: None,
            path_normalization: None,
        },
        warnings: t.warnings,
    }
}

struct Translator<'a> {
    trust_domain: &'a str,
    resources: &'a [Resource],
    registry: &'a Registry,
    workload: &'a model::Workload,
    warnings: Vec<String>,
    clusters: BTreeMap<String, model::Cluster>,
}

/// `exportTo` as Istio reads it: empty or `*` is everyone, `.` the resource's namespace.
fn visible(export_to: &[String], resource_ns: &str, viewer_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| e == "*" || e == viewer_ns || (e == "." && resource_ns == viewer_ns))
}

fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

fn duration(text: &Option<String>) -> Option<std::time::Duration> {
    text.as_deref().and_then(|t| model::duration::parse(t).ok())
}

impl<'a> Translator<'a> {
    /// The VirtualService for `fqdn` visible to this workload. With several, the
    /// first by namespace/name wins (deterministic) and the rest are reported.
    fn virtual_service_for(&mut self, fqdn: &str) -> Option<(&'a VirtualService, &'a str)> {
        let mut found: Vec<(&'a Resource, &'a VirtualService)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(vs) => Some((r, vs)),
                _ => None,
            })
            .filter(|(r, vs)| {
                (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
                    && visible(&vs.export_to, r.namespace(), &self.workload.namespace)
                    && vs.hosts.iter().any(|h| host_matches(&resolve_host(h, r.namespace()), fqdn))
            })
            .collect();
        found.sort_by(|a, b| (a.0.namespace(), a.0.name()).cmp(&(b.0.namespace(), b.0.name())));
        if found.len() > 1 {
            let names: Vec<String> = found.iter().map(|(r, _)| format!("{}/{}", r.namespace(), r.name())).collect();
            self.warnings.push(format!(
                "host {fqdn} is claimed by several VirtualServices ({}); {} is used (Istio IST0109)",
                names.join(", "),
                names[0]
            ));
        }
        found.first().map(|(r, vs)| (*vs, r.namespace()))
    }

    /// The DestinationRule for `fqdn`: the workload's namespace first, then the
    /// service's, then the root namespace; the most specific host wins within one.
    fn destination_rule_for(&self, fqdn: &str, service_ns: &str) -> Option<&'a DestinationRule> {
        for ns in [self.workload.namespace.as_str(), service_ns, ROOT_NAMESPACE] {
            let mut candidates: Vec<(&'a Resource, &'a DestinationRule, String)> = self
                .resources
                .iter()
                .filter(|r| r.namespace() == ns)
                .filter_map(|r| match &r.spec {
                    Spec::DestinationRule(dr) => Some((r, dr, resolve_host(&dr.host, r.namespace()))),
                    _ => None,
                })
                .filter(|(r, dr, host)| {
                    host_matches(host, fqdn) && visible(&dr.export_to, r.namespace(), &self.workload.namespace)
                })
                .collect();
            // Exact hosts before wildcards, longer wildcards before shorter.
            candidates.sort_by_key(|(r, _, host)| {
                (host.starts_with('*'), std::cmp::Reverse(host.len()), r.name().to_string())
            });
            if let Some((_, dr, _)) = candidates.first() {
                return Some(dr);
            }
        }
        None
    }

    fn default_route(&mut self, svc: &ServiceView<'_>) -> model::Route {
        let fqdn = svc.fqdn();
        let cluster = self.cluster(&fqdn, svc.port, None);
        model::Route {
            name: Some("default".into()),
            matches: Vec::new(),
            route: vec![model::Destination { cluster, weight: 100, headers: None }],
            timeout: None,
            retries: None,
            fault: None,
            headers: None,
            rewrite: None,
        }
    }

    fn routes(&mut self, vs: &'a VirtualService, vs_ns: &str, svc: &ServiceView<'_>) -> Vec<model::Route> {
        let mut out = Vec::new();
        for (i, rule) in vs.http.iter().enumerate() {
            let matches: Vec<model::Match> =
                rule.matches.iter().filter(|m| self.selects(m, svc.port)).map(translate_match).collect();
            if !rule.matches.is_empty() && matches.is_empty() {
                continue; // Every match entry is for other workloads or ports.
            }
            let catch_all = matches.is_empty();
            out.push(self.route(i, rule, matches, vs_ns));
            if catch_all {
                break; // Later rules are unreachable.
            }
        }
        out
    }

    /// Config-time selectors: sourceLabels, sourceNamespace, port.
    fn selects(&self, m: &istio::HttpMatchRequest, port: u16) -> bool {
        let labels_ok = m.source_labels.iter().all(|(k, v)| self.workload.labels.get(k) == Some(v));
        let ns_ok = m.source_namespace.as_deref().is_none_or(|ns| ns == self.workload.namespace);
        let port_ok = m.port.is_none_or(|p| p == u32::from(port));
        labels_ok && ns_ok && port_ok
    }

    fn route(&mut self, index: usize, rule: &HttpRoute, matches: Vec<model::Match>, vs_ns: &str) -> model::Route {
        let mut destinations = Vec::new();
        for d in &rule.route {
            let fqdn = resolve_host(&d.destination.host, vs_ns);
            let port = match (&d.destination.port, self.registry.service(&fqdn)) {
                (Some(p), _) => p.number as u16,
                (None, Some(s)) => s.port,
                (None, None) => 80,
            };
            if self.registry.service(&fqdn).is_none() {
                self.warnings.push(format!(
                    "route {} sends traffic to {fqdn}, which has no registered instances",
                    rule_name(rule, index)
                ));
            }
            let cluster = self.cluster(&fqdn, port, d.destination.subset.as_deref());
            destinations.push(model::Destination {
                cluster,
                weight: d.weight.unwrap_or(0).max(0) as u32,
                headers: d.headers.as_ref().map(|h| headers(h).0),
            });
        }
        let (route_headers, authority) = rule.headers.as_ref().map(headers).map_or((None, None), |(h, a)| (Some(h), a));
        let rewrite = match (&rule.rewrite, authority) {
            (None, None) => None,
            (rw, header_authority) => Some(model::Rewrite {
                uri: rw.as_ref().and_then(|r| r.uri.clone()),
                authority: rw.as_ref().and_then(|r| r.authority.clone()).or(header_authority),
            }),
        };
        model::Route {
            name: Some(rule_name(rule, index)),
            matches,
            route: destinations,
            timeout: duration(&rule.timeout),
            retries: rule.retries.as_ref().map(retry),
            fault: rule.fault.as_ref().and_then(fault),
            headers: route_headers.filter(|h| *h != model::Headers::default()),
            rewrite,
        }
    }

    /// Adds (once) the cluster for host/port/subset and returns its name.
    fn cluster(&mut self, fqdn: &str, port: u16, subset: Option<&str>) -> String {
        let name = cluster_name(port, subset.unwrap_or(""), fqdn);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let svc = self.registry.service(fqdn);
        let service_ns = svc.as_ref().map_or("", |s| s.namespace);
        let dr = self.destination_rule_for(fqdn, service_ns);
        let mut policy = dr.and_then(|d| d.traffic_policy.clone()).unwrap_or_default();
        let mut selector = BTreeMap::new();
        if let Some(subset) = subset {
            match dr.and_then(|d| d.subsets.iter().find(|s| s.name == subset)) {
                Some(s) => {
                    selector = s.labels.clone();
                    if let Some(sp) = &s.traffic_policy {
                        policy = merge(policy, sp.clone());
                    }
                }
                None => {
                    self.warnings.push(format!("subset {subset:?} of {fqdn} is not defined by any DestinationRule: no endpoints (Istio: 503 NC)"));
                    selector.insert("weft.dev/undefined-subset".into(), subset.into());
                }
            }
        }
        let selected: Vec<&crate::registry::Instance> = svc
            .map(|s| {
                s.instances
                    .iter()
                    .copied()
                    .filter(|i| selector.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
                    .collect()
            })
            .unwrap_or_default();
        let endpoints =
            selected.iter().map(|i| model::Endpoint { address: i.address.clone(), labels: i.labels.clone() }).collect();
        let mut identities: Vec<String> = selected
            .iter()
            .map(|i| format!("spiffe://{}/ns/{service_ns}/sa/{}", self.trust_domain, i.service_account))
            .collect();
        identities.sort();
        identities.dedup();
        let tls = (!identities.is_empty()).then_some(model::ClusterTls { identities });
        self.clusters.insert(name.clone(), cluster_from(fqdn, &policy, endpoints, tls));
        name
    }
}

fn rule_name(rule: &HttpRoute, index: usize) -> String {
    rule.name.clone().unwrap_or_else(|| format!("route-{index}"))
}

/// Subset-level components replace the DR-level ones wholesale (Istio `MergeTrafficPolicy`).
fn merge(base: TrafficPolicy, subset: TrafficPolicy) -> TrafficPolicy {
    TrafficPolicy {
        load_balancer: subset.load_balancer.or(base.load_balancer),
        connection_pool: subset.connection_pool.or(base.connection_pool),
        outlier_detection: subset.outlier_detection.or(base.outlier_detection),
        tls: subset.tls.or(base.tls),
        ..base
    }
}

/// Every endpoint is a sidecar, so mTLS is on (Istio's auto-mTLS): the
/// server must prove one of the service accounts its instances run as.
fn cluster_from(
    fqdn: &str,
    p: &TrafficPolicy,
    endpoints: Vec<model::Endpoint>,
    tls: Option<model::ClusterTls>,
) -> model::Cluster {
    let lb_policy = match p.load_balancer.as_ref().and_then(|lb| lb.simple.as_deref()) {
        Some("ROUND_ROBIN") => model::LbPolicy::RoundRobin,
        Some("RANDOM") => model::LbPolicy::Random,
        _ => model::LbPolicy::LeastRequest,
    };
    let http = p.connection_pool.as_ref().and_then(|c| c.http.as_ref());
    let tcp = p.connection_pool.as_ref().and_then(|c| c.tcp.as_ref());
    let protocol = match http {
        Some(h) if h.use_client_protocol == Some(true) => model::UpstreamProtocol::UseClient,
        Some(h) if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") => model::UpstreamProtocol::Http2,
        _ => model::UpstreamProtocol::Http1,
    };
    // Istio overrides the defaults (2³²−1) only with values above 0.
    let positive = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| v as u32);
    let connection_pool = model::ConnectionPool {
        tcp: model::TcpPool {
            max_connections: positive(tcp.and_then(|t| t.max_connections)),
            connect_timeout: tcp.and_then(|t| duration(&t.connect_timeout)),
        },
        http: model::HttpPool {
            http1_max_pending_requests: positive(http.and_then(|h| h.http1_max_pending_requests)),
            http2_max_requests: positive(http.and_then(|h| h.http2_max_requests)),
            max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection)),
            max_retries: positive(http.and_then(|h| h.max_retries)),
            idle_timeout: http.and_then(|h| duration(&h.idle_timeout)),
        },
    };
    let outlier_detection = p.outlier_detection.as_ref().map(|od| model::OutlierDetection {
        consecutive_5xx_errors: od.consecutive_5xx_errors,
        consecutive_gateway_errors: od.consecutive_gateway_errors,
        interval: duration(&od.interval),
        base_ejection_time: duration(&od.base_ejection_time),
        max_ejection_percent: od.max_ejection_percent.filter(|v| *v > 0).map(|v| v as u32),
        min_health_percent: od.min_health_percent.map(|v| v.max(0) as u32),
    });
    model::Cluster {
        service: Some(fqdn.to_string()),
        lb_policy,
        endpoints,
        protocol,
        outlier_detection,
        connection_pool,
        tls,
    }
}

fn string_match(m: &istio::StringMatch) -> model::StringMatch {
    model::StringMatch { exact: m.exact.clone(), prefix: m.prefix.clone(), regex: m.regex.clone() }
}

fn translate_match(m: &istio::HttpMatchRequest) -> model::Match {
    // Istio ignores these keys under `headers`: they are pseudo-headers matched elsewhere.
    let header_map = |h: &BTreeMap<String, istio::StringMatch>| {
        h.iter()
            .filter(|(k, _)| !["uri", "scheme", "method", "authority"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), string_match(v)))
            .collect()
    };
    model::Match {
        name: m.name.clone(),
        uri: m.uri.as_ref().map(string_match),
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        method: m.method.as_ref().map(string_match),
        authority: m.authority.as_ref().map(string_match),
        headers: header_map(&m.headers),
        without_headers: header_map(&m.without_headers),
        query_params: m.query_params.iter().map(|(k, v)| (k.clone(), string_match(v))).collect(),
    }
}

fn retry(r: &istio::HttpRetry) -> model::Retry {
    if r.attempts <= 0 {
        return model::Retry {
            attempts: 0,
            per_try_timeout: None,
            retry_on: vec![],
            retriable_status_codes: vec![],
            backoff: None,
        };
    }
    let mut retry_on = Vec::new();
    let mut codes = Vec::new();
    for cond in r.retry_on.as_deref().unwrap_or("").split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if let Ok(code) = cond.parse::<u16>() {
            codes.push(code);
            if !retry_on.contains(&model::RetryOn::RetriableStatusCodes) {
                retry_on.push(model::RetryOn::RetriableStatusCodes);
            }
        } else if let Ok(c) = serde_json::from_value::<model::RetryOn>(serde_json::Value::String(cond.into())) {
            if !retry_on.contains(&c) {
                retry_on.push(c);
            }
        }
    }
    model::Retry {
        attempts: r.attempts as u32,
        per_try_timeout: duration(&r.per_try_timeout),
        retry_on,
        retriable_status_codes: codes,
        backoff: duration(&r.backoff),
    }
}

fn fault(f: &istio::HttpFault) -> Option<model::Fault> {
    let delay = f.delay.as_ref().and_then(|d| {
        Some(model::FaultDelay {
            fixed_delay: duration(&d.fixed_delay)?,
            // `percentage` wins; the deprecated int `percent` is the fallback (default 0).
            percentage: d.percentage.as_ref().map_or_else(|| f64::from(d.percent.unwrap_or(0)), |p| p.value),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        Some(model::FaultAbort {
            http_status: a.http_status? as u16,
            percentage: a.percentage.as_ref().map_or(0.0, |p| p.value),
        })
    });
    (delay.is_some() || abort.is_some()).then_some(model::Fault { delay, abort })
}

/// Header operations; `host`/`:authority` in `set`/`add` become an authority rewrite.
fn headers(h: &istio::Headers) -> (model::Headers, Option<String>) {
    let mut authority = None;
    let mut ops = |o: &Option<istio::HeaderOperations>, request: bool| -> model::HeaderOps {
        let Some(o) = o else { return model::HeaderOps::default() };
        let mut take = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(k, v)| {
                    let is_authority = k.eq_ignore_ascii_case("host") || k.as_str() == ":authority";
                    if is_authority && request {
                        authority = Some((*v).clone());
                    }
                    !is_authority && !k.starts_with(':')
                })
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        model::HeaderOps {
            set: take(&o.set),
            add: take(&o.add),
            remove: o.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
        }
    };
    let request = ops(&h.request, true);
    let response = ops(&h.response, false);
    (model::Headers { request, response }, authority)
}

/// The resources of one kind that may apply to `workload`, in Istio's order of
/// precedence: its namespace's whose selector matches it, its namespace's
/// without a selector, the root namespace's without one; each level by name.
type Levels<'a, T> = [Vec<(&'a Resource, &'a T)>; 3];

fn by_precedence<'a, T>(
    resources: &'a [Resource],
    workload: &model::Workload,
    spec: fn(&Spec) -> Option<&T>,
    selector: fn(&T) -> Option<&BTreeMap<String, String>>,
) -> Levels<'a, T> {
    let mut all: Vec<(&Resource, &T)> = resources.iter().filter_map(|r| Some((r, spec(&r.spec)?))).collect();
    all.sort_by(|a, b| a.0.name().cmp(b.0.name()));
    let ns = workload.namespace.as_str();
    let selects = |t: &T| selector(t).is_some_and(|l| l.iter().all(|(k, v)| workload.labels.get(k) == Some(v)));
    let level = |keep: &dyn Fn(&Resource, &T) -> bool| all.iter().copied().filter(|(r, t)| keep(r, t)).collect();
    [
        level(&|r, t| r.namespace() == ns && selects(t)),
        level(&|r, t| r.namespace() == ns && selector(t).is_none()),
        level(&|r, t| r.namespace() == ROOT_NAMESPACE && selector(t).is_none()),
    ]
}

/// The mTLS mode for `workload`: workload-level (selector matches) over
/// namespace-level over mesh-level (root namespace); UNSET inherits; the
/// default is PERMISSIVE (Istio). Ties go to the first by name.
pub fn peer_authentication(resources: &[Resource], workload: &model::Workload) -> model::MtlsMode {
    let levels = by_precedence(
        resources,
        workload,
        |s| match s {
            Spec::PeerAuthentication(pa) => Some(pa),
            _ => None,
        },
        |pa| pa.selector.as_ref().map(|s| &s.match_labels),
    );
    let mode_of = |pa: &istio::PeerAuthentication| match pa.mtls.as_ref().and_then(|m| m.mode.as_deref()) {
        Some("STRICT") => Some(model::MtlsMode::Strict),
        Some("PERMISSIVE") => Some(model::MtlsMode::Permissive),
        Some("DISABLE") => Some(model::MtlsMode::Disable),
        _ => None,
    };
    let mode = levels.iter().filter_map(|level| level.first()).find_map(|(_, pa)| mode_of(pa));
    mode.unwrap_or(model::MtlsMode::Permissive)
}

/// The workload's Sidecar resource, as Istio picks it: the first level of
/// [`by_precedence`] that has one (ties go to the first by name, and are
/// reported: Istio calls them undefined, IST0110); then that resource's
/// `outboundTrafficPolicy.mode`, with no fallback to a lower level (as Istio).
/// `None`: the sidecar's own default (MeshConfig's, ALLOW_ANY).
pub fn outbound_traffic_policy(
    resources: &[Resource],
    workload: &model::Workload,
    warnings: &mut Vec<String>,
) -> Option<model::OutboundTrafficPolicy> {
    let levels = by_precedence(
        resources,
        workload,
        |s| match s {
            Spec::Sidecar(sc) => Some(sc),
            _ => None,
        },
        |sc| sc.workload_selector.as_ref().map(|s| &s.labels),
    );
    let found = levels.into_iter().find(|level| !level.is_empty())?;
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|(r, _)| format!("{}/{}", r.namespace(), r.name())).collect();
        warnings.push(format!(
            "workload {}/{} is selected by several Sidecars ({}); {} is used (Istio IST0110)",
            workload.namespace,
            workload.name,
            names.join(", "),
            names[0]
        ));
    }
    match found[0].1.outbound_traffic_policy.as_ref()?.mode.as_deref()? {
        "REGISTRY_ONLY" => Some(model::OutboundTrafficPolicy::RegistryOnly),
        "ALLOW_ANY" => Some(model::OutboundTrafficPolicy::AllowAny),
        _ => None,
    }
}

/// The AuthorizationPolicies that apply to `workload`: those of its namespace
/// whose selector matches (or that have none), and those of the root namespace
/// (mesh-wide without a selector, any namespace with one).
pub fn authorization(resources: &[Resource], workload: &model::Workload) -> Vec<model::authz::AuthzPolicy> {
    use model::authz as az;
    let mut out = Vec::new();
    for r in resources {
        let Spec::AuthorizationPolicy(ap) = &r.spec else { continue };
        let ns_ok = r.namespace() == workload.namespace || r.namespace() == ROOT_NAMESPACE;
        let selected =
            ap.selector.as_ref().is_none_or(|s| s.match_labels.iter().all(|(k, v)| workload.labels.get(k) == Some(v)));
        if !ns_ok || !selected {
            continue;
        }
        let action = match ap.action.as_deref() {
            Some("DENY") => az::AuthzAction::Deny,
            Some("AUDIT") => az::AuthzAction::Audit,
            _ => az::AuthzAction::Allow,
        };
        let rules = ap
            .rules
            .iter()
            .flatten()
            .map(|rule| az::AuthzRule {
                from: rule
                    .from
                    .iter()
                    .map(|f| az::AuthzSource {
                        principals: f.source.principals.clone(),
                        not_principals: f.source.not_principals.clone(),
                        namespaces: f.source.namespaces.clone(),
                        not_namespaces: f.source.not_namespaces.clone(),
                        ip_blocks: f.source.ip_blocks.clone(),
                        not_ip_blocks: f.source.not_ip_blocks.clone(),
                    })
                    .collect(),
                to: rule
                    .to
                    .iter()
                    .map(|t| {
                        let o = &t.operation;
                        az::AuthzOperation {
                            hosts: o.hosts.clone(),
                            not_hosts: o.not_hosts.clone(),
                            ports: o.ports.clone(),
                            not_ports: o.not_ports.clone(),
                            methods: o.methods.clone(),
                            not_methods: o.not_methods.clone(),
                            paths: o.paths.clone(),
                            not_paths: o.not_paths.clone(),
                        }
                    })
                    .collect(),
                when: rule
                    .when
                    .iter()
                    .map(|c| az::AuthzCondition {
                        key: c.key.clone(),
                        values: c.values.clone(),
                        not_values: c.not_values.clone(),
                    })
                    .collect(),
            })
            .collect();
        out.push(az::AuthzPolicy {
            name: format!("ns[{}]-policy[{}]", r.namespace(), r.name()),
            action,
            rules,
            dry_run: r.metadata.annotations.get("istio.io/dry-run").is_some_and(|v| v == "true"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
