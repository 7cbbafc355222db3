//! RequestAuthentication: issuers, key sources, token locations, outputs
//! (Istio's ValidateRequestAuthentication, plus the JWKS checked here rather
//! than at the first request).

use super::common::{unsupported, Problems, NOT_YET};
use crate::istio::types::*;
use crate::istio::Resource;

pub(super) fn check(ra: &RequestAuthentication, r: &Resource, p: &mut Problems) {
    let RequestAuthentication { selector, target_ref, target_refs, jwt_rules } = ra;
    unsupported(p, "spec.targetRef".into(), target_ref);
    unsupported(p, "spec.targetRefs".into(), target_refs);
    if let Some(s) = selector {
        if s.match_labels.is_empty() {
            p.push(("spec.selector.matchLabels".into(), "a selector needs at least one label".into()));
        }
        if r.namespace() == crate::istio::ROOT_NAMESPACE {
            p.push((
                "spec.selector".into(),
                "a mesh-wide RequestAuthentication (root namespace) cannot have a selector".into(),
            ));
        }
    }
    let mut issuers = std::collections::BTreeSet::new();
    for (i, rule) in jwt_rules.iter().enumerate() {
        let JwtRule {
            issuer,
            audiences,
            jwks_uri,
            jwks,
            from_headers,
            from_params,
            from_cookies,
            output_payload_to_header,
            forward_original_token: _,
            output_claim_to_headers,
            timeout: _,
            space_delimited_claims,
        } = rule;
        let at = format!("spec.jwtRules[{i}]");
        unsupported(p, format!("{at}.fromCookies"), from_cookies);
        unsupported(p, format!("{at}.spaceDelimitedClaims"), space_delimited_claims);
        if issuer.is_empty() {
            p.push((format!("{at}.issuer"), "must not be empty".into()));
        } else if !issuers.insert(issuer.as_str()) {
            p.push((format!("{at}.issuer"), format!("{issuer:?} appears twice in one policy")));
        }
        for (j, a) in audiences.iter().enumerate() {
            if a.is_empty() {
                p.push((format!("{at}.audiences[{j}]"), "must not be empty".into()));
            }
        }
        match (jwks, jwks_uri) {
            (Some(inline), _) => {
                if let Err(why) = crate::jwks::check(inline) {
                    p.push((format!("{at}.jwks"), why));
                }
            }
            (None, Some(uri)) => {
                if let Err(why) = crate::jwks::check_uri(uri) {
                    p.push((format!("{at}.jwksUri"), why));
                }
            }
            (None, None) => p.push((
                format!("{at}.jwksUri"),
                format!("set jwksUri or jwks (finding the keys by OpenID discovery of the issuer is {NOT_YET})"),
            )),
        }
        for (j, h) in from_headers.iter().enumerate() {
            if !weft_model::authz::header_name_ok(&h.name.to_ascii_lowercase()) {
                p.push((format!("{at}.fromHeaders[{j}].name"), format!("{:?} is not a header name", h.name)));
            }
        }
        for (j, param) in from_params.iter().enumerate() {
            if param.is_empty() {
                p.push((format!("{at}.fromParams[{j}]"), "must not be empty".into()));
            }
        }
        let outputs = output_payload_to_header.iter().map(|h| (format!("{at}.outputPayloadToHeader"), h)).chain(
            output_claim_to_headers
                .iter()
                .enumerate()
                .map(|(j, c)| (format!("{at}.outputClaimToHeaders[{j}].header"), &c.header)),
        );
        for (field, h) in outputs {
            let lower = h.to_ascii_lowercase();
            if !weft_model::authz::header_name_ok(&lower) {
                p.push((field, format!("{h:?} is not a header name")));
            } else if weft_model::jwt::reserved_output_header(&lower) {
                p.push((field, format!("{h:?} is reserved; a claim cannot set it")));
            } else if from_headers.iter().any(|f| f.name.eq_ignore_ascii_case(&lower)) {
                p.push((field, format!("{h:?} is where tokens are read; a claim cannot set it")));
            }
        }
        for (j, c) in output_claim_to_headers.iter().enumerate() {
            if c.claim.is_empty() {
                p.push((format!("{at}.outputClaimToHeaders[{j}].claim"), "must not be empty".into()));
            }
        }
    }
}
