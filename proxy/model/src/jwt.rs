//! End-user authentication as the sidecar enforces it: the JWT rules of the
//! Istio RequestAuthentications that select the workload, with their keys
//! inline (the control plane fetches `jwksUri` and pushes the key set).
//!
//! ```yaml
//! jwt:
//! - issuer: https://auth.shop.example
//!   audiences: [shop]
//!   jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"…","y":"…","kid":"k1"}]}'
//!   outputClaimToHeaders: [{header: x-user, claim: sub}]
//! ```

use serde::{Deserialize, Serialize};

/// Headers that carry framing, the peer's identity or the route: no claim may set them.
pub const RESERVED_OUTPUT_HEADERS: [&str; 19] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "x-request-id",
    "x-envoy-original-path",
    "authorization",
    "proxy-authorization",
    "cookie",
];

/// Whether a claim may not write `name` (lower case): a reserved header or one of Envoy's own.
pub fn reserved_output_header(name: &str) -> bool {
    RESERVED_OUTPUT_HEADERS.contains(&name) || name.starts_with("x-envoy-") || name.starts_with(':')
}

/// One issuer the workload accepts tokens from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must name one of these; empty: `aud` is not checked (Envoy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The public keys, a JSON Web Key Set (RFC 7517) as JSON text. Empty when the
    /// control plane could not fetch `jwksUri`: every token of this issuer is then
    /// refused (fail closed), requests without one pass.
    #[serde(default)]
    pub jwks: String,
    /// Where the token is looked for. Neither headers nor params: `authorization:
    /// Bearer <token>` and the `access_token` query parameter (Envoy's defaults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Keep the token on the request to the app (Istio's default: removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    /// A header that gets the verified payload, base64url-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
}

/// A header the token is read from, with the prefix before it (e.g. `Bearer `).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// A lower-case header name.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Copies a claim of a verified token (a string, number or boolean; nested
/// claims written `a.b`) to a request header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

impl JwtRule {
    /// The headers this rule writes: the sidecar removes them from every request
    /// first, so a caller cannot pass one off as the result of verification.
    pub fn output_headers(&self) -> impl Iterator<Item = &str> {
        self.output_payload_to_header
            .as_deref()
            .into_iter()
            .chain(self.output_claim_to_headers.iter().map(|c| c.header.as_str()))
    }
}
