//! The sidecar's workload identity: its own key (generated here, never sent
//! anywhere), a certificate for it from the control plane's CA — asked for
//! with the bootstrap token — renewed at half its lifetime with jitter, kept
//! in force while a renewal fails, and the trust bundle that comes with it.

use arc_swap::ArcSwapOption;
use rand::Rng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weft_model::stream::{SignRequest, SignResponse, SIGN_PATH};

/// One certificate with its key and the roots it came with.
pub struct Leaf {
    pub id: String,
    /// SHA-256 (hex) of the root that signed this certificate, when the control plane said.
    pub issuer: Option<String>,
    /// The trust bundle (PEM) the roots below come from.
    pub roots_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub(crate) anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    pub roots: Arc<rustls::RootCertStore>,
    pub server: Arc<rustls::ServerConfig>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf").field("id", &self.id).field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("bad certificate: {0}")]
    Cert(String),
    #[error("control plane: {0}")]
    Request(String),
}

fn pem_to_der(pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| IdentityError::Cert(e.to_string()))?;
        out.push(CertificateDer::from(p.contents));
    }
    if out.is_empty() {
        return Err(IdentityError::Cert("no certificate in PEM".into()));
    }
    Ok(out)
}

impl Leaf {
    /// A leaf from files another CA issued (cert-manager, SPIRE, a bench): the
    /// certificate (chain), its PKCS#8 key and the root, all PEM. Not renewed.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        root: &std::path::Path,
    ) -> Result<Self, IdentityError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| IdentityError::Cert(format!("{}: {e}", p.display())))
        };
        let key_pem = read(key)?;
        let key_der = x509_parser::pem::Pem::iter_from_buffer(key_pem.as_bytes())
            .filter_map(Result::ok)
            .find(|p| p.label == "PRIVATE KEY")
            .map(|p| p.contents)
            .ok_or_else(|| IdentityError::Cert(format!("{}: no PKCS#8 PRIVATE KEY block", key.display())))?;
        Self::new(key_der, &read(cert)?, &read(root)?)
    }

    /// Builds a leaf from the PKCS#8 key, the certificate and the root (PEM).
    pub fn new(key_der: Vec<u8>, cert_pem: &str, root_pem: &str) -> Result<Self, IdentityError> {
        Self::from_der(key_der, pem_to_der(cert_pem)?, root_pem)
    }

    /// The same certificate and key, trusting the roots of `root_pem` instead (a rotation's bundle).
    pub(crate) fn with_roots(&self, root_pem: &str) -> Result<Self, IdentityError> {
        let mut leaf = Self::from_der(self.key.secret_der().to_vec(), self.chain.clone(), root_pem)?;
        leaf.issuer = self.issuer.clone();
        Ok(leaf)
    }

    fn from_der(key_der: Vec<u8>, chain: Vec<CertificateDer<'static>>, root_pem: &str) -> Result<Self, IdentityError> {
        let roots_der = pem_to_der(root_pem)?;
        let id =
            crate::security::tls::spiffe_id(&chain[0]).ok_or_else(|| IdentityError::Cert("no SPIFFE ID".into()))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| IdentityError::Cert(e.to_string()))?;
        let secs = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let (not_before, not_after) =
            (secs(parsed.validity().not_before.timestamp()), secs(parsed.validity().not_after.timestamp()));
        let mut roots = rustls::RootCertStore::empty();
        let mut anchors = Vec::new();
        for r in &roots_der {
            roots.add(r.clone())?;
            anchors
                .push(webpki::anchor_from_trusted_cert(r).map_err(|e| IdentityError::Cert(e.to_string()))?.to_owned());
        }
        let roots = Arc::new(roots);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            crate::security::tls::provider(),
        )
        .build()
        .map_err(|e| IdentityError::Cert(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(crate::security::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), crate::net::tcp::ALPN.to_vec()];
        Ok(Leaf {
            id,
            issuer: None,
            roots_pem: root_pem.to_string(),
            chain,
            key,
            anchors,
            roots,
            server: Arc::new(server),
            not_before,
            not_after,
        })
    }
}

/// The current certificate, swapped atomically on renewal.
#[derive(Debug)]
pub struct Identity {
    current: ArcSwapOption<Leaf>,
    /// Counts installs: the control stream reports each new certificate's issuer.
    installed: tokio::sync::watch::Sender<u64>,
    /// Wakes the renewal loop early (a rotation moved signing to another root).
    renew: tokio::sync::Notify,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            current: ArcSwapOption::default(),
            installed: tokio::sync::watch::channel(0).0,
            renew: tokio::sync::Notify::new(),
        }
    }
}

impl Identity {
    pub fn current(&self) -> Option<Arc<Leaf>> {
        self.current.load_full()
    }

    pub fn install(&self, leaf: Leaf) {
        self.current.store(Some(Arc::new(leaf)));
        self.installed.send_modify(|n| *n += 1);
    }

    /// Changes each time a certificate is installed.
    pub fn installs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Asks the renewal loop for a new certificate now.
    pub(crate) fn renew_now(&self) {
        self.renew.notify_one();
    }

    /// Whether `trust` could be followed (its bundle parses); changes nothing.
    pub(crate) fn check_trust(&self, trust: &weft_model::Trust) -> Result<(), IdentityError> {
        match self.current() {
            Some(leaf) if leaf.roots_pem != trust.roots => leaf.with_roots(&trust.roots).map(drop),
            _ => Ok(()),
        }
    }

    /// Follows the control plane's trust: peers' certificates may chain to any
    /// root of the bundle; a certificate from a root that no longer signs is
    /// renewed at once. Errors leave the current certificate as it was.
    pub fn trust(&self, trust: &weft_model::Trust) -> Result<(), IdentityError> {
        let Some(leaf) = self.current() else { return Ok(()) };
        if leaf.roots_pem != trust.roots {
            self.current.store(Some(Arc::new(leaf.with_roots(&trust.roots)?)));
        }
        if leaf.issuer.as_deref() != Some(trust.signer.as_str()) {
            self.renew.notify_one();
        }
        Ok(())
    }
}

/// Where to get certificates.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    pub urls: Vec<String>,
    pub token: String,
    /// TLS to the control plane (`--ca-file`); plaintext when `None`.
    pub tls: Option<ControlPlaneTls>,
}

/// Asks for a certificate: a fresh key, a CSR, the token.
pub(crate) async fn fetch(url: &str, token: &str, tls: Option<&ControlPlaneTls>) -> Result<Leaf, IdentityError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?.pem()?;
    let body = serde_json::to_vec(&SignRequest { token: token.trim().to_string(), csr })
        .map_err(|e| IdentityError::Request(e.to_string()))?;
    let authority = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    let io = connect_control_plane(authority, tls, false).await.map_err(IdentityError::Request)?;
    let req = http::Request::post(SIGN_PATH)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| IdentityError::Request(e.to_string()))?;
    let resp =
        crate::net::client::send_over(hyper_util::rt::TokioIo::new(io), req).await.map_err(IdentityError::Request)?;
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| IdentityError::Request(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(IdentityError::Request(format!("{status}: {}", String::from_utf8_lossy(&bytes).trim())));
    }
    let signed: SignResponse = serde_json::from_slice(&bytes).map_err(|e| IdentityError::Request(e.to_string()))?;
    let mut leaf = Leaf::new(key.serialize_der(), &signed.certificate, &signed.root)?;
    leaf.issuer = signed.signer;
    Ok(leaf)
}

/// When to renew: half the lifetime, with up to 10 % jitter either way.
pub(crate) fn renew_after(leaf: &Leaf, now: SystemTime) -> Duration {
    let life = leaf.not_after.duration_since(leaf.not_before).unwrap_or_default();
    // NotBefore is set back for clock skew; count the lifetime from now-ish.
    let issued_for = life.saturating_sub(Duration::from_secs(120)).max(Duration::from_secs(1));
    let half = issued_for / 2;
    let jitter = rand::thread_rng().gen_range(0.9..1.1);
    let target = half.mul_f64(jitter);
    let elapsed = now.duration_since(leaf.not_before + Duration::from_secs(120).min(life)).unwrap_or_default();
    target.saturating_sub(elapsed).max(Duration::from_millis(200))
}

/// Keeps a valid certificate installed, forever. The token is shown only
/// while there is no certificate yet: a renewal presents the current
/// certificate, and the control plane signs for the identity it proves.
pub async fn run(identity: Arc<Identity>, mut options: IdentityOptions) {
    if let Some(tls) = options.tls.as_mut() {
        tls.identity = Some(identity.clone());
    }
    let mut backoff = Duration::from_millis(200);
    let mut next = rand::thread_rng().gen_range(0..options.urls.len().max(1));
    loop {
        let url = &options.urls[next % options.urls.len().max(1)];
        next += 1;
        match fetch(url, &options.token, options.tls.as_ref()).await {
            Ok(leaf) => {
                tracing::info!(id = %leaf.id, "workload certificate installed");
                let wait = renew_after(&leaf, SystemTime::now());
                identity.install(leaf);
                backoff = Duration::from_millis(200);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = identity.renew.notified() => tracing::info!("renewing now: another root signs"),
                }
            }
            Err(e) => {
                // The current certificate (if any) stays in force.
                tracing::warn!(%url, "certificate request failed, retrying in {backoff:?}: {e}");
                let wait = rand::thread_rng().gen_range(backoff / 2..=backoff);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// A client config presenting `leaf` and accepting only `allowed` servers.
pub fn client_config(
    leaf: &Arc<Leaf>,
    allowed: &[String],
    h2: bool,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let verifier = Arc::new(crate::security::tls::ServerVerifier::new(leaf.anchors.clone(), allowed.to_vec()));
    let mut config = rustls::ClientConfig::builder_with_provider(crate::security::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key())?;
    config.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(config))
}

/// How a sidecar reaches the control plane over TLS: the mesh root it trusts
/// (`--ca-file`), the identity the control plane must prove, and — once it has
/// one — its own certificate (mutual TLS).
#[derive(Debug, Clone)]
pub struct ControlPlaneTls {
    pub(crate) anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    pub control_plane_id: String,
    pub identity: Option<Arc<Identity>>,
}

impl ControlPlaneTls {
    /// Reads the root from a PEM file; the control plane must prove
    /// `spiffe://<trust_domain>/ns/weft-system/sa/weft-control-plane`.
    pub fn from_file(path: &std::path::Path, trust_domain: &str) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_pem(&pem, trust_domain).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The same from the root's PEM text.
    pub fn from_pem(pem: &str, trust_domain: &str) -> Result<Self, String> {
        let mut anchors = Vec::new();
        for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let p = p.map_err(|e| e.to_string())?;
            let der = CertificateDer::from(p.contents);
            anchors.push(webpki::anchor_from_trusted_cert(&der).map_err(|e| e.to_string())?.to_owned());
        }
        if anchors.is_empty() {
            return Err("no certificate".into());
        }
        Ok(ControlPlaneTls {
            anchors,
            control_plane_id: crate::security::tls::control_plane_id(trust_domain),
            identity: None,
        })
    }

    /// TLS over `tcp`, presenting our certificate if we have one. Once we
    /// have one, the control plane is checked against the bundle that came
    /// with it (which follows a root rotation), else against `--ca-file`.
    pub async fn connect(&self, tcp: tokio::net::TcpStream, h2: bool) -> Result<crate::security::tls::Conn, String> {
        let leaf = self.identity.as_ref().and_then(|i| i.current());
        let anchors = leaf.as_ref().map_or_else(|| self.anchors.clone(), |l| l.anchors.clone());
        let verifier =
            Arc::new(crate::security::tls::ServerVerifier::new(anchors, vec![self.control_plane_id.clone()]));
        let builder = rustls::ClientConfig::builder_with_provider(crate::security::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match leaf {
            Some(leaf) => {
                builder.with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key()).map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
        let name =
            rustls::pki_types::ServerName::try_from(crate::security::tls::MESH_SNI).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("control plane TLS: {e}"))?;
        Ok(crate::security::tls::Conn::Tls(Box::new(tls)))
    }
}

/// Connects to a control plane: TLS when `tls` is given, else plaintext.
pub async fn connect_control_plane(
    authority: &str,
    tls: Option<&ControlPlaneTls>,
    h2: bool,
) -> Result<crate::security::tls::Conn, String> {
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(t) => t.connect(tcp, h2).await,
        None => Ok(crate::security::tls::Conn::Plain(tcp)),
    }
}
