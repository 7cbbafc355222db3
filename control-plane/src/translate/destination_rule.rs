//! DestinationRule → clusters: one per host, port and subset, with the
//! endpoints the subset's labels select and the traffic policy that applies.
//!
//! Size: every field of a DestinationRule's traffic policy and subsets destructured and
//! translated, with Istio's merge and precedence rules.

use super::common::{duration, visible, Translator, ROOT_NAMESPACE};
use crate::istio::types::{
    ClientTls, ConnectionPool, ConsistentHashLb, DestinationRule, H2UpgradePolicy, HttpCookie, HttpSettings,
    LoadBalancer, Maglev, OutlierDetection, SimpleLb, Subset, TcpSettings, TlsMode, TrafficPolicy,
};
use crate::istio::{Resource, Spec};
use crate::registry::{host_matches, resolve_host};
use std::borrow::Cow;
use std::collections::BTreeMap;
use weft_model as model;
use weft_model::AppProtocol;

fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

impl<'a> Translator<'a> {
    /// The DestinationRule for `fqdn`: the workload's namespace first, then the
    /// service's, then the root namespace; the most specific host wins within one.
    /// Several for that same host are merged as Istio merges them: subsets
    /// appended (a name already defined is skipped and reported), the first
    /// `trafficPolicy` kept; first means first by name.
    fn destination_rule_for(&mut self, fqdn: &str, service_ns: &str) -> Option<Cow<'a, DestinationRule>> {
        for ns in [self.workload.namespace.clone(), service_ns.to_string(), ROOT_NAMESPACE.to_string()] {
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
            candidates.sort_by(|(ra, _, a), (rb, _, b)| {
                (a.starts_with('*'), std::cmp::Reverse(a.len()), ra.precedence()).cmp(&(
                    b.starts_with('*'),
                    std::cmp::Reverse(b.len()),
                    rb.precedence(),
                ))
            });
            let Some((first_r, first, host)) = candidates.first() else { continue };
            let same: Vec<&(&Resource, &DestinationRule, String)> =
                candidates.iter().filter(|(_, _, h)| h == host).collect();
            if same.len() == 1 {
                return Some(Cow::Borrowed(*first));
            }
            let mut merged = (*first).clone();
            for (r, dr, _) in &same[1..] {
                let named = |r: &Resource| format!("{}/{}", r.namespace(), r.name());
                match (&merged.traffic_policy, &dr.traffic_policy) {
                    (None, Some(tp)) => merged.traffic_policy = Some(tp.clone()),
                    (Some(_), Some(_)) => self.warnings.push(format!(
                        "DestinationRules {} and {} both set a trafficPolicy for {host}; the first is used (Istio merges them so)",
                        named(first_r),
                        named(r)
                    )),
                    _ => {}
                }
                for subset in &dr.subsets {
                    if merged.subsets.iter().any(|m| m.name == subset.name) {
                        self.warnings.push(format!(
                            "subset {:?} of {host} is defined again by DestinationRule {}; the first definition is used",
                            subset.name,
                            named(r)
                        ));
                    } else {
                        merged.subsets.push(subset.clone());
                    }
                }
            }
            return Some(Cow::Owned(merged));
        }
        None
    }

    /// Adds (once) the cluster for host/port/subset and returns its name.
    pub(super) fn cluster(&mut self, fqdn: &str, port: u16, subset: Option<&str>) -> String {
        let name = cluster_name(port, subset.unwrap_or(""), fqdn);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let svc = self.registry.service(fqdn);
        let entry = if svc.is_none() { self.service_entry_for(fqdn) } else { None };
        let service_ns = match (&svc, &entry) {
            (Some(s), _) => s.namespace,
            (None, Some(e)) => e.resource.namespace(),
            (None, None) => "",
        };
        // `host` and `exportTo` chose the rule; `workloadSelector` is refused by validation.
        let rule = self.destination_rule_for(fqdn, service_ns);
        let (mut policy, subsets) = match rule.as_deref() {
            Some(DestinationRule { host: _, traffic_policy, subsets, export_to: _, workload_selector: _ }) => {
                (traffic_policy.clone().unwrap_or_default(), subsets.as_slice())
            }
            None => (TrafficPolicy::default(), &[][..]),
        };
        let mut selector = BTreeMap::new();
        if let Some(subset) = subset {
            match subsets.iter().find(|s| s.name == subset) {
                Some(Subset { name: _, labels, traffic_policy }) => {
                    selector = labels.clone();
                    if let Some(sp) = traffic_policy {
                        policy = merge(policy, sp.clone());
                    }
                }
                None => {
                    self.warnings.push(format!("subset {subset:?} of {fqdn} is not defined by any DestinationRule: no endpoints (Istio: 503 NC)"));
                    selector.insert("weft.dev/undefined-subset".into(), subset.into());
                }
            }
        }
        let speaks = svc.as_ref().and_then(|s| s.protocol());
        let selected: Vec<&crate::registry::Instance> = svc
            .map(|s| {
                s.instances
                    .iter()
                    .copied()
                    .filter(|i| selector.iter().all(|(k, v)| i.labels.get(k) == Some(v)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(e) = entry {
            // Outside the registry: a ServiceEntry's endpoints, plaintext unless its DestinationRule says
            // ISTIO_MUTUAL (a mesh-internal entry): then the server must prove a `subjectAltNames` identity.
            let tls = (policy.tls.as_ref().and_then(|t| t.mode) == Some(TlsMode::IstioMutual))
                .then(|| model::ClusterTls { identities: e.entry.subject_alt_names.clone() });
            if tls.as_ref().is_some_and(|t| t.identities.is_empty()) {
                self.warnings.push(format!(
                    "{fqdn}: ISTIO_MUTUAL to a ServiceEntry without subjectAltNames proves no identity: every request fails (503)"
                ));
            }
            // The entry's port says what it speaks (only HTTP ports become clusters).
            let speaks = match e.port.kind() {
                Some(crate::istio::types::PortKind::Http { http2: true }) => Some(AppProtocol::Http2),
                _ => Some(AppProtocol::Http),
            };
            let mut cluster = cluster_from(fqdn, &policy, speaks, Vec::new(), tls);
            self.entry_cluster(fqdn, &e, &selector, &mut cluster);
            if cluster.original_dst.is_some()
                && (cluster.tls.is_some()
                    || matches!(policy.tls.as_ref().and_then(|t| t.mode), Some(TlsMode::Simple | TlsMode::Mutual)))
            {
                // Where the app was going cannot be verified against a mesh identity or a name here:
                // fail closed (no endpoints, 503) rather than send plaintext.
                self.warnings.push(format!(
                    "{fqdn}: a DestinationRule asks for TLS to a ServiceEntry with resolution NONE; use STATIC or DNS (requests get 503)"
                ));
                cluster.original_dst = None;
            }
            if let Some(ClientTls {
                mode: Some(mode @ (TlsMode::Simple | TlsMode::Mutual)),
                ca_certificates,
                sni,
                client_certificate,
                private_key,
                credential_name,
                subject_alt_names,
                insecure_skip_verify,
            }) = &policy.tls
            {
                // Validation paired the client certificate with MUTUAL.
                let mutual = *mode == TlsMode::Mutual;
                cluster.tls_origination = Some(model::TlsOrigination {
                    sni: sni.clone().unwrap_or_else(|| fqdn.to_string()),
                    ca_certificates: ca_certificates.clone(),
                    client_certificate: client_certificate.clone().filter(|_| mutual),
                    private_key: private_key.clone().filter(|_| mutual),
                    credential_name: credential_name.clone(),
                    mutual,
                    subject_alt_names: subject_alt_names.clone(),
                    insecure_skip_verify: insecure_skip_verify.unwrap_or(false),
                });
                if insecure_skip_verify == &Some(true) {
                    self.warnings.push(format!(
                        "{fqdn}: insecureSkipVerify: the server's certificate is not verified (anyone on the path can answer)"
                    ));
                }
            }
            self.clusters.insert(name.clone(), cluster);
            return name;
        }
        if let Some(mode @ (TlsMode::Simple | TlsMode::Mutual)) = policy.tls.as_ref().and_then(|t| t.mode) {
            self.warnings.push(format!(
                "{fqdn} is in the mesh: tls mode {mode:?} is for destinations outside it (a ServiceEntry); mesh mTLS is used"
            ));
        }
        let mut endpoints: Vec<model::Endpoint> = selected
            .iter()
            .map(|i| model::Endpoint {
                address: i.address.clone(),
                labels: i.labels.clone(),
                priority: 0,
                locality: None,
            })
            .collect();
        let instance_labels: Vec<&BTreeMap<String, String>> = selected.iter().map(|i| &i.labels).collect();
        let locality_weights = super::locality::apply(
            policy.load_balancer.as_ref().and_then(|lb| lb.locality_lb_setting.as_ref()),
            policy.outlier_detection.is_some(),
            &self.workload.labels,
            &instance_labels,
            &mut endpoints,
        );
        let tls = self.cluster_tls(fqdn, service_ns, &selected, policy.tls.as_ref());
        if policy.outlier_detection.as_ref().is_some_and(|od| od.consecutive_errors.is_some()) {
            self.warnings.push(format!(
                "outlierDetection.consecutiveErrors for {fqdn} is deprecated and ignored, as by Istio; use consecutive5xxErrors"
            ));
        }
        let mut cluster = cluster_from(fqdn, &policy, speaks, endpoints, tls);
        cluster.locality_weights = locality_weights;
        self.clusters.insert(name.clone(), cluster);
        name
    }
}

impl Translator<'_> {
    /// Mutual TLS towards the selected endpoints, proving one of their service accounts, unless
    /// a DestinationRule says `tls: {mode: DISABLE}`, or (Istio's auto-mTLS) the endpoints'
    /// PeerAuthentication is DISABLE: they take plaintext only. Endpoints of one cluster with
    /// different modes get mTLS (a cluster has one TLS setting here) and a warning.
    fn cluster_tls(
        &mut self,
        fqdn: &str,
        service_ns: &str,
        selected: &[&crate::registry::Instance],
        tls: Option<&ClientTls>,
    ) -> Option<model::ClusterTls> {
        let mode = tls.and_then(|t| t.mode);
        if mode == Some(TlsMode::Disable) || selected.is_empty() {
            return None;
        }
        if mode != Some(TlsMode::IstioMutual) {
            let disabled = selected
                .iter()
                .filter(|i| {
                    let server = model::Workload {
                        name: i.labels.get("app").cloned().unwrap_or_default(),
                        namespace: service_ns.to_string(),
                        service_account: i.service_account.clone(),
                        labels: i.labels.clone(),
                    };
                    super::security::peer_authentication(self.resources, &server) == model::MtlsMode::Disable
                })
                .count();
            if disabled == selected.len() {
                return None;
            }
            if disabled > 0 {
                self.warnings.push(format!(
                    "{disabled} of {} endpoints of {fqdn} have PeerAuthentication DISABLE: Weft sends them mTLS like the rest (Istio would send them plaintext); they will refuse it",
                    selected.len()
                ));
            }
        }
        let mut identities: Vec<String> = selected
            .iter()
            .map(|i| format!("spiffe://{}/ns/{service_ns}/sa/{}", self.trust_domain, i.service_account))
            .collect();
        identities.sort();
        identities.dedup();
        Some(model::ClusterTls { identities })
    }
}

/// Subset-level components replace the DR-level ones wholesale (Istio `MergeTrafficPolicy`).
fn merge(base: TrafficPolicy, subset: TrafficPolicy) -> TrafficPolicy {
    let TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        tls,
        port_level_settings,
        tunnel,
        proxy_protocol,
        retry_budget,
    } = subset;
    TrafficPolicy {
        load_balancer: load_balancer.or(base.load_balancer),
        connection_pool: connection_pool.or(base.connection_pool),
        outlier_detection: outlier_detection.or(base.outlier_detection),
        tls: tls.or(base.tls),
        // Refused by validation; merged alike for when they are built.
        port_level_settings: port_level_settings.or(base.port_level_settings),
        tunnel: tunnel.or(base.tunnel),
        proxy_protocol: proxy_protocol.or(base.proxy_protocol),
        retry_budget: retry_budget.or(base.retry_budget),
    }
}

/// Every endpoint is a sidecar, so mTLS is on (Istio's auto-mTLS): the
/// server must prove one of the service accounts its instances run as.
fn cluster_from(
    fqdn: &str,
    policy: &TrafficPolicy,
    speaks: Option<AppProtocol>,
    endpoints: Vec<model::Endpoint>,
    tls: Option<model::ClusterTls>,
) -> model::Cluster {
    let TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        tls: _, // `Translator::cluster_tls`
        port_level_settings: _,
        tunnel: _,
        proxy_protocol: _,
        retry_budget: _,
    } = policy;
    let consistent_hash = load_balancer.as_ref().and_then(|lb| lb.consistent_hash.as_ref()).map(consistent_hash);
    let lb_policy = match load_balancer {
        Some(LoadBalancer {
            simple,
            consistent_hash: _,     // above
            locality_lb_setting: _, // `locality::apply`, in `cluster`
            // Refused by validation:
            warmup_duration_secs: _,
            warmup: _,
        }) => match simple {
            Some(SimpleLb::RoundRobin) => model::LbPolicy::RoundRobin,
            Some(SimpleLb::Random) => model::LbPolicy::Random,
            // Istio: UNSPECIFIED and LEAST_CONN are LEAST_REQUEST; PASSTHROUGH is refused by validation.
            Some(SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified | SimpleLb::Passthrough)
            | None => model::LbPolicy::LeastRequest,
        },
        None => model::LbPolicy::LeastRequest,
    };
    let (tcp, http) = match connection_pool {
        Some(ConnectionPool { tcp, http }) => (tcp.as_ref(), http.as_ref()),
        None => (None, None),
    };
    // Istio overrides the defaults (2³²−1) only with values above 0.
    let positive = |v: &Option<i32>| v.filter(|v| *v > 0).map(|v| v as u32);
    let (tcp_pool, protocol) = (tcp_pool(tcp, positive), protocol(speaks, http));
    let http_pool = match http {
        Some(HttpSettings {
            http1_max_pending_requests,
            http2_max_requests,
            max_requests_per_connection,
            max_retries,
            idle_timeout,
            h2_upgrade_policy: _, // `protocol`
            use_client_protocol: _,
            max_concurrent_streams: _, // refused by validation
        }) => model::HttpPool {
            http1_max_pending_requests: positive(http1_max_pending_requests),
            http2_max_requests: positive(http2_max_requests),
            max_requests_per_connection: positive(max_requests_per_connection),
            max_retries: positive(max_retries),
            idle_timeout: duration(idle_timeout),
        },
        None => model::HttpPool::default(),
    };
    model::Cluster {
        service: Some(fqdn.to_string()),
        // Consistent hashing replaces `simple` (validation refuses both).
        lb_policy: if consistent_hash.is_some() { model::LbPolicy::default() } else { lb_policy },
        consistent_hash,
        locality_weights: None,
        endpoints,
        protocol,
        outlier_detection: outlier_detection.as_ref().map(outlier),
        connection_pool: model::ConnectionPool { tcp: tcp_pool, http: http_pool },
        tls,
        original_dst: None,
        dns: Vec::new(),
        dns_first_only: false,
        tls_origination: None,
    }
}

fn consistent_hash(ch: &ConsistentHashLb) -> model::ConsistentHash {
    let ConsistentHashLb {
        http_header_name,
        http_cookie,
        use_source_ip,
        http_query_parameter_name,
        ring_hash,
        maglev,
        minimum_ring_size,
    } = ch;
    let ring = ring_hash.as_ref().and_then(|r| r.minimum_ring_size).or(*minimum_ring_size).filter(|n| *n > 0);
    model::ConsistentHash {
        header: http_header_name.as_ref().map(|h| h.to_ascii_lowercase()),
        cookie: http_cookie.as_ref().map(|HttpCookie { name, path, ttl, attributes: _ }| model::HashCookie {
            name: name.clone(),
            path: path.clone(),
            ttl: duration(ttl),
        }),
        source_ip: *use_source_ip == Some(true),
        query_parameter: http_query_parameter_name.clone(),
        ring_hash: if maglev.is_some() { None } else { ring },
        maglev: maglev
            .as_ref()
            .map(|Maglev { table_size }| table_size.unwrap_or(weft_model::hash::DEFAULT_MAGLEV_SIZE)),
    }
}

fn tcp_pool(tcp: Option<&TcpSettings>, positive: impl Fn(&Option<i32>) -> Option<u32>) -> model::TcpPool {
    match tcp {
        Some(TcpSettings {
            max_connections,
            connect_timeout,
            // Refused by validation:
            tcp_keepalive: _,
            max_connection_duration: _,
            idle_timeout: _,
        }) => model::TcpPool { max_connections: positive(max_connections), connect_timeout: duration(connect_timeout) },
        None => model::TcpPool::default(),
    }
}

/// Istio's choice of the protocol spoken to a service's endpoints: `useClientProtocol`
/// keeps the caller's; an `http2`/`grpc`/`grpc-web` port is HTTP/2 (whatever
/// `h2UpgradePolicy` says: there is nothing to upgrade); `UPGRADE` makes an `http` port
/// HTTP/2; an `http` port is HTTP/1.1; an unnamed one keeps the caller's (Istio's
/// `use_downstream_protocol` on sniffed ports).
fn protocol(speaks: Option<AppProtocol>, http: Option<&HttpSettings>) -> model::UpstreamProtocol {
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    match speaks {
        _ if http.is_some_and(|h| h.use_client_protocol == Some(true)) => model::UpstreamProtocol::UseClient,
        Some(p) if p.is_http2() => model::UpstreamProtocol::Http2,
        _ if upgrade => model::UpstreamProtocol::Http2,
        Some(_) => model::UpstreamProtocol::Http1,
        None => model::UpstreamProtocol::UseClient,
    }
}

fn outlier(od: &OutlierDetection) -> model::OutlierDetection {
    let OutlierDetection {
        consecutive_5xx_errors,
        consecutive_gateway_errors,
        consecutive_errors: _, // deprecated and ignored, as by Istio; `cluster` warns
        interval,
        base_ejection_time,
        max_ejection_percent,
        min_health_percent,
        split_external_local_origin_errors: _, // refused by validation
        consecutive_local_origin_failures: _,
    } = od;
    model::OutlierDetection {
        consecutive_5xx_errors: *consecutive_5xx_errors,
        consecutive_gateway_errors: *consecutive_gateway_errors,
        interval: duration(interval),
        base_ejection_time: duration(base_ejection_time),
        max_ejection_percent: max_ejection_percent.filter(|v| *v > 0).map(|v| v as u32),
        min_health_percent: min_health_percent.map(|v| v.max(0) as u32),
    }
}
