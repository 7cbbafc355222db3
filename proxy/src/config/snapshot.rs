//! A compiled, immutable config: what a request reads. Built beside the live
//! one, validated, then swapped in whole (one `ArcSwap` in the sidecar's `state`).

use crate::http::route::{Route, VirtualHost};
use crate::upstream::balance::Balancer;
use crate::upstream::endpoint::{ClusterSpec, Registry};
use crate::upstream::limits::Limits;
use crate::upstream::pool::{PoolSettings, Protocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_model::{ProxyConfig, UpstreamProtocol, ValidationError};

/// A cluster as requests see it.
#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    /// The service host, for metrics (`destination_service`).
    pub service: Arc<str>,
    pub balancer: Balancer,
    pub protocol: UpstreamProtocol,
    /// Connection-pool limits; shared with the endpoints' pools, kept across reloads.
    pub limits: Arc<Limits>,
    /// Requests go where the app was going (a ServiceEntry with resolution NONE),
    /// when the destination is one this admits.
    pub original_dst: Option<weft_model::OriginalDst>,
    /// Consistent hashing: what a request's hash is made of.
    pub hash: Option<weft_model::ConsistentHash>,
}

impl Cluster {
    /// The protocol for a request that arrived as `version`. gRPC (HTTP/2 with
    /// `content-type: application/grpc…`) stays HTTP/2 whatever the cluster says: it
    /// cannot live on HTTP/1.1 (trailers), as Istio speaks it to `grpc` ports.
    pub(crate) fn protocol_for(&self, version: http::Version, grpc: bool) -> Protocol {
        match self.protocol {
            _ if grpc && version == http::Version::HTTP_2 => Protocol::Http2,
            UpstreamProtocol::Http1 => Protocol::Http1,
            UpstreamProtocol::Http2 => Protocol::Http2,
            UpstreamProtocol::UseClient => Protocol::of(version),
        }
    }
}

/// Name of the cluster that delivers inbound traffic to the local app.
pub(crate) const INBOUND_CLUSTER: &str = "inbound|app";

/// A compiled config.
#[derive(Debug)]
pub struct Snapshot {
    /// The config as given, for `/config_dump`.
    pub config: Arc<ProxyConfig>,
    /// Every name a service answers to → index in `vhosts`. SipHash, not FxHash, here and
    /// for clusters: the keys come from tenants' YAML (ServiceEntry hosts), and FxHash
    /// collisions are easy to make.
    domains: HashMap<String, usize>,
    /// Wildcard service keys (`*.example.com` as `.example.com`, `*` as ``), longest
    /// suffix first: Envoy's order, tried when no exact name matches.
    wildcards: Vec<(String, usize)>,
    vhosts: Vec<VirtualHost>,
    clusters: HashMap<Arc<str>, Cluster>,
    /// The local app as a one-endpoint cluster, if its address is known.
    pub inbound: Option<Cluster>,
    /// The app's other HTTP ports (`inbound.httpPorts`), each a one-endpoint cluster on its host.
    pub(crate) inbound_ports: Vec<(u16, Cluster)>,
    /// Authorization policies for inbound requests, compiled.
    pub authz: Vec<crate::security::authz::Policy>,
    /// End-user JWT verification for inbound requests, compiled.
    pub jwt: crate::security::jwt::Authenticator,
    /// This workload's own service host (its `app` label, Istio's canonical service): the
    /// inbound `destination_service`, never the caller's Host. Made once per config.
    pub(crate) own_service: Arc<str>,
    /// The request metrics' series of this snapshot's requests, by what decides their labels.
    pub(crate) series: Arc<crate::ops::series::Memo>,
}

impl Snapshot {
    /// Validates and compiles `config`. Endpoint state comes from `registry`,
    /// so it carries over from the previous snapshot.
    pub fn compile(
        config: ProxyConfig,
        registry: &Registry,
        app_override: Option<SocketAddr>,
    ) -> Result<Self, ValidationError> {
        Self::compile_with(config, registry, app_override, &Default::default())
    }

    /// [`Snapshot::compile`] with the DNS answers for clusters whose endpoints are names.
    pub(crate) fn compile_with(
        config: ProxyConfig,
        registry: &Registry,
        app_override: Option<SocketAddr>,
        dns: &crate::upstream::dns::Answers,
    ) -> Result<Self, ValidationError> {
        config.validate()?;
        let ns = config.workload.namespace.clone();
        let mut domains = HashMap::new();
        let mut wildcards = Vec::new();
        let mut vhosts = Vec::with_capacity(config.services.len());
        for (host, service) in &config.services {
            let compile = |routes: &[weft_model::Route], at: &str| {
                routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Route::compile(i, r).map_err(|e| ValidationError {
                            path: format!("services[{host:?}].{at}[{i}]"),
                            message: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let routes = compile(&service.routes, "routes")?;
            let ports = service
                .ports
                .iter()
                .map(|(port, routes)| Ok((*port, compile(routes, &format!("ports[{port}]"))?)))
                .collect::<Result<Vec<_>, ValidationError>>()?;
            match host.strip_prefix('*') {
                Some(suffix) => wildcards.push((suffix.to_ascii_lowercase(), vhosts.len())),
                None => {
                    for name in domain_names(host, &ns) {
                        domains.entry(name).or_insert(vhosts.len());
                    }
                }
            }
            vhosts.push(VirtualHost { name: host.as_str().into(), routes, ports });
        }

        let mut wanted = Vec::with_capacity(config.clusters.len() + 1);
        for (name, c) in &config.clusters {
            let pool = &c.connection_pool;
            let mut endpoints = Vec::with_capacity(c.endpoints.len());
            for e in &c.endpoints {
                let addr: SocketAddr = e.address.parse().map_err(|_| ValidationError {
                    path: format!("clusters[{name:?}].endpoints"),
                    message: format!("{:?} is not an IP:port address", e.address),
                })?;
                endpoints.push((addr, e.labels.clone()));
            }
            for name in &c.dns {
                let answers = dns.get(name).map_or(&[][..], Vec::as_slice);
                let answers = if c.dns_first_only { &answers[..answers.len().min(1)] } else { answers };
                endpoints.extend(answers.iter().map(|a| (*a, Default::default())));
            }
            // TLS that cannot be originated (files missing, unreadable, not PEM) fails this
            // cluster alone, closed: no endpoints (503), never plaintext; the rest applies.
            let origination = match c.tls_origination.as_ref().map(crate::security::tls::Origination::new) {
                Some(Ok(o)) => Some(Arc::new(o)),
                Some(Err(e)) => {
                    tracing::error!(cluster = %name, "TLS origination: {e}: the cluster has no endpoints");
                    endpoints.clear();
                    None
                }
                None => None,
            };
            wanted.push(ClusterSpec {
                name: name.clone(),
                pool: pool.clone(),
                settings: PoolSettings {
                    connect_timeout: pool.connect_timeout(),
                    idle_timeout: pool.idle_timeout(),
                    tls: c.tls.as_ref().map(|t| t.identities.clone().into()),
                    origination,
                    mesh_sni: crate::net::tcp::sni_of_cluster(name)
                        .and_then(|n| rustls::pki_types::ServerName::try_from(n).ok()),
                },
                endpoints,
            });
        }
        let app: Option<SocketAddr> =
            app_override.or_else(|| config.inbound.app.as_deref().and_then(|a| a.parse().ok()));
        // The app, then each of its other HTTP ports on its host: clusters of one endpoint each.
        let other_ports: &[u16] = if app.is_some() { &config.inbound.http_ports } else { &[] };
        let mut locals: Vec<(String, SocketAddr)> = Vec::with_capacity(1 + other_ports.len());
        if let Some(a) = app {
            locals.push((INBOUND_CLUSTER.to_string(), a));
            locals.extend(other_ports.iter().map(|p| (format!("inbound|{p}||"), SocketAddr::new(a.ip(), *p))));
        }
        for (name, addr) in locals {
            wanted.push(ClusterSpec {
                name,
                pool: Default::default(),
                settings: PoolSettings::default(),
                endpoints: vec![(addr, Default::default())],
            });
        }
        let mut resolved = registry.resolve(wanted).into_iter();
        let clusters = config
            .clusters
            .iter()
            .zip(resolved.by_ref())
            .map(|((name, c), (limits, endpoints))| {
                let service = c.service.clone().unwrap_or_else(|| name.clone());
                let mut balancer = Balancer::new(c.lb_policy, endpoints).with_outlier_detection(
                    c.outlier_detection.as_ref().map(crate::upstream::outlier::Settings::from_model),
                );
                if let Some(h) = &c.consistent_hash {
                    balancer = balancer.with_consistent_hash(&h.table(), &registry.hash_tables);
                }
                // Endpoints by name (DNS) come after the listed ones, at level 0 and in no locality.
                let extra = balancer.endpoints().len().saturating_sub(c.endpoints.len());
                let priorities: Vec<u32> =
                    c.endpoints.iter().map(|e| e.priority).chain(std::iter::repeat_n(0, extra)).collect();
                let localities: Vec<Option<String>> =
                    c.endpoints.iter().map(|e| e.locality.clone()).chain(std::iter::repeat_n(None, extra)).collect();
                balancer = balancer.with_localities(&priorities, &localities, c.locality_weights.as_ref());
                let cluster = Cluster {
                    name: name.as_str().into(),
                    service: service.into(),
                    balancer,
                    protocol: c.protocol,
                    limits,
                    original_dst: c.original_dst.clone(),
                    hash: c.consistent_hash.clone(),
                };
                (cluster.name.clone(), cluster)
            })
            .collect();
        let local = |name: Arc<str>, (limits, endpoints)| Cluster {
            name,
            service: config.workload.name.as_str().into(),
            balancer: Balancer::new(weft_model::LbPolicy::RoundRobin, endpoints),
            protocol: config.inbound.protocol,
            limits,
            original_dst: None,
            hash: None,
        };
        let inbound = app.and_then(|_| resolved.next()).map(|r| local(INBOUND_CLUSTER.into(), r));
        let inbound_ports: Vec<(u16, Cluster)> =
            other_ports.iter().zip(resolved).map(|(p, r)| (*p, local(format!("inbound|{p}||").into(), r))).collect();
        let authz = config.inbound.authz.iter().map(crate::security::authz::Policy::compile).collect();
        let jwt = crate::security::jwt::Authenticator::compile(&config.inbound.jwt)
            .map_err(|(path, message)| ValidationError { path, message })?;
        let own_service: Arc<str> = match config.workload.labels.get("app") {
            Some(app) => format!("{app}.{}.svc.cluster.local", config.workload.namespace).into(),
            None => "unknown".into(),
        };
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Snapshot {
            config: Arc::new(config),
            domains,
            wildcards,
            vhosts,
            clusters,
            inbound,
            inbound_ports,
            authz,
            jwt,
            own_service,
            series: Default::default(),
        })
    }

    /// The service a `Host`/`:authority` names, port and case ignored.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let host = strip_port(authority);
        let index = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.domains.get(&host.to_ascii_lowercase())
        } else {
            self.domains.get(host)
        };
        let index = index.or_else(|| {
            let suffix_of = |s: &str| {
                host.len() > s.len() && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            };
            self.wildcards.iter().find(|(s, _)| s.is_empty() || suffix_of(s)).map(|(_, i)| i)
        });
        index.map(|&i| &self.vhosts[i])
    }

    /// The cluster of the app's other HTTP `port`, if it has one.
    pub fn inbound_port(&self, port: u16) -> Option<&Cluster> {
        self.inbound_ports.iter().find(|(p, _)| *p == port).map(|(_, c)| c)
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }
}

/// The names a service key answers to, like Istio's virtual-host domains:
/// `name.ns.svc.<domain>` also as `name.ns.svc` and `name.ns`, and as `name`
/// from its own namespace.
fn domain_names(host: &str, own_ns: &str) -> Vec<String> {
    let mut names = vec![host.to_ascii_lowercase()];
    if let Some((name_ns, _)) = host.split_once(".svc.") {
        names.push(format!("{name_ns}.svc"));
        names.push(name_ns.to_string());
        if let Some((name, ns)) = name_ns.split_once('.') {
            if ns == own_ns {
                names.push(name.to_string());
            }
        }
    }
    names
}

fn strip_port(authority: &str) -> &str {
    crate::http::headers::split_port(authority).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_follow_istio() {
        assert_eq!(
            domain_names("orders.prod.svc.cluster.local", "prod"),
            ["orders.prod.svc.cluster.local", "orders.prod.svc", "orders.prod", "orders"]
        );
        assert_eq!(
            domain_names("orders.prod.svc.cluster.local", "dev").len(),
            3,
            "short name only from its own namespace"
        );
        assert_eq!(domain_names("api.example.com", "prod"), ["api.example.com"]);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a:80"), "a");
        assert_eq!(strip_port("a"), "a");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
