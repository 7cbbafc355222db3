//! The protocol a service port speaks, as Istio reads it: the port's `appProtocol`, else
//! its name (`http`, `http2`, `grpc`, `grpc-web`, or one of them followed by `-suffix`).
//! An unnamed port (or a name Istio does not know) is detected per connection: the
//! caller's protocol is kept, HTTP/1.1 or HTTP/2. Ports Istio proxies as opaque TCP
//! (`tcp`, `tls`, `https`, `mongo`, `mysql`, `redis`, …) are [`AppProtocol::Tcp`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppProtocol {
    /// HTTP/1.1 to the app (HTTP/2 from a caller is spoken as HTTP/1.1).
    Http,
    /// HTTP/2 (h2c) to the app.
    Http2,
    /// gRPC: HTTP/2 to the app.
    Grpc,
    /// gRPC-Web: HTTP/2 to the app, as Istio.
    GrpcWeb,
    /// Opaque TCP: bytes relayed between two sidecars over mesh mTLS, authorized at L4.
    Tcp,
}

impl AppProtocol {
    /// Istio's protocol selection from an `appProtocol` value or a port name. `Ok(None)`:
    /// unnamed, detected per connection. Ports Istio proxies as plain TCP (`tcp`, `tls`,
    /// `https`, `mongo`, `mysql`, `redis` …) are `Tcp`; UDP (which Istio does not proxy
    /// either) is refused.
    pub fn from_port(name_or_app_protocol: &str) -> Result<Option<Self>, String> {
        let s = name_or_app_protocol.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Ok(None);
        }
        // `appProtocol` values Kubernetes defines.
        match s.as_str() {
            "kubernetes.io/h2c" => return Ok(Some(AppProtocol::Http2)),
            "kubernetes.io/ws" => return Ok(Some(AppProtocol::Http)),
            "kubernetes.io/wss" => return Ok(Some(AppProtocol::Tcp)),
            _ => {}
        }
        if s == "grpc-web" || s.starts_with("grpc-web-") {
            return Ok(Some(AppProtocol::GrpcWeb));
        }
        let prefix = s.split('-').next().unwrap_or_default();
        Ok(match prefix {
            "http" => Some(AppProtocol::Http),
            "http2" => Some(AppProtocol::Http2),
            "grpc" => Some(AppProtocol::Grpc),
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "thrift" => Some(AppProtocol::Tcp),
            "udp" => return Err(format!("port {s:?} is UDP: neither Istio nor Weft proxies UDP")),
            _ => None,
        })
    }

    /// Whether the app is spoken to in HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, AppProtocol::Http2 | AppProtocol::Grpc | AppProtocol::GrpcWeb)
    }
}

/// A service port: its number and what it speaks (Kubernetes' `ports[]` of a Service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub port: u16,
    /// Absent: detected per connection (HTTP/1.1 or HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AppProtocol>,
}

impl ServicePort {
    /// Parses `NAME:PORT` (a port's name or `appProtocol`, then its number) or a bare `PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, port) = s.rsplit_once(':').unwrap_or(("", s));
        let port =
            port.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{s:?}: not NAME:PORT"))?;
        Ok(ServicePort { port, protocol: AppProtocol::from_port(name)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_port_naming() {
        let p = |s| AppProtocol::from_port(s);
        assert_eq!(p("http"), Ok(Some(AppProtocol::Http)));
        assert_eq!(p("http-web"), Ok(Some(AppProtocol::Http)));
        assert_eq!(p("HTTP2"), Ok(Some(AppProtocol::Http2)));
        assert_eq!(p("grpc-orders"), Ok(Some(AppProtocol::Grpc)));
        assert_eq!(p("grpc-web"), Ok(Some(AppProtocol::GrpcWeb)));
        assert_eq!(p("kubernetes.io/h2c"), Ok(Some(AppProtocol::Http2)));
        assert_eq!(p("web"), Ok(None), "a name Istio does not know: detected");
        assert_eq!(p("httpx"), Ok(None), "the prefix is a whole word");
        assert_eq!(p(""), Ok(None));
        assert_eq!(p("tcp-db"), Ok(Some(AppProtocol::Tcp)));
        assert_eq!(p("mysql"), Ok(Some(AppProtocol::Tcp)));
        assert_eq!(p("https"), Ok(Some(AppProtocol::Tcp)), "Istio proxies HTTPS as opaque TCP");
        assert!(p("udp-dns").unwrap_err().contains("UDP"));
        assert!(!AppProtocol::Tcp.is_http2());
        assert_eq!(ServicePort::parse("tcp-db:5432"), Ok(ServicePort { port: 5432, protocol: Some(AppProtocol::Tcp) }));
        assert_eq!(ServicePort::parse("9000"), Ok(ServicePort { port: 9000, protocol: None }));
        assert!(ServicePort::parse("tcp:0").is_err());
        assert!(ServicePort::parse("tcp:x").is_err());
        assert!(ServicePort::parse("udp:53").is_err());
    }
}
