//! Mesh mTLS with SPIFFE identities (rustls 0.23, TLS 1.3, ring).
//!
//! The client checks the server's chain against the mesh root and that its
//! SPIFFE ID is one the destination runs as; the server checks the client's
//! chain and hands the peer's SPIFFE ID to the request. Handshakes happen per
//! connection; connections are pooled, so never per request.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The name put in SNI; identities are checked by SPIFFE ID, not by name.
pub(crate) const MESH_SNI: &str = "weft.mesh";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The most a credential file may hold: certificates and keys are a few KiB, Debian's
/// bundle of public roots about 200 KiB.
const MAX_CREDENTIAL_FILE: u64 = 1 << 20;

/// A credential file a YAML author names (a gateway's or a DestinationRule's): a regular
/// file (a mounted Secret's symlinks are followed) of at most 1 MiB — never a device, a
/// FIFO or a directory.
pub(crate) fn read_credential(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_CREDENTIAL_FILE {
        return Err(format!("{} is larger than {MAX_CREDENTIAL_FILE} bytes", path.display()));
    }
    let mut bytes = Vec::new();
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CREDENTIAL_FILE).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
}

/// Debian's bundle of public roots (package ca-certificates): what TLS origination
/// trusts unless a DestinationRule names its own `caCertificates`.
pub(crate) const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS the sidecar originates to a server outside the mesh (DestinationRule
/// `tls.mode: SIMPLE` or `MUTUAL`): the server must chain to the roots and be valid for the
/// SNI name or carry one of `subjectAltNames` (unless `insecureSkipVerify`); MUTUAL presents
/// the client certificate.
pub struct Origination {
    pub spec: weft_model::TlsOrigination,
    pub name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    /// A hash of the files' bytes as read: the same spec over renewed files is another
    /// origination (new connections, the new certificate).
    read: u64,
}

impl Origination {
    /// Reads the roots (`caCertificates`, else the system's) and, for MUTUAL, the client
    /// certificate, and builds the client side.
    pub fn new(spec: &weft_model::TlsOrigination) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        use std::hash::{Hash, Hasher};
        let mut read = std::collections::hash_map::DefaultHasher::new();
        let mut read_file = |path: &str| -> Result<Vec<u8>, String> {
            let bytes = read_credential(std::path::Path::new(path))?;
            bytes.hash(&mut read);
            Ok(bytes)
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if spec.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ServerVerifier::insecure()))
        } else {
            let file = spec.ca_certificates.as_deref().unwrap_or(SYSTEM_ROOTS);
            let mut roots = rustls::RootCertStore::empty();
            let pem = read_file(file)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{file}: {e}"))?;
                roots.add(cert).map_err(|e| format!("{file}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("{file} holds no certificate"));
            }
            if spec.subject_alt_names.is_empty() {
                builder.with_root_certificates(roots)
            } else {
                let verifier = ServerVerifier::subject_alt_names(roots.roots, spec.subject_alt_names.clone());
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
            }
        };
        let config = if spec.mutual {
            let (Some(cert), Some(key)) = (&spec.client_certificate, &spec.private_key) else {
                return Err(format!(
                    "MUTUAL without a client certificate (credentialName {:?} not read)",
                    spec.credential_name
                ));
            };
            let chain = CertificateDer::pem_slice_iter(&read_file(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("{cert} holds no certificate"));
            }
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read_file(key)?)
                .map_err(|e| format!("{key}: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("the client certificate: {e}"))?
        } else {
            builder.with_no_client_auth()
        };
        let name = ServerName::try_from(spec.sni.clone()).map_err(|e| format!("sni {:?}: {e}", spec.sni))?;
        Ok(Origination { spec: spec.clone(), name, config: Arc::new(config), read: read.finish() })
    }

    /// The client configuration for a connection speaking HTTP/2 or HTTP/1.1 (ALPN).
    pub fn config(&self, h2: bool) -> Arc<rustls::ClientConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
        Arc::new(config)
    }
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination").field("spec", &self.spec).finish()
    }
}

impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.read == other.read
    }
}

impl Eq for Origination {}

/// The SPIFFE ID (URI SAN `spiffe://…`) of a certificate.
pub fn spiffe_id(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
        _ => None,
    })
}

/// Verifies a server: chain to the roots, then one of the allowed names — its SPIFFE ID
/// (mesh mTLS), or any of its DNS and URI SANs (a DestinationRule's `subjectAltNames`); or
/// nothing at all (`insecureSkipVerify`). The handshake's signature is checked always.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    allowed: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
    check: Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    SpiffeId,
    AnySan,
    Nothing,
}

impl ServerVerifier {
    /// Mesh mTLS: the chain, then a SPIFFE ID among `allowed`.
    pub(crate) fn new(anchors: Vec<rustls::pki_types::TrustAnchor<'static>>, allowed: Vec<String>) -> Self {
        ServerVerifier { anchors, allowed, algs: algorithms(), check: Check::SpiffeId }
    }

    /// The chain, then any DNS or URI SAN among `allowed`.
    pub(crate) fn subject_alt_names(
        anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
        allowed: Vec<String>,
    ) -> Self {
        ServerVerifier { anchors, allowed, algs: algorithms(), check: Check::AnySan }
    }

    /// No check of the certificate (Istio's `insecureSkipVerify`).
    pub(crate) fn insecure() -> Self {
        ServerVerifier { anchors: Vec::new(), allowed: Vec::new(), algs: algorithms(), check: Check::Nothing }
    }
}

/// A certificate's DNS and URI subject alternative names.
fn subject_alt_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("bad certificate: {e}")))?;
        cert.verify_for_usage(
            self.algs.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| rustls::Error::General(format!("server certificate not from the trusted roots: {e}")))?;
        if self.check == Check::AnySan {
            let names = subject_alt_names(end_entity);
            if !names.iter().any(|n| self.allowed.contains(n)) {
                return Err(rustls::Error::General(format!("server names {names:?} are none of {:?}", self.allowed)));
            }
            return Ok(ServerCertVerified::assertion());
        }
        let id = spiffe_id(end_entity)
            .ok_or_else(|| rustls::Error::General("server certificate has no SPIFFE ID".into()))?;
        if !self.allowed.contains(&id) {
            return Err(rustls::Error::General(format!("server identity {id} is not one of {:?}", self.allowed)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A plain or TLS upstream connection.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS ClientHello starts with a handshake record: 0x16, then version 0x03.
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&0x16) && first.get(1).is_none_or(|b| *b == 0x03)
}

/// The identity the control plane proves on its TLS listener.
pub fn control_plane_id(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/ns/weft-system/sa/weft-control-plane")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_yaml_author_cannot_point_origination_at_a_device_a_directory_or_nothing() {
        let spec = |ca: &str| weft_model::TlsOrigination {
            sni: "api.example".into(),
            ca_certificates: Some(ca.into()),
            ..Default::default()
        };
        for (path, why) in
            [("/dev/zero", "not a regular file"), ("/etc", "not a regular file"), ("/nonexistent.pem", "No such file")]
        {
            let err = Origination::new(&spec(path)).unwrap_err();
            assert!(err.contains(why), "{path}: {err}");
        }
        let mutual =
            weft_model::TlsOrigination { mutual: true, credential_name: Some("partner".into()), ..spec(SYSTEM_ROOTS) };
        assert!(Origination::new(&mutual).unwrap_err().contains("MUTUAL without a client certificate"));
        let insecure = weft_model::TlsOrigination { insecure_skip_verify: true, ..spec("/dev/zero") };
        assert!(Origination::new(&insecure).is_ok(), "no roots are read when nothing is verified");
    }
}
