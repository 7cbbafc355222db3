//! How Weft reaches etcd, locked down: etcd serves TLS only and requires a
//! client certificate (`--client-cert-auth`), whose CommonName is the etcd
//! user; etcd's RBAC (`auth enable`) then gives each user only what it needs:
//!
//! | user (certificate CN) | may |
//! | --- | --- |
//! | `weft-control-plane` | read everything under the prefix; write the registry, sidecar status and the trust bundle |
//! | `weft-admin` (`weftctl`) | read everything under the prefix; write policies and bootstrap tokens |
//! | `root` | administer etcd (the lockdown itself); kept by the operator, used by nothing at run time |
//! | anyone else | nothing: no certificate, no TLS handshake; a certificate for another name, no permission |
//!
//! The certificates come from a CA of etcd's own (`ca.pem`), separate from the
//! mesh CA: a workload certificate never opens etcd.

use etcd_client::{Client, ConnectOptions, Permission, TlsOptions, UserAddOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The etcd user of control planes.
pub const CONTROL_PLANE: &str = "weft-control-plane";
/// The etcd user of `weftctl` (policy writer, token minter).
pub const ADMIN: &str = "weft-admin";
/// etcd's administrator, needed to turn auth on.
pub const ROOT: &str = "root";

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: {0}")]
    Etcd(Box<etcd_client::Error>),
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Files(String),
    #[error("{0}")]
    Config(String),
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Etcd(Box::new(e))
    }
}

/// TLS to etcd with a client certificate (PEM text).
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").finish_non_exhaustive()
    }
}

fn read(p: &Path) -> Result<String, EtcdError> {
    std::fs::read_to_string(p).map_err(|e| EtcdError::Files(format!("{}: {e}", p.display())))
}

impl EtcdTls {
    /// From three PEM files: etcd's CA, the client certificate and its key.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, EtcdError> {
        Ok(EtcdTls { ca: read(ca)?, cert: read(cert)?, key: read(key)? })
    }

    /// `user`'s credentials from a directory [`generate`] wrote.
    pub fn for_user(dir: &Path, user: &str) -> Result<Self, EtcdError> {
        let (cert, key) = user_files(dir, user);
        Self::from_files(&dir.join("ca.pem"), &cert, &key)
    }

    fn options(&self) -> TlsOptions {
        TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca))
            .identity(etcd_client::Identity::from_pem(&self.cert, &self.key))
    }
}

/// A user's certificate and key files in a directory [`generate`] wrote.
pub fn user_files(dir: &Path, user: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{user}.pem")), dir.join(format!("{user}-key.pem")))
}

/// Connects to etcd: with `tls`, every endpoint must be `https://`; without, `http://`.
pub async fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Client, EtcdError> {
    let secure = endpoints.iter().all(|e| e.starts_with("https://"));
    let plain = endpoints.iter().all(|e| e.starts_with("http://"));
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
    match tls {
        Some(t) if secure => options = options.with_tls(t.options()),
        Some(_) => {
            return Err(EtcdError::Config(
                "etcd client certificates given, but the endpoints are not all https://".into(),
            ))
        }
        None if plain => {}
        None => {
            return Err(EtcdError::Config("https:// etcd endpoints need --etcd-ca, --etcd-cert and --etcd-key".into()))
        }
    }
    Ok(Client::connect(endpoints, Some(options)).await?)
}

fn write_private(path: &Path, text: &str) -> Result<(), EtcdError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A new file only: never an existing one (its mode kept) or a symlink's target.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EtcdError::Files(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| EtcdError::Files(format!("{}: {e}", path.display())))
}

fn write_public(path: &Path, text: &str) -> Result<(), EtcdError> {
    std::fs::write(path, text).map_err(|e| EtcdError::Files(format!("{}: {e}", path.display())))
}

fn params(cn: &str, days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(2);
    p.not_after = now + time::Duration::days(days);
    p
}

/// Writes etcd's CA and certificates into `dir`: `ca.pem`/`ca-key.pem`,
/// `server.pem` for `hosts` (DNS names or IPs; server and peer use), and a
/// client certificate per user (`root`, `weft-control-plane`, `weft-admin`).
/// Keys are written mode 0600. Refuses a directory that already has a CA.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<(), EtcdError> {
    std::fs::create_dir_all(dir).map_err(|e| EtcdError::Files(format!("{}: {e}", dir.display())))?;
    if dir.join("ca-key.pem").exists() {
        return Err(EtcdError::Files(format!("{}: an etcd CA is already there", dir.display())));
    }
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = params("weft etcd CA", 3650);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    write_private(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    write_public(&dir.join("ca.pem"), &ca_cert.pem())?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut server = CertificateParams::new(hosts.to_vec())?;
    server.distinguished_name = params("etcd", 0).distinguished_name;
    let now = time::OffsetDateTime::now_utc();
    (server.not_before, server.not_after) = (now - time::Duration::minutes(2), now + time::Duration::days(3650));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let cert = server.signed_by(&key, &ca_cert, &ca_key)?;
    write_private(&dir.join("server-key.pem"), &key.serialize_pem())?;
    write_public(&dir.join("server.pem"), &cert.pem())?;

    for user in [ROOT, CONTROL_PLANE, ADMIN] {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = params(user, 3650);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        let (cert_file, key_file) = user_files(dir, user);
        write_private(&key_file, &key.serialize_pem())?;
        write_public(&cert_file, &cert.pem())?;
    }
    Ok(())
}

/// Issues one more client certificate from the etcd CA in `dir` (for a test: a
/// certificate etcd trusts whose user has no role).
pub fn issue_client(dir: &Path, user: &str) -> Result<EtcdTls, EtcdError> {
    let ca_pem = read(&dir.join("ca.pem"))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca-key.pem"))?)?;
    let issuer = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = params(user, 1);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer, &ca_key)?;
    Ok(EtcdTls { ca: ca_pem, cert: cert.pem(), key: key.serialize_pem() })
}

fn exists(e: &etcd_client::Error) -> bool {
    e.to_string().contains("already exists")
}

/// Turns etcd's RBAC on for Weft under `prefix` (run as `root`; idempotent):
/// the users of the table above, their roles, then `auth enable`.
pub async fn lockdown(client: &mut Client, prefix: &str) -> Result<(), EtcdError> {
    let ok = |r: Result<(), etcd_client::Error>| match r {
        Err(e) if !exists(&e) => Err(EtcdError::from(e)),
        _ => Ok(()),
    };
    for user in [ROOT, CONTROL_PLANE, ADMIN] {
        // No password: these users authenticate by their certificate's CommonName only.
        ok(client.user_add(user, "", Some(UserAddOptions::new().with_no_pwd())).await.map(drop))?;
    }
    ok(client.role_add("root").await.map(drop))?;
    client.user_grant_role(ROOT, "root").await?;
    let grants: [(&str, Vec<Permission>); 2] = [
        (
            CONTROL_PLANE,
            vec![
                Permission::read(prefix).with_prefix(),
                Permission::read_write(format!("{prefix}registry/")).with_prefix(),
                Permission::read_write(format!("{prefix}status/")).with_prefix(),
                Permission::read_write(format!("{prefix}ca/")).with_prefix(),
            ],
        ),
        (
            ADMIN,
            vec![
                Permission::read(prefix).with_prefix(),
                Permission::read_write(format!("{prefix}policies/")).with_prefix(),
                Permission::read_write(format!("{prefix}tokens/")).with_prefix(),
            ],
        ),
    ];
    for (role, perms) in grants {
        ok(client.role_add(role).await.map(drop))?;
        for p in perms {
            client.role_grant_permission(role, p).await?;
        }
        client.user_grant_role(role, role).await?;
    }
    match client.auth_enable().await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("already") => Ok(()),
        Err(e) => Err(e.into()),
    }
}
