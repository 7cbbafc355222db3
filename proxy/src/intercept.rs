//! Transparent interception, Istio's REDIRECT mode: the nat rules that send a
//! pod's inbound TCP to the inbound listener and its outbound TCP to the
//! outbound listener (`weft-proxy init-iptables`, run by an init container with
//! NET_ADMIN), and the original destination of a redirected connection.
//!
//! The rules mirror `istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*'
//! -b '*' -d 15090,15021,15020` with chains named `WEFT_*`. Applying is
//! idempotent (the old rules are removed first, the new ones loaded in one
//! `iptables-restore`); `--cleanup` removes them; `--dry-run` prints them.

use std::net::SocketAddr;
use std::process::Command;

/// The sidecar's uid and gid: its own traffic is never redirected (no loops).
pub const PROXY_UID: u32 = 1337;
/// Ports of the sidecar itself that inbound capture leaves alone (Istio's `-d`).
pub const SIDECAR_PORTS: [u16; 3] = [15090, 15021, 15020];
/// The source the inbound listener uses towards the app, let through unredirected.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

const CHAINS: [&str; 4] = ["WEFT_INBOUND", "WEFT_REDIRECT", "WEFT_IN_REDIRECT", "WEFT_OUTPUT"];

/// What to capture. Defaults are Istio's.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Inbound destination ports not captured (the sidecar's own are always excluded).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports not captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations (CIDRs) not captured.
    pub exclude_outbound_cidrs: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: PROXY_UID,
            proxy_gid: PROXY_UID,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
        }
    }
}

impl Rules {
    /// Checks the CIDRs (`a.b.c.d/n` or a bare address) before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        for cidr in &self.exclude_outbound_cidrs {
            if !is_ipv4_cidr(cidr) {
                return Err(format!("--exclude-outbound-cidrs: {cidr:?} is not an IPv4 CIDR"));
            }
        }
        Ok(())
    }

    /// The `iptables-restore` input for the nat table.
    pub fn restore_input(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in self.rules() {
            out.push_str(&rule);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Each rule as `-A CHAIN …`, in order.
    pub fn rules(&self) -> Vec<String> {
        let (uid, gid) = (self.proxy_uid, self.proxy_gid);
        let mut r = vec![
            format!("-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports {}", self.outbound_port),
            format!("-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}", self.inbound_port),
            "-A PREROUTING -p tcp -j WEFT_INBOUND".to_string(),
        ];
        let mut inbound_excluded: Vec<u16> = SIDECAR_PORTS.to_vec();
        inbound_excluded.extend(&self.exclude_inbound_ports);
        for port in inbound_excluded {
            r.push(format!("-A WEFT_INBOUND -p tcp --dport {port} -j RETURN"));
        }
        r.push("-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT".into());
        r.push("-A OUTPUT -p tcp -j WEFT_OUTPUT".into());
        r.push(format!("-A WEFT_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE}/32 -j RETURN"));
        // The app calling its own pod address through the proxy goes to the inbound side.
        r.push(format!("-A WEFT_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner {uid} -j WEFT_IN_REDIRECT"));
        r.push(format!("-A WEFT_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -m owner --uid-owner {uid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner {gid} -j WEFT_IN_REDIRECT"));
        r.push(format!("-A WEFT_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN"));
        r.push(format!("-A WEFT_OUTPUT -m owner --gid-owner {gid} -j RETURN"));
        r.push("-A WEFT_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
        for port in &self.exclude_outbound_ports {
            r.push(format!("-A WEFT_OUTPUT -p tcp --dport {port} -j RETURN"));
        }
        for cidr in &self.exclude_outbound_cidrs {
            r.push(format!("-A WEFT_OUTPUT -d {cidr} -j RETURN"));
        }
        r.push("-A WEFT_OUTPUT -j WEFT_REDIRECT".into());
        r
    }
}

fn iptables(args: &[&str]) -> Result<bool, String> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", "nat"])
        .args(args)
        .output()
        .map_err(|e| format!("running iptables: {e} (Debian package iptables; needs root or NET_ADMIN)"))?;
    Ok(out.status.success())
}

/// Removes every `WEFT_*` rule and chain; a no-op when there are none.
pub fn cleanup() -> Result<(), String> {
    for (chain, target) in [("PREROUTING", "WEFT_INBOUND"), ("OUTPUT", "WEFT_OUTPUT")] {
        while iptables(&["-D", chain, "-p", "tcp", "-j", target])? {}
    }
    // Flush all before deleting any: the chains jump to each other.
    let present: Vec<&str> = CHAINS.into_iter().filter(|c| iptables(&["-F", c]).unwrap_or(false)).collect();
    for chain in present {
        if !iptables(&["-X", chain])? {
            return Err(format!("could not delete chain {chain}"));
        }
    }
    Ok(())
}

/// Installs the rules, replacing any earlier ones, in one atomic load.
pub fn apply(rules: &Rules) -> Result<(), String> {
    rules.validate()?;
    cleanup()?;
    use std::io::Write;
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "-w", "5"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running iptables-restore: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("iptables-restore: no stdin")?
        .write_all(rules.restore_input().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("iptables-restore refused the rules: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub use weft_model::OutboundTrafficPolicy;

/// How long a captured connection may stay silent before it is taken for a
/// server-first protocol (MySQL, SMTP …) and passed through as TCP. Istio waits
/// forever by default (`protocolDetectionTimeout: 0s`), so such clients hang on
/// undeclared ports; a short wait costs a silent HTTP client nothing but L7 routing.
pub const PROTOCOL_DETECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the first bytes of a connection are an HTTP/1.x request line or the HTTP/2 preface.
pub fn looks_like_http(first: &[u8]) -> bool {
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

/// One request on a fresh, unpooled HTTP/1.1 connection to `dst`: captured
/// traffic passed through to its original destination, and the app's probes.
pub async fn send_once<B>(
    dst: SocketAddr,
    req: http::Request<B>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(dst).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// A captured connection that is not HTTP, as the telemetry sees it.
#[derive(Debug, Clone)]
pub struct TcpConnection {
    pub dst: SocketAddr,
    /// `PassthroughCluster` or `BlackHoleCluster`.
    pub cluster: &'static str,
    /// Envoy's response flags: `-`, `UF` (the destination refused), `UH` (refused by policy).
    pub flags: &'static str,
    /// Bytes from the app to the destination.
    pub received: u64,
    /// Bytes from the destination back to the app.
    pub sent: u64,
    pub duration: std::time::Duration,
}

/// `10.0.0.0/8` or a bare address (a /32): what `--exclude-outbound-cidrs` takes.
pub fn is_ipv4_cidr(cidr: &str) -> bool {
    let (ip, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
}

/// What the outbound listener needs for captured connections: the policy for
/// destinations outside the mesh (it follows the config), and where TCP
/// connections are reported (Istio's `istio_tcp_*` metrics, the access log).
pub trait Capture: Send + Sync + 'static {
    fn policy(&self) -> OutboundTrafficPolicy;
    /// A connection was opened to its destination (or refused: then only `closed` follows).
    fn opened(&self, cluster: &'static str);
    fn closed(&self, connection: &TcpConnection);
}

/// Copies bytes both ways between a captured connection and its original
/// destination (a half-close is passed on), counting them for `telemetry`.
pub async fn tcp_passthrough(mut client: tokio::net::TcpStream, dst: SocketAddr, telemetry: &dyn Capture) {
    let start = std::time::Instant::now();
    let (mut received, mut sent) = (0u64, 0u64);
    let flags = match tokio::net::TcpStream::connect(dst).await {
        Ok(mut upstream) => {
            let _ = upstream.set_nodelay(true);
            telemetry.opened(PASSTHROUGH_CLUSTER);
            let (mut from_app, mut to_app) = client.split();
            let (mut from_dst, mut to_dst) = upstream.split();
            let both = tokio::try_join!(
                pipe(&mut from_app, &mut to_dst, &mut received),
                pipe(&mut from_dst, &mut to_app, &mut sent)
            );
            if let Err(e) = both {
                tracing::debug!("passthrough to {dst} ended: {e}");
            }
            "-"
        }
        Err(e) => {
            tracing::debug!("passthrough to {dst}: {e}");
            "UF"
        }
    };
    let duration = start.elapsed();
    telemetry.closed(&TcpConnection { dst, cluster: PASSTHROUGH_CLUSTER, flags, received, sent, duration });
}

/// A captured TCP connection refused under REGISTRY_ONLY: closed at once, and reported.
pub fn tcp_refused(dst: SocketAddr, telemetry: &dyn Capture) {
    tracing::debug!("REGISTRY_ONLY: TCP to {dst} refused");
    let c = TcpConnection {
        dst,
        cluster: BLACKHOLE_CLUSTER,
        flags: "UH",
        received: 0,
        sent: 0,
        duration: std::time::Duration::ZERO,
    };
    telemetry.closed(&c);
}

/// Istio's names for traffic to destinations outside the mesh.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// One direction: reads until end of stream, then half-closes the other side.
async fn pipe<R, W>(from: &mut R, to: &mut W, count: &mut u64) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        *count += n as u64;
    }
}

/// Where a redirected connection was going (`SO_ORIGINAL_DST`); `None` when it
/// was not redirected (explicit mode) or the kernel does not say.
pub fn original_dst(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let dst = sock.original_dst_v4().ok()?.as_socket()?;
    let local = stream.local_addr().ok()?;
    (dst != local).then_some(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_match_istios_redirect_mode() {
        let rules = Rules::default().rules();
        assert_eq!(rules.first().unwrap(), "-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001");
        assert!(rules.contains(&"-A WEFT_INBOUND -p tcp --dport 15021 -j RETURN".to_string()));
        assert!(rules.contains(&"-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN".to_string()));
        assert_eq!(rules.last().unwrap(), "-A WEFT_OUTPUT -j WEFT_REDIRECT", "capture everything else, last");
    }

    #[test]
    fn exclusions_come_before_the_final_redirect() {
        let r = Rules {
            exclude_outbound_ports: vec![3306],
            exclude_outbound_cidrs: vec!["10.0.0.0/8".into()],
            exclude_inbound_ports: vec![9000],
            ..Rules::default()
        };
        let rules = r.rules();
        let at = |s: &str| rules.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("-A WEFT_OUTPUT -p tcp --dport 3306 -j RETURN") < at("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
        assert!(at("-A WEFT_OUTPUT -d 10.0.0.0/8 -j RETURN") < at("-A WEFT_OUTPUT -j WEFT_REDIRECT"));
        assert!(at("-A WEFT_INBOUND -p tcp --dport 9000 -j RETURN") < at("-A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT"));
        assert!(r.restore_input().starts_with("*nat\n:WEFT_INBOUND - [0:0]\n"));
        assert!(r.restore_input().ends_with("COMMIT\n"));
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

    #[test]
    fn a_bad_cidr_is_refused_before_anything_changes() {
        let r = Rules { exclude_outbound_cidrs: vec!["10.0.0.0/33".into()], ..Rules::default() };
        assert!(r.validate().unwrap_err().contains("10.0.0.0/33"));
    }
}
