//! The sidecar's control-plane client against a scripted control plane:
//! ACK for a good config, NACK with the reason for a bad one (and the old
//! config stays), readiness only once a config is held.

use crate::harness::*;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::sync::mpsc;
use weft_model::stream::{line, ChannelBody, Lines};
use weft_model::stream::{Ack, Hello, Push};
use weft_proxy::{Proxy, ProxyOptions};

/// A control plane that pushes what the test sends on `pushes` and reports every ACK on `acks`.
async fn scripted() -> (SocketAddr, mpsc::Sender<Push>, mpsc::Receiver<Ack>, mpsc::Receiver<Hello>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (push_tx, push_rx) = mpsc::channel::<Push>(8);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(8);
    let (hello_tx, hello_rx) = mpsc::channel::<Hello>(8);
    let push_rx = std::sync::Arc::new(tokio::sync::Mutex::new(push_rx));
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (push_rx, ack_tx, hello_tx) = (push_rx.clone(), ack_tx.clone(), hello_tx.clone());
            async move {
                let (tx, body) = ChannelBody::new(8);
                tokio::spawn(async move {
                    let mut lines = Lines::new(req.into_body());
                    let hello: Hello = lines.next().await.unwrap().unwrap();
                    hello_tx.send(hello).await.unwrap();
                    let mut pushes = push_rx.lock().await;
                    while let Some(p) = pushes.recv().await {
                        tx.send(line(&p)).await.unwrap();
                        let ack: Ack = lines.next().await.unwrap().unwrap();
                        ack_tx.send(ack).await.unwrap();
                    }
                });
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body.boxed()))
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc)
            .await;
    });
    (addr, push_tx, ack_rx, hello_rx)
}

#[tokio::test]
async fn good_configs_are_acked_bad_ones_nacked_and_the_old_one_kept() {
    let (cp, pushes, mut acks, mut hellos) = scripted().await;
    let up = Upstream::named("up").await;
    let services = "  svc.test.svc.cluster.local:\n    routes:\n      - route: [ { cluster: c } ]\n";
    let good = parse(&config_yaml(services, &cluster("c", "", &[&up])));
    let mut placeholder = good.clone();
    placeholder.services.clear();
    placeholder.clusters.clear();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = ProxyOptions {
        outbound: any,
        inbound: any,
        admin: any,
        access_log: false,
        wait_for_config: true,
        ..Default::default()
    };
    let proxy = Proxy::start(options, placeholder, prometheus::Registry::new()).await.unwrap();
    assert_eq!(get(proxy.admin, "a", "/ready", &[]).await.status, 503, "not ready without a config");
    let hello = Hello {
        workload: good.workload.clone(),
        instance: "client-1".into(),
        service: None,
        address: None,
        port: None,
        applied_version: None,
        protocol: None,
        other_ports: Vec::new(),
        metrics_port: None,
    };
    let (_bye, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(weft_proxy::config::control::run(
        proxy.shared.clone(),
        weft_proxy::config::control::ControlOptions { urls: vec![format!("http://{cp}")], hello, tls: None },
        rx,
    ));
    assert_eq!(hellos.recv().await.unwrap().instance, "client-1");

    let numbered = |seq: u64, config: weft_model::ProxyConfig| Push { seq, ..Push::full(seq.to_string(), config) };
    let delta_push = |seq: u64, delta: weft_model::stream::Delta| Push {
        version: seq.to_string(),
        seq,
        config: None,
        delta: Some(delta),
    };
    pushes.send(numbered(5, good.clone())).await.unwrap();
    assert_eq!(acks.recv().await.unwrap(), Ack { version: "5".into(), error: None });
    assert_eq!(get(proxy.admin, "a", "/ready", &[]).await.status, 200);
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "up");

    let mut bad = good.clone();
    bad.services.values_mut().for_each(|s| s.routes[0].route[0].cluster = "missing".into());
    pushes.send(numbered(6, bad.clone())).await.unwrap();
    let nack = acks.recv().await.unwrap();
    assert_eq!(nack.version, "6");
    assert!(nack.error.unwrap().contains("no cluster named \"missing\""));
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "up", "the old config keeps serving");
    let dump: serde_json::Value = serde_json::from_str(&admin(&proxy, "/config_dump").await).unwrap();
    assert_eq!(dump["version"], "5");

    // A delta applies on the push the sidecar last applied (5, not the refused 6): here it
    // moves the service to a second cluster.
    let other = Upstream::named("other").await;
    let mut moved =
        parse(&config_yaml(services, &format!("{}{}", cluster("c", "", &[&up]), cluster("d", "", &[&other]))));
    moved.services.values_mut().for_each(|s| s.routes[0].route[0].cluster = "d".into());
    let delta = weft_model::stream::Delta::between(5, &good, &moved);
    assert_eq!(delta.config.clusters.keys().collect::<Vec<_>>(), ["d"], "only the new cluster travels");
    pushes.send(delta_push(7, delta.clone())).await.unwrap();
    assert_eq!(acks.recv().await.unwrap(), Ack { version: "7".into(), error: None });
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "other");

    // A delta on a push the sidecar does not hold (a lost or refused one) is refused and
    // changes nothing; so is one that leaves a route without its cluster.
    pushes.send(delta_push(8, delta)).await.unwrap();
    let nack = acks.recv().await.unwrap();
    assert!(nack.error.unwrap().contains("a delta on push 5, but this sidecar holds push 7"));
    let mut orphan = weft_model::stream::Delta::between(7, &moved, &moved);
    orphan.removed_clusters = vec!["d".into()];
    pushes.send(delta_push(9, orphan)).await.unwrap();
    let nack = acks.recv().await.unwrap();
    assert!(nack.error.unwrap().contains("no cluster named \"d\""));
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "other", "the held config keeps serving");
    let dump: serde_json::Value = serde_json::from_str(&admin(&proxy, "/config_dump").await).unwrap();
    assert_eq!(dump["version"], "7");

    // The refused pushes left what the sidecar holds alone: a delta on 7 still applies.
    pushes.send(delta_push(10, weft_model::stream::Delta::between(7, &moved, &good))).await.unwrap();
    assert_eq!(acks.recv().await.unwrap(), Ack { version: "10".into(), error: None });
    assert_eq!(get(proxy.outbound, "svc", "/", &[]).await.body, "up");
}
