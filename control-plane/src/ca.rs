//! The mesh certificate authority, Istio's plug-in CA model: the root
//! certificate and its key are read from files that only control planes
//! mount (`ca-cert.pem`, `ca-key.pem`, as in Istio's `cacerts` Secret), never
//! from etcd. etcd holds only the public trust bundle (`ca/bundle`), which
//! `weftctl root-cert` prints for sidecars' `--ca-file`. Workload
//! certificates are signed for the identity a bootstrap token or the
//! caller's current certificate proves — never the identity a CSR asks for.
//!
//! Certificates: ECDSA P-256, URI SAN `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`,
//! server and client EKU, NotBefore 2 minutes back (clock skew), 24 h TTL by
//! default — Istio's choices (shared/ISTIO-SEMANTICS.md §5).

use crate::store::Store;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;
use std::time::Duration;

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far back NotBefore is set, for clock skew.
pub const NOT_BEFORE_SKEW: Duration = Duration::from_secs(120);
/// The CA's files in its directory (Istio's `cacerts` names).
pub const CERT_FILE: &str = "ca-cert.pem";
pub const KEY_FILE: &str = "ca-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("etcd: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Files(String),
    #[error("invalid CSR: {0}")]
    Csr(String),
}

/// The mesh CA.
pub struct Ca {
    root_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
    trust_domain: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

/// A root certificate and its key, PEM.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaParts {
    pub root_pem: String,
    pub key_pem: String,
}

impl CaParts {
    /// A new root: ECDSA P-256, 10 years.
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "Weft mesh root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(2);
        params.not_after = now + time::Duration::days(3650);
        let root = params.self_signed(&key)?;
        Ok(CaParts { root_pem: root.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca-cert.pem` (0644) and `ca-key.pem` (0600, created so: never
    /// readable by others, not even for a moment) into `dir`; refuses to
    /// overwrite an existing key.
    pub fn write_dir(&self, dir: &Path) -> Result<(), CaError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |p: &Path, e: std::io::Error| CaError::Files(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let key = dir.join(KEY_FILE);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .map_err(|e| err(&key, e))?;
        f.write_all(self.key_pem.as_bytes()).map_err(|e| err(&key, e))?;
        let cert = dir.join(CERT_FILE);
        std::fs::write(&cert, &self.root_pem).map_err(|e| err(&cert, e))?;
        Ok(())
    }

    /// Reads `ca-cert.pem` and `ca-key.pem` from `dir`. The key must not be
    /// readable by group or others (as ssh insists): a CA key anyone on the
    /// host can read is refused, not used.
    pub fn read_dir(dir: &Path) -> Result<Self, CaError> {
        use std::os::unix::fs::PermissionsExt;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| CaError::Files(format!("{}: {e}", p.display())));
        let mode = std::fs::metadata(&key)
            .map_err(|e| CaError::Files(format!("{}: {e}", key.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(CaError::Files(format!(
                "{}: the CA key is readable by others (mode {:o}); chmod 600 it",
                key.display(),
                mode & 0o777
            )));
        }
        Ok(CaParts { root_pem: read(&cert)?, key_pem: read(&key)? })
    }
}

impl Ca {
    pub fn from_parts(parts: &CaParts, trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&parts.key_pem)?;
        // Rebuild the issuer from the root; the root's PEM stays the trust anchor.
        let issuer = CertificateParams::from_ca_cert_pem(&parts.root_pem)?.self_signed(&key)?;
        Ok(Ca { root_pem: parts.root_pem.clone(), issuer, key, trust_domain: trust_domain.to_string() })
    }

    /// The CA from its directory (`--ca-dir`).
    pub fn from_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        Self::from_parts(&CaParts::read_dir(dir)?, trust_domain)
    }

    /// Publishes the trust bundle (the root certificate, public) in etcd for `weftctl root-cert`.
    pub async fn publish(&self, store: &Store) -> Result<(), CaError> {
        let mut kv = store.client().kv_client();
        kv.put(bundle_key(store), self.root_pem.as_bytes().to_vec(), None).await?;
        Ok(())
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn spiffe_id(&self, ns: &str, sa: &str) -> String {
        format!("spiffe://{}/ns/{ns}/sa/{sa}", self.trust_domain)
    }

    /// Signs a workload certificate for `ns`/`sa` with the CSR's public key.
    /// The CSR's signature is checked (proof of possession); its names are ignored.
    pub fn sign(&self, csr_pem: &str, ns: &str, sa: &str, ttl: Duration) -> Result<String, CaError> {
        self.sign_with_dns(csr_pem, ns, sa, ttl, &[])
    }

    /// As [`Ca::sign`], with DNS names too (the control plane's own certificate,
    /// which the Kubernetes API server checks when it calls the injection webhook).
    pub fn sign_with_dns(
        &self,
        csr_pem: &str,
        ns: &str,
        sa: &str,
        ttl: Duration,
        dns: &[&str],
    ) -> Result<String, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::Csr(e.to_string()))?;
        let id = self.spiffe_id(ns, sa);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(id.clone().try_into().map_err(|_| CaError::Csr(format!("{id} is not a URI")))?)];
        for name in dns {
            params.subject_alt_names.push(SanType::DnsName(
                (*name).try_into().map_err(|_| CaError::Csr(format!("{name} is not a DNS name")))?,
            ));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(NOT_BEFORE_SKEW.as_secs() as i64);
        params.not_after = now + time::Duration::milliseconds(ttl.as_millis() as i64);
        let cert = params.signed_by(&csr.public_key, &self.issuer, &self.key)?;
        Ok(cert.pem())
    }
}

/// Where the trust bundle lives in etcd.
pub fn bundle_key(store: &Store) -> String {
    format!("{}ca/bundle", store.prefix())
}

/// The trust bundle control planes published (PEM), if any.
pub async fn read_bundle(store: &Store) -> Result<Option<String>, CaError> {
    let got = store.client().kv_client().get(bundle_key(store), None).await?;
    Ok(got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{SystemTime, UNIX_EPOCH};

    fn ca() -> Ca {
        Ca::from_parts(&CaParts::generate("cluster.local").unwrap(), "cluster.local").unwrap()
    }

    #[test]
    fn signs_the_token_identity_not_the_csr_names() {
        let ca = ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut asked = CertificateParams::default();
        asked.subject_alt_names =
            vec![SanType::URI("spiffe://cluster.local/ns/production/sa/admin".try_into().unwrap())];
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca.sign(&csr, "production", "order-service", Duration::from_secs(3600)).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = parsed.parse_x509().unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert_eq!(sans, ["URI(spiffe://cluster.local/ns/production/sa/order-service)"]);
        let skew = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
            - cert.validity().not_before.timestamp();
        assert!((110..=130).contains(&skew), "NotBefore two minutes back: {skew}");
    }

    #[test]
    fn the_key_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("weft-ca-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let parts = CaParts::generate("cluster.local").unwrap();
        parts.write_dir(&dir).unwrap();
        let key = dir.join(KEY_FILE);
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(CaParts::generate("cluster.local").unwrap().write_dir(&dir).is_err(), "an existing key is kept");
        assert_eq!(CaParts::read_dir(&dir).unwrap().key_pem, parts.key_pem);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CaParts::read_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("readable by others"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
