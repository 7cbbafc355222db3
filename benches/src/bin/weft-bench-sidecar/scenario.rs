//! The scenarios: the paths from the load generator to the app, and how they are loaded.

use clap::ValueEnum;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use weft_bench::contestants::Software;

/// The service the bench routes to; `Host: app` reaches it from namespace `bench`.
pub(crate) const SERVICE: &str = "app.bench.svc.cluster.local";
pub(crate) const HOST_HEADER: &str = "app";
/// How long the proxy may take to answer `/ready` after it is started (under
/// callgrind, which runs it some fifty times slower, six times this).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A path from the load generator to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    Direct,
    Sidecar,
    /// `sidecar` with the access log on (`--access-log`; Istio ships it off).
    SidecarAccessLog,
    /// The floor under `sidecar`: a proxy of hyper and tokio alone (`weft-bench-floor`).
    HyperFloor,
    /// The other floor: the same hop on `httparse` alone, no hyper (`weft-bench-floor … httparse`).
    HttparseFloor,
    /// The same with each head held as the `http` crate's types on the way (`… httparse-http`).
    HttparseHttpFloor,
    PairH1,
    PairH2,
    Mesh,
    HaproxyPair,
    NginxPair,
    HaproxyTlsPair,
    NginxTlsPair,
    /// The ingress path: load → TLS → `weft-proxy gateway` → mTLS → weft-proxy → app.
    Ingress,
    /// The same shape with HAProxy / nginx: TLS from the load, mutual TLS between the hops.
    HaproxyIngress,
    NginxIngress,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Sidecar => "sidecar",
            Kind::SidecarAccessLog => "sidecar-access-log",
            Kind::HyperFloor => "hyper-floor",
            Kind::HttparseFloor => "httparse-floor",
            Kind::HttparseHttpFloor => "httparse-http-floor",
            Kind::PairH1 => "pair-h1",
            Kind::PairH2 => "pair-h2",
            Kind::Mesh => "mesh",
            Kind::HaproxyPair => "haproxy-pair",
            Kind::NginxPair => "nginx-pair",
            Kind::HaproxyTlsPair => "haproxy-tls-pair",
            Kind::NginxTlsPair => "nginx-tls-pair",
            Kind::Ingress => "ingress",
            Kind::HaproxyIngress => "haproxy-ingress",
            Kind::NginxIngress => "nginx-ingress",
        }
    }

    /// The proxy program of a contestant's pair; `None` for weft-proxy's scenarios.
    pub(crate) fn contestant(self) -> Option<Software> {
        match self {
            Kind::HaproxyPair | Kind::HaproxyTlsPair | Kind::HaproxyIngress => Some(Software::Haproxy),
            Kind::NginxPair | Kind::NginxTlsPair | Kind::NginxIngress => Some(Software::Nginx),
            _ => None,
        }
    }
}

/// One scenario: a constant rate, or closed-loop at full speed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    Rate(f64),
    Max,
}

impl Load {
    pub(crate) fn label(self, max_connections: usize) -> String {
        match self {
            Load::Rate(r) => format!("{r} rps"),
            Load::Max => format!("max ({max_connections} conn)"),
        }
    }
}

/// A path through which the load reaches the app, and the proxies on it.
pub(crate) struct ScenarioPath {
    pub(crate) kind: Kind,
    /// Where the load generator sends.
    pub(crate) entry: SocketAddr,
    /// Indices into the proxy list, client first.
    pub(crate) proxies: Vec<usize>,
    /// The entry speaks TLS (the ingress paths): the load's client config and server name.
    pub(crate) tls: Option<LoadTls>,
}

/// TLS from the load generator: trusting the bench root, ALPN http/1.1, the name `app`.
pub(crate) type LoadTls = (std::sync::Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>);

impl Kind {
    /// The paths whose first hop is TLS from the load.
    pub(crate) fn is_ingress(self) -> bool {
        matches!(self, Kind::Ingress | Kind::HaproxyIngress | Kind::NginxIngress)
    }

    /// nginx's scenario of the same kind of hop (plaintext, mutual TLS, ingress): what
    /// instruction counts are compared against.
    pub(crate) fn nginx_peer(self) -> Kind {
        match self {
            Kind::Mesh | Kind::HaproxyTlsPair | Kind::NginxTlsPair => Kind::NginxTlsPair,
            k if k.is_ingress() => Kind::NginxIngress,
            _ => Kind::NginxPair,
        }
    }
}
