//! The mesh certificate authority: one root shared by every control-plane
//! instance (kept in etcd, created once with a create-if-absent transaction),
//! bootstrap tokens that say which namespace and service account a sidecar
//! is, and workload certificates for the identity the token proves — never
//! the identity a CSR asks for.
//!
//! Certificates: ECDSA P-256, URI SAN `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`,
//! server and client EKU, NotBefore 2 minutes back (clock skew), 24 h TTL by
//! default — Istio's choices (shared/ISTIO-SEMANTICS.md §5).

use crate::store::Store;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far back NotBefore is set, for clock skew.
pub const NOT_BEFORE_SKEW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("etcd: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the stored CA is unreadable: {0}")]
    Corrupt(String),
    #[error("invalid token: {0}")]
    Token(&'static str),
    #[error("invalid CSR: {0}")]
    Csr(String),
}

/// What a bootstrap token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub ns: String,
    pub sa: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// The mesh CA.
pub struct Ca {
    root_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
    token_key: hmac::Key,
    trust_domain: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

/// The stored parts of a CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaParts {
    pub root_pem: String,
    pub key_pem: String,
    /// Base64 HMAC secret for bootstrap tokens.
    pub token_secret: String,
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
        let secret: [u8; 32] = {
            let rng = ring::rand::SystemRandom::new();
            ring::rand::generate(&rng).map_err(|_| CaError::Corrupt("no randomness".into()))?.expose()
        };
        Ok(CaParts { root_pem: root.pem(), key_pem: key.serialize_pem(), token_secret: B64.encode(secret) })
    }
}

impl Ca {
    pub fn from_parts(parts: &CaParts, trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&parts.key_pem)?;
        // Rebuild the issuer from the stored root; the stored PEM stays the trust anchor.
        let issuer = CertificateParams::from_ca_cert_pem(&parts.root_pem)?.self_signed(&key)?;
        let secret = B64.decode(&parts.token_secret).map_err(|e| CaError::Corrupt(e.to_string()))?;
        Ok(Ca {
            root_pem: parts.root_pem.clone(),
            issuer,
            key,
            token_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The CA shared through etcd: read it, or create it if no instance has yet.
    pub async fn load_or_create(store: &Store, trust_domain: &str) -> Result<Self, CaError> {
        let key = format!("{}ca/root", store.prefix());
        let mut kv = store.client().kv_client();
        let fresh = CaParts::generate(trust_domain)?;
        let body = serde_json::to_vec(&fresh).map_err(|e| CaError::Corrupt(e.to_string()))?;
        // Create only if absent: two instances starting at once agree on one root.
        kv.txn(Txn::new().when([Compare::version(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key.clone(),
            body,
            None,
        )]))
        .await?;
        let stored = kv.get(key, None).await?;
        let value = stored.kvs().first().ok_or_else(|| CaError::Corrupt("CA vanished".into()))?.value().to_vec();
        let parts: CaParts = serde_json::from_slice(&value).map_err(|e| CaError::Corrupt(e.to_string()))?;
        Self::from_parts(&parts, trust_domain)
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

    /// A bootstrap token for `ns`/`sa`, valid for `ttl`.
    pub fn mint_token(&self, ns: &str, sa: &str, ttl: Duration, now: SystemTime) -> String {
        let claims = Claims { ns: ns.into(), sa: sa.into(), exp: now_secs(now) + ttl.as_secs() };
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = hmac::sign(&self.token_key, payload.as_bytes());
        format!("{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// Checks a token's signature and expiry; returns what it proves.
    pub fn verify_token(&self, token: &str, now: SystemTime) -> Result<Claims, CaError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(CaError::Token("malformed"))?;
        let tag = B64.decode(tag).map_err(|_| CaError::Token("malformed"))?;
        hmac::verify(&self.token_key, payload.as_bytes(), &tag).map_err(|_| CaError::Token("bad signature"))?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).map_err(|_| CaError::Token("malformed"))?)
            .map_err(|_| CaError::Token("malformed"))?;
        if claims.exp <= now_secs(now) {
            return Err(CaError::Token("expired"));
        }
        Ok(claims)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> Ca {
        Ca::from_parts(&CaParts::generate("cluster.local").unwrap(), "cluster.local").unwrap()
    }

    #[test]
    fn tokens_prove_identity_until_they_expire() {
        let ca = ca();
        let now = SystemTime::now();
        let t = ca.mint_token("production", "order-service", Duration::from_secs(60), now);
        let claims = ca.verify_token(&t, now).unwrap();
        assert_eq!((claims.ns.as_str(), claims.sa.as_str()), ("production", "order-service"));
        assert!(matches!(ca.verify_token(&t, now + Duration::from_secs(61)), Err(CaError::Token("expired"))));
        let forged = t.replace(
            t.split('.').next().unwrap(),
            &B64.encode(br#"{"ns":"production","sa":"admin","exp":9999999999}"#),
        );
        assert!(matches!(ca.verify_token(&forged, now), Err(CaError::Token("bad signature"))));
        assert!(matches!(self::ca().verify_token(&t, now), Err(CaError::Token("bad signature"))), "another CA's token");
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
}
