//! Endpoints by DNS name (a ServiceEntry with resolution DNS): the sidecar
//! resolves them itself, and a name it cannot resolve answers 503 without
//! stopping the others.

use crate::harness::*;

const HOST: &str = "api.external.test";

fn external(names: &[String]) -> String {
    let services = format!("  {HOST}:\n    routes:\n      - route: [ {{ cluster: ext }} ]\n");
    let dns: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let clusters = format!("  ext:\n    service: {HOST}\n    dns: [{}]\n", dns.join(", "));
    config_yaml(&services, &clusters)
}

#[tokio::test]
async fn endpoints_named_by_dns_are_resolved_by_the_sidecar() {
    let up = Upstream::named("external").await;
    let name = format!("localhost:{}", up.addr.port());
    let proxy = start(&external(std::slice::from_ref(&name))).await;
    // Resolved in the background at start: wait for the answer, not for time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = get(proxy.outbound, HOST, "/", &[]).await;
        if got.status == 200 {
            assert_eq!(got.body, "external");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never resolved: {} {}", got.status, got.body);
        tokio::task::yield_now().await;
    }
    assert!(proxy.shared.dns.answers()[&name].iter().any(|a| a.ip().is_loopback()));
    // A new config naming a name that does not resolve: 503 for it, and the sidecar keeps serving.
    let bad = "no-such-host.invalid:80".to_string();
    proxy.shared.apply(parse(&external(&[bad]))).unwrap();
    let got = get(proxy.outbound, HOST, "/", &[]).await;
    assert_eq!(got.status, 503, "{}", got.body);
}

/// A nameserver for the test: answers A queries with `ip` (TTL 1 s), AAAA with
/// nothing, and SERVFAIL while `ip` is unset.
async fn nameserver(
    ip: std::sync::Arc<std::sync::Mutex<Option<[u8; 4]>>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let q = &buf[..n];
            // The question ends after its name, type and class.
            let mut at = 12;
            while q[at] != 0 {
                at += 1 + q[at] as usize;
            }
            let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
            let mut r = q[..at + 5].to_vec();
            r[2] = 0x81;
            let answer = *ip.lock().unwrap();
            r[3] = if answer.is_some() { 0x80 } else { 0x82 };
            if answer.is_none() {
                failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if let (Some(a), 1) = (answer, qtype) {
                r[7] = 1;
                r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                r.extend_from_slice(&a);
            }
            let _ = socket.send_to(&r, from).await;
        }
    });
    addr
}

/// An HTTP server on `listener` answering `name`.
fn http_on(listener: std::net::TcpListener, name: &'static str) {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}", name.len());
            let _ = s.write_all(body.as_bytes());
        }
    });
}

#[tokio::test]
async fn the_sidecars_own_resolver_follows_the_ttl_and_keeps_the_last_answer_on_failure() {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    http_on(first, "first");
    http_on(std::net::TcpListener::bind(("127.0.0.2", port)).unwrap(), "second");
    let ip = std::sync::Arc::new(std::sync::Mutex::new(Some([127, 0, 0, 1])));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = nameserver(ip.clone(), failed.clone()).await;
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = weft_proxy::ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        dns_servers: vec![server],
        ..Default::default()
    };
    let name = format!("api.external.test:{port}");
    let config = parse(&external(std::slice::from_ref(&name)));
    let proxy = weft_proxy::Proxy::start(options, config, prometheus::Registry::new()).await.unwrap();
    let until = |want: &'static str, within: std::time::Duration| {
        let out = proxy.outbound;
        async move {
            let deadline = std::time::Instant::now() + within;
            loop {
                let got = get(out, HOST, "/", &[]).await;
                if got.body == want {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "never {want}: {} {}", got.status, got.body);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    until("first", std::time::Duration::from_secs(10)).await;
    // The name moves: after its TTL (read as Envoy's 5 s minimum), traffic follows.
    *ip.lock().unwrap() = Some([127, 0, 0, 2]);
    until("second", std::time::Duration::from_secs(15)).await;
    // The nameserver fails (SERVFAIL to a re-resolution's A and AAAA): the last answer stands.
    *ip.lock().unwrap() = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while failed.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "the sidecar never asked again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(get(proxy.outbound, HOST, "/", &[]).await.body, "second");
}
