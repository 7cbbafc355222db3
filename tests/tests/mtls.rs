//! Workload identity end to end: the control plane's CA, sidecars that get
//! certificates with bootstrap tokens, mutual TLS between them, STRICT mode,
//! attacks refused and counted, and rotation under load.
//!
//! Size: a workload identity's life in order (issued, used, refused, rotated),
//! the tests sharing one mesh builder.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_control_plane::ca::{Ca, CaParts};
use weft_control_plane::istio::load_str;
use weft_control_plane::push::ControlPlane;
use weft_control_plane::store::Store;
use weft_proxy::Running;
use weft_testkit::Etcd;

/// An app that answers with the `x-forwarded-client-cert` it received.
async fn xfcc_app() -> SocketAddr {
    app_with(|req| {
        req.headers()
            .get("x-forwarded-client-cert")
            .map_or("none".to_string(), |v| v.to_str().unwrap_or("?").to_string())
    })
    .await
}

struct Mesh {
    c: Cp,
    parts: CaParts,
    _etcd: Etcd,
    store: Store,
    cp: ControlPlane,
    order: Running,
    gateway: Running,
    _goodbyes: Vec<tokio::sync::watch::Sender<bool>>,
}

async fn mesh(cert_ttl: Duration) -> Mesh {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let parts = CaParts::generate("cluster.local").unwrap();
    let ca = std::sync::Arc::new(Ca::from_parts(&parts, "cluster.local").unwrap());
    let options = weft_control_plane::push::Options { cert_ttl, ..Default::default() };
    let (c, cp) = Cp::start_with(&[etcd.url()], &etcd, "cp-a", ca, options).await;
    let w = workload("order-v1", &[("app", "order-service"), ("version", "v1")]);
    let (order, g1) = sidecar(&c, w, Some("order-service"), Some(xfcc_app().await)).await;
    let (gateway, g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("both sidecars hold certificates and config", || async {
        let certs = [&order, &gateway].iter().all(|r| r.shared.identity.as_ref().unwrap().current().is_some());
        certs && endpoints(&gateway, "order-service") == 1
    })
    .await;
    Mesh { c, parts, _etcd: etcd, store, cp, order, gateway, _goodbyes: vec![g1, g2] }
}

/// A TCP relay to `to` on a port of its own, counting the connections it accepts.
async fn counting_relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

/// Sends a plaintext request straight to a sidecar's inbound port; returns what came back.
async fn plaintext(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: order-service\r\n\r\n").await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Opens mTLS to `addr` with a certificate from `ca` for production/`sa`; Ok if the server accepted it.
async fn handshake_with(ca: &Ca, sa: &str, ttl: Duration, addr: SocketAddr, server_id: &str) -> Result<(), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.sign(&csr, "production", sa, ttl).unwrap();
    let leaf = std::sync::Arc::new(
        weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &ca.root_pem()).unwrap(),
    );
    // Trust any server chain from our own CA only for the client side of this probe:
    // the point is whether the *server* accepts our certificate.
    let config = weft_proxy::security::identity::client_config(&leaf, &[server_id.to_string()], false).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("weft.mesh").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    // TLS 1.3: a rejected client certificate shows up on the first read.
    tls.write_all(b"GET / HTTP/1.1\r\nhost: order-service\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256];
    match tls.read(&mut buf).await {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err("closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

const ORDER_ID: &str = "spiffe://cluster.local/ns/production/sa/order-service";
const GATEWAY_ID: &str = "spiffe://cluster.local/ns/production/sa/api-gateway";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_speak_mtls_and_the_app_sees_only_the_proven_identity() {
    let m = mesh(Duration::from_secs(3600)).await;
    let forged =
        "By=spiffe://cluster.local/ns/production/sa/order-service;URI=spiffe://cluster.local/ns/production/sa/admin";
    let (status, body) = get(m.gateway.outbound, "order-service", &[("x-forwarded-client-cert", forged)]).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("By={ORDER_ID};URI={GATEWAY_ID}"), "the forged header never reaches the app");
    let text = metrics(&m.order).await;
    let labels = [
        r#"reporter="destination""#,
        r#"connection_security_policy="mutual_tls""#,
        &format!(r#"source_principal="{GATEWAY_ID}""#),
    ];
    assert!(metric(&text, "istio_requests_total", &labels) >= 1.0, "{text}");
    // PERMISSIVE (the default): plaintext is still served, without an identity.
    assert!(plaintext(m.order.inbound).await.starts_with("HTTP/1.1 200"));
}

/// Istio's auto-mTLS: a server whose PeerAuthentication is DISABLE takes plaintext only, so
/// its clients send plaintext (before, every call to it failed with 503 UF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_server_is_called_in_plaintext() {
    let m = mesh(Duration::from_secs(3600)).await;
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: orders, namespace: production}\nspec:\n  selector:\n    matchLabels: {app: order-service}\n  mtls: {mode: DISABLE}\n";
    m.store.apply(&load_str(Path::new("pa.yaml"), pa).unwrap()).await.unwrap();
    eventually("DISABLE reaches both sidecars", || async {
        let order = m.order.shared.snapshot().config.inbound.mtls == weft_model::MtlsMode::Disable;
        let gateway = m.gateway.shared.snapshot().config.clusters.values().all(|c| c.tls.is_none());
        order && gateway
    })
    .await;
    let (status, body) = get(m.gateway.outbound, "order-service", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "none", "plaintext: the app sees no client certificate");
    let text = metrics(&m.order).await;
    let labels = [r#"reporter="destination""#, r#"connection_security_policy="none""#];
    assert!(metric(&text, "istio_requests_total", &labels) >= 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_foreign_and_expired_certificates() {
    let m = mesh(Duration::from_secs(3600)).await;
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: production}\nspec:\n  mtls: {mode: STRICT}\n";
    m.store.apply(&load_str(Path::new("pa.yaml"), pa).unwrap()).await.unwrap();
    eventually("STRICT reaches the order sidecar", || async {
        m.order.shared.snapshot().config.inbound.mtls == weft_model::MtlsMode::Strict
    })
    .await;

    assert_eq!(plaintext(m.order.inbound).await, "", "plaintext is closed under STRICT");
    assert_eq!(get(m.gateway.outbound, "order-service", &[]).await.0, 200, "mesh traffic flows over mTLS");

    // Our own CA: accepted (the probe itself works).
    handshake_with(&m.cp.ctx.ca, "api-gateway", Duration::from_secs(600), m.order.inbound, ORDER_ID).await.unwrap();
    // A certificate for the same identity from a foreign CA: refused.
    let foreign = Ca::from_parts(&CaParts::generate("cluster.local").unwrap(), "cluster.local").unwrap();
    assert!(handshake_with(&foreign, "api-gateway", Duration::from_secs(600), m.order.inbound, ORDER_ID)
        .await
        .is_err());
    // Our root, but a certificate naming another trust domain: refused.
    let other_domain = Ca::from_parts(&m.parts, "evil.local").unwrap();
    assert!(handshake_with(&other_domain, "api-gateway", Duration::from_secs(600), m.order.inbound, ORDER_ID)
        .await
        .is_err());
    // Expired: signed for 1 s, used once its notAfter is past.
    let late = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let cert = m.cp.ctx.ca.sign(&csr, "production", "api-gateway", Duration::from_secs(1)).unwrap();
        (key, cert)
    };
    let leaf = std::sync::Arc::new(
        weft_proxy::security::identity::Leaf::new(late.0.serialize_der(), &late.1, &m.cp.ctx.ca.root_pem()).unwrap(),
    );
    // Certificate times are whole seconds, and a verifier's clock too: past notAfter's second.
    eventually("the 1 s certificate has expired", || async {
        SystemTime::now() >= leaf.not_after + Duration::from_secs(1)
    })
    .await;
    let config = weft_proxy::security::identity::client_config(&leaf, &[ORDER_ID.to_string()], false).unwrap();
    let tcp = tokio::net::TcpStream::connect(m.order.inbound).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("weft.mesh").unwrap();
    let refused = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "an expired certificate is refused");

    let text = metrics(&m.order).await;
    assert!(
        metric(&text, "weft_inbound_connections_refused_total", &[r#"reason="plaintext under STRICT""#]) >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "weft_inbound_connections_refused_total", &[r#"reason="handshake""#]) >= 2.0, "{text}");
    assert_eq!(
        metric(&text, "weft_inbound_connections_refused_total", &[r#"reason="foreign trust domain""#]),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_server_with_the_wrong_identity() {
    let m = mesh(Duration::from_secs(3600)).await;
    // A server proving api-gateway where order-service is expected: the client side refuses.
    let err = handshake_with(&m.cp.ctx.ca, "api-gateway", Duration::from_secs(600), m.order.inbound, GATEWAY_ID)
        .await
        .unwrap_err();
    assert!(err.contains("not one of"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let m = mesh(Duration::from_secs(4)).await;
    // Renewal authenticates with the current certificate: the bootstrap tokens are not needed any more.
    for t in weft_control_plane::token::list(&m.store).await.unwrap() {
        weft_control_plane::token::revoke(&m.store, &t.id).await.unwrap();
    }
    let first = m.order.shared.identity.as_ref().unwrap().current().unwrap().not_after;
    let load = Load::start(m.gateway.outbound);
    eventually("two rotations under a load of more than 200 requests", || async {
        let now = m.order.shared.identity.as_ref().unwrap().current().unwrap().not_after;
        now.duration_since(first).unwrap_or_default() >= Duration::from_secs(4) && sent(&m.gateway).await > 200.0
    })
    .await;
    let (done, failures) = load.finish().await;
    let last = m.order.shared.identity.as_ref().unwrap().current().unwrap().not_after;
    assert!(last.duration_since(first).unwrap_or_default() >= Duration::from_secs(4), "rotated at least twice");
    assert!(done > 200);
    assert_eq!(failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_authorization_policy_end_to_end() {
    let m = mesh(Duration::from_secs(3600)).await;
    let caller = |name: &'static str| workload(name, &[("app", name)]);
    let (user, _g1) = sidecar(&m.c, caller("user-service"), None, None).await;
    let (product, _g2) = sidecar(&m.c, caller("product-service"), None, None).await;
    let (notify, _g3) = sidecar(&m.c, caller("notification-service"), None, None).await;
    for s in [&user, &product, &notify] {
        eventually("caller ready", || async {
            s.shared.identity.as_ref().unwrap().current().is_some() && endpoints(s, "order-service") == 1
        })
        .await;
    }
    let seed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/seed-authz.yaml"))
            .unwrap();
    m.store.apply(&load_str(Path::new("seed-authz.yaml"), &seed).unwrap()).await.unwrap();
    eventually("the policy reaches order-service", || async {
        !m.order.shared.snapshot().config.inbound.authz.is_empty()
    })
    .await;

    assert_eq!(get(user.outbound, "order-service", &[]).await.0, 200, "user-service is allowed");
    assert_eq!(get(product.outbound, "order-service", &[]).await.0, 200, "product-service is allowed");
    let (status, body) = get(notify.outbound, "order-service", &[]).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"), "notification-service is denied");
    let (status, _) = get(m.gateway.outbound, "order-service", &[]).await;
    assert_eq!(status, 403, "as the seed wrote it, the policy also denies the api-gateway");
    // A forged identity header does not help.
    let forged = "By=x;URI=spiffe://cluster.local/ns/production/sa/user-service";
    assert_eq!(get(notify.outbound, "order-service", &[("x-forwarded-client-cert", forged)]).await.0, 403);
    let text = metrics(&m.order).await;
    assert!(
        metric(
            &text,
            "istio_requests_total",
            &[
                r#"response_code="403""#,
                r#"source_principal="spiffe://cluster.local/ns/production/sa/notification-service""#
            ]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_channel_runs_over_tls_with_the_mesh_root() {
    let m = mesh(Duration::from_secs(3600)).await;
    let dir = weft_testkit::TempDir::new("root");
    let good = dir.0.join("root.pem");
    std::fs::write(&good, m.cp.ctx.ca.root_pem()).unwrap();
    let foreign = dir.0.join("foreign.pem");
    std::fs::write(&foreign, CaParts::generate("cluster.local").unwrap().root_pem).unwrap();
    let token = m.c.token("user-service").await;
    let caller = || workload("user-service", &[("app", "user-service")]);

    let tls = weft_proxy::security::identity::ControlPlaneTls::from_file(&good, "cluster.local").unwrap();
    let (ok, _g1) = sidecar_full(&m.c, caller(), None, None, Some(token.clone()), Some(tls), None).await;
    eventually("certificate and config over TLS", || async {
        ok.shared.is_ready()
            && ok.shared.identity.as_ref().unwrap().current().is_some()
            && endpoints(&ok, "order-service") == 1
    })
    .await;
    assert_eq!(get(ok.outbound, "order-service", &[]).await.0, 200);

    // A sidecar trusting another root refuses this control plane: no certificate, no config.
    // It reaches the control plane through a relay that counts its connections: until it holds
    // a certificate only its certificate requests connect (the config stream waits for one), and
    // it asks again only after a request failed.
    let (relay, connections) = counting_relay(m.c.urls[0].trim_start_matches("http://").parse().unwrap()).await;
    let through_relay = Cp { urls: vec![format!("http://{relay}")], ..m.c.clone() };
    let tls = weft_proxy::security::identity::ControlPlaneTls::from_file(&foreign, "cluster.local").unwrap();
    let (lost, _g2) = sidecar_full(&through_relay, caller(), None, None, Some(token), Some(tls), None).await;
    eventually("the sidecar asks for a certificate again: its first request failed", || async {
        connections.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(!lost.shared.is_ready(), "no config from an unverified control plane");
    assert!(lost.shared.identity.as_ref().unwrap().current().is_none(), "no certificate either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_rotates_under_load_with_no_failed_request() {
    use weft_control_plane::ca::{fingerprint, fingerprints, read_trust};
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let dir = weft_testkit::TempDir::new("ca");
    let old = CaParts::generate("cluster.local").unwrap();
    old.write_dir(&dir.0).unwrap();
    let ca = std::sync::Arc::new(Ca::from_dir(&dir.0, "cluster.local").unwrap());
    // Each step waits only for every sidecar to follow (not the default 30 s besides).
    let options = weft_control_plane::push::Options { rotation_min_step: Duration::ZERO, ..Default::default() };
    let (c, _cp) = Cp::start_with(&[etcd.url()], &etcd, "cp-a", ca, options).await;
    let w = workload("order-v1", &[("app", "order-service"), ("version", "v1")]);
    let (order, _g1) = sidecar(&c, w, Some("order-service"), Some(app("v1").await)).await;
    let (gateway, _g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: production}\nspec:\n  mtls: {mode: STRICT}\n";
    store.apply(&load_str(Path::new("pa.yaml"), pa).unwrap()).await.unwrap();
    eventually("STRICT mTLS between the two", || async {
        endpoints(&gateway, "order-service") == 1
            && order.shared.snapshot().config.inbound.mtls == weft_model::MtlsMode::Strict
            && get(gateway.outbound, "order-service", &[]).await.0 == 200
    })
    .await;
    let old_fp = fingerprint(&old.root_pem).unwrap();
    let issuer = |r: &Running| r.shared.identity.as_ref().unwrap().current().unwrap().issuer.clone();
    assert_eq!(issuer(&order).as_deref(), Some(old_fp.as_str()));

    let load = Load::start(gateway.outbound);

    // Someone holding a certificate from the old root (a sidecar that never renews, or an
    // attacker with a stolen one) keeps a config stream and a signing connection open.
    let old_ca = Ca::from_parts(&old, "cluster.local").unwrap();
    let holdout = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let cert = old_ca.sign(&csr, "production", "notification-service", Duration::from_secs(3600)).unwrap();
        let leaf = weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &old.root_pem).unwrap();
        let identity = std::sync::Arc::new(weft_proxy::security::identity::Identity::default());
        identity.install(leaf);
        let mut tls = c.tls();
        tls.identity = Some(identity);
        tls
    };
    let authority = c.urls[0].trim_start_matches("http://").to_string();
    let io = weft_proxy::security::identity::connect_control_plane(&authority, Some(&holdout), true).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let (held_tx, body) = weft_model::stream::ChannelBody::new(4);
    let hello = weft_model::stream::Hello {
        workload: workload("notification-service", &[("app", "notification-service")]),
        instance: "holdout".into(),
        service: None,
        address: None,
        port: None,
        applied_version: None,
        protocol: None,
        other_ports: Vec::new(),
        metrics_port: None,
    };
    held_tx.send(weft_model::stream::line(&hello)).await.unwrap();
    let req =
        hyper::Request::post(format!("http://{authority}{}", weft_model::stream::STREAM_PATH)).body(body).unwrap();
    let held = sender.send_request(req).await.unwrap();
    assert_eq!(held.status(), 200);
    let io = weft_proxy::security::identity::connect_control_plane(&authority, Some(&holdout), false).await.unwrap();
    let (mut signer_conn, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let sign = |csr: String| {
        let body = serde_json::to_vec(&weft_model::stream::SignRequest { token: String::new(), csr }).unwrap();
        hyper::Request::post(weft_model::stream::SIGN_PATH)
            .header("host", "cp")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let csr = || {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap()
    };
    assert_eq!(signer_conn.send_request(sign(csr())).await.unwrap().status(), 200, "renewal with its certificate");

    // `weftctl ca rotate`: the next root appears beside the current one.
    let next = CaParts::generate("cluster.local").unwrap();
    next.write_next(&dir.0).unwrap();
    let new_fp = fingerprint(&next.root_pem).unwrap();
    // Step 2 (the next root signs): a new stream with an old-root certificate is sent to renew first.
    eventually("the next root signs", || async {
        let Some((t, _)) = read_trust(&store).await.unwrap() else { return false };
        t.signer == new_fp
    })
    .await;
    let io = weft_proxy::security::identity::connect_control_plane(&authority, Some(&holdout), true).await.unwrap();
    let (mut again, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let (tx2, body) = weft_model::stream::ChannelBody::new(4);
    tx2.send(weft_model::stream::line(&hello)).await.unwrap();
    let req =
        hyper::Request::post(format!("http://{authority}{}", weft_model::stream::STREAM_PATH)).body(body).unwrap();
    let refused = again.send_request(req).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().contains_key(weft_model::stream::RENEW_HEADER));
    let saw_both = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    eventually("the old root left the bundle after every sidecar moved to the new one", || async {
        let Some((t, _)) = read_trust(&store).await.unwrap() else { return false };
        if fingerprints(&t.roots) == [old_fp.clone(), new_fp.clone()] {
            saw_both.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        fingerprints(&t.roots) == [new_fp.clone()] && t.signer == new_fp
    })
    .await;
    assert!(saw_both.load(std::sync::atomic::Ordering::Relaxed), "the bundle held both roots on the way");
    for r in [&order, &gateway] {
        eventually("the sidecar holds a certificate from the new root and trusts it alone", || async {
            let leaf = r.shared.identity.as_ref().unwrap().current().unwrap();
            leaf.issuer.as_deref() == Some(new_fp.as_str()) && fingerprints(&leaf.roots_pem) == [new_fp.clone()]
        })
        .await;
    }
    // A sidecar that joins now gets a certificate and config, and its new connections work.
    let (late, _g3) = sidecar(&c, workload("user-service", &[("app", "user-service")]), None, None).await;
    eventually("a new sidecar reaches order-service over mTLS", || async {
        late.shared.is_ready() && get(late.outbound, "order-service", &[]).await.0 == 200
    })
    .await;
    let before = sent(&gateway).await;
    eventually("the load goes on after the rotation", || async { sent(&gateway).await >= before + 20.0 }).await;
    let (done, failures) = load.finish().await;
    assert!(done > 50);
    assert_eq!(failures, 0, "no request failed during the rotation");
    // The holdout did not hold the rotation back: its stream was cut (it had the grace to renew)
    // and its open connection signs nothing any more.
    let ended = tokio::time::timeout(Duration::from_secs(5), http_body_util::BodyExt::collect(held.into_body())).await;
    assert!(ended.is_ok(), "the old-root stream was ended by the control plane");
    let refused = signer_conn.send_request(sign(csr())).await.map(|r| r.status().as_u16());
    assert!(
        matches!(refused, Ok(401) | Err(_)),
        "an old-root certificate renews nothing after the rotation: {refused:?}"
    );
    drop(held_tx);
    // And a certificate from the old root no longer opens anything.
    assert!(handshake_with(&old_ca, "api-gateway", Duration::from_secs(600), order.inbound, ORDER_ID).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_strict_closes_plaintext_connections_already_open() {
    let m = mesh(Duration::from_secs(3600)).await;
    // Plaintext keep-alive under PERMISSIVE (HTTP/1.1) and h2c.
    let mut s = tokio::net::TcpStream::connect(m.order.inbound).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: order-service\r\n\r\n";
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let io = TokioIo::new(tokio::net::TcpStream::connect(m.order.inbound).await.unwrap());
    let (mut h2, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let h2_get = || hyper::Request::get("http://order-service/").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h2.send_request(h2_get()).await.unwrap().status(), 200);

    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: production}\nspec:\n  mtls: {mode: STRICT}\n";
    m.store.apply(&load_str(Path::new("pa.yaml"), pa).unwrap()).await.unwrap();
    eventually("STRICT reaches the order sidecar", || async {
        m.order.shared.snapshot().config.inbound.mtls == weft_model::MtlsMode::Strict
    })
    .await;
    // The open connections carry nothing more to the app.
    s.write_all(request).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("connection: close"), "{answer}");
    assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0, "and the connection is closed");
    let refused = h2.send_request(h2_get()).await.map(|r| r.status().as_u16());
    assert!(matches!(refused, Ok(503) | Err(_)), "{refused:?}");
    // Mesh traffic over mTLS goes on.
    assert_eq!(get(m.gateway.outbound, "order-service", &[]).await.0, 200);
}

/// Istio's protocol selection by port, end to end over mTLS: a server registers its port
/// as `http2` (`--app-protocol`, from the pod's port name); its callers' HTTP/1.1 reaches
/// its app as HTTP/2, and an unnamed port's app keeps getting HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_port_is_spoken_to_in_http2_end_to_end() {
    let etcd = Etcd::start();
    let (c, _cp) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let version = || app_with(|req| format!("{:?}", req.version()));
    let w = workload("echo-v1", &[("app", "echo"), ("version", "v1")]);
    let (echo, g1) = sidecar_speaking(&c, w, Some("echo"), Some(version().await), weft_model::AppProtocol::Http2).await;
    let w = workload("plain-v1", &[("app", "plain"), ("version", "v1")]);
    let (plain, g2) = sidecar(&c, w, Some("plain"), Some(version().await)).await;
    let (caller, g3) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("the caller knows both services, the server its own protocol", || async {
        endpoints(&caller, "echo") == 1
            && endpoints(&caller, "plain") == 1
            && echo.shared.snapshot().config.inbound.protocol == weft_model::UpstreamProtocol::Http2
            && plain.shared.identity.as_ref().unwrap().current().is_some()
    })
    .await;
    let clusters = &caller.shared.snapshot().config.clusters;
    let protocol_of = |part: &str| clusters.iter().find(|(name, _)| name.contains(part)).unwrap().1.protocol;
    assert_eq!(protocol_of("echo"), weft_model::UpstreamProtocol::Http2);
    assert_eq!(protocol_of("plain"), weft_model::UpstreamProtocol::UseClient);
    assert_eq!(get(caller.outbound, "echo", &[]).await, (200, "HTTP/2.0".to_string()));
    assert_eq!(get(caller.outbound, "plain", &[]).await, (200, "HTTP/1.1".to_string()));
    drop((g1, g2, g3));
}
