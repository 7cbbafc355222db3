//! The service registry as the control plane sees it: which instances of
//! which service run where, with which labels and service account. In etcd it
//! lives under `registry/<ns>/<service>/<service account>:<instance>` (the
//! control plane writes it for sidecars whose certificate proves the service
//! account); tests and `weftctl translate` read it from YAML.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a workload proven to be `ns`/`sa`, with `labels`, may register as
/// an endpoint of `service` in `ns` (its certificate's namespace: no identity
/// registers in another). Two rules, and nothing else:
/// - the service account named like the service (Kubernetes' and Istio's
///   convention; the shop, `make demo` and `deploy/` follow it: order-service
///   v1 and v2 both run as `order-service`);
/// - a WorkloadGroup in `ns` whose `template.serviceAccount` is `sa` and whose
///   `metadata.labels.app` is `service`, for workloads that carry all the
///   group's labels (Istio's auto-registration).
pub fn may_serve(
    resources: &[crate::istio::Resource],
    ns: &str,
    sa: &str,
    service: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    sa == service
        || resources.iter().any(|r| match &r.spec {
            crate::istio::Spec::WorkloadGroup(g) => {
                r.namespace() == ns
                    && g.template.service_account.as_deref() == Some(sa)
                    && g.metadata.labels.get("app").map(String::as_str) == Some(service)
                    && g.metadata.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            }
            _ => false,
        })
}

pub use crate::istio::name_ok;

/// The default cluster domain of service hosts.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// One running instance of a service (one pod), reached through its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// Address of the instance's sidecar inbound listener, `IP:port`.
    pub address: String,
    /// Pod labels (`app`, `version`, ...); subsets select on them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_sa")]
    pub service_account: String,
    /// The service port the instance serves; default 80.
    #[serde(default = "default_port")]
    pub port: u16,
    /// What the port speaks (Istio: its name or `appProtocol`); absent: detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<weft_model::AppProtocol>,
    /// The service's other ports the instance serves (a multi-port Service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_ports: Vec<weft_model::ServicePort>,
    /// The port of its sidecar's `/stats/prometheus`, on the address's host (the control
    /// plane never takes another host from a sidecar: see `trust_advertised_address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
}

fn default_sa() -> String {
    "default".into()
}

fn default_port() -> u16 {
    80
}

/// Instances by namespace, service and instance id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Registry {
    pub namespaces: BTreeMap<String, BTreeMap<String, BTreeMap<String, Instance>>>,
}

/// A service as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub port: u16,
    pub instances: Vec<&'a Instance>,
}

impl ServiceView<'_> {
    /// What the service's port speaks, as far as its callers care (HTTP/1.1 or HTTP/2): the
    /// instances' word when they agree on that; when they do not (a rollout renaming the
    /// port, an older sidecar that says nothing, an instance that says otherwise),
    /// detection — the caller's protocol — which every instance's sidecar serves (each
    /// speaks to its own app as its own `--app-protocol` says).
    pub fn protocol(&self) -> Option<weft_model::AppProtocol> {
        let first = self.instances.first()?.protocol?;
        let kind = |p: weft_model::AppProtocol| (p.is_http2(), p == weft_model::AppProtocol::Tcp);
        self.instances.iter().all(|i| i.protocol.is_some_and(|p| kind(p) == kind(first))).then_some(first)
    }

    /// The ports some instance serves as opaque TCP (its service port or another one).
    pub fn tcp_ports(&self) -> std::collections::BTreeSet<u16> {
        self.instances.iter().flat_map(|i| i.tcp_ports()).collect()
    }

    /// The other ports (beside the service port) some instance serves as HTTP, and no instance as TCP.
    pub fn other_http_ports(&self) -> std::collections::BTreeSet<u16> {
        let tcp = self.tcp_ports();
        self.instances
            .iter()
            .flat_map(|i| i.other_http_ports())
            .filter(|p| !tcp.contains(p) && *p != self.port)
            .collect()
    }
}

impl Instance {
    /// Its ports that speak opaque TCP.
    pub fn tcp_ports(&self) -> impl Iterator<Item = u16> + '_ {
        let main = weft_model::ServicePort { port: self.port, protocol: self.protocol };
        std::iter::once(main)
            .chain(self.other_ports.iter().copied())
            .filter(|p| p.protocol == Some(weft_model::AppProtocol::Tcp))
            .map(|p| p.port)
    }

    /// Its other ports that speak HTTP (named so, or unnamed: detected).
    pub fn other_http_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.other_ports.iter().filter(|p| p.protocol != Some(weft_model::AppProtocol::Tcp)).map(|p| p.port)
    }
}

impl ServiceView<'_> {
    pub fn fqdn(&self) -> String {
        format!("{}.{}.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }
}

impl Registry {
    pub fn insert(&mut self, namespace: &str, service: &str, id: &str, instance: Instance) {
        self.namespaces
            .entry(namespace.into())
            .or_default()
            .entry(service.into())
            .or_default()
            .insert(id.into(), instance);
    }

    /// Every service, in a stable order.
    pub fn services(&self) -> Vec<ServiceView<'_>> {
        self.namespaces
            .iter()
            .flat_map(|(ns, services)| {
                services.iter().map(move |(name, instances)| ServiceView {
                    name,
                    namespace: ns,
                    port: instances.values().next().map_or(80, |i| i.port),
                    instances: instances.values().collect(),
                })
            })
            .collect()
    }

    /// The service with this fully qualified host, if any.
    pub fn service(&self, fqdn: &str) -> Option<ServiceView<'_>> {
        let (name, rest) = fqdn.split_once('.')?;
        let (ns, domain) = rest.split_once('.')?;
        if domain != CLUSTER_DOMAIN {
            return None;
        }
        let (ns, services) = self.namespaces.get_key_value(ns)?;
        let (name, instances) = services.get_key_value(name)?;
        Some(ServiceView {
            name,
            namespace: ns,
            port: instances.values().next().map_or(80, |i| i.port),
            instances: instances.values().collect(),
        })
    }
}

/// Resolves a host as written in a resource of namespace `ns` to its FQDN as
/// Istio does (`ResolveShortnameToFQDN`): only a dot-less short name is in `ns`;
/// `name.ns` and external names (`api.example.com`, `httpbin.org`) stay as
/// written; `name.ns.svc` gets the cluster domain.
pub fn resolve_host(host: &str, ns: &str) -> String {
    if host.ends_with(CLUSTER_DOMAIN) || host.starts_with('*') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_string();
    }
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.{CLUSTER_DOMAIN}"),
        _ if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}

/// Whether a resolved host pattern (maybe `*.suffix`) covers `fqdn`.
pub fn host_matches(pattern: &str, fqdn: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => fqdn.ends_with(suffix),
        None => pattern == fqdn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_like_istio() {
        assert_eq!(resolve_host("orders", "prod"), "orders.prod.svc.cluster.local");
        assert_eq!(resolve_host("orders.shop", "prod"), "orders.shop", "Istio expands dot-less names only");
        assert_eq!(resolve_host("httpbin.org", "prod"), "httpbin.org");
        assert_eq!(resolve_host("orders.shop.svc", "prod"), "orders.shop.svc.cluster.local");
        assert_eq!(resolve_host("orders.shop.svc.cluster.local", "prod"), "orders.shop.svc.cluster.local");
        assert!(host_matches("*.prod.svc.cluster.local", "a.prod.svc.cluster.local"));
        assert!(!host_matches("*.prod.svc.cluster.local", "a.dev.svc.cluster.local"));
    }
}
