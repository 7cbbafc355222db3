//! Who is on the other end of a connection: the SPIFFE identity its certificate proved.

/// A SPIFFE identity a caller proved with a certificate chained to the mesh root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>`, nothing more and nothing less.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_tag, ns, sa_tag, sa) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || ns_tag != "ns"
            || sa_tag != "sa"
            || td.is_empty()
            || !crate::registry::name_ok(ns)
            || !crate::registry::name_ok(sa)
        {
            return None;
        }
        Some(SpiffeId { trust_domain: td.into(), namespace: ns.into(), service_account: sa.into() })
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// An instance id (pod name or `<workload>-<pid>`): letters, digits, `-`, `_`, `.`.
pub(super) fn instance_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// From the client certificate, when one was presented (and verified).
    pub identity: Option<SpiffeId>,
    /// The root (fingerprint) that issued that certificate.
    pub issuer: Option<String>,
    /// When that certificate expires (Unix seconds).
    pub expires: Option<i64>,
}
