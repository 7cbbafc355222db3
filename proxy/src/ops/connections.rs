//! What is recorded about each TCP connection (Istio's `istio_tcp_*` metrics and the
//! access log), and the sidecar's answers for TCP: where a captured connection goes
//! (outside the mesh, or to a mesh service's TCP port) and whether a peer's connection
//! reaches the app's TCP port.

use crate::net::intercept::{Capture, Egress, MeshTcp, TcpConnection};
use crate::ops::access_log::Line;
use crate::ops::metrics::IstioLabels;
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_model::ProxyConfig;

/// Captured TCP, reported as the client's sidecar (`reporter="source"`):
/// `destination_service_name` names Istio's cluster (`PassthroughCluster`,
/// `BlackHoleCluster`), a ServiceEntry's host or a mesh service; the address is in the
/// access log.
impl Capture for Shared {
    fn egress(&self, dst: SocketAddr, sni: Option<&str>) -> Egress {
        let snap = self.snapshot();
        crate::net::intercept::egress_for(&snap.config.egress, self.outbound_policy(&snap.config), dst, sni)
    }

    fn mesh_tcp(&self, dst: SocketAddr) -> Option<Result<MeshTcp, Arc<str>>> {
        let snap = self.snapshot();
        let (name, endpoint) = crate::net::tcp::find(&snap.config, dst)?;
        let cluster = snap.config.clusters.get(name)?;
        let connect_timeout =
            cluster.connection_pool.tcp.connect_timeout.unwrap_or(weft_model::DEFAULT_CONNECT_TIMEOUT);
        let name: Arc<str> = name.into();
        let Some(tls) = &cluster.tls else {
            return Some(Ok(MeshTcp { cluster: name, endpoint, tls: None, connect_timeout }));
        };
        let Some(leaf) = self.identity.as_ref().and_then(|i| i.current()) else { return Some(Err(name)) };
        let client = crate::security::identity::client_config(&leaf, &tls.identities, false).ok().and_then(|c| {
            let sni = crate::net::tcp::sni_of_cluster(&name)?;
            let server = rustls::pki_types::ServerName::try_from(sni).ok()?;
            let mut c = (*c).clone();
            c.alpn_protocols = vec![crate::net::tcp::ALPN.to_vec()];
            Some((Arc::new(c), server))
        });
        Some(match client {
            Some(tls) => Ok(MeshTcp { cluster: name, endpoint, tls: Some(tls), connect_timeout }),
            None => Err(name),
        })
    }

    fn opened(&self, cluster: &str) {
        let config = self.snapshot().config.clone();
        self.metrics.tcp_opened.with_label_values(&source_labels(&config, cluster, "-").tcp_values()).inc();
    }

    fn closed(&self, c: &TcpConnection) {
        let config = self.snapshot().config.clone();
        self.record(&config, source_labels(&config, &c.cluster, c.flags), c);
    }
}

/// A peer's TCP connection to the app, reported as the server's sidecar (`reporter="destination"`).
impl crate::net::tcp::InboundTcp for Shared {
    fn serves_tcp(&self, port: u16) -> bool {
        self.snapshot().config.inbound.tcp_ports.contains(&port)
    }

    fn tcp_target(
        &self,
        port: Option<u16>,
        peer: Option<&str>,
        remote: Option<SocketAddr>,
    ) -> Result<SocketAddr, String> {
        use crate::net::listen::InboundSecurity;
        let snap = self.snapshot();
        let config = &snap.config;
        let Some(port) = port.filter(|p| config.inbound.tcp_ports.contains(p)) else {
            self.refused("not a TCP port of the app");
            return Err(format!("{port:?} is not a TCP port of the app"));
        };
        if peer.is_none() && config.inbound.mtls == weft_model::MtlsMode::Strict {
            self.refused("plaintext under STRICT");
            return Err("plaintext under STRICT".into());
        }
        let app = self.app_override.or_else(|| config.inbound.app.as_deref().and_then(|a| a.parse().ok()));
        let app = app.ok_or("the app's address is unknown")?;
        let source = remote.map(|r| r.ip().to_canonical());
        if let crate::security::authz::Decision::Deny(why) =
            crate::security::authz::decide_tcp(&snap.authz, peer, source, port)
        {
            self.metrics.authz_denied.with_label_values(&[why.as_str(), peer.unwrap_or("unknown")]).inc();
            return Err(why);
        }
        Ok(SocketAddr::new(app.ip(), port))
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    fn tcp_opened(&self, peer: Option<&str>) {
        let snap = self.snapshot();
        let labels = destination_labels(&snap.config, &snap.own_service, peer, "-");
        self.metrics.tcp_opened.with_label_values(&labels.tcp_values()).inc();
    }

    fn tcp_closed(&self, peer: Option<&str>, c: &TcpConnection) {
        let snap = self.snapshot();
        self.record(&snap.config, destination_labels(&snap.config, &snap.own_service, peer, c.flags), c);
    }
}

impl Shared {
    /// A closed connection into the TCP metrics and the access log.
    fn record(&self, config: &ProxyConfig, labels: IstioLabels<'_>, c: &TcpConnection) {
        let values = labels.tcp_values();
        let m = &self.metrics;
        m.tcp_closed.with_label_values(&values).inc();
        m.tcp_received_bytes.with_label_values(&values).inc_by(c.received);
        m.tcp_sent_bytes.with_label_values(&values).inc_by(c.sent);
        if self.access_log.enabled_for(config) {
            let line = Line::new()
                .str("reporter", labels.reporter)
                .str("protocol", "tcp")
                .str("flags", c.flags)
                .str("cluster", &c.cluster)
                .opt("source_principal", (labels.source_principal != "unknown").then_some(labels.source_principal))
                .addr("upstream", Some(c.dst))
                .millis("duration_ms", c.duration)
                .num("bytes_received", c.received)
                .num("bytes_sent", c.sent);
            self.access_log.write(line.finish());
        }
    }
}

/// A mesh host's name and namespace (`name.ns.svc.cluster.local`), else the host and `unknown`.
fn service_parts(host: &str) -> (&str, &str) {
    match host.split_once('.') {
        Some((name, rest)) if rest.contains(".svc") => (name, rest.split('.').next().unwrap_or("unknown")),
        _ => (host, "unknown"),
    }
}

fn source_labels<'a>(config: &'a ProxyConfig, cluster: &'a str, flags: &'a str) -> IstioLabels<'a> {
    let w = &config.workload;
    let label = |k: &str| w.labels.get(k).map_or("unknown", String::as_str);
    // A cluster (`outbound|5432||db.prod.svc.cluster.local`) is named by its host.
    let host = cluster.rsplit('|').next().unwrap_or(cluster);
    let (name, namespace) = service_parts(host);
    let mesh = namespace != "unknown";
    IstioLabels {
        source_workload: &w.name,
        source_workload_namespace: &w.namespace,
        source_app: label("app"),
        source_version: label("version"),
        destination_service: if mesh { host } else { "unknown" },
        destination_service_name: name,
        destination_service_namespace: namespace,
        request_protocol: "tcp",
        response_flags: flags,
        ..IstioLabels::unknown("source")
    }
}

/// Inbound, the destination service is the workload's own (its `app` label's host).
fn destination_labels<'a>(
    config: &'a ProxyConfig,
    own_service: &'a str,
    peer: Option<&'a str>,
    flags: &'a str,
) -> IstioLabels<'a> {
    let w = &config.workload;
    let label = |k: &str| w.labels.get(k).map_or("unknown", String::as_str);
    let (name, namespace) = service_parts(own_service);
    IstioLabels {
        destination_service: own_service,
        destination_service_name: name,
        destination_service_namespace: namespace,
        source_principal: peer.unwrap_or("unknown"),
        destination_workload: &w.name,
        destination_workload_namespace: &w.namespace,
        destination_app: label("app"),
        destination_version: label("version"),
        request_protocol: "tcp",
        response_flags: flags,
        connection_security_policy: if peer.is_some() { "mutual_tls" } else { "none" },
        ..IstioLabels::unknown("destination")
    }
}
