//! The protocol a service port speaks, as Istio reads it: the port's `appProtocol`, else
//! its name (`http`, `http2`, `grpc`, `grpc-web`, or one of them followed by `-suffix`).
//! An unnamed port (or a name Istio does not know) is detected per connection: the
//! caller's protocol is kept, HTTP/1.1 or HTTP/2.

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
}

impl AppProtocol {
    /// Istio's protocol selection from an `appProtocol` value or a port name. `Ok(None)`:
    /// unnamed, detected per connection. Ports Istio proxies as plain TCP (`tcp`, `tls`,
    /// `https`, `mongo`, `mysql`, `redis` …) are refused: Weft's inbound speaks HTTP only.
    pub fn from_port(name_or_app_protocol: &str) -> Result<Option<Self>, String> {
        let s = name_or_app_protocol.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Ok(None);
        }
        // `appProtocol` values Kubernetes defines.
        match s.as_str() {
            "kubernetes.io/h2c" => return Ok(Some(AppProtocol::Http2)),
            "kubernetes.io/ws" => return Ok(Some(AppProtocol::Http)),
            "kubernetes.io/wss" => return Err(not_http(&s)),
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
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "udp" | "thrift" => return Err(not_http(&s)),
            _ => None,
        })
    }

    /// Whether the app is spoken to in HTTP/2.
    pub fn is_http2(self) -> bool {
        !matches!(self, AppProtocol::Http)
    }
}

fn not_http(s: &str) -> String {
    format!("port {s:?} is a TCP protocol to Istio; Weft's sidecar proxies HTTP, HTTP/2 and gRPC ports only (not supported yet)")
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
        assert!(p("tcp-db").unwrap_err().contains("not supported yet"));
        assert!(p("mysql").is_err());
    }
}
