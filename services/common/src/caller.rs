//! Who is calling, as a shop service may believe it. Behind a sidecar the
//! calling workload is the SPIFFE ID the sidecar proved over mutual TLS and
//! passes in `x-forwarded-client-cert` (it removes any XFCC a caller sent).
//! The end user (`x-user-id`, `x-user-role`) is believed only when that
//! workload is api-gateway, which sets them from a verified token; internal
//! endpoints name the one workload that may call them. Without a sidecar
//! (`SHOP_DEVELOPMENT=1`, explicitly) the headers are believed as sent.

use http::HeaderMap;

use crate::ApiError;

/// The header the sidecar sets from the peer certificate: `By=<own id>;URI=<peer id>`.
pub const XFCC: &str = "x-forwarded-client-cert";
/// The end user's id and role, set by api-gateway from the token.
pub const USER_ID: &str = "x-user-id";
pub const USER_ROLE: &str = "x-user-role";
/// The service account whose workloads may name the end user.
pub const GATEWAY: &str = "api-gateway";

/// What a service trusts its callers to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Trust {
    /// Behind a sidecar: workloads are told by the XFCC its mTLS proved.
    Mesh { trust_domain: String, namespace: String },
    /// No sidecar, explicitly: headers are believed (tests and local runs only).
    Development,
}

impl Trust {
    /// The shop's mesh: `cluster.local`, namespace `production`.
    pub fn mesh() -> Self {
        Trust::Mesh { trust_domain: "cluster.local".into(), namespace: "production".into() }
    }

    /// `SHOP_DEVELOPMENT=1` for [`Trust::Development`]; otherwise the mesh, with
    /// `TRUST_DOMAIN` (cluster.local) and `MESH_NAMESPACE` (production).
    pub fn from_env() -> Self {
        if development() {
            tracing::warn!("SHOP_DEVELOPMENT=1: caller headers are believed without a sidecar's proof");
            return Trust::Development;
        }
        Trust::Mesh {
            trust_domain: crate::env::var("TRUST_DOMAIN", "cluster.local"),
            namespace: crate::env::var("MESH_NAMESPACE", "production"),
        }
    }

    /// The SPIFFE ID of `service_account` in the shop's namespace.
    pub fn identity(&self, service_account: &str) -> Option<String> {
        match self {
            Trust::Mesh { trust_domain, namespace } => {
                Some(format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"))
            }
            Trust::Development => None,
        }
    }

    /// Whether the SPIFFE ID `id` is `service_account` of this mesh's namespace
    /// (compared in place: it runs on every request).
    fn names(&self, id: &str, service_account: &str) -> bool {
        match self {
            Trust::Mesh { trust_domain, namespace } => {
                id.strip_prefix("spiffe://")
                    .and_then(|r| r.strip_prefix(trust_domain.as_str()))
                    .and_then(|r| r.strip_prefix("/ns/"))
                    .and_then(|r| r.strip_prefix(namespace.as_str()))
                    .and_then(|r| r.strip_prefix("/sa/"))
                    == Some(service_account)
            }
            Trust::Development => true,
        }
    }

    /// Refuses (403) a call that does not come from `service_account`'s workloads.
    pub fn require_peer(&self, headers: &HeaderMap, service_account: &str) -> Result<(), ApiError> {
        if *self == Trust::Development {
            return Ok(());
        }
        match peer(headers) {
            Some(id) if self.names(id, service_account) => Ok(()),
            other => {
                tracing::warn!(peer = ?other, want = service_account, "internal endpoint refused");
                Err(ApiError::forbidden(format!("only {service_account} may call this")))
            }
        }
    }

    /// The end user api-gateway authenticated; 401 when there is none or the
    /// user headers do not come from the gateway.
    pub fn user(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let unauthenticated = || ApiError::unauthorized("no authenticated user");
        if *self != Trust::Development && !peer(headers).is_some_and(|id| self.names(id, GATEWAY)) {
            if headers.contains_key(USER_ID) {
                tracing::warn!(peer = ?peer(headers), "x-user-id from a workload other than api-gateway ignored");
            }
            return Err(unauthenticated());
        }
        let id = headers
            .get(USER_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .ok_or_else(unauthenticated)?;
        let role = match headers.get(USER_ROLE).and_then(|v| v.to_str().ok()) {
            Some("staff") => Role::Staff,
            _ => Role::Customer,
        };
        Ok(User { id: id.to_string(), role })
    }
}

/// Whether `SHOP_DEVELOPMENT=1` is set: the development secret and believed headers.
pub fn development() -> bool {
    std::env::var("SHOP_DEVELOPMENT").is_ok_and(|v| v == "1")
}

/// The calling workload's SPIFFE ID from the sidecar's XFCC (exactly one element, one `URI=`).
pub fn peer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(XFCC).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() || value.contains(',') {
        return None;
    }
    let mut uris = value.split(';').filter_map(|kv| kv.trim().strip_prefix("URI="));
    let uri = uris.next()?;
    (uris.next().is_none() && uri.starts_with("spiffe://")).then_some(uri)
}

/// A customer or a member of staff (never self-chosen: staff are made by user-service's admin command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Staff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
        }
    }
}

/// The end user of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub role: Role,
}

impl User {
    /// 403 unless staff.
    pub fn staff(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Staff => Ok(()),
            Role::Customer => Err(ApiError::forbidden("staff only")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }
    const GW: &str = "By=spiffe://cluster.local/ns/production/sa/user-service;URI=spiffe://cluster.local/ns/production/sa/api-gateway";

    #[test]
    fn the_user_is_believed_only_from_the_gateway() {
        let t = Trust::mesh();
        let u = t.user(&headers(&[(XFCC, GW), (USER_ID, "7"), (USER_ROLE, "staff")])).unwrap();
        assert_eq!(u, User { id: "7".into(), role: Role::Staff });
        let other = GW.replace("sa/api-gateway", "sa/order-service");
        assert!(t.user(&headers(&[(XFCC, &other), (USER_ID, "7")])).is_err(), "another workload");
        assert!(t.user(&headers(&[(USER_ID, "7")])).is_err(), "no sidecar proof");
        assert!(t.user(&headers(&[(XFCC, GW), (XFCC, &other), (USER_ID, "7")])).is_err(), "two XFCC");
        assert!(t.user(&headers(&[(XFCC, &format!("{GW},{other}")), (USER_ID, "7")])).is_err(), "two elements");
        assert!(t.user(&headers(&[(XFCC, &format!("{GW};URI=spiffe://x")), (USER_ID, "7")])).is_err(), "two URIs");
        assert!(t.user(&headers(&[(XFCC, GW)])).is_err(), "no user");
        assert_eq!(t.user(&headers(&[(XFCC, GW), (USER_ID, "7"), (USER_ROLE, "admin")])).unwrap().role, Role::Customer);
    }

    #[test]
    fn internal_endpoints_name_their_caller() {
        let t = Trust::mesh();
        let order = GW.replace("sa/api-gateway", "sa/order-service");
        assert!(t.require_peer(&headers(&[(XFCC, &order)]), "order-service").is_ok());
        assert!(t.require_peer(&headers(&[(XFCC, GW)]), "order-service").is_err());
        assert!(t.require_peer(&HeaderMap::new(), "order-service").is_err());
        assert!(Trust::Development.require_peer(&HeaderMap::new(), "order-service").is_ok());
        let lookalike = GW.replace("sa/api-gateway", "sa/order-service-evil");
        assert!(t.require_peer(&headers(&[(XFCC, &lookalike)]), "order-service").is_err(), "a longer name");
        let other_ns = GW.replace("ns/production/sa/api-gateway", "ns/production-x/sa/order-service");
        assert!(t.require_peer(&headers(&[(XFCC, &other_ns)]), "order-service").is_err(), "another namespace");
    }
}
