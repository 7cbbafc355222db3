//! Transparent interception at run time: the original destination of a
//! connection iptables redirected (`iptables` installs the rules),
//! telling HTTP from other protocols by the first bytes, and passing other TCP
//! through to where it was going (or refusing it under REGISTRY_ONLY), counted
//! for Istio's TCP metrics.

use std::net::SocketAddr;

pub(crate) use weft_model::OutboundTrafficPolicy;

/// How long a captured connection may stay silent before it is taken for a
/// server-first protocol (MySQL, SMTP …) and passed through as TCP. Istio waits
/// forever by default (`protocolDetectionTimeout: 0s`), so such clients hang on
/// undeclared ports; a short wait costs a silent HTTP client nothing but L7 routing.
pub(crate) const PROTOCOL_DETECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the first bytes of a connection are an HTTP/1.x request line or the HTTP/2 preface.
pub(crate) fn looks_like_http(first: &[u8]) -> bool {
    const STARTS: [&[u8]; 10] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PRI * HTTP/2",
    ];
    !first.is_empty() && STARTS.iter().any(|s| s.starts_with(first) || first.starts_with(s))
}

/// A captured connection that is not HTTP, as the telemetry sees it.
#[derive(Debug, Clone)]
pub(crate) struct TcpConnection {
    pub dst: SocketAddr,
    /// `PassthroughCluster`, `BlackHoleCluster`, or a ServiceEntry's `outbound|PORT||HOST`.
    pub cluster: std::sync::Arc<str>,
    /// Envoy's response flags: `-`, `UF` (the destination refused), `UH` (refused by policy).
    pub flags: &'static str,
    /// Bytes from the app to the destination.
    pub received: u64,
    /// Bytes from the destination back to the app.
    pub sent: u64,
    pub duration: std::time::Duration,
}

/// What the outbound listener needs for captured connections: the policy for
/// destinations outside the mesh (it follows the config), and where TCP
/// connections are reported (Istio's `istio_tcp_*` metrics, the access log).
pub(crate) trait Capture: Send + Sync + 'static {
    /// What a captured non-HTTP connection to `dst` meets (`sni`: what its ClientHello named).
    fn egress(&self, dst: SocketAddr, sni: Option<&str>) -> Egress;
    /// The mesh TCP endpoint `dst` is, if it is one (`Err`: it is, but cannot be reached:
    /// this sidecar has no certificate yet; the connection is closed and counted `UF`).
    fn mesh_tcp(&self, dst: SocketAddr) -> Option<Result<MeshTcp, std::sync::Arc<str>>>;
    /// A connection was opened to its destination (or refused: then only `closed` follows).
    fn opened(&self, cluster: &str);
    fn closed(&self, connection: &TcpConnection);
}

/// Where a captured connection to a mesh TCP port goes.
pub(crate) struct MeshTcp {
    /// `outbound|PORT||HOST`.
    pub cluster: std::sync::Arc<str>,
    /// The endpoint's sidecar (its inbound listener).
    pub endpoint: SocketAddr,
    /// Mesh mTLS to it; none when the cluster speaks plaintext (the server's
    /// PeerAuthentication is DISABLE): then the connection goes where it was going.
    pub tls: Option<(std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// How long the connection to the endpoint may take (`connectionPool.tcp.connectTimeout`).
    pub connect_timeout: std::time::Duration,
}

/// Where a captured non-HTTP connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Egress {
    /// A ServiceEntry names it: through, reported under the entry's cluster.
    Entry(std::sync::Arc<str>),
    /// Outside the mesh under ALLOW_ANY: through, as `PassthroughCluster`.
    Passthrough,
    /// Outside the mesh under REGISTRY_ONLY: closed, as `BlackHoleCluster`.
    Refused,
}

/// What `egress` (a config's ServiceEntry ports) and `policy` make of a captured
/// connection to `dst` whose TLS ClientHello named `sni`: an entry for its port (and
/// address, when the entry has any; and, for a TLS or HTTPS port, whose hosts the SNI names).
pub(crate) fn egress_for(
    egress: &[weft_model::TcpEgress],
    policy: OutboundTrafficPolicy,
    dst: SocketAddr,
    sni: Option<&str>,
) -> Egress {
    let ip = dst.ip().to_canonical();
    let named = |e: &&weft_model::TcpEgress| {
        e.sni_hosts.is_empty()
            || sni.is_some_and(|sni| {
                let sni = sni.to_ascii_lowercase();
                e.sni_hosts.iter().any(|h| match h.strip_prefix('*') {
                    Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
                    None => *h == sni,
                })
            })
    };
    // An entry naming the address wins over one for the whole port (Istio's listener by address).
    let on_port = || egress.iter().filter(|e| e.port == dst.port()).filter(named);
    let entry = on_port()
        .find(|e| e.addresses.iter().any(|c| c.contains(ip)))
        .or_else(|| on_port().find(|e| e.addresses.is_empty()));
    match (entry, policy) {
        (Some(e), _) => Egress::Entry(e.cluster.as_str().into()),
        (None, OutboundTrafficPolicy::AllowAny) => Egress::Passthrough,
        (None, OutboundTrafficPolicy::RegistryOnly) => Egress::Refused,
    }
}

/// The server name a TLS ClientHello asks for (SNI), from the first bytes of a connection.
pub fn client_hello_sni(b: &[u8]) -> Option<String> {
    // Record: handshake (22), version, length; handshake: ClientHello (1), length.
    let take = |at: usize, n: usize| b.get(at..at + n);
    let u16_at = |at: usize| take(at, 2).map(|x| usize::from(u16::from_be_bytes([x[0], x[1]])));
    if b.first() != Some(&22) || b.get(5) != Some(&1) {
        return None;
    }
    let mut at = 5 + 4 + 2 + 32; // header, client version, random
    at += 1 + usize::from(*b.get(at)?); // session id
    at += 2 + u16_at(at)?; // cipher suites
    at += 1 + usize::from(*b.get(at)?); // compression methods
    let end = at + 2 + u16_at(at)?;
    at += 2;
    while at + 4 <= end {
        let (kind, len) = (u16_at(at)?, u16_at(at + 2)?);
        at += 4;
        if kind == 0 {
            // server_name: list length, then (type 0 = host_name, length, name).
            let (name_type, name_len) = (*b.get(at + 2)?, u16_at(at + 3)?);
            let name = take(at + 5, name_len)?;
            return (name_type == 0).then(|| String::from_utf8_lossy(name).into_owned());
        }
        at += len;
    }
    None
}

/// Peeks at a connection until its first TLS record is whole (at most 16 KiB, within
/// the protocol-detection timeout), without consuming it: the ClientHello to read SNI from.
pub(crate) async fn peek_client_hello(stream: &tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + PROTOCOL_DETECTION_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Vec::new(),
        };
        let want = buf.get(3..5).map_or(usize::MAX, |l| 5 + usize::from(u16::from_be_bytes([l[0], l[1]])));
        if n >= want.min(buf.len()) || n == 0 {
            buf.truncate(n);
            return buf;
        }
        // More of the record is on its way: wait for it.
        if tokio::time::timeout_at(deadline, stream.readable()).await.is_err() {
            buf.truncate(n);
            return buf;
        }
        tokio::task::yield_now().await;
    }
}

/// Copies bytes both ways between a captured connection and its original
/// destination (a half-close is passed on), counting them for `telemetry`.
pub(crate) async fn tcp_passthrough(
    client: tokio::net::TcpStream,
    dst: SocketAddr,
    telemetry: &dyn Capture,
    cluster: std::sync::Arc<str>,
) {
    let start = std::time::Instant::now();
    let counts = crate::net::relay::Counts::default();
    let flags = crate::net::relay::connect_and_relay(client, dst, || telemetry.opened(&cluster), &counts).await;
    let (received, sent, duration) = (counts.received(), counts.sent(), start.elapsed());
    telemetry.closed(&TcpConnection { dst, cluster, flags, received, sent, duration });
}

/// A captured TCP connection refused under REGISTRY_ONLY: closed at once, and reported.
pub(crate) fn tcp_refused(dst: SocketAddr, telemetry: &dyn Capture) {
    tracing::debug!("REGISTRY_ONLY: TCP to {dst} refused");
    closed_at_once(dst, BLACKHOLE_CLUSTER.into(), "UH", telemetry);
}

/// A captured connection to a mesh TCP endpoint this sidecar cannot reach yet (no
/// certificate): closed at once, reported as a connect failure.
pub(crate) fn tcp_unreachable(dst: SocketAddr, cluster: std::sync::Arc<str>, telemetry: &dyn Capture) {
    tracing::debug!("mesh TCP to {dst}: no workload certificate yet");
    closed_at_once(dst, cluster, "UF", telemetry);
}

fn closed_at_once(dst: SocketAddr, cluster: std::sync::Arc<str>, flags: &'static str, telemetry: &dyn Capture) {
    let duration = std::time::Duration::ZERO;
    telemetry.closed(&TcpConnection { dst, cluster, flags, received: 0, sent: 0, duration });
}

/// Istio's names for traffic to destinations outside the mesh.
pub(crate) const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub(crate) const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Where a redirected connection was going (`SO_ORIGINAL_DST`); `None` when it
/// was not redirected (explicit mode) or the kernel does not say.
pub(crate) fn original_dst(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let dst = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    let dst = dst.ok()?.as_socket()?;
    (dst != local).then_some(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_entry_ports_let_captured_tcp_out_by_port_address_and_sni() {
        let entry = |cluster: &str, port, addresses: &[&str], sni: &[&str]| weft_model::TcpEgress {
            cluster: cluster.into(),
            port,
            addresses: addresses.iter().map(|a| weft_model::authz::Cidr::parse(a).unwrap()).collect(),
            sni_hosts: sni.iter().map(|h| h.to_string()).collect(),
        };
        let egress = [
            entry("outbound|5432||db.example", 5432, &["203.0.113.0/24"], &[]),
            entry("outbound|443||api.example", 443, &[], &["api.example"]),
            entry("outbound|443||wild", 443, &[], &["*.cdn.example"]),
            entry("outbound|9000||any", 9000, &[], &[]),
            entry("outbound|9000||specific", 9000, &["198.51.100.7/32"], &[]),
        ];
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let only = OutboundTrafficPolicy::RegistryOnly;
        let go = |dst: &str, sni: Option<&str>| egress_for(&egress, only, at(dst), sni);
        let entry_named = |c: &str| Egress::Entry(c.into());
        assert_eq!(go("203.0.113.9:5432", None), entry_named("outbound|5432||db.example"));
        assert_eq!(go("[::ffff:203.0.113.9]:5432", None), entry_named("outbound|5432||db.example"));
        assert_eq!(go("198.51.100.1:5432", None), Egress::Refused, "not its address");
        assert_eq!(go("198.51.100.1:443", Some("API.example")), entry_named("outbound|443||api.example"));
        assert_eq!(go("198.51.100.1:443", Some("evil.example")), Egress::Refused, "another SNI on the port");
        assert_eq!(go("198.51.100.1:443", None), Egress::Refused, "no SNI at all");
        assert_eq!(go("198.51.100.1:443", Some("img.cdn.example")), entry_named("outbound|443||wild"));
        assert_eq!(go("198.51.100.1:443", Some("cdn.example")), Egress::Refused, "a wildcard needs a label");
        assert_eq!(go("198.51.100.7:9000", None), entry_named("outbound|9000||specific"), "the address wins");
        assert_eq!(go("198.51.100.8:9000", None), entry_named("outbound|9000||any"));
        assert_eq!(
            egress_for(&egress, OutboundTrafficPolicy::AllowAny, at("198.51.100.1:22"), None),
            Egress::Passthrough
        );
        assert_eq!(go("198.51.100.1:22", None), Egress::Refused);
    }

    #[test]
    fn the_server_name_is_read_from_a_real_client_hello() {
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("api.example").unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        assert_eq!(client_hello_sni(&hello).as_deref(), Some("api.example"));
        for cut in [0, 1, 5, 40, hello.len() / 2] {
            assert_eq!(client_hello_sni(&hello[..cut]), None, "a cut ClientHello names nothing");
        }
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn http_is_told_from_other_protocols_by_its_first_bytes() {
        assert!(looks_like_http(b"GET /x HTTP/1.1\r\n"));
        assert!(looks_like_http(b"PRI * HTTP/2.0\r\n"));
        assert!(looks_like_http(b"POS"), "a request line cut short");
        assert!(!looks_like_http(b"\x16\x03\x01"), "TLS");
        assert!(!looks_like_http(b"\x00\x00\x00\x01"), "binary protocols");
        assert!(!looks_like_http(b""));
        assert_eq!("REGISTRY_ONLY".parse(), Ok(OutboundTrafficPolicy::RegistryOnly));
        assert!("registry_only".parse::<OutboundTrafficPolicy>().is_err());
    }
}
