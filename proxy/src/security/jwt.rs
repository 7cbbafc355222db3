//! End-user authentication (Istio's RequestAuthentication, Envoy's jwt_authn):
//! the JWTs on an inbound request are verified against the workload's issuers
//! before authorization runs. A request without a token passes with no end-user
//! identity (an AuthorizationPolicy decides whether that is enough); a request
//! with a token that does not verify is refused with 401.
//!
//! Stricter than Envoy where Envoy is easy to misuse: every token the request
//! carries in a configured location is verified (an app reading the second one
//! never sees an unverified token), symmetric keys (`kty: oct`) are refused, and
//! the headers verification writes are removed from every request first, so a
//! caller cannot send its own `x-jwt-claim-…`.
//!
//! Size: about 450 lines of verification (where tokens are found, key sets parsed, the
//! algorithms, claims and the headers written from them) sharing the token and key types;
//! the rest is its tests.

use base64::Engine;
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use weft_model::jwt::JwtRule;

/// Envoy's default `clock_skew_seconds`.
pub(crate) const CLOCK_SKEW_SECONDS: u64 = 60;
/// The most tokens one request may carry (each is verified).
pub(crate) const MAX_TOKENS: usize = 4;

/// The end user a verified token names.
#[derive(Debug, Clone, PartialEq)]
pub struct EndUser {
    /// `iss/sub`, Istio's request principal; none when the token has no string `sub`
    /// (as Istio: such a token satisfies no `requestPrincipals`, `*` included).
    pub principal: Option<String>,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The whole payload, for `request.auth.claims[...]`.
    pub claims: Value,
    /// The payload as signed (base64url), for `outputPayloadToHeader`.
    pub payload: String,
}

impl EndUser {
    /// The strings of a claim by path (`[a, b]` is `claims.a.b`): a string, or the
    /// strings of a list.
    pub fn claim(&self, path: &[String]) -> Vec<&str> {
        let mut v = &self.claims;
        for name in path {
            match v.get(name) {
                Some(next) => v = next,
                None => return Vec::new(),
            }
        }
        match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a token was refused: Envoy's body text for the 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    UnknownIssuer,
    Expired,
    NotYetValid,
    Audience,
    NoKey,
    Signature,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl Refused {
    /// The 401's body, as Envoy writes it.
    pub fn text(&self) -> &'static str {
        match self {
            Refused::Malformed => "Jwt is not in the form of Header.Payload.Signature",
            Refused::UnknownIssuer => "Jwt issuer is not configured",
            Refused::Expired => "Jwt is expired",
            Refused::NotYetValid => "Jwt not yet valid",
            Refused::Audience => "Audiences in Jwt are not allowed",
            Refused::NoKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Refused::Signature => "Jwt verification fails",
        }
    }
}

#[derive(Debug)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
}

struct Key {
    kid: Option<String>,
    /// The algorithms this key may verify: the JWK's `alg`, else those of its type and curve.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("algorithms", &self.algorithms).finish()
    }
}

#[derive(Debug)]
struct Issuer {
    issuer: String,
    keys: Vec<Key>,
    /// The checks of a token, per algorithm its keys verify: built with the config, not per token.
    validations: Vec<(Algorithm, Validation)>,
    locations: Vec<Location>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, Vec<String>)>,
}

/// The workload's issuers, compiled with the config.
#[derive(Debug, Default)]
pub struct Authenticator {
    issuers: Vec<Issuer>,
    /// Every header verification may write: removed from each request first.
    outputs: Vec<HeaderName>,
}

fn header(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))
}

/// The algorithms a key may verify: its `alg`, else those of its type and curve.
/// `Ok(None)`: an encryption key, not for signatures.
fn algorithms(jwk: &Jwk) -> Result<Option<Vec<Algorithm>>, String> {
    if let Some(alg) = jwk.common.key_algorithm {
        let Ok(alg) = alg.to_string().parse::<Algorithm>() else { return Ok(None) };
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err("symmetric algorithms (HS*) are refused: every sidecar would hold the signing secret".into());
        }
        return Ok(Some(vec![alg]));
    }
    Ok(Some(match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("only the P-256 and P-384 curves are supported".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys (kty: oct) are refused".into()),
    }))
}

/// How many signing keys a key set has, as the sidecar reads it (the control
/// plane checks inline and fetched sets with this before pushing them).
pub fn usable_keys(jwks: &str) -> Result<usize, String> {
    keys(jwks).map(|k| k.len())
}

fn keys(jwks: &str) -> Result<Vec<Key>, String> {
    if jwks.is_empty() {
        // The control plane could not fetch the key set: tokens of this issuer are refused.
        return Ok(Vec::new());
    }
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_str(jwks).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let mut keys = Vec::new();
    for (i, raw) in set.keys.iter().enumerate() {
        // A shared secret in a key set would let every sidecar mint tokens: the set is refused.
        if raw.get("kty").and_then(Value::as_str) == Some("oct") {
            return Err(format!("keys[{i}]: symmetric keys (kty: oct) are refused"));
        }
        // Keys for encryption, and kinds or algorithms Weft cannot verify with (P-521,
        // X25519, ES512 …), are skipped as Envoy skips them; the others still serve.
        if raw.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else { continue };
        let (Ok(Some(algorithms)), Ok(key)) = (algorithms(&jwk), DecodingKey::from_jwk(&jwk)) else { continue };
        keys.push(Key { kid: jwk.common.key_id.clone(), algorithms, key });
    }
    Ok(keys)
}

impl Authenticator {
    /// Compiles the rules; the error names the rule's field.
    pub fn compile(rules: &[JwtRule]) -> Result<Self, (String, String)> {
        let mut issuers = Vec::new();
        let mut outputs = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = |field: &str, e: String| (format!("inbound.jwt[{i}].{field}"), e);
            let mut locations = Vec::new();
            for h in &rule.from_headers {
                locations.push(Location::Header {
                    name: header(&h.name).map_err(|e| at("fromHeaders", e))?,
                    prefix: h.prefix.clone(),
                });
            }
            locations.extend(rule.from_params.iter().cloned().map(Location::Param));
            if locations.is_empty() {
                locations.push(Location::Header { name: http::header::AUTHORIZATION, prefix: "Bearer ".into() });
                locations.push(Location::Param("access_token".into()));
            }
            let payload_header = rule
                .output_payload_to_header
                .as_deref()
                .map(header)
                .transpose()
                .map_err(|e| at("outputPayloadToHeader", e))?;
            let claim_headers = rule
                .output_claim_to_headers
                .iter()
                .map(|c| Ok((header(&c.header)?, c.claim.split('.').map(String::from).collect())))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| at("outputClaimToHeaders", e))?;
            outputs.extend(payload_header.iter().cloned());
            outputs.extend(claim_headers.iter().map(|(h, _)| h.clone()));
            let keys = keys(&rule.jwks).map_err(|e| at("jwks", e))?;
            issuers.push(Issuer {
                validations: validations(&keys, &rule.issuer, &rule.audiences),
                issuer: rule.issuer.clone(),
                keys,
                locations,
                forward: rule.forward_original_token,
                payload_header,
                claim_headers,
            });
        }
        Ok(Authenticator { issuers, outputs })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies the tokens `parts` carries. `Ok(None)`: no token (or no issuer);
    /// `Ok(Some)`: the first token's end user, its headers written as configured.
    pub fn authenticate(&self, parts: &mut Parts) -> Result<Option<EndUser>, Refused> {
        for name in &self.outputs {
            parts.headers.remove(name);
        }
        if self.issuers.is_empty() {
            return Ok(None);
        }
        let mut found: Vec<(&Issuer, Option<&HeaderName>, String)> = Vec::new();
        for issuer in &self.issuers {
            for location in &issuer.locations {
                match location {
                    Location::Header { name, prefix } => {
                        for value in parts.headers.get_all(name) {
                            let Ok(value) = value.to_str() else { return Err(Refused::Malformed) };
                            // A prefix is compared without case (`bearer` is `Bearer`, RFC 6750).
                            let token = match value.get(..prefix.len()) {
                                Some(p) if p.eq_ignore_ascii_case(prefix) => value[prefix.len()..].trim(),
                                _ => continue,
                            };
                            found.push((issuer, Some(name), token.to_string()));
                        }
                    }
                    Location::Param(param) => {
                        for token in query_params(parts.uri.query().unwrap_or(""), param)? {
                            found.push((issuer, None, token));
                        }
                    }
                }
            }
        }
        // Each signature check costs; a request carrying more tokens than any client sends is refused.
        if found.len() > MAX_TOKENS {
            return Err(Refused::Malformed);
        }
        let mut verified: Vec<(&Issuer, Option<&HeaderName>, EndUser)> = Vec::new();
        for (i, (location_of, header, token)) in found.iter().enumerate() {
            if found[..i].iter().any(|(o, _, t)| t == token && std::ptr::eq(*o, *location_of)) {
                continue; // The same token twice is checked once.
            }
            let iss = unverified_issuer(token)?;
            if location_of.issuer != iss {
                // Also found where its own issuer looks (two issuers share a header): verified there.
                if found.iter().any(|(i, _, t)| t == token && i.issuer == iss) {
                    continue;
                }
                return Err(Refused::UnknownIssuer);
            }
            verified.push((*location_of, *header, location_of.verify(token)?));
        }
        // Every verified token's header is removed unless its issuer forwards it; each
        // issuer writes its outputs (the first token of an issuer wins).
        for (issuer, header, _) in &verified {
            if let (false, Some(name)) = (issuer.forward, header) {
                parts.headers.remove(*name);
            }
        }
        for (i, (issuer, _, user)) in verified.iter().enumerate() {
            if !verified[..i].iter().any(|(o, _, _)| std::ptr::eq(*o, *issuer)) {
                issuer.write_outputs(&mut parts.headers, user);
            }
        }
        Ok(verified.into_iter().next().map(|(_, _, user)| user))
    }
}

/// One `Validation` per algorithm the keys verify: Envoy's clock skew, `nbf` checked, the
/// issuer, and the audiences when set (then a token without `aud` is refused, as by Envoy).
fn validations(keys: &[Key], issuer: &str, audiences: &[String]) -> Vec<(Algorithm, Validation)> {
    let mut algorithms: Vec<Algorithm> = Vec::new();
    for alg in keys.iter().flat_map(|k| k.algorithms.iter().copied()) {
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    algorithms
        .into_iter()
        .map(|alg| {
            let mut v = Validation::new(alg);
            v.leeway = CLOCK_SKEW_SECONDS;
            v.validate_nbf = true;
            v.required_spec_claims.clear();
            v.set_issuer(&[issuer]);
            if audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(audiences);
                v.required_spec_claims.insert("aud".into());
            }
            (alg, v)
        })
        .collect()
}

impl Issuer {
    fn verify(&self, token: &str) -> Result<EndUser, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Malformed)?;
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid);
        let Some((_, validation)) = self.validations.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(Refused::NoKey);
        };
        let mut outcome = Err(Refused::NoKey);
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    outcome = Err(match e.kind() {
                        K::ExpiredSignature => Refused::Expired,
                        K::ImmatureSignature => Refused::NotYetValid,
                        K::InvalidAudience | K::MissingRequiredClaim(_) => Refused::Audience,
                        K::InvalidIssuer => Refused::UnknownIssuer,
                        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => Refused::Malformed,
                        _ => Refused::Signature,
                    });
                    // Only a bad signature means another key of the set may fit.
                    if outcome != Err(Refused::Signature) {
                        break;
                    }
                }
            }
        }
        let claims = outcome?;
        // jsonwebtoken skips an `exp`/`nbf` it cannot read as a number: such a token would never expire.
        if ["exp", "nbf"]
            .iter()
            .any(|k| claims.get(k).is_some_and(|v| !v.is_u64() && !v.as_f64().is_some_and(|f| f >= 0.0)))
        {
            return Err(Refused::Malformed);
        }
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(String::from);
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
            _ => Vec::new(),
        };
        Ok(EndUser {
            principal: text("sub").map(|sub| format!("{}/{sub}", self.issuer)),
            audiences,
            presenter: text("azp"),
            payload: token.split('.').nth(1).unwrap_or_default().to_string(),
            claims,
        })
    }

    fn write_outputs(&self, headers: &mut http::HeaderMap, user: &EndUser) {
        if let Some(name) = &self.payload_header {
            // The signed bytes as the token carried them (Envoy's `forward_payload_header`).
            if let Ok(v) = HeaderValue::from_str(&user.payload) {
                headers.insert(name.clone(), v);
            }
        }
        for (name, path) in &self.claim_headers {
            let mut v = &user.claims;
            for part in path {
                v = v.get(part).unwrap_or(&Value::Null);
            }
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                _ => continue,
            };
            // A claim with bytes a header cannot carry is not copied.
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// The `iss` of a token, read before verification to pick its issuer's keys.
fn unverified_issuer(token: &str) -> Result<String, Refused> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Refused::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| Refused::Malformed)?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| Refused::Malformed)?;
    claims.get("iss").and_then(Value::as_str).map(String::from).ok_or(Refused::UnknownIssuer)
}

/// Every value of `key` in a query string, keys and values percent-decoded. A key
/// that is `key` only to a looser reader (another case: ASP.NET) is refused, so no
/// app finds a token the sidecar did not check.
fn query_params(query: &str, key: &str) -> Result<Vec<String>, Refused> {
    let mut out = Vec::new();
    for pair in query.split(['&', ';']) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = crate::http::route::percent_decode(&k.replace('+', " "));
        if k == key {
            out.push(crate::http::route::percent_decode(v));
        } else if k.eq_ignore_ascii_case(key) {
            return Err(Refused::Malformed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Tokens signed here with fresh keys (ES256 and EdDSA by ring, RS256 by the
    //! openssl command), verified by the sidecar's code; the attacks are the
    //! classic ones: `alg: none`, HS256 keyed with a public key, a swapped payload,
    //! a second token the app might read, a forged output header.
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    const ISS: &str = "https://auth.shop.example";

    struct Signer {
        key: EncodingKey,
        alg: Algorithm,
        jwk: Value,
        kid: String,
    }

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn es256(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let pk = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&pk[1..33]), "y": b64(&pk[33..65]), "kid": kid});
        Signer { key: EncodingKey::from_ec_der(pkcs8.as_ref()), alg: Algorithm::ES256, jwk, kid: kid.into() }
    }

    fn ed25519(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()), "kid": kid});
        Signer { key: EncodingKey::from_ed_der(pkcs8.as_ref()), alg: Algorithm::EdDSA, jwk, kid: kid.into() }
    }

    fn rs256(kid: &str) -> Signer {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "openssl genrsa -traditional 2048 2>/dev/null | openssl rsa -traditional -outform DER 2>/dev/null",
            ])
            .output()
            .expect("openssl");
        let der = out.stdout;
        let pair = ring::signature::RsaKeyPair::from_der(&der).expect("a PKCS#1 RSA key from openssl");
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let (n, e) = (public.n, public.e);
        let jwk = json!({"kty": "RSA", "n": b64(&n), "e": b64(&e), "kid": kid, "alg": "RS256"});
        Signer { key: EncodingKey::from_rsa_der(&der), alg: Algorithm::RS256, jwk, kid: kid.into() }
    }

    impl Signer {
        fn sign(&self, claims: Value) -> String {
            let mut h = Header::new(self.alg);
            h.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": "shop", "exp": now() + 600, "groups": ["admin", "dev"], "org": {"team": "payments"}})
    }

    fn rule(signers: &[&Signer]) -> JwtRule {
        let keys: Vec<Value> = signers.iter().map(|s| s.jwk.clone()).collect();
        JwtRule {
            issuer: ISS.into(),
            audiences: vec!["shop".into()],
            jwks: json!({"keys": keys}).to_string(),
            output_claim_to_headers: vec![weft_model::jwt::ClaimToHeader {
                header: "x-user".into(),
                claim: "sub".into(),
            }],
            ..Default::default()
        }
    }

    fn request(headers: &[(&str, &str)], uri: &str) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_valid_token_names_the_end_user_and_is_not_forwarded() {
        for signer in [es256("k1"), ed25519("k2"), rs256("k3")] {
            let auth = Authenticator::compile(&[rule(&[&signer])]).unwrap();
            let token = signer.sign(claims());
            let mut parts = request(&[("authorization", &bearer(&token))], "/orders");
            let user = auth.authenticate(&mut parts).unwrap().expect("an end user");
            assert_eq!(user.principal, Some(format!("{ISS}/alice")), "{:?}", signer.alg);
            assert_eq!(user.audiences, ["shop"]);
            assert_eq!(user.claim(&["groups".into()]), ["admin", "dev"]);
            assert_eq!(user.claim(&["org".into(), "team".into()]), ["payments"]);
            assert!(parts.headers.get("authorization").is_none(), "forwardOriginalToken is false by default");
            assert_eq!(parts.headers["x-user"], "alice");
        }
    }

    #[test]
    fn no_token_passes_without_an_end_user_and_forged_outputs_are_removed() {
        let s = es256("k1");
        let auth = Authenticator::compile(&[rule(&[&s])]).unwrap();
        let mut parts = request(&[("x-user", "admin")], "/");
        assert_eq!(auth.authenticate(&mut parts), Ok(None));
        assert!(parts.headers.get("x-user").is_none(), "a caller cannot forge what verification writes");
        // A header without the prefix is not a token here.
        let mut parts = request(&[("authorization", "Basic YWxpY2U6cHc=")], "/");
        assert_eq!(auth.authenticate(&mut parts), Ok(None));
    }

    #[test]
    fn time_audience_and_issuer_are_checked_with_envoys_clock_skew() {
        let s = es256("k1");
        let auth = Authenticator::compile(&[rule(&[&s])]).unwrap();
        let check = |c: Value| {
            auth.authenticate(&mut request(&[("authorization", &bearer(&s.sign(c)))], "/")).map(|u| u.is_some())
        };
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            c
        };
        assert_eq!(check(with("exp", json!(now() - 120))), Err(Refused::Expired));
        assert_eq!(check(with("exp", json!(now() - 30))), Ok(true), "within the 60 s skew");
        assert_eq!(check(with("nbf", json!(now() + 600))), Err(Refused::NotYetValid));
        assert_eq!(check(with("aud", json!(["other"]))), Err(Refused::Audience));
        let mut no_aud = claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(no_aud), Err(Refused::Audience), "audiences configured: aud is required");
        assert_eq!(check(with("iss", json!("https://evil.example"))), Err(Refused::UnknownIssuer));
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(no_exp), Ok(true), "exp is optional (Envoy)");
    }

    #[test]
    fn forged_tokens_are_refused() {
        let s = es256("k1");
        let auth = Authenticator::compile(&[rule(&[&s])]).unwrap();
        let try_token = |t: &str| auth.authenticate(&mut request(&[("authorization", &bearer(t))], "/"));
        let good = s.sign(claims());
        let parts: Vec<&str> = good.split('.').collect();
        // alg: none.
        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(try_token(&none).is_err());
        // A payload swapped under a valid signature.
        let mut admin = claims();
        admin["sub"] = json!("admin");
        let swapped = format!("{}.{}.{}", parts[0], b64(admin.to_string().as_bytes()), parts[2]);
        assert_eq!(try_token(&swapped), Err(Refused::Signature));
        // HS256 keyed with the public key's bytes (the algorithm-confusion attack).
        let x = s.jwk["x"].as_str().unwrap().to_string();
        let hs =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(x.as_bytes()))
                .unwrap();
        assert_eq!(try_token(&hs), Err(Refused::NoKey));
        // Signed by a key the set does not hold.
        assert!(try_token(&es256("k1").sign(claims())).is_err());
        assert_eq!(try_token("garbage"), Err(Refused::Malformed));
    }

    #[test]
    fn every_token_the_request_carries_is_verified() {
        let s = es256("k1");
        let auth = Authenticator::compile(&[rule(&[&s])]).unwrap();
        let good = s.sign(claims());
        let uri = "/orders?access_token=forged.token.here";
        let mut parts = request(&[("authorization", &bearer(&good))], uri);
        assert_eq!(auth.authenticate(&mut parts).map(|u| u.is_some()), Err(Refused::Malformed));
        let mut parts = request(&[], &format!("/orders?access_token={good}"));
        assert!(auth.authenticate(&mut parts).unwrap().is_some(), "the default query parameter");
        let mut parts = request(&[("authorization", &format!("bearer {good}"))], "/");
        assert!(auth.authenticate(&mut parts).unwrap().is_some(), "the prefix is compared without case");
    }

    #[test]
    fn query_tricks_sub_less_tokens_and_odd_claims_are_refused_or_unnamed() {
        let s = es256("k1");
        let auth = Authenticator::compile(&[rule(&[&s])]).unwrap();
        let good = s.sign(claims());
        // A second value, an encoded key, another case: each is a token an app might read.
        for q in [
            format!("/?access_token={good}&access_token=forged.x.y"),
            format!("/?access_token={good}&access%5Ftoken=forged.x.y"),
            "/?Access_Token=forged.x.y".to_string(),
        ] {
            assert!(auth.authenticate(&mut request(&[], q.as_str())).is_err(), "{q}");
        }
        let many: Vec<(&str, String)> = (0..5).map(|_| ("authorization", bearer(&good))).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            auth.authenticate(&mut request(&many, "/")),
            Err(Refused::Malformed),
            "more tokens than any client sends"
        );
        // No `sub`: verified, but no request principal (Istio).
        let mut no_sub = claims();
        no_sub.as_object_mut().unwrap().remove("sub");
        let user =
            auth.authenticate(&mut request(&[("authorization", &bearer(&s.sign(no_sub)))], "/")).unwrap().unwrap();
        assert_eq!(user.principal, None);
        // An `exp` that is not a number would never expire.
        let mut text_exp = claims();
        text_exp["exp"] = json!("never");
        let r = auth.authenticate(&mut request(&[("authorization", &bearer(&s.sign(text_exp)))], "/"));
        assert!(r.is_err());
        // The payload header carries the signed bytes as sent.
        let payload_rule = JwtRule { output_payload_to_header: Some("x-payload".into()), ..rule(&[&s]) };
        let auth = Authenticator::compile(&[payload_rule]).unwrap();
        let mut parts = request(&[("authorization", &bearer(&good))], "/");
        auth.authenticate(&mut parts).unwrap().unwrap();
        assert_eq!(parts.headers["x-payload"], good.split('.').nth(1).unwrap());
    }

    #[test]
    fn key_sets_refuse_secrets_and_an_unfetched_set_refuses_every_token() {
        // Keys Weft cannot use (P-521, encryption keys) are skipped; the rest serve.
        let s = es256("k1");
        let mixed = json!({"keys": [
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "x"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "e"},
            {"kty": "EC", "alg": "ES512", "crv": "P-521", "x": "AA", "y": "AA"},
            s.jwk,
        ]});
        assert_eq!(usable_keys(&mixed.to_string()), Ok(1));
        assert!(Authenticator::compile(&[JwtRule {
            issuer: ISS.into(),
            jwks: r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into(),
            ..Default::default()
        }])
        .is_err());
        let unfetched = Authenticator::compile(&[JwtRule { issuer: ISS.into(), ..Default::default() }]).unwrap();
        let mut parts = request(&[("authorization", &bearer(&s.sign(claims())))], "/");
        assert_eq!(unfetched.authenticate(&mut parts), Err(Refused::NoKey));
        assert_eq!(unfetched.authenticate(&mut request(&[], "/")), Ok(None));
        // Rotation: a set with the old and the new key accepts both.
        let new = es256("k2");
        let both = Authenticator::compile(&[rule(&[&s, &new])]).unwrap();
        for t in [s.sign(claims()), new.sign(claims())] {
            assert!(both.authenticate(&mut request(&[("authorization", &bearer(&t))], "/")).unwrap().is_some());
        }
    }
}
