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
use std::sync::Arc;
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
/// The next root, while a rotation runs (`weftctl ca rotate`).
pub const NEXT_CERT_FILE: &str = "next-ca-cert.pem";
pub const NEXT_KEY_FILE: &str = "next-ca-key.pem";

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

/// One root that can sign: its certificate, key and fingerprint.
struct Signer {
    root_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
    fingerprint: String,
}

impl Signer {
    fn new(parts: &CaParts) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&parts.key_pem)?;
        // Rebuild the issuer from the root; the root's PEM stays the trust anchor.
        let issuer = CertificateParams::from_ca_cert_pem(&parts.root_pem)?.self_signed(&key)?;
        Ok(Signer { fingerprint: fingerprint(&parts.root_pem)?, root_pem: parts.root_pem.clone(), issuer, key })
    }
}

/// The roots a CA directory holds: the current one and, while a rotation
/// runs, the next one (`weftctl ca rotate`).
struct Keys {
    current: Signer,
    next: Option<Signer>,
}

/// The mesh CA. Which root signs and which roots are trusted is decided by the
/// rotation (see `rotation.rs`) and published in etcd; every control plane
/// follows what is published, so they all sign with the same root.
pub struct Ca {
    trust_domain: String,
    dir: Option<std::path::PathBuf>,
    keys: std::sync::RwLock<Arc<Keys>>,
    /// The published trust: bundle and signer.
    trust: std::sync::RwLock<weft_model::Trust>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

/// SHA-256 (hex) of the first certificate in `pem` (its DER).
pub fn fingerprint(pem: &str) -> Result<String, CaError> {
    let der = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .ok_or_else(|| CaError::Files("no certificate in PEM".into()))?
        .map_err(|e| CaError::Files(e.to_string()))?
        .contents;
    Ok(ring::digest::digest(&ring::digest::SHA256, &der).as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// The fingerprints of every certificate in a PEM bundle, in order.
pub fn fingerprints(pem: &str) -> Vec<String> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|p| {
            ring::digest::digest(&ring::digest::SHA256, &p.contents)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect()
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
        self.write_as(dir, CERT_FILE, KEY_FILE)
    }

    /// Writes this root as the next one (`next-ca-cert.pem`, `next-ca-key.pem`): a rotation starts.
    pub fn write_next(&self, dir: &Path) -> Result<(), CaError> {
        self.write_as(dir, NEXT_CERT_FILE, NEXT_KEY_FILE)
    }

    fn write_as(&self, dir: &Path, cert_file: &str, key_file: &str) -> Result<(), CaError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |p: &Path, e: std::io::Error| CaError::Files(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let key = dir.join(key_file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .map_err(|e| err(&key, e))?;
        f.write_all(self.key_pem.as_bytes()).map_err(|e| err(&key, e))?;
        let cert = dir.join(cert_file);
        std::fs::write(&cert, &self.root_pem).map_err(|e| err(&cert, e))?;
        Ok(())
    }

    /// Reads `ca-cert.pem` and `ca-key.pem` from `dir`. The key must not be
    /// readable by group or others (as ssh insists): a CA key anyone on the
    /// host can read is refused, not used.
    pub fn read_dir(dir: &Path) -> Result<Self, CaError> {
        Self::read_as(dir, CERT_FILE, KEY_FILE)
    }

    /// The next root, if a rotation runs.
    pub fn read_next(dir: &Path) -> Result<Option<Self>, CaError> {
        if !dir.join(NEXT_KEY_FILE).exists() {
            return Ok(None);
        }
        Self::read_as(dir, NEXT_CERT_FILE, NEXT_KEY_FILE).map(Some)
    }

    fn read_as(dir: &Path, cert_file: &str, key_file: &str) -> Result<Self, CaError> {
        use std::os::unix::fs::PermissionsExt;
        let (cert, key) = (dir.join(cert_file), dir.join(key_file));
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
    /// A CA of one root, held in memory (tests, benches).
    pub fn from_parts(parts: &CaParts, trust_domain: &str) -> Result<Self, CaError> {
        Self::new(parts, None, trust_domain, None)
    }

    fn new(
        parts: &CaParts,
        next: Option<&CaParts>,
        trust_domain: &str,
        dir: Option<std::path::PathBuf>,
    ) -> Result<Self, CaError> {
        let current = Signer::new(parts)?;
        let next = next.map(Signer::new).transpose()?;
        let trust = weft_model::Trust { roots: current.root_pem.clone(), signer: current.fingerprint.clone() };
        Ok(Ca {
            trust_domain: trust_domain.to_string(),
            dir,
            keys: std::sync::RwLock::new(Arc::new(Keys { current, next })),
            trust: std::sync::RwLock::new(trust),
        })
    }

    /// The CA from its directory (`--ca-dir`): the current root, and the next one while a rotation runs.
    pub fn from_dir(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let next = CaParts::read_next(dir)?;
        Self::new(&CaParts::read_dir(dir)?, next.as_ref(), trust_domain, Some(dir.to_path_buf()))
    }

    /// Reads the directory again (a rotation started or finished); true if the roots changed.
    pub fn reload(&self) -> Result<bool, CaError> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let (current, next) = (CaParts::read_dir(dir)?, CaParts::read_next(dir)?);
        let same = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            keys.current.root_pem == current.root_pem
                && keys.next.as_ref().map(|n| &n.root_pem) == next.as_ref().map(|n| &n.root_pem)
        };
        if same {
            return Ok(false);
        }
        let keys = Keys { current: Signer::new(&current)?, next: next.as_ref().map(Signer::new).transpose()? };
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(true)
    }

    /// The roots this CA holds: (current, next), as (fingerprint, PEM).
    pub fn roots(&self) -> ((String, String), Option<(String, String)>) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let pair = |s: &Signer| (s.fingerprint.clone(), s.root_pem.clone());
        (pair(&keys.current), keys.next.as_ref().map(pair))
    }

    /// Follows the published trust: signs with its signer from now on (when this CA holds it).
    pub fn follow(&self, trust: &weft_model::Trust) {
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = trust.clone();
    }

    /// The trust this CA follows: the bundle peers trust and the root that signs.
    pub fn trust(&self) -> weft_model::Trust {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The root that signs now (PEM).
    pub fn root_pem(&self) -> String {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.with_signer(&keys, |s| s.root_pem.clone())
    }

    fn with_signer<T>(&self, keys: &Keys, f: impl FnOnce(&Signer) -> T) -> T {
        let signer = self.trust.read().unwrap_or_else(|p| p.into_inner()).signer.clone();
        match &keys.next {
            Some(n) if n.fingerprint == signer => f(n),
            _ => f(&keys.current),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn spiffe_id(&self, ns: &str, sa: &str) -> String {
        format!("spiffe://{}/ns/{ns}/sa/{sa}", self.trust_domain)
    }

    /// Signs a workload certificate for `ns`/`sa` with the CSR's public key, from the root
    /// that signs now. The CSR's signature is checked (proof of possession); its names are ignored.
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
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let cert = self.with_signer(&keys, |s| params.signed_by(&csr.public_key, &s.issuer, &s.key))?;
        Ok(cert.pem())
    }
}

/// Where the published trust (bundle and signer, [`weft_model::Trust`] as JSON) lives in etcd.
pub fn trust_key(store: &Store) -> String {
    format!("{}ca/trust", store.prefix())
}

/// The trust control planes published, with its etcd revision.
pub async fn read_trust(store: &Store) -> Result<Option<(weft_model::Trust, i64)>, CaError> {
    let got = store.client().kv_client().get(trust_key(store), None).await?;
    match got.kvs().first() {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(kv.value())
            .map(|t| Some((t, kv.mod_revision())))
            .map_err(|e| CaError::Files(format!("{}: {e}", trust_key(store)))),
    }
}

/// The trust bundle control planes published (PEM), if any.
pub async fn read_bundle(store: &Store) -> Result<Option<String>, CaError> {
    Ok(read_trust(store).await?.map(|(t, _)| t.roots))
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
