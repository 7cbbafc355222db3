//! A gateway server's TLS: its certificate, key and client CA read from PEM files
//! (a mounted Secret or Istio's file form), turned into a rustls server config, and
//! read again when the files change (the gateway polls their size and mtime).

use crate::security::tls::read_credential as read;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use weft_model::gateway::{Credential, ServerTls, ServerTlsMode, TlsVersion};

/// The files a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Files {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// MUTUAL's client CA.
    pub ca: Option<PathBuf>,
}

impl Files {
    /// Where `credential` lives: `credentialName` is a directory under `dir` holding a
    /// Kubernetes TLS Secret's keys (`tls.crt`, `tls.key`, `ca.crt`; the CA may also be
    /// in `<name>-cacert/ca.crt`, Istio's separate CA Secret).
    pub(super) fn of(credential: &Credential, mode: ServerTlsMode, dir: &Path) -> Files {
        match credential {
            Credential::Name(name) => {
                let own = dir.join(name);
                let ca = (mode == ServerTlsMode::Mutual).then(|| {
                    let inside = own.join("ca.crt");
                    if inside.exists() {
                        inside
                    } else {
                        dir.join(format!("{name}-cacert")).join("ca.crt")
                    }
                });
                Files { certificate: own.join("tls.crt"), private_key: own.join("tls.key"), ca }
            }
            Credential::Files { certificate, private_key, ca_certificates } => Files {
                certificate: certificate.into(),
                private_key: private_key.into(),
                ca: ca_certificates.as_ref().filter(|_| mode == ServerTlsMode::Mutual).map(PathBuf::from),
            },
        }
    }

    /// What the files look like now (size and mtime); a change means read them again.
    pub(super) fn stamp(&self) -> Stamp {
        let one =
            |p: &Path| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        Stamp([one(&self.certificate), one(&self.private_key), self.ca.as_deref().and_then(one)])
    }
}

/// Size and mtime of a credential's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp([Option<(u64, SystemTime)>; 3]);

impl Stamp {
    /// The certificate file is not there (the Secret was deleted).
    pub(super) fn certificate_gone(&self) -> bool {
        self.0[0].is_none()
    }
}

/// Reads a server's credential and builds its TLS config: its certificate chain, TLS 1.2
/// or later (1.3 with `minProtocolVersion: TLSV1_3`), ALPN h2 then http/1.1, and for
/// MUTUAL a client certificate that chains to the CA, required. The error names the
/// file, never its content.
/// Also returns the policy's fingerprint: the settings and the client CA's bytes, so a CA
/// replaced in the same files is a new policy (a new server certificate is not).
pub(crate) fn server_config(tls: &ServerTls, files: &Files) -> Result<(Arc<rustls::ServerConfig>, u64), String> {
    use std::hash::{Hash, Hasher};
    let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
    tls.hash(&mut fingerprint);
    let provider = crate::security::tls::provider();
    let pem = read(&files.certificate)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", files.certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.private_key)?)
        .map_err(|e| format!("{}: no private key read ({e})", files.private_key.display()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_protocol_version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        Some(TlsVersion::Tls12) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match (&tls.mode, &files.ca) {
        (ServerTlsMode::Mutual, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            let ca_pem = read(ca)?;
            ca_pem.hash(&mut fingerprint);
            for cert in CertificateDer::pem_slice_iter(&ca_pem) {
                roots
                    .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{} holds no certificate", ca.display()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (ServerTlsMode::Mutual, None) => return Err("MUTUAL without a client CA".into()),
        (ServerTlsMode::Simple, _) => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} and {}: {e}", files.certificate.display(), files.private_key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint.finish()))
}
