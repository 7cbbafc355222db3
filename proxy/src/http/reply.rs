//! Local replies: the one place where a proxy-side failure becomes the
//! response a client sees, with Envoy's status, body and response flag, plus
//! a human-readable reason in `x-weft-error`.

use crate::http::body::{full, Body};
use crate::upstream::pool::UpstreamError;
use http::{HeaderValue, Response, StatusCode};
use std::fmt;

/// The header carrying the reason for a local reply.
pub(crate) const ERROR_HEADER: &str = "x-weft-error";

/// Envoy response flags, as a small bit set (`-` when none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Flags(u16);

impl Flags {
    pub(crate) const NONE: Flags = Flags(0);
    /// No route (or no service) for the request.
    pub(crate) const NR: Flags = Flags(1);
    /// No healthy upstream.
    pub(crate) const UH: Flags = Flags(1 << 1);
    /// Upstream connection failure.
    pub(crate) const UF: Flags = Flags(1 << 2);
    /// Upstream request timeout.
    pub(crate) const UT: Flags = Flags(1 << 3);
    /// Upstream retry limit exceeded.
    pub(crate) const URX: Flags = Flags(1 << 4);
    /// Upstream overflow (circuit breaking).
    pub(crate) const UO: Flags = Flags(1 << 5);
    /// Upstream connection termination.
    pub(crate) const UC: Flags = Flags(1 << 6);
    /// Cluster not found.
    pub(crate) const NC: Flags = Flags(1 << 7);
    /// Delay injected.
    pub(crate) const DI: Flags = Flags(1 << 8);
    /// Abort injected.
    pub(crate) const FI: Flags = Flags(1 << 9);
    /// Downstream connection termination.
    pub(crate) const DC: Flags = Flags(1 << 10);
    /// Upstream remote reset (HTTP/2 stream refused or reset).
    pub(crate) const UR: Flags = Flags(1 << 11);

    const NAMES: [(Flags, &'static str); 12] = [
        (Flags::NR, "NR"),
        (Flags::UH, "UH"),
        (Flags::UF, "UF"),
        (Flags::UT, "UT"),
        (Flags::URX, "URX"),
        (Flags::UO, "UO"),
        (Flags::UC, "UC"),
        (Flags::NC, "NC"),
        (Flags::DI, "DI"),
        (Flags::FI, "FI"),
        (Flags::DC, "DC"),
        (Flags::UR, "UR"),
    ];

    pub(crate) fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Flags::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no service for host {host:?}")]
    NoService { host: String },
    #[error("no route matched in service {service}")]
    NoRoute { service: String },
    #[error("cluster {cluster} not found")]
    ClusterNotFound { cluster: String },
    #[error("cluster {cluster} has no endpoints")]
    NoEndpoints { cluster: String },
    #[error("all endpoints of cluster {cluster} are ejected by outlier detection")]
    AllEjected { cluster: String },
    #[error("no local app address configured (--app or inbound.app)")]
    NoApp,
    #[error(
        "cluster {cluster} sends requests where the app was going (resolution NONE), but the app dialled the sidecar"
    )]
    NoOriginalDestination { cluster: String },
    #[error("upstream {endpoint}: {error}")]
    Upstream { endpoint: std::net::SocketAddr, error: UpstreamError },
    #[error("cluster {cluster}: {limit} limit reached (connectionPool)")]
    Overflow { cluster: String, limit: &'static str },
    #[error("upstream request timeout")]
    Timeout,
    #[error("fault injected: abort with {0}")]
    FaultAbort(StatusCode),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("HTTP/1.0 is not accepted (Envoy's default)")]
    UpgradeRequired,
    #[error("denied by {0}")]
    Denied(String),
    #[error("end-user authentication: {0}")]
    Unauthenticated(crate::security::jwt::Refused),
    #[error("{host} is not in the mesh and outboundTrafficPolicy is REGISTRY_ONLY (BlackHoleCluster)")]
    BlackHole { host: String },
    #[error("{dst} is not where the ServiceEntry for {host} lets requests go (its port and addresses)")]
    NotTheEntrysDestination { host: String, dst: std::net::SocketAddr },
    #[error("passthrough to {dst}: {error}")]
    Passthrough { dst: std::net::SocketAddr, error: String },
    #[error("this connection was accepted under other TLS settings than its server has now; connect again")]
    Misdirected,
}

impl ProxyError {
    /// Status, Envoy's body text (the reset reason for upstream failures) and response flag.
    fn parts(&self) -> (StatusCode, &'static str, Flags) {
        match self {
            ProxyError::NoService { .. } | ProxyError::NoRoute { .. } => (StatusCode::NOT_FOUND, "", Flags::NR),
            ProxyError::ClusterNotFound { .. } => (StatusCode::SERVICE_UNAVAILABLE, "", Flags::NC),
            ProxyError::NoEndpoints { .. }
            | ProxyError::AllEjected { .. }
            | ProxyError::NoApp
            | ProxyError::NoOriginalDestination { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream", Flags::UH)
            }
            ProxyError::Upstream { error, .. } => match error {
                UpstreamError::ConnectFailure(_)
                | UpstreamError::ConnectTimeout(_)
                | UpstreamError::ResetBeforeRequest(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "connection failure", Flags::UF)
                }
                UpstreamError::RefusedStream => {
                    (StatusCode::SERVICE_UNAVAILABLE, "remote refused stream reset", Flags::UR)
                }
                UpstreamError::Reset(_) | UpstreamError::StaleReset(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "connection termination", Flags::UC)
                }
                UpstreamError::Overflow(_) => (StatusCode::SERVICE_UNAVAILABLE, "overflow", Flags::UO),
            },
            ProxyError::Overflow { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overflow", Flags::UO),
            ProxyError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout", Flags::UT),
            ProxyError::FaultAbort(status) => (*status, "fault filter abort", Flags::FI),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad request", Flags::NONE),
            ProxyError::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "", Flags::NONE),
            ProxyError::Denied(_) => (StatusCode::FORBIDDEN, "RBAC: access denied", Flags::NONE),
            ProxyError::Unauthenticated(why) => (StatusCode::UNAUTHORIZED, why.text(), Flags::NONE),
            ProxyError::BlackHole { .. } | ProxyError::NotTheEntrysDestination { .. } => {
                (StatusCode::BAD_GATEWAY, "", Flags::NR)
            }
            ProxyError::Passthrough { .. } => (StatusCode::SERVICE_UNAVAILABLE, "connection failure", Flags::UF),
            ProxyError::Misdirected => (StatusCode::MISDIRECTED_REQUEST, "misdirected request", Flags::NONE),
        }
    }
}

/// Envoy's `httpToGrpcStatus`: the gRPC status a local reply's HTTP status becomes.
pub(crate) fn grpc_status_of(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// Builds the local reply for `err`; `extra` adds flags such as `URX` or `DI`. A gRPC
/// request gets it as gRPC does (Envoy's): a trailers-only answer, HTTP 200 with
/// `grpc-status` from the HTTP status and `grpc-message` the text, so a gRPC client
/// sees UNAVAILABLE or PERMISSION_DENIED, not a protocol error.
pub(crate) fn local_reply(err: &ProxyError, extra: Flags, grpc: bool) -> (Response<Body>, Flags) {
    let (status, text, flags) = err.parts();
    let reset = [Flags::UF, Flags::UC, Flags::UR, Flags::UO];
    let body = if reset.iter().any(|f| flags.contains(*f)) {
        format!("upstream connect error or disconnect/reset before headers. reset reason: {text}")
    } else {
        text.to_string()
    };
    let mut resp = if grpc {
        let mut resp = Response::new(full(""));
        let headers = resp.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(u16::from(grpc_status_of(status))));
        if let Ok(v) = HeaderValue::from_str(&grpc_message(&body)) {
            headers.insert("grpc-message", v);
        }
        resp
    } else {
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    };
    let headers = resp.headers_mut();
    if flags.contains(Flags::UO) {
        headers.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    if let ProxyError::Unauthenticated(_) = err {
        headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    }
    if let Ok(v) = HeaderValue::from_str(&err.to_string()) {
        headers.insert(ERROR_HEADER, v);
    }
    (resp, flags | extra)
}

/// gRPC's `grpc-message` encoding: percent-encoding of everything outside printable ASCII and `%`.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_request_gets_a_trailers_only_answer() {
        let (resp, flags) = local_reply(&ProxyError::Timeout, Flags::NONE, true);
        assert_eq!((resp.status(), flags), (StatusCode::OK, Flags::UT));
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "upstream request timeout");
        let (denied, _) = local_reply(&ProxyError::Denied("p".into()), Flags::NONE, true);
        assert_eq!(denied.headers()["grpc-status"], "7");
        assert_eq!(grpc_message("a%b\n"), "a%25b%0A");
    }

    #[test]
    fn flags_print_like_envoy() {
        assert_eq!(Flags::NONE.to_string(), "-");
        assert_eq!((Flags::UF | Flags::URX).to_string(), "UF,URX");
    }

    #[test]
    fn connect_failure_reply() {
        let err = ProxyError::Upstream {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            error: UpstreamError::ConnectFailure(std::io::ErrorKind::ConnectionRefused.into()),
        };
        let (resp, flags) = local_reply(&err, Flags::NONE, false);
        assert_eq!(resp.status(), 503);
        assert_eq!(flags, Flags::UF);
        assert!(resp.headers()[ERROR_HEADER].to_str().unwrap().contains("127.0.0.1:1"));
    }
}
