//! The trust chain against a hostile pod: each attack on the control plane,
//! run against a real etcd, a real control plane and real sidecars, fails —
//! and leaves etcd and every sidecar's config exactly as they were.
//!
//! Size: one hostile pod's attempts, a test each, sharing the mesh they attack.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use weft_control_plane::push::ControlPlane;
use weft_control_plane::store::Store;
use weft_control_plane::token;
use weft_model::stream::{Hello, SignRequest, SIGN_PATH, STREAM_PATH};
use weft_proxy::Running;
use weft_testkit::Etcd;

struct Mesh {
    c: Cp,
    etcd: Etcd,
    store: Store,
    _cp: ControlPlane,
    order: Running,
    gateway: Running,
    _goodbyes: Vec<tokio::sync::watch::Sender<bool>>,
}

async fn mesh() -> Mesh {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (c, cp) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let w = workload("order-v1", &[("app", "order-service"), ("version", "v1")]);
    let (order, g1) = sidecar(&c, w, Some("order-service"), Some(app("v1").await)).await;
    let (gateway, g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("the gateway knows order-service", || async {
        gateway.shared.is_ready() && endpoints(&gateway, "order-service") == 1
    })
    .await;
    // Nothing may move after this: each sidecar's status says it applied what it holds.
    eventually("both statuses record the version each sidecar applied", || async {
        let statuses = store.statuses().await.unwrap();
        let applied = |r: &weft_proxy::Running, workload: &str| {
            let version = r.shared.snapshot().config.version.clone();
            statuses.iter().any(|s| s.workload == workload && s.acked_version.as_deref() == Some(version.as_str()))
        };
        statuses.len() == 2 && applied(&order, "order-v1") && applied(&gateway, "api-gateway")
    })
    .await;
    Mesh { c, etcd, store, _cp: cp, order, gateway, _goodbyes: vec![g1, g2] }
}

/// Everything that must not move: etcd's revision and every sidecar's config.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    revision: i64,
    keys: Vec<String>,
    configs: Vec<String>,
}

impl Mesh {
    async fn fingerprint(&self) -> Fingerprint {
        let got = self
            .store
            .client()
            .kv_client()
            .get("/weft/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        let revision = got.header().unwrap().revision();
        let keys = got.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
        let configs = [&self.order, &self.gateway]
            .iter()
            .map(|r| serde_json::to_string(&*r.shared.snapshot().config).unwrap())
            .collect();
        Fingerprint { revision, keys, configs }
    }

    /// TLS to the control plane presenting a certificate for production/`sa` (as a pod that got one would).
    fn tls_as(&self, sa: Option<&str>) -> weft_proxy::security::identity::ControlPlaneTls {
        let mut tls = self.c.tls();
        if let Some(sa) = sa {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
            let cert = self.c.ca.sign(&csr, "production", sa, Duration::from_secs(600)).unwrap();
            let leaf =
                weft_proxy::security::identity::Leaf::new(key.serialize_der(), &cert, &self.c.ca.root_pem()).unwrap();
            let identity = Arc::new(weft_proxy::security::identity::Identity::default());
            identity.install(leaf);
            tls.identity = Some(identity);
        }
        tls
    }

    fn authority(&self) -> String {
        self.c.urls[0].trim_start_matches("http://").to_string()
    }

    /// Opens a config stream with `first` as the body's first bytes; returns the status and
    /// body text the control plane answered with (reading at most 4 KiB), or the error.
    async fn stream(
        &self,
        tls: Option<&weft_proxy::security::identity::ControlPlaneTls>,
        first: Bytes,
    ) -> Result<(u16, String), String> {
        let io = weft_proxy::security::identity::connect_control_plane(&self.authority(), tls, true).await?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let (tx, body) = weft_model::stream::ChannelBody::new(4);
        let _ = tx.send(first).await;
        let req = http::Request::post(format!("http://{}{STREAM_PATH}", self.authority())).body(body).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
            .await
            .map_err(|_| "no answer in 20 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = if status == 200 {
            String::new()
        } else {
            let b = http_body_util::Limited::new(resp.into_body(), 4096).collect().await.map(|c| c.to_bytes());
            String::from_utf8_lossy(&b.unwrap_or_default()).into_owned()
        };
        drop(tx);
        Ok((status, text))
    }

    /// Asks for a certificate with `token`, without a client certificate; the status and reason.
    async fn sign(&self, token: &str) -> (u16, String) {
        let tls = self.c.tls();
        let io =
            weft_proxy::security::identity::connect_control_plane(&self.authority(), Some(&tls), false).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
        tokio::spawn(conn);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let body = serde_json::to_vec(&SignRequest { token: token.into(), csr }).unwrap();
        let req = http::Request::post(SIGN_PATH).header("host", "cp").body(Full::new(Bytes::from(body))).unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
    }
}

fn hello(name: &str, sa: &str, instance: &str, service: Option<&str>, address: &str) -> Bytes {
    let mut w = workload(name, &[("app", sa)]);
    w.service_account = sa.into();
    weft_model::stream::line(&Hello {
        workload: w,
        instance: instance.into(),
        service: service.map(str::to_string),
        address: Some(address.into()),
        port: Some(80),
        applied_version: None,
        protocol: None,
        other_ports: Vec::new(),
        metrics_port: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_hello_is_refused_over_h2c_and_over_tls() {
    let m = mesh().await;
    let before = m.fingerprint().await;
    let attacker = "10.9.9.9:15006";
    // h2c, as the stream was served before: the port speaks TLS only.
    let plain = m.stream(None, hello("x", "order-service", "evil", Some("order-service"), attacker)).await;
    assert!(plain.is_err(), "plaintext gets no HTTP/2 at all: {plain:?}");
    // TLS trusting the root, but no client certificate.
    let (status, why) = m
        .stream(Some(&m.tls_as(None)), hello("x", "order-service", "evil", Some("order-service"), attacker))
        .await
        .unwrap();
    assert_eq!(status, 401, "{why}");
    assert!(why.contains("client certificate"), "{why}");
    assert_eq!(m.fingerprint().await, before, "nothing written, no config changed");
    assert_eq!(endpoints(&m.gateway, "order-service"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_one_identity_cannot_claim_another_or_serve_another_service() {
    let m = mesh().await;
    let before = m.fingerprint().await;
    let notify = m.tls_as(Some("notification-service"));
    // Certificate A (notification-service), Hello B (order-service).
    let (status, why) = m
        .stream(Some(&notify), hello("order-v9", "order-service", "evil", Some("order-service"), "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("certificate proves spiffe://cluster.local/ns/production/sa/notification-service"), "{why}");
    // Its own identity, but registering as an endpoint of order-service.
    let (status, why) = m
        .stream(
            Some(&notify),
            hello("notification-service", "notification-service", "evil", Some("order-service"), "127.0.0.1:1"),
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "{why}");
    assert!(why.contains("may not register as an endpoint of order-service"), "{why}");
    // A key-shaped instance id.
    let (status, why) = m
        .stream(Some(&notify), hello("n", "notification-service", "../../policies/x", None, "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(status, 403, "{why}");
    assert_eq!(m.fingerprint().await, before, "nothing written, no config changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identitys_instance_id_is_not_theirs_to_overwrite_or_delete() {
    let m = mesh().await;
    let victim = format!("order-v1-{}", m.order.inbound.port());
    let keys = |m: &Mesh| {
        let m_store = m.store.clone();
        async move {
            let got = m_store
                .client()
                .kv_client()
                .get("/weft/registry/", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            got.kvs()
                .iter()
                .map(|kv| {
                    (String::from_utf8_lossy(kv.key()).into_owned(), String::from_utf8_lossy(kv.value()).into_owned())
                })
                .collect::<Vec<_>>()
        }
    };
    let before = keys(&m).await;
    assert_eq!(before.len(), 1);
    assert!(before[0].0.ends_with(&format!("/order-service/order-service:{victim}")), "{before:?}");
    // The notification service, legitimately serving itself, reuses the victim's instance id and
    // claims another address, holds its stream until it is registered, then says a clean goodbye.
    let notify = m.tls_as(Some("notification-service"));
    let io = weft_proxy::security::identity::connect_control_plane(&m.authority(), Some(&notify), true).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let (tx, body) = weft_model::stream::ChannelBody::new(4);
    let claim =
        hello("notification-service", "notification-service", &victim, Some("notification-service"), "10.0.0.66:4444");
    tx.send(claim).await.unwrap();
    let req = http::Request::post(format!("http://{}{STREAM_PATH}", m.authority())).body(body).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the attacker is registered, under its own identity", || async { keys(&m).await.len() == 2 }).await;
    let during = keys(&m).await;
    let own = during.iter().find(|(k, _)| k.contains("/notification-service/notification-service:")).unwrap();
    assert!(own.1.contains("\"address\":\"127.0.0.1:4444\""), "the source IP, not 10.0.0.66: {own:?}");
    assert!(during.contains(&before[0]), "the victim's registration is untouched while it lives");
    drop(tx); // A clean goodbye: the body ends, the response stays open until the control plane closes it.
    eventually("the clean goodbye removed only the attacker's own key", || async { keys(&m).await.len() == 1 }).await;
    drop(resp);
    assert_eq!(keys(&m).await, before, "the victim's registration is untouched");
    assert_eq!(endpoints(&m.gateway, "order-service"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_etcd_value_holds_a_private_key_or_a_usable_token() {
    let m = mesh().await;
    let (secret_token, _) = token::mint(
        &m.store,
        "production",
        "order-service",
        token::DEFAULT_AUDIENCE,
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .await
    .unwrap();
    let secret = secret_token.rsplit('.').next().unwrap().to_string();
    // Read as etcd's root, who sees every key.
    let root = Store::connect(&[m.etcd.url()], "/weft/", Some(&m.etcd.tls(weft_etcd::ROOT))).await.unwrap();
    let all = root.client().kv_client().get("", Some(etcd_client::GetOptions::new().with_all_keys())).await.unwrap();
    assert!(all.kvs().len() >= 4, "policies, registry, status, bundle, tokens are there");
    for kv in all.kvs() {
        let v = String::from_utf8_lossy(kv.value());
        let k = String::from_utf8_lossy(kv.key());
        assert!(!v.contains("PRIVATE KEY"), "{k} holds a private key");
        assert!(!v.contains(&secret), "{k} holds a token's secret");
    }
    assert!(all.kvs().iter().any(|kv| kv.key() == b"/weft/ca/trust"), "the public bundle is published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_foreign_audience_and_forged_tokens_are_refused_by_name() {
    let m = mesh().await;
    let mint = |aud: &'static str, ttl: u64, now: SystemTime| {
        let store = m.store.clone();
        async move { token::mint(&store, "production", "order-service", aud, Duration::from_secs(ttl), now).await.unwrap() }
    };
    let (good, _) = mint(token::DEFAULT_AUDIENCE, 3600, SystemTime::now()).await;
    let (expired, e) = mint(token::DEFAULT_AUDIENCE, 60, SystemTime::now() - Duration::from_secs(3600)).await;
    let (revoked, r) = mint(token::DEFAULT_AUDIENCE, 3600, SystemTime::now()).await;
    let (foreign, f) = mint("some-other-ca", 3600, SystemTime::now()).await;
    token::revoke(&m.store, &r.id).await.unwrap();
    let forged = format!("{}.{}", good.rsplit_once('.').unwrap().0, "AAAA");
    let before = m.fingerprint().await;
    let signed = m.sign(&good).await;
    assert_eq!(signed.0, 200, "a valid token still works: {}", signed.1);
    for (tok, want) in [
        (expired, format!("token {} expired", e.id)),
        (revoked, format!("token {} was revoked", r.id)),
        (foreign, format!("token {} is for audience \"some-other-ca\", not \"weft-ca\"", f.id)),
        (forged, "does not match its record".to_string()),
        ("weft1.0123456789abcdef.x".into(), "unknown token 0123456789abcdef".into()),
        ("garbage".into(), "malformed token".into()),
    ] {
        let (status, why) = m.sign(&tok).await;
        assert_eq!(status, 401, "{tok}: {why}");
        assert!(why.contains(&want), "{tok}: {why} (want {want})");
    }
    assert_eq!(m.fingerprint().await, before, "refusals write nothing");
    // `weftctl token list` shows each with its state.
    let listed = token::list(&m.store).await.unwrap();
    assert!(listed.iter().any(|t| t.id == r.id && t.revoked));
}

/// CPU time this process has used (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_line_and_a_slow_hello_are_closed_within_bounded_cost() {
    let m = mesh().await;
    let before = m.fingerprint().await;
    let tls = m.tls_as(Some("notification-service"));
    // 4 MiB without a newline, in 64 KiB frames: cut at 64 KiB, linear work.
    let cpu = cpu_time();
    let io = weft_proxy::security::identity::connect_control_plane(&m.authority(), Some(&tls), true).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let (tx, body) = weft_model::stream::ChannelBody::new(64);
    let feeder = tokio::spawn(async move {
        for _ in 0..64 {
            if tx.send(Bytes::from(vec![b'x'; 64 * 1024])).await.is_err() {
                return;
            }
        }
    });
    let req = http::Request::post(format!("http://{}{STREAM_PATH}", m.authority())).body(body).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let why = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    assert!(why.contains("message over 65536 bytes"), "{why}");
    feeder.abort();
    let spent = cpu_time().saturating_sub(cpu);
    assert!(spent < Duration::from_secs(2), "an oversize line cost {spent:?} of CPU");

    // A stream that never says Hello is answered 408 after the Hello timeout, and holds nothing.
    let started = Instant::now();
    let (status, why) = m.stream(Some(&tls), Bytes::new()).await.unwrap();
    assert_eq!(status, 408, "{why}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(m.fingerprint().await, before, "nothing written, no config changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_answers_nobody_without_a_certificate_and_each_role_only_its_keys() {
    let m = mesh().await;
    let before = m.fingerprint().await;
    let url = m.etcd.url();
    let ca = std::fs::read_to_string(m.etcd.certs().join("ca.pem")).unwrap();
    let denied = |r: Result<(), etcd_client::Error>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("permission denied"), "{what}: {e}");
    };
    // Plaintext to the TLS port: no answer.
    let plain = async {
        let mut c = etcd_client::Client::connect([url.replace("https://", "http://")], None).await?;
        c.get("/weft/", None).await.map(drop)
    };
    assert!(tokio::time::timeout(Duration::from_secs(15), plain).await.map_or(true, |r| r.is_err()), "plaintext read");
    // TLS trusting etcd's CA, without a client certificate: the handshake is refused.
    let anonymous = async {
        let tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&ca));
        let options = etcd_client::ConnectOptions::new().with_tls(tls).with_timeout(Duration::from_secs(5));
        let mut c = etcd_client::Client::connect([url.clone()], Some(options)).await?;
        c.get("/weft/", Some(etcd_client::GetOptions::new().with_prefix())).await.map(drop)
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(15), anonymous).await.map_or(true, |r| r.is_err()),
        "anonymous read"
    );
    // A certificate etcd trusts, for a user with no role: nothing.
    let intruder = weft_etcd::issue_client(m.etcd.certs(), "intruder").unwrap();
    let mut c = weft_etcd::connect(std::slice::from_ref(&url), Some(&intruder)).await.unwrap();
    denied(c.get("/weft/ca/trust", None).await.map(drop), "intruder read");
    denied(c.put("/weft/policies/AuthorizationPolicy/production/x", "{}", None).await.map(drop), "intruder write");
    // The control plane may not write policies or tokens; weftctl may not write the registry or the bundle.
    let mut cp =
        weft_etcd::connect(std::slice::from_ref(&url), Some(&m.etcd.tls(weft_etcd::CONTROL_PLANE))).await.unwrap();
    denied(
        cp.put("/weft/policies/AuthorizationPolicy/production/x", "{}", None).await.map(drop),
        "control plane writes a policy",
    );
    denied(cp.put("/weft/tokens/0123456789abcdef", "{}", None).await.map(drop), "control plane mints a token");
    denied(cp.put("/weft/other", "x", None).await.map(drop), "control plane writes outside its keys");
    let mut admin = weft_etcd::connect(std::slice::from_ref(&url), Some(&m.etcd.admin())).await.unwrap();
    denied(admin.put("/weft/registry/production/order-service/x:y", "{}", None).await.map(drop), "weftctl registers");
    denied(admin.put("/weft/ca/trust", "x", None).await.map(drop), "weftctl replaces the trust bundle");
    denied(
        admin.get("/", Some(etcd_client::GetOptions::new().with_prefix())).await.map(drop),
        "weftctl reads outside /weft/",
    );
    assert_eq!(m.fingerprint().await, before, "nothing written, no config changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_group_is_the_only_way_to_serve_a_service_under_another_name() {
    let m = mesh().await;
    let orders_sa = m.tls_as(Some("orders-sa"));
    let claim_as = |sa: &str, labels: &str| {
        let mut w = workload("orders-v3", &[]);
        w.service_account = sa.into();
        for kv in labels.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            w.labels.insert(k.into(), v.into());
        }
        weft_model::stream::line(&Hello {
            workload: w,
            instance: "orders-v3".into(),
            service: Some("order-service".into()),
            address: Some("127.0.0.1:4000".into()),
            port: Some(80),
            applied_version: None,
            protocol: None,
            other_ports: Vec::new(),
            metrics_port: None,
        })
    };
    let claim = |labels: &str| claim_as("orders-sa", labels);
    // No binding: refused.
    let (status, why) = m.stream(Some(&orders_sa), claim("app=order-service,tier=backend")).await.unwrap();
    assert_eq!(status, 403, "{why}");
    // weftctl apply: a WorkloadGroup binds orders-sa to order-service, for workloads labelled tier=backend.
    let wg = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: orders, namespace: production}\nspec:\n  metadata:\n    labels: {app: order-service, tier: backend}\n  template:\n    serviceAccount: orders-sa\n";
    m.store.apply(&weft_control_plane::istio::load_str(std::path::Path::new("wg.yaml"), wg).unwrap()).await.unwrap();
    // Without the group's labels: still refused. (The control plane follows etcd: wait for the group to arrive.)
    eventually("the group reached the control plane and a labelled workload may register", || async {
        let (status, _) = m.stream(Some(&orders_sa), claim("app=order-service")).await.unwrap();
        assert_eq!(status, 403, "a workload without the group's labels");
        m.stream(Some(&orders_sa), claim("app=order-service,tier=backend")).await.unwrap().0 == 200
    })
    .await;
    // Another namespace's identity gets nothing from this group.
    let (status, why) =
        m.stream(Some(&m.tls_as(Some("api-gateway"))), claim("app=order-service,tier=backend")).await.unwrap();
    assert_eq!(status, 403, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_path_normalization_reaches_every_sidecar_and_denies_encoded_bypasses() {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let options = weft_control_plane::push::Options {
        path_normalization: weft_model::PathNormalization::DecodeAndMergeSlashes,
        ..Default::default()
    };
    let (c, _cp) = Cp::start_with(&[etcd.url()], &etcd, "cp-a", test_ca(), options).await;
    let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = paths.clone();
    let app = app_with(move |req| {
        seen.lock().unwrap().push(req.uri().path().to_string());
        "ok".to_string()
    })
    .await;
    let w = workload("order-v1", &[("app", "order-service")]);
    let (order, _g1) = sidecar(&c, w, Some("order-service"), Some(app)).await;
    let (gateway, _g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: production}\nspec:\n  selector: {matchLabels: {app: order-service}}\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [/admin, /admin/*]}}]\n";
    store.apply(&weft_control_plane::istio::load_str(std::path::Path::new("deny.yaml"), deny).unwrap()).await.unwrap();
    eventually("the policy and the normalization reached the order sidecar", || async {
        let config = order.shared.snapshot().config.clone();
        !config.inbound.authz.is_empty()
            && config.path_normalization == Some(weft_model::PathNormalization::DecodeAndMergeSlashes)
            && endpoints(&gateway, "order-service") == 1
    })
    .await;
    for path in ["/admin/x", "/public/../admin/x", "/%61dmin/x", "/admin%2Fx", "//admin/x", "/public/..%2Fadmin"] {
        let got = get_path(gateway.outbound, "order-service", path).await;
        assert_eq!(got, 403, "{path}");
    }
    assert_eq!(get_path(gateway.outbound, "order-service", "/public/./x").await, 200);
    assert_eq!(*paths.lock().unwrap(), ["/public/x"], "the app saw only the allowed request, normalized");
}

/// GET `path` through `addr` with `Host: host`; the status.
async fn get_path(addr: std::net::SocketAddr, host: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A sidecar that refuses a delta (it lost the config the delta applies on, or lies that it
/// did) gets the whole config of the current state, once; refusing that too brings no repeat
/// (the control plane does not loop) and a whole config next; deltas then chain on pushes not
/// answered yet, and rebuild exactly the config a new stream gets whole. A stream that did not
/// say it reads deltas (a sidecar older than them) gets whole configs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delta_brings_the_whole_config_once_and_no_loop() {
    use weft_model::stream::{Ack, Lines, Push};
    let m = mesh().await;
    let tls = m.tls_as(Some("notification-service"));
    let open = |instance: &'static str, deltas: bool| {
        let (tls, authority) = (tls.clone(), m.authority());
        async move {
            let io = weft_proxy::security::identity::connect_control_plane(&authority, Some(&tls), true).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
            tokio::spawn(conn);
            let (tx, body) = weft_model::stream::ChannelBody::new(4);
            tx.send(hello("notification-service", "notification-service", instance, None, "10.0.0.1:1")).await.unwrap();
            let mut req = http::Request::post(format!("http://{authority}{STREAM_PATH}"));
            if deltas {
                req = req.header(weft_model::stream::DELTA_HEADER, "true");
            }
            let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
            assert_eq!(resp.status(), 200);
            (tx, Lines::new(resp.into_body()), sender)
        }
    };
    async fn next(lines: &mut Lines<hyper::body::Incoming>) -> Push {
        tokio::time::timeout(Duration::from_secs(20), lines.next::<Push>()).await.expect("a push").unwrap().unwrap()
    }
    let answer = |version: &str, error: Option<&str>| {
        weft_model::stream::line(&Ack { version: version.into(), error: error.map(str::to_string) })
    };
    let change = |seconds: u32| {
        let vs = format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: order, namespace: production}}\nspec:\n  hosts: [order-service]\n  http:\n  - route:\n    - destination: {{host: order-service}}\n    timeout: {seconds}s\n");
        weft_control_plane::istio::load_str(std::path::Path::new("vs.yaml"), &vs).unwrap()
    };
    let (tx, mut lines, _s) = open("n-1", true).await;
    let (old_tx, mut old, _s_old) = open("n-old", false).await;
    let first = next(&mut lines).await;
    assert!(first.config.is_some() && first.delta.is_none() && first.seq == 1, "a stream starts whole, push 1");
    tx.send(answer(&first.version, None)).await.unwrap();
    /// The push as a sidecar older than deltas reads it: a version and a whole config, no other field.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct V1Push {
        version: String,
        config: weft_model::ProxyConfig,
    }
    async fn v1(lines: &mut Lines<hyper::body::Incoming>) -> V1Push {
        let read = tokio::time::timeout(Duration::from_secs(20), lines.next::<V1Push>()).await.expect("a push");
        read.expect("an older sidecar reads every push").unwrap()
    }
    let old_first = v1(&mut old).await;
    old_tx.send(answer(&old_first.version, None)).await.unwrap();

    m.store.apply(&change(1)).await.unwrap();
    let delta = next(&mut lines).await;
    assert_eq!(delta.delta.as_ref().expect("a delta after an ACK").base, 1);
    let old_second = v1(&mut old).await;
    assert_ne!(old_second.version, old_first.version, "a stream without the header gets whole configs only");
    tx.send(answer(&delta.version, Some("I hold nothing"))).await.unwrap();
    let whole = next(&mut lines).await;
    assert!(whole.config.is_some() && whole.delta.is_none(), "the whole config after a refused delta");
    assert_eq!((whole.version.as_str(), whole.seq), (delta.version.as_str(), 3), "of the same state");
    tx.send(answer(&whole.version, Some("refused again"))).await.unwrap();

    m.store.apply(&change(2)).await.unwrap();
    let after = next(&mut lines).await;
    assert!(
        after.version.parse::<i64>().unwrap() > whole.version.parse::<i64>().unwrap(),
        "no repeat of the refused config: the next push is of the next state"
    );
    assert!(after.config.is_some(), "whole again: the sidecar holds none of the pushes since its last ACK");

    // Not answered yet: the next change is a delta on it all the same.
    m.store.apply(&change(3)).await.unwrap();
    let chained = next(&mut lines).await;
    assert_eq!(chained.delta.as_ref().expect("a delta on a push not answered yet").base, after.seq);
    tx.send(answer(&after.version, None)).await.unwrap();
    tx.send(answer(&chained.version, None)).await.unwrap();
    let version = chained.version.clone();
    let rebuilt = chained.resolve(Some((after.seq, after.config.as_ref().unwrap()))).unwrap();
    let (_tx2, mut lines2, _s2) = open("n-2", true).await;
    let fresh = next(&mut lines2).await;
    assert_eq!(fresh.version, version);
    assert_eq!(rebuilt, fresh.config.unwrap(), "the delta rebuilt what a new stream gets whole");

    // Two deltas in flight, the first refused: the whole config of the newest state goes at
    // once; the second's refusal is expected (its base was refused) — not counted, no repeat.
    let nacks = m._cp.ctx.metrics.nacks.get();
    m.store.apply(&change(4)).await.unwrap();
    let d4 = next(&mut lines).await;
    m.store.apply(&change(5)).await.unwrap();
    let d5 = next(&mut lines).await;
    assert_eq!(d5.delta.as_ref().expect("chained").base, d4.seq);
    tx.send(answer(&d4.version, Some("cannot apply"))).await.unwrap();
    let resync = next(&mut lines).await;
    assert!(resync.config.is_some(), "whole, at once");
    assert_eq!(resync.version, d5.version, "of the newest state");
    tx.send(answer(&d5.version, Some("a delta on push I refused"))).await.unwrap();
    tx.send(answer(&resync.version, None)).await.unwrap();
    m.store.apply(&change(6)).await.unwrap();
    let d6 = next(&mut lines).await;
    assert_eq!(d6.delta.as_ref().expect("a delta on the whole push, nothing between").base, resync.seq);
    eventually("the sidecar's status shows the whole push ACKed", || async {
        m.store
            .statuses()
            .await
            .unwrap()
            .iter()
            .any(|s| s.instance.ends_with(":n-1") && s.acked_version.as_deref() == Some(resync.version.as_str()))
    })
    .await;
    assert_eq!(m._cp.ctx.metrics.nacks.get(), nacks + 1, "the expected refusal is not counted");
}
