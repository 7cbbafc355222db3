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
//!
//! Size: one authority (roots from files, signing, the published bundle and the
//! trust rotation reads) in about 430 lines, then its tests.

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
/// The control plane's own namespace and service account: sidecars accept only it as the control
/// plane, so it is never signed for a caller (token or certificate).
pub const CONTROL_PLANE_IDENTITY: (&str, &str) = ("weft-system", "weft-control-plane");

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
    Etcd(Box<etcd_client::Error>),
    #[error("{0}")]
    Files(String),
    #[error("invalid CSR: {0}")]
    Csr(String),
}

impl From<etcd_client::Error> for CaError {
    fn from(e: etcd_client::Error) -> Self {
        CaError::Etcd(Box::new(e))
    }
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
    Ok(sha256_hex(&der))
}

/// SHA-256 of `bytes`, hex: certificate fingerprints and token-secret hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprints of every certificate in a PEM bundle, in order.
pub fn fingerprints(pem: &str) -> Vec<String> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|p| sha256_hex(&p.contents))
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
    /// readable by others: a CA key anyone on the host can read is refused,
    /// not used (the group may read it: Kubernetes mounts a Secret 0440 with fsGroup).
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
        // Others never; the group may read it (a Kubernetes Secret volume with fsGroup is 0440).
        if mode & 0o007 != 0 {
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

    /// The root that signs now (PEM), or the current one if this CA does not hold it.
    pub fn root_pem(&self) -> String {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let signer = self.trust().signer;
        held(&keys, &signer).unwrap_or(&keys.current).root_pem.clone()
    }

    /// The fingerprint of the root this control plane's own certificate comes
    /// from: the oldest root of the bundle, which every sidecar trusts until
    /// the rotation's last step.
    pub fn own_root(&self) -> String {
        let trust = self.trust();
        fingerprints(&trust.roots).into_iter().next().unwrap_or(trust.signer)
    }

    /// Signs with the root whose fingerprint is `fp`; refused if this CA does not hold it
    /// (its directory lags behind the published rotation): never a certificate from another root.
    fn with_root<T>(&self, fp: &str, f: impl FnOnce(&Signer) -> T) -> Result<T, CaError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        held(&keys, fp).map(f).ok_or_else(|| {
            CaError::Files(format!("this control plane does not hold root {fp} yet (its CA directory is behind)"))
        })
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

    /// [`Ca::sign`], returning the fingerprint of the root that signed too.
    pub fn sign_workload(&self, csr_pem: &str, ns: &str, sa: &str, ttl: Duration) -> Result<(String, String), CaError> {
        let signer = self.trust().signer;
        Ok((self.sign_by(&signer, csr_pem, ns, sa, ttl, &[])?, signer))
    }

    /// The control plane's own certificate, from [`Ca::own_root`].
    pub fn sign_own(&self, csr_pem: &str, ns: &str, sa: &str, ttl: Duration, dns: &[&str]) -> Result<String, CaError> {
        self.sign_by(&self.own_root(), csr_pem, ns, sa, ttl, dns)
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
        self.sign_by(&self.trust().signer, csr_pem, ns, sa, ttl, dns)
    }

    fn sign_by(
        &self,
        root: &str,
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
        let cert = self.with_root(root, |s| params.signed_by(&csr.public_key, &s.issuer, &s.key))??;
        Ok(cert.pem())
    }
}

fn held<'a>(keys: &'a Keys, fp: &str) -> Option<&'a Signer> {
    std::iter::once(&keys.current).chain(keys.next.as_ref()).find(|s| s.fingerprint == fp)
}

/// The fingerprint of the root in `bundle_pem` that issued `cert_der` (its
/// authority key identifier matched against the roots' subject key identifiers).
pub fn issuer_of(cert_der: &[u8], bundle_pem: &str) -> Option<String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    })?;
    x509_parser::pem::Pem::iter_from_buffer(bundle_pem.as_bytes()).filter_map(Result::ok).find_map(|p| {
        let (_, root) = x509_parser::parse_x509_certificate(&p.contents).ok()?;
        let ski = root.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })?;
        (ski == aki).then(|| sha256_hex(&p.contents))
    })
}

/// When a certificate (DER) expires, in Unix seconds.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Where the published trust (bundle and signer, [`weft_model::Trust`] as JSON) lives in etcd.
pub fn trust_key(store: &Store) -> String {
    format!("{}ca/trust", store.prefix())
}

/// The published trust as etcd holds it: the bundle, the signer, and since when (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub roots: String,
    pub signer: String,
    #[serde(default)]
    pub since: u64,
}

impl Published {
    pub fn trust(&self) -> weft_model::Trust {
        weft_model::Trust { roots: self.roots.clone(), signer: self.signer.clone() }
    }
}

/// The trust control planes published, with its etcd revision.
pub async fn read_trust(store: &Store) -> Result<Option<(Published, i64)>, CaError> {
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
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(CaParts::read_dir(&dir).is_ok(), "group-readable, as a Secret with fsGroup");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CaParts::read_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("readable by others"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
