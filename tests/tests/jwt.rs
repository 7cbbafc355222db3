//! End-user authentication end to end: a RequestAuthentication whose key set
//! the control plane fetches from a JWKS server, an AuthorizationPolicy on
//! request principals and claims, and the attacks a caller can try (no token,
//! an expired one, one signed by its own key, forged claim headers), then a key
//! rotation at the JWKS server reaching the sidecar with no restart.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_control_plane::ca::{Ca, CaParts};
use weft_control_plane::istio::load_str;
use weft_testkit::Etcd;

const ISS: &str = "https://auth.shop.example";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: shop-users, namespace: production}
spec:
  selector: {matchLabels: {app: order-service}}
  jwtRules:
  - issuer: https://auth.shop.example
    audiences: [shop]
    jwksUri: JWKS_URI
    outputClaimToHeaders:
    - {header: x-user, claim: sub}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: users-only, namespace: production}
spec:
  selector: {matchLabels: {app: order-service}}
  action: ALLOW
  rules:
  - from:
    - source: {requestPrincipals: ["https://auth.shop.example/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-banned, namespace: production}
spec:
  selector: {matchLabels: {app: order-service}}
  action: DENY
  rules:
  - when:
    - {key: "request.auth.claims[groups]", values: [banned]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_jwts_are_verified_authorized_and_their_keys_rotate() {
    let (k1, k2) = (signer(ISS, "k1"), signer(ISS, "k2"));
    let jwks = Arc::new(Mutex::new(json!({"keys": [k1.jwk]}).to_string()));
    let (served, hits) = (jwks.clone(), Arc::new(AtomicUsize::new(0)));
    let counted = hits.clone();
    let jwks_server = app_with(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        served.lock().unwrap().clone()
    })
    .await;
    // The app shows what reached it: the user header and whether a token did.
    let order_app = app_with(|req| {
        let h = |n: &str| req.headers().get(n).map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string());
        format!("user={} token={}", h("x-user"), if req.headers().contains_key("authorization") { "yes" } else { "no" })
    })
    .await;

    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let parts = CaParts::generate("cluster.local").unwrap();
    let ca = Arc::new(Ca::from_parts(&parts, "cluster.local").unwrap());
    let options = weft_control_plane::push::Options { jwks_refresh: Duration::from_millis(300), ..Default::default() };
    let (c, _cp) = Cp::start_with(&[etcd.url()], &etcd, "cp-a", ca, options).await;
    let w = workload("order-v1", &[("app", "order-service"), ("version", "v1")]);
    let (order, _g1) = sidecar(&c, w, Some("order-service"), Some(order_app)).await;
    let (gateway, _g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let yaml = POLICIES.replace("JWKS_URI", &format!("http://{jwks_server}/jwks.json"));
    store.apply(&load_str(Path::new("jwt.yaml"), &yaml).unwrap()).await.unwrap();
    eventually("the sidecar holds the fetched key set", || async {
        let snap = order.shared.snapshot();
        snap.config.inbound.jwt.first().is_some_and(|r| r.jwks.contains(r#""kid":"k1""#))
            && gateway.shared.identity.as_ref().unwrap().current().is_some()
            && endpoints(&gateway, "order-service") == 1
    })
    .await;

    let call = |headers: Vec<(&'static str, String)>| {
        let out = gateway.outbound;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            get(out, "order-service", &h).await
        }
    };
    let alice = k1.token("alice", 600, &["dev"]);
    assert_eq!(
        call(vec![("authorization", bearer(&alice))]).await,
        (200, "user=alice token=no".to_string()),
        "a valid token: the app gets the user, not the token (forwardOriginalToken: false)"
    );
    assert_eq!(call(vec![]).await, (403, "RBAC: access denied".to_string()), "no token: the ALLOW needs a principal");
    let expired = k1.token("alice", -3600, &["dev"]);
    assert_eq!(call(vec![("authorization", bearer(&expired))]).await, (401, "Jwt is expired".to_string()));
    let own_key = signer(ISS, "k1").token("admin", 600, &["dev"]);
    assert_eq!(call(vec![("authorization", bearer(&own_key))]).await.0, 401, "a caller's own key is not the issuer's");
    let forged = vec![("authorization", bearer(&k1.token("bob", 600, &[]))), ("x-user", "admin".to_string())];
    assert_eq!(call(forged).await.1, "user=bob token=no", "the claim header comes from the token, not the caller");
    let banned = k1.token("mallory", 600, &["dev", "banned"]);
    assert_eq!(call(vec![("authorization", bearer(&banned))]).await.0, 403, "DENY on a list claim");

    // The issuer rotates to a new key: the control plane's refresh pushes it, with no restart.
    *jwks.lock().unwrap() = json!({"keys": [k2.jwk]}).to_string();
    eventually("the new key reaches the sidecar", || async {
        order.shared.snapshot().config.inbound.jwt.first().is_some_and(|r| r.jwks.contains(r#""kid":"k2""#))
    })
    .await;
    assert_eq!(call(vec![("authorization", bearer(&k2.token("alice", 600, &[])))]).await.0, 200);
    assert_eq!(call(vec![("authorization", bearer(&alice))]).await.0, 401, "the retired key no longer verifies");

    // The JWKS server answers something that is not a key set: the last good keys are kept.
    *jwks.lock().unwrap() = "<html>internal admin page</html>".into();
    let before = hits.load(Ordering::SeqCst);
    eventually("two refreshes got the bad answer", || async { hits.load(Ordering::SeqCst) >= before + 2 }).await;
    assert_eq!(call(vec![("authorization", bearer(&k2.token("alice", 600, &[])))]).await.0, 200);
    assert!(!order.shared.snapshot().config.inbound.jwt[0].jwks.contains("internal"));
}

#[test]
fn careless_request_authentications_are_refused_whole_with_their_field() {
    let refused = |spec: &str| {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: production}}\nspec:\n{spec}"
        );
        let diags = load_str(Path::new("ra.yaml"), &yaml).expect_err("refused");
        diags.iter().map(|d| format!("{}:{} {}", d.line, d.field, d.message)).collect::<Vec<_>>().join("\n")
    };
    let secret = r#"  jwtRules: [{issuer: i, jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'}]"#;
    assert!(refused(secret).contains("spec.jwtRules[0].jwks"), "a shared secret is refused");
    assert!(refused("  jwtRules: [{issuer: i}]").contains("jwksUri"), "no keys at all");
    assert!(refused("  jwtRules: [{issuer: i, jwksUri: 'file:///etc/passwd'}]").contains("jwksUri"));
    let reserved = "  jwtRules: [{issuer: i, jwksUri: 'https://a/k', outputClaimToHeaders: [{header: x-forwarded-client-cert, claim: sub}]}]";
    assert!(refused(reserved).contains("reserved"), "a claim cannot overwrite the peer's identity header");
    assert!(refused("  jwtRules: [{issuer: '', jwksUri: 'https://a/k'}]").contains("issuer"));
}
