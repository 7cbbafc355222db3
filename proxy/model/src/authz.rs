//! Authorization policies as the sidecar enforces them: typed and flat. The
//! control plane translates Istio's AuthorizationPolicy into these once,
//! parsing Istio's wildcard forms, CIDRs, ports and condition keys; the sidecar
//! compares values and parses no Istio strings. Principals are written without
//! `spiffe://`, as in Istio.
//!
//! ```yaml
//! - name: ns[production]-policy[orders]
//!   action: ALLOW
//!   rules:
//!   - from:
//!     - - {attribute: principal, anyOf: [{match: exact, value: cluster.local/ns/production/sa/api-gateway}]}
//!     to:
//!     - - {attribute: method, anyOf: [{match: exact, value: GET}]}
//!       - {attribute: path, anyOf: [{match: prefix, value: /orders/}]}
//!     when:
//!     - {attribute: header, name: x-tenant, anyOf: [{match: any}]}
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    /// Marks the request for logging; never changes the decision.
    Audit,
}

/// One policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzPolicy {
    /// `ns[NS]-policy[NAME]`, Istio's policy ID, shown in denials and logs.
    pub name: String,
    pub action: AuthzAction,
    /// Rules, ORed. No rules: an ALLOW policy allows nothing; DENY/AUDIT match nothing.
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
    /// `istio.io/dry-run`: evaluated and logged, not enforced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Matches when one of `from` matches (or it is empty), one of `to` matches (or
/// it is empty) and every matcher of `when` matches. Each entry of `from` and
/// `to` is a list of matchers that must all match (Istio's fields of one
/// `source` or `operation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Vec<Matcher>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Vec<Matcher>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Matcher>,
}

/// One attribute of a request and the values it is compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "attribute", rename_all = "camelCase")]
pub enum Matcher {
    /// The peer's proven identity (absent in plaintext).
    Principal(Values<Pattern>),
    /// The namespace in the peer's identity (absent in plaintext).
    Namespace(Values<Pattern>),
    /// The peer's address.
    SourceIp(Values<Cidr>),
    /// The request's host, compared in lower case (the patterns are lower case).
    Host(Values<Pattern>),
    /// The port the caller was going to.
    Port(Values<u16>),
    Method(Values<Pattern>),
    /// The normalized path, without the query.
    Path(Values<Pattern>),
    /// A request header.
    Header(HeaderValues),
    /// The end user's JWT principal, `iss/sub` (absent without a verified token).
    RequestPrincipal(Values<Pattern>),
    /// The verified token's audiences (`aud`): some of them must match.
    RequestAudience(Values<Pattern>),
    /// The verified token's authorized presenter (`azp`).
    RequestPresenter(Values<Pattern>),
    /// A claim of the verified token, by path (`request.auth.claims[a][b]` is `[a, b]`);
    /// a list claim matches when one of its strings does.
    RequestClaim(ClaimValues),
}

/// [`Values`] of one JWT claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimValues {
    /// The claim's path: one name per nesting level.
    pub claim: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub none_of: Vec<Pattern>,
}

/// [`Values`] of one request header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValues {
    /// A lower-case header name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub none_of: Vec<Pattern>,
}

/// Some of `any_of` must match (when it is not empty) and none of `none_of` may.
/// An absent attribute satisfies only `none_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Values<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub none_of: Vec<T>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values { any_of: Vec::new(), none_of: Vec::new() }
    }
}

impl<T> Values<T> {
    /// Whether `value` satisfies both halves, with `eq` comparing one allowed or refused value.
    pub fn admit<V: Copy>(&self, value: Option<V>, eq: impl Fn(&T, V) -> bool) -> bool {
        let yes = self.any_of.is_empty() || value.is_some_and(|v| self.any_of.iter().any(|t| eq(t, v)));
        let no = value.is_none_or(|v| !self.none_of.iter().any(|t| eq(t, v)));
        yes && no
    }
}

/// A string comparison (Istio's `abc`, `abc*`, `*abc`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "match", content = "value", rename_all = "camelCase", deny_unknown_fields)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value (`*`).
    Present,
    /// Any value, even empty (`*` on a header: Istio's `present_match`).
    Any,
}

impl Pattern {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Exact(e) => s == e,
            Pattern::Prefix(p) => s.starts_with(p.as_str()),
            Pattern::Suffix(x) => s.ends_with(x.as_str()),
            Pattern::Present => !s.is_empty(),
            Pattern::Any => true,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(e) => f.write_str(e),
            Pattern::Prefix(p) => write!(f, "{p}*"),
            Pattern::Suffix(x) => write!(f, "*{x}"),
            Pattern::Present | Pattern::Any => f.write_str("*"),
        }
    }
}

/// An address block, written `10.0.0.0/8`, `10.1.2.3` or an IPv6 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `10.1.2.3` or an IPv6 form.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (network, len) = match text.split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let ip = text.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if network.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { network, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (ip, self.network) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an IP or CIDR")))
    }
}

/// An HTTP header name the sidecar can look up: an RFC 9110 token in lower
/// case (pseudo-headers such as `:path` are not headers).
pub fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b.is_ascii_alphanumeric() && !b.is_ascii_uppercase()) || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a hand-written matcher must not be: one that matches every request when it
/// means to restrict (no values at all, an empty pattern), or none when it means to
/// deny (an upper-case host, a principal written with `spiffe://`).
pub fn check(m: &Matcher) -> Result<(), String> {
    let patterns = |any: &[Pattern], none: &[Pattern]| -> Result<(), String> {
        if any.is_empty() && none.is_empty() {
            return Err(format!("{}: needs anyOf or noneOf", m.attribute()));
        }
        for p in any.iter().chain(none) {
            if let Pattern::Exact(v) | Pattern::Prefix(v) | Pattern::Suffix(v) = p {
                if v.is_empty() {
                    return Err(format!("{}: an empty value", m.attribute()));
                }
            }
        }
        Ok(())
    };
    match m {
        Matcher::Principal(v) => {
            patterns(&v.any_of, &v.none_of)?;
            if v.any_of.iter().chain(&v.none_of).any(|p| p.to_string().starts_with("spiffe://")) {
                return Err("source.principal: write principals without spiffe:// (as Istio does)".into());
            }
            Ok(())
        }
        Matcher::Host(v) => {
            patterns(&v.any_of, &v.none_of)?;
            if v.any_of.iter().chain(&v.none_of).any(|p| p.to_string().bytes().any(|b| b.is_ascii_uppercase())) {
                return Err("request.host: hosts are compared in lower case; write them so".into());
            }
            Ok(())
        }
        Matcher::Namespace(v)
        | Matcher::Method(v)
        | Matcher::Path(v)
        | Matcher::RequestPrincipal(v)
        | Matcher::RequestAudience(v)
        | Matcher::RequestPresenter(v) => patterns(&v.any_of, &v.none_of),
        Matcher::RequestClaim(c) if c.claim.is_empty() || c.claim.iter().any(String::is_empty) => {
            Err("request.auth.claims: needs a claim name".into())
        }
        Matcher::RequestClaim(c) => patterns(&c.any_of, &c.none_of),
        Matcher::SourceIp(v) if v.any_of.is_empty() && v.none_of.is_empty() => {
            Err("source.ip: needs anyOf or noneOf".into())
        }
        Matcher::Port(v) if v.any_of.is_empty() && v.none_of.is_empty() => {
            Err("destination.port: needs anyOf or noneOf".into())
        }
        Matcher::SourceIp(_) | Matcher::Port(_) => Ok(()),
        Matcher::Header(h) if !header_name_ok(&h.name) => Err(format!("{:?} is not a lower-case header name", h.name)),
        Matcher::Header(h) => patterns(&h.any_of, &h.none_of),
    }
}

fn join<T: fmt::Display>(values: &[T]) -> String {
    values.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | ")
}

impl Matcher {
    /// The attribute's name, as Istio's condition keys say it.
    pub fn attribute(&self) -> String {
        match self {
            Matcher::Principal(_) => "source.principal".into(),
            Matcher::Namespace(_) => "source.namespace".into(),
            Matcher::SourceIp(_) => "source.ip".into(),
            Matcher::Host(_) => "request.host".into(),
            Matcher::Port(_) => "destination.port".into(),
            Matcher::Method(_) => "request.method".into(),
            Matcher::Path(_) => "request.path".into(),
            Matcher::Header(h) => format!("request.headers[{}]", h.name),
            Matcher::RequestPrincipal(_) => "request.auth.principal".into(),
            Matcher::RequestAudience(_) => "request.auth.audiences".into(),
            Matcher::RequestPresenter(_) => "request.auth.presenter".into(),
            Matcher::RequestClaim(c) => {
                format!("request.auth.claims{}", c.claim.iter().map(|n| format!("[{n}]")).collect::<String>())
            }
        }
    }

    /// The allowed and refused values as Istio writes them (`a | b*`).
    pub fn values(&self) -> (String, String) {
        match self {
            Matcher::Principal(v)
            | Matcher::Namespace(v)
            | Matcher::Host(v)
            | Matcher::Method(v)
            | Matcher::Path(v)
            | Matcher::RequestPrincipal(v)
            | Matcher::RequestAudience(v)
            | Matcher::RequestPresenter(v) => (join(&v.any_of), join(&v.none_of)),
            Matcher::Header(h) => (join(&h.any_of), join(&h.none_of)),
            Matcher::RequestClaim(c) => (join(&c.any_of), join(&c.none_of)),
            Matcher::SourceIp(v) => (join(&v.any_of), join(&v.none_of)),
            Matcher::Port(v) => (join(&v.any_of), join(&v.none_of)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.9.8.7".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.1/33").is_none());
        assert_eq!(Cidr::parse("fd00::/8").unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn hand_written_matchers_that_would_match_everything_or_nothing_are_refused() {
        let m = |yaml: &str| check(&serde_yaml::from_str::<Matcher>(yaml).unwrap());
        assert!(m("{attribute: principal}").is_err(), "no values: matches every request");
        assert!(m("{attribute: path, anyOf: [{match: prefix, value: ''}]}").is_err());
        assert!(m("{attribute: host, anyOf: [{match: exact, value: Orders}]}").is_err(), "never matches");
        assert!(m("{attribute: principal, anyOf: [{match: exact, value: 'spiffe://td/ns/a/sa/b'}]}").is_err());
        assert!(m("{attribute: port}").is_err());
        assert!(m("{attribute: header, name: X-Up, anyOf: [{match: any}]}").is_err());
        assert!(m("{attribute: principal, anyOf: [{match: suffix, value: /sa/gw}]}").is_ok());
        assert!(m("{attribute: sourceIp, noneOf: [10.0.0.0/8]}").is_ok());
    }

    #[test]
    fn values_and_absent_attributes() {
        let v = Values { any_of: vec![Pattern::Prefix("a".into())], none_of: vec![Pattern::Exact("ab".into())] };
        let m = |s: Option<&str>| v.admit(s, |p, s| p.matches(s));
        assert!(m(Some("ac")));
        assert!(!m(Some("ab")));
        assert!(!m(None), "an absent value cannot satisfy any_of");
        let only_no = Values { any_of: vec![], none_of: vec![Pattern::Present] };
        assert!(only_no.admit(None, |p: &Pattern, s: &str| p.matches(s)), "absent satisfies none_of");
    }
}
