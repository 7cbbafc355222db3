//! The state every request and the admin server read: the live snapshot
//! behind one `ArcSwap`, the endpoint registry that outlives reloads, the
//! identity, the metrics and the access log. Handlers take it; nothing here
//! knows the handlers (the wiring is `server`'s).

use crate::config::snapshot::Snapshot;
use crate::ops::access_log::AccessLog;
use crate::ops::metrics::Metrics;
use crate::upstream::endpoint::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use weft_model::{ProxyConfig, ValidationError};

/// State every request and the admin server read.
#[derive(Debug)]
pub struct Shared {
    pub(crate) snapshot: crate::upstream::review::Live,
    /// Outlier detection's reviews, kept across reloads.
    pub(crate) reviews: crate::upstream::review::Reviews,
    pub(crate) endpoints: Registry,
    pub(crate) app_override: Option<SocketAddr>,
    /// `--app-protocol`: what the sidecar speaks to its app, whatever a config says.
    pub(crate) app_protocol: Option<weft_model::AppProtocol>,
    pub(crate) apply_lock: Mutex<()>,
    pub(crate) ready: std::sync::atomic::AtomicBool,
    pub identity: Option<Arc<crate::security::identity::Identity>>,
    pub(crate) metrics: Metrics,
    pub access_log: AccessLog,
    /// The mesh-wide default (`--outbound-traffic-policy`); a config may override it.
    pub outbound_traffic_policy: crate::net::intercept::OutboundTrafficPolicy,
    /// The mesh-wide default (`--path-normalization`); a config may override it.
    pub path_normalization: weft_model::PathNormalization,
    /// Istio's inbound retry of requests that never reached the app, made once.
    pub(crate) inbound_retry: crate::http::retry::RetryPolicy,
    /// Endpoints by DNS name, resolved by `upstream::dns::run`.
    pub dns: crate::upstream::dns::Dns,
    /// Traces started here are sampled at this rate, per million (`--trace-sampling`);
    /// `None`: tracing off (Istio's `enableTracing: false`), no trace headers written.
    pub trace_sampling: Option<u32>,
    /// Slots for mirror copies in flight (the mirror module's bound); a copy that
    /// finds none free is dropped (and counted), never queued.
    pub(crate) mirror_slots: Arc<tokio::sync::Semaphore>,
    /// Live request lines for `/tap` watchers.
    pub tap: crate::ops::tap::Tap,
    /// Where sampled spans are exported (`--otlp-endpoint`); none: only propagated and logged.
    pub(crate) otlp: Option<crate::ops::otlp::Exporter>,
    /// Signalled after each applied config (a gateway binds the ports it names).
    pub(crate) applied: tokio::sync::Notify,
    /// Counts applied configs: open TCP relays are judged again on each.
    pub(crate) epoch: tokio::sync::watch::Sender<u64>,
    /// The app's ports this sidecar's own flags declared; `None`: the config's word (a static file).
    pub(crate) declared_ports: Option<DeclaredPorts>,
    /// Where a `credentialName` is read: `<dir>/<name>/tls.crt`, `tls.key`, `ca.crt`.
    pub(crate) credentials_dir: std::path::PathBuf,
}

/// A DestinationRule's `credentialName` as the files of the TLS Secret mounted under `dir`:
/// `tls.crt` and `tls.key` for MUTUAL, `ca.crt` as the roots when it has one and no
/// `caCertificates` was given.
pub(crate) fn mounted_credentials(config: &mut ProxyConfig, dir: &std::path::Path) {
    for o in config.clusters.values_mut().filter_map(|c| c.tls_origination.as_mut()) {
        // A name that is no Secret name (`/etc`, `../x`) is never joined to the directory.
        let name = o.credential_name.as_deref().filter(|n| weft_model::gateway::credential_name_ok(n));
        let Some(secret) = name.map(|n| dir.join(n)) else { continue };
        let file = |f: &str| secret.join(f).to_string_lossy().into_owned();
        if o.mutual {
            o.client_certificate = Some(file("tls.crt"));
            o.private_key = Some(file("tls.key"));
        }
        if o.ca_certificates.is_none() && secret.join("ca.crt").is_file() {
            o.ca_certificates = Some(file("ca.crt"));
        }
    }
}

/// The sidecar's own port range (Istio's 15000-15090): never an app port a peer may name.
pub const RESERVED_PORTS: std::ops::RangeInclusive<u16> = 15000..=15090;

/// The app's ports a sidecar's own flags declared beyond its main one (`--other-ports`, and
/// the service port when `--app-protocol` is TCP). In control-plane mode a config opens no
/// other port to peers, whatever another instance with the same labels registered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredPorts {
    pub tcp: Vec<u16>,
    pub http: Vec<u16>,
}

impl DeclaredPorts {
    /// From the flags: what the service port speaks, the service port, the other ports.
    pub fn new(
        protocol: Option<weft_model::AppProtocol>,
        service_port: u16,
        other: &[weft_model::ServicePort],
    ) -> Self {
        let tcp = |p: Option<weft_model::AppProtocol>| p == Some(weft_model::AppProtocol::Tcp);
        let main = tcp(protocol).then_some(service_port);
        DeclaredPorts {
            tcp: main.into_iter().chain(other.iter().filter(|p| tcp(p.protocol)).map(|p| p.port)).collect(),
            http: other.iter().filter(|p| !tcp(p.protocol)).map(|p| p.port).collect(),
        }
    }
}

/// Keeps of the config's app ports only those the sidecar declared (when it declared any)
/// and never one of its own.
pub(crate) fn restrict_ports(config: &mut ProxyConfig, declared: Option<&DeclaredPorts>) {
    let inbound = &mut config.inbound;
    let open = |p: &u16, of: fn(&DeclaredPorts) -> &Vec<u16>| {
        !RESERVED_PORTS.contains(p) && declared.is_none_or(|d| of(d).contains(p))
    };
    inbound.tcp_ports.retain(|p| open(p, |d| &d.tcp));
    inbound.http_ports.retain(|p| open(p, |d| &d.http));
}

impl Shared {
    /// The path normalization under `config`.
    pub fn path_normalization(&self, config: &weft_model::ProxyConfig) -> weft_model::PathNormalization {
        config.path_normalization.unwrap_or(self.path_normalization)
    }

    /// The policy for captured traffic outside the mesh under `config`.
    pub(crate) fn outbound_policy(
        &self,
        config: &weft_model::ProxyConfig,
    ) -> crate::net::intercept::OutboundTrafficPolicy {
        config.outbound_traffic_policy.unwrap_or(self.outbound_traffic_policy)
    }

    /// The live config; a request loads it once and finishes on it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether the sidecar holds a real config (readiness).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Validates and compiles `config` beside the live one, then swaps it in.
    /// On error nothing changes. Returns the applied version.
    pub fn apply(&self, mut config: ProxyConfig) -> Result<String, ValidationError> {
        let _one_at_a_time = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        speak_to_app(&mut config, self.app_protocol);
        restrict_ports(&mut config, self.declared_ports.as_ref());
        mounted_credentials(&mut config, &self.credentials_dir);
        let snapshot = Snapshot::compile_with(config, &self.endpoints, self.app_override, &self.dns.answers())?;
        self.dns.want(&snapshot.config);
        let version = snapshot.config.version.clone();
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        self.reviews.follow(&snapshot, &self.snapshot);
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        self.applied.notify_one();
        self.epoch.send_modify(|n| *n += 1);
        self.metrics.config_reloads.with_label_values(&["applied"]).inc();
        self.metrics.config_applied.inc();
        Ok(version)
    }
}

impl Shared {
    /// Recompiles the live config with the latest DNS answers (no new version, not a reload).
    pub(crate) fn refresh_endpoints(&self) {
        let _one_at_a_time = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let config = (*self.snapshot().config).clone();
        match Snapshot::compile_with(config, &self.endpoints, self.app_override, &self.dns.answers()) {
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                self.snapshot.store(snapshot.clone());
                self.reviews.follow(&snapshot, &self.snapshot);
            }
            // The live config compiled before; only a DNS answer changed, so this cannot fail.
            Err(e) => tracing::error!("recompiling with new DNS answers failed: {e}"),
        }
    }
}

impl crate::net::listen::InboundSecurity for Shared {
    fn mode(&self) -> weft_model::MtlsMode {
        self.snapshot().config.inbound.mtls
    }

    fn server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.identity.as_ref()?.current().map(|leaf| leaf.server.clone())
    }

    fn refused(&self, reason: &'static str) {
        self.metrics.inbound_refused.with_label_values(&[reason]).inc();
    }

    fn trusts(&self, peer: &str) -> bool {
        let Some(own) = self.identity.as_ref().and_then(|i| i.current()) else { return false };
        let domain = |id: &str| id.strip_prefix("spiffe://").and_then(|r| r.split('/').next()).map(str::to_string);
        domain(&own.id).is_some_and(|d| domain(peer).as_deref() == Some(d.as_str()))
    }
}

/// `--app-protocol` over the config's `inbound.protocol`.
pub(crate) fn speak_to_app(config: &mut ProxyConfig, protocol: Option<weft_model::AppProtocol>) {
    if let Some(p) = protocol {
        config.inbound.protocol =
            if p.is_http2() { weft_model::UpstreamProtocol::Http2 } else { weft_model::UpstreamProtocol::Http1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> ProxyConfig {
        let head = "apiVersion: weft.dev/v1alpha1\nworkload: {name: w, namespace: p, serviceAccount: w}\n";
        serde_yaml::from_str(&format!("{head}{yaml}")).unwrap()
    }

    #[test]
    fn a_credential_name_is_the_mounted_secrets_files() {
        let dir = std::env::temp_dir().join(format!("weft-credentials-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("with-ca")).unwrap();
        std::fs::write(dir.join("with-ca/ca.crt"), "").unwrap();
        let mut c = config(
            "clusters:\n  a: {tlsOrigination: {sni: a.example, credentialName: with-ca, mutual: true}}\n  b: {tlsOrigination: {sni: b.example, credentialName: no-ca, caCertificates: /roots.pem}}\n",
        );
        mounted_credentials(&mut c, &dir);
        let a = c.clusters["a"].tls_origination.clone().unwrap();
        let at = |f: &str| Some(dir.join(f).to_string_lossy().into_owned());
        assert_eq!((a.client_certificate, a.private_key), (at("with-ca/tls.crt"), at("with-ca/tls.key")));
        assert_eq!(a.ca_certificates, at("with-ca/ca.crt"), "the Secret's roots");
        let b = c.clusters["b"].tls_origination.clone().unwrap();
        assert_eq!(
            (b.client_certificate, b.ca_certificates.as_deref()),
            (None, Some("/roots.pem")),
            "SIMPLE: roots as given"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_opens_only_declared_ports_and_never_the_sidecars_own() {
        let mut c = config("inbound: {tcpPorts: [5432, 6379, 15000], httpPorts: [8081, 9090, 15021]}\n");
        let declared = DeclaredPorts::new(
            None,
            80,
            &[5432, 8081, 15000].map(|p| weft_model::ServicePort {
                port: p,
                protocol: (p == 5432 || p == 15000).then_some(weft_model::AppProtocol::Tcp),
            }),
        );
        restrict_ports(&mut c, Some(&declared));
        assert_eq!((c.inbound.tcp_ports.as_slice(), c.inbound.http_ports.as_slice()), (&[5432][..], &[8081][..]));
        let mut static_file = config("inbound: {tcpPorts: [5432, 15000], httpPorts: [15090, 9090]}\n");
        restrict_ports(&mut static_file, None);
        assert_eq!((static_file.inbound.tcp_ports, static_file.inbound.http_ports), (vec![5432], vec![9090]));
    }
}
