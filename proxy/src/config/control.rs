//! The sidecar's side of the control-plane stream: say who we are, apply each
//! pushed config (ACK) or refuse it and keep the old one (NACK), and keep
//! coming back — to the next control plane in the list, with jittered
//! exponential back-off — when the stream breaks. Traffic keeps flowing on
//! the last good config all the while.

use crate::state::Shared;
use http::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_model::stream::{line, ChannelBody, Lines};
use weft_model::stream::{Ack, Hello, Push, STREAM_PATH};

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// `http://host:port` of each control plane instance.
    pub urls: Vec<String>,
    pub hello: Hello,
    /// TLS to the control plane (`--ca-file`); plaintext when `None`.
    pub tls: Option<crate::security::identity::ControlPlaneTls>,
}

/// Back-off between reconnects: 100 ms doubling to 5 s, fully jittered.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until `goodbye` turns true: connects, follows the stream, reconnects.
/// On goodbye the stream is closed cleanly, so the control plane deregisters
/// this instance at once (peers stop sending new requests before the drain).
pub async fn run(shared: Arc<Shared>, options: ControlOptions, mut goodbye: tokio::sync::watch::Receiver<bool>) {
    if options.urls.is_empty() {
        tracing::error!("no control plane address given");
        return;
    }
    // The stream needs our certificate: wait for the first one (the identity task asks for it).
    if let Some(identity) = options.tls.as_ref().and_then(|t| t.identity.clone()) {
        while identity.current().is_none() {
            if *goodbye.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut next = rand::thread_rng().gen_range(0..options.urls.len());
    let mut backoff = BACKOFF_BASE;
    loop {
        let url = &options.urls[next % options.urls.len()];
        next += 1;
        let started = Instant::now();
        let result = session(&shared, url, &options.hello, options.tls.as_ref(), &mut goodbye).await;
        let leaving = *goodbye.borrow();
        match result {
            _ if leaving => return,
            Err(SessionError::Renewed) => {
                // Straight back with the new certificate: the registration never lapses.
                tracing::info!(%url, "new certificate: reconnecting to the control plane with it");
                next -= 1;
                continue;
            }
            Ok(()) => tracing::warn!(%url, "control plane closed the stream"),
            Err(e) => tracing::warn!(%url, "control plane stream failed: {e}"),
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_BASE; // It was a healthy stream: come back quickly.
        }
        let wait = rand::thread_rng().gen_range(Duration::ZERO..=backoff);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("bad control plane address {0:?} (want http://host:port)")]
    Url(String),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("control plane answered {0}: {1}")]
    Status(http::StatusCode, String),
    #[error("{0}")]
    Lines(#[from] weft_model::stream::LinesError),
    #[error("stream closed while sending")]
    Closed,
    #[error("a new certificate was installed")]
    Renewed,
}

async fn session(
    shared: &Arc<Shared>,
    url: &str,
    hello: &Hello,
    tls: Option<&crate::security::identity::ControlPlaneTls>,
    goodbye: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let authority = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(SessionError::Url(url.to_string()));
    }
    let io = crate::security::identity::connect_control_plane(authority, tls, true)
        .await
        .map_err(|e| SessionError::Connect(std::io::Error::other(e)))?;
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .timer(hyper_util::rt::TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await?;
    let conn = tokio::spawn(conn);
    let (tx, body) = ChannelBody::new(8);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{authority}{STREAM_PATH}"))
        .header("content-type", "application/x-ndjson")
        .header(weft_model::stream::DELTA_HEADER, "true")
        .body(body)
        .map_err(|_| SessionError::Url(url.to_string()))?;
    let mut hello = hello.clone();
    if shared.is_ready() {
        hello.applied_version = Some(shared.snapshot().config.version.clone());
    }
    tx.send(line(&hello)).await.map_err(|_| SessionError::Closed)?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        if resp.headers().contains_key(weft_model::stream::RENEW_HEADER) {
            if let Some(identity) = &shared.identity {
                identity.renew_now();
            }
        }
        // The reason, a line of text; read at most 4 KiB of it.
        let body = http_body_util::Limited::new(resp.into_body(), 4096);
        let reason = http_body_util::BodyExt::collect(body).await.map(|c| c.to_bytes()).unwrap_or_default();
        return Err(SessionError::Status(status, String::from_utf8_lossy(&reason).trim().to_string()));
    }
    tracing::info!(%url, "connected to the control plane");
    let mut lines = Lines::new(resp.into_body());
    // The push of this stream the sidecar last applied, by number, and its config as pushed
    // (before the sidecar's own adjustments): what the next delta applies on. A new stream
    // starts with a whole one.
    let mut held: Option<(u64, weft_model::ProxyConfig)> = None;
    let identity = shared.identity.clone();
    let mut installs = identity.as_ref().map(|i| i.installs());
    if let Some(i) = installs.as_mut() {
        i.borrow_and_update();
    }
    loop {
        let push = tokio::select! {
            push = lines.next::<Push>() => push?,
            // A new certificate: the control plane knows a stream's identity and root from the
            // certificate its connection was opened with, so come back on a new one. The old
            // connection is cut, not closed cleanly: a clean goodbye would deregister us.
            Ok(()) = async { match installs.as_mut() { Some(i) => i.changed().await, None => std::future::pending().await } } => {
                conn.abort();
                let _ = conn.await;
                drop(tx);
                return Err(SessionError::Renewed);
            }
            () = async { let _ = goodbye.wait_for(|g| *g).await; } => {
                drop(tx); // Ends our half of the stream: a clean goodbye.
                let _ = tokio::time::timeout(Duration::from_secs(1), lines.next::<Push>()).await;
                return Ok(());
            }
        };
        let Some(push) = push else { return Ok(()) };
        let (version, seq) = (push.version.clone(), push.seq);
        let applied = push.resolve(held.as_ref().map(|(n, c)| (*n, c))).and_then(|config| {
            let raw = config.clone();
            let trusted = match (config.trust.as_ref(), &identity) {
                (Some(trust), Some(identity)) => identity.check_trust(trust).map(|()| Some((identity, trust.clone()))),
                _ => Ok(None),
            };
            let trusted = trusted.map_err(|e| format!("trust bundle: {e}"))?;
            shared.apply(config).map_err(|e| e.to_string())?;
            if let Some((identity, trust)) = trusted {
                // Checked above: it cannot fail now.
                let _ = identity.trust(&trust);
            }
            Ok(raw)
        });
        let ack = match applied {
            Ok(raw) => {
                held = Some((seq, raw));
                tracing::info!(%version, "config from the control plane applied");
                Ack { version, error: None }
            }
            Err(e) => {
                shared.metrics.config_reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(%version, "config from the control plane rejected, keeping the old one: {e}");
                Ack { version, error: Some(e) }
            }
        };
        tx.send(line(&ack)).await.map_err(|_| SessionError::Closed)?;
    }
}
