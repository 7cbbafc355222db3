//! Mesh TCP: a service's TCP port between two sidecars (Istio's `tcp_proxy` over mTLS).
//!
//! **Client side**: a captured connection whose original destination is an endpoint's
//! address on one of its service's TCP ports ([`weft_model::TcpService`]) goes over mesh
//! mTLS to that endpoint's sidecar, which must prove one of the cluster's identities. The
//! ClientHello names the port as Istio's does (SNI `outbound_.PORT_._.HOST`) and offers
//! only the ALPN [`ALPN`], so no HTTP listener takes the bytes for HTTP.
//!
//! **Server side**: a connection that negotiated [`ALPN`] is relayed only to one of the
//! app's TCP ports (`inbound.tcpPorts`), the one its SNI names, and only once L4
//! authorization allows it; anything else is closed. Plaintext captured to such a port
//! (PERMISSIVE) is relayed the same way, without a principal. Both sides report Istio's
//! `istio_tcp_*` metrics.

use crate::net::intercept::{Capture, MeshTcp, TcpConnection};
use crate::net::relay::{connect_and_relay, relay, Counts, IDLE_TIMEOUT};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// The ALPN protocol of a mesh TCP connection (Istio's is `istio-peer-exchange`, which also
/// carries a metadata exchange Weft does not speak).
pub const ALPN: &[u8] = b"weft-tcp";

/// Istio's SNI for mesh mTLS to `host`'s `port`: `outbound_.PORT_._.HOST`.
pub fn sni(port: u16, host: &str) -> String {
    format!("outbound_.{port}_._.{host}")
}

/// Istio's SNI for mesh mTLS to a cluster `outbound|PORT|SUBSET|HOST`:
/// `outbound_.PORT_.SUBSET_.HOST` (none for a cluster named otherwise).
pub fn sni_of_cluster(cluster: &str) -> Option<String> {
    let mut parts = cluster.split('|');
    let (Some("outbound"), Some(port), Some(subset), Some(host), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some(format!("outbound_.{port}_.{subset}_.{host}"))
}

/// The port an Istio-style SNI names.
pub(crate) fn port_of_sni(sni: &str) -> Option<u16> {
    let (port, _) = sni.strip_prefix("outbound_.")?.split_once("_.")?;
    port.parse().ok().filter(|p| *p != 0)
}

/// The TCP service and endpoint a captured connection to `dst` is for: a service with a TCP
/// port `dst.port()` whose cluster has an endpoint on `dst`'s IP (Istio's listener per
/// endpoint address of a headless service).
pub(crate) fn find(config: &weft_model::ProxyConfig, dst: SocketAddr) -> Option<(&str, SocketAddr)> {
    let ip = dst.ip().to_canonical();
    config.tcp.iter().filter(|t| t.port == dst.port()).find_map(|t| {
        let cluster = config.clusters.get(&t.cluster)?;
        let endpoint = cluster
            .endpoints
            .iter()
            .filter_map(|e| e.address.parse::<SocketAddr>().ok())
            .find(|a| a.ip().to_canonical() == ip)?;
        Some((t.cluster.as_str(), endpoint))
    })
}

/// Relays a captured connection to a mesh TCP port through the endpoint's sidecar.
pub(crate) async fn outbound(client: tokio::net::TcpStream, dst: SocketAddr, target: MeshTcp, telemetry: &dyn Capture) {
    let Some((config, name)) = target.tls else {
        return crate::net::intercept::tcp_passthrough(client, dst, telemetry, target.cluster).await;
    };
    let start = std::time::Instant::now();
    let connect = async {
        let stream = tokio::net::TcpStream::connect(target.endpoint).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| format!("mTLS: {e}"))
    };
    let counts = Counts::default();
    let flags = match tokio::time::timeout(target.connect_timeout, connect).await {
        Ok(Ok(upstream)) => {
            telemetry.opened(&target.cluster);
            if let Err(e) = relay(client, upstream, &counts, IDLE_TIMEOUT).await {
                tracing::debug!("mesh TCP to {dst} via {} ended: {e}", target.endpoint);
            }
            "-"
        }
        Ok(Err(e)) => {
            tracing::debug!("mesh TCP to {dst} via {}: {e}", target.endpoint);
            "UF"
        }
        Err(_) => "UF",
    };
    let (received, sent, duration) = (counts.received(), counts.sent(), start.elapsed());
    telemetry.closed(&TcpConnection { dst, cluster: target.cluster, flags, received, sent, duration });
}

/// What the inbound listener needs to relay a peer's TCP connection to the app.
pub(crate) trait InboundTcp: Send + Sync + 'static {
    /// Whether `port` is one of the app's TCP ports.
    fn serves_tcp(&self, port: u16) -> bool;
    /// The app's address on `port` (none: the SNI named no port) for a connection from
    /// `peer` (none: plaintext) at `remote`, under the live config's ports, mTLS mode and
    /// authorization; `Err`: why it is closed (counted).
    fn tcp_target(
        &self,
        port: Option<u16>,
        peer: Option<&str>,
        remote: Option<SocketAddr>,
    ) -> Result<SocketAddr, String>;
    /// Changes each time a config is applied (open connections are judged again).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// A connection to the app was opened.
    fn tcp_opened(&self, peer: Option<&str>);
    /// A relayed connection ended (`reporter="destination"`).
    fn tcp_closed(&self, peer: Option<&str>, connection: &TcpConnection);
}

/// Relays a peer's connection for the app's TCP `port` (none: the SNI named no port) to the
/// app. Each new config judges it again, as Envoy drains connections of a changed listener:
/// a DENY, a port no longer the app's or a switch to STRICT closes it.
pub(crate) async fn inbound<I>(
    io: I,
    port: Option<u16>,
    peer: Option<&str>,
    remote: Option<SocketAddr>,
    app: &dyn InboundTcp,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut changes = app.changes();
    let target = match app.tcp_target(port, peer, remote) {
        Ok(target) => target,
        Err(why) => {
            tracing::debug!("TCP from {remote:?} to port {port:?} closed: {why}");
            return;
        }
    };
    let start = std::time::Instant::now();
    let counts = Counts::default();
    let relayed = connect_and_relay(io, target, || app.tcp_opened(peer), &counts);
    tokio::pin!(relayed);
    let flags = loop {
        tokio::select! {
            flags = &mut relayed => break flags,
            Ok(()) = changes.changed() => {
                if let Err(why) = app.tcp_target(port, peer, remote) {
                    tracing::debug!("TCP from {remote:?} to {target} closed by a new config: {why}");
                    break "-";
                }
            }
        }
    };
    let cluster: Arc<str> = format!("inbound|{}||", target.port()).into();
    let (received, sent, duration) = (counts.received(), counts.sent(), start.elapsed());
    app.tcp_closed(peer, &TcpConnection { dst: target, cluster, flags, received, sent, duration });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_travels_in_istios_sni() {
        let name = sni(5432, "db.production.svc.cluster.local");
        assert_eq!(name, "outbound_.5432_._.db.production.svc.cluster.local");
        assert_eq!(port_of_sni(&name), Some(5432));
        assert!(rustls::pki_types::ServerName::try_from(name).is_ok(), "a name rustls sends");
        let of = |c| sni_of_cluster(c);
        assert_eq!(
            of("outbound|9090|v1|order.prod.svc.cluster.local").as_deref(),
            Some("outbound_.9090_.v1_.order.prod.svc.cluster.local")
        );
        assert_eq!(of("outbound|80||order").as_deref(), Some("outbound_.80_._.order"), "Istio's `_` for no subset");
        assert_eq!(port_of_sni(&of("outbound|9090|v1|order").unwrap()), Some(9090));
        assert_eq!(of("inbound|app"), None);
        for bad in ["weft.mesh", "outbound_.0_._.x", "outbound_.99999_._.x", "outbound_.x_._.y", "outbound_.5432"] {
            assert_eq!(port_of_sni(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_captured_connection_is_mesh_tcp_only_to_an_endpoint_on_a_tcp_port() {
        let config: weft_model::ProxyConfig = serde_yaml::from_str(
            "apiVersion: weft.dev/v1alpha1\nworkload: {name: c, namespace: p, serviceAccount: c}\nclusters:\n  outbound|5432||db:\n    endpoints: [{address: '10.0.0.3:15006'}, {address: '[fd00::4]:15006'}]\ntcp: [{port: 5432, cluster: outbound|5432||db}]\n",
        )
        .unwrap();
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(find(&config, at("10.0.0.3:5432")), Some(("outbound|5432||db", at("10.0.0.3:15006"))));
        assert_eq!(find(&config, at("[::ffff:10.0.0.3]:5432")).map(|f| f.1), Some(at("10.0.0.3:15006")));
        assert_eq!(find(&config, at("[fd00::4]:5432")).map(|f| f.1), Some(at("[fd00::4]:15006")));
        assert_eq!(find(&config, at("10.0.0.3:6379")), None, "not a TCP port of the service");
        assert_eq!(find(&config, at("10.0.0.9:5432")), None, "not an endpoint");
    }
}
