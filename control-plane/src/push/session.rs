//! One sidecar's stream: admission of its Hello, its registration on a lease,
//! pushes of its config as state changes, and its ACKs and NACKs.
//!
//! Size: the stream's life in order (admission, registration, pushes, acknowledgements,
//! status), which share the session's state.

use super::context::{reply, Context, HANDSHAKE_TIMEOUT};
use super::lease::Lease;
use super::peer::{instance_ok, Peer, SpiffeId};
use crate::registry::Instance;
use crate::store::{SidecarStatus, REGISTRY_LEASE_SECONDS};
use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use weft_model::stream::{Ack, Hello};
use weft_model::stream::{ChannelBody, Lines};
use weft_proxy::http::body::Body;

/// One open stream of an identity; dropping it frees the slot.
struct StreamSlot {
    ctx: Arc<Context>,
    id: String,
}

impl StreamSlot {
    fn take(ctx: &Arc<Context>, id: &SpiffeId) -> Option<Self> {
        let id = id.to_string();
        let mut streams = ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = streams.entry(id.clone()).or_default();
        if *n >= ctx.options.max_streams_per_identity {
            return None;
        }
        *n += 1;
        Some(StreamSlot { ctx: ctx.clone(), id })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.id);
            }
        }
    }
}

/// A Hello the caller's identity allows, and where to register it.
#[derive(Debug)]
struct Admitted {
    /// The registry and status key of the instance: `<service account>:<instance>`,
    /// so no identity can overwrite, shadow or delete another's.
    key: String,
    /// The address peers will be sent to.
    address: Option<String>,
    /// The sidecar reads deltas (it sent [`weft_model::stream::DELTA_HEADER`]).
    deltas: bool,
}

/// Checks a Hello against the identity that sent it.
fn admit(ctx: &Context, peer: &Peer, id: &SpiffeId, hello: &Hello) -> Result<Admitted, String> {
    let w = &hello.workload;
    if id.trust_domain != ctx.options.trust_domain {
        return Err(format!("{id} is not of trust domain {}", ctx.options.trust_domain));
    }
    if w.namespace != id.namespace || w.service_account != id.service_account {
        return Err(format!(
            "the Hello claims namespace {:?} and service account {:?}, the certificate proves {id}",
            w.namespace, w.service_account
        ));
    }
    if !instance_ok(&hello.instance) {
        return Err(format!("bad instance id {:?} (letters, digits, '-', '_', '.')", hello.instance));
    }
    if hello.other_ports.len() > MAX_OTHER_PORTS {
        return Err(format!("{} other ports: at most {MAX_OTHER_PORTS}", hello.other_ports.len()));
    }
    if hello.other_ports.iter().any(|p| p.port == 0 || Some(p.port) == hello.port || (15000..=15090).contains(&p.port))
    {
        return Err(
            "other ports must be port numbers other than the service port and the sidecar's own 15000-15090".into()
        );
    }
    let address = match (&hello.service, &hello.address) {
        (Some(service), Some(address)) => {
            if !crate::registry::name_ok(service) {
                return Err(format!("bad service name {service:?}"));
            }
            let state = ctx.state.borrow().clone();
            if !crate::registry::may_serve(&state.resources, &id.namespace, &id.service_account, service, &w.labels) {
                return Err(format!(
                    "{id} may not register as an endpoint of {service}.{}: only the service account named like the service, or one a WorkloadGroup binds to it (with its labels), may",
                    id.namespace
                ));
            }
            let said: std::net::SocketAddr =
                address.parse().map_err(|_| format!("bad address {address:?} (want IP:port)"))?;
            Some(if ctx.options.trust_advertised_address {
                said.to_string()
            } else {
                // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`: registered as IPv4.
                std::net::SocketAddr::new(peer.addr.ip().to_canonical(), said.port()).to_string()
            })
        }
        _ => None,
    };
    Ok(Admitted { key: format!("{}:{}", id.service_account, hello.instance), address, deltas: false })
}

/// Opens a config stream: a client certificate from the mesh CA is required,
/// the Hello must come within [`HANDSHAKE_TIMEOUT`] and claim exactly the
/// identity the certificate proves; then the session runs.
pub(super) async fn stream(ctx: Arc<Context>, peer: Peer, req: http::Request<Incoming>) -> Response<Body> {
    let deltas = req.headers().contains_key(weft_model::stream::DELTA_HEADER);
    let body = req.into_body();
    let Some(id) = peer.identity.clone() else {
        tracing::warn!(peer = %peer.addr, "config stream refused: no client certificate");
        return reply(
            StatusCode::UNAUTHORIZED,
            "the config stream needs a client certificate from the mesh CA (start the sidecar with --token-file)\n",
        );
    };
    let mut lines = Lines::with_max(body, weft_model::stream::MAX_CLIENT_LINE);
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, lines.next::<Hello>()).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return reply(StatusCode::BAD_REQUEST, "the stream ended before the Hello\n"),
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer.addr, %id, "bad hello: {e}");
            return reply(StatusCode::BAD_REQUEST, format!("bad Hello: {e}\n"));
        }
        Err(_) => {
            tracing::warn!(peer = %peer.addr, %id, "no hello in time");
            return reply(StatusCode::REQUEST_TIMEOUT, "no Hello within 10 s\n");
        }
    };
    let admitted = match admit(&ctx, &peer, &id, &hello) {
        Ok(a) => Admitted { deltas, ..a },
        Err(why) => {
            tracing::warn!(peer = %peer.addr, %id, instance = %hello.instance, "config stream refused: {why}");
            return reply(StatusCode::FORBIDDEN, format!("{why}\n"));
        }
    };
    // While a rotation signs with the next root, a new stream needs a certificate from it: the
    // sidecar is told to renew first (its current certificate still renews), so nobody can hold
    // the rotation back by reconnecting with an old certificate.
    let trust = ctx.ca.trust();
    let roots = crate::ca::fingerprints(&trust.roots);
    if roots.len() > 1 && roots.first() != Some(&trust.signer) && peer.issuer.as_ref() != Some(&trust.signer) {
        let mut r =
            reply(StatusCode::FORBIDDEN, "the certificate is from a root that no longer signs: renew it first\n");
        r.headers_mut().insert(weft_model::stream::RENEW_HEADER, http::HeaderValue::from_static("true"));
        return r;
    }
    let Some(slot) = StreamSlot::take(&ctx, &id) else {
        tracing::warn!(peer = %peer.addr, %id, "config stream refused: too many streams for this identity");
        return reply(StatusCode::TOO_MANY_REQUESTS, format!("{id} holds too many config streams\n"));
    };
    // One push in flight: a sidecar that does not read holds one config, not a queue of them.
    let (tx, out) = ChannelBody::new(1);
    tokio::spawn(async move {
        let _slot = slot;
        ctx.metrics.connected.inc();
        let result = session(&ctx, &peer, &hello, &admitted, lines, tx).await;
        ctx.metrics.connected.dec();
        // Whatever ended the stream, its status goes (unless a newer stream of the same sidecar
        // rewrote it): a rotation counts live sidecars only.
        if let Err(status) = &result {
            let _ = ctx.store.delete_status_if(&status.1).await;
        }
        let result = result.map_err(|(e, _)| e);
        if let Err(e) = result {
            tracing::info!(instance = %hello.instance, "sidecar stream ended: {e}");
        }
    });
    Response::new(http_body_util::BodyExt::boxed(out))
}

/// How long a stream whose certificate comes from a root that no longer signs may stay
/// (its sidecar renews within moments of being told): then it is cut, so nobody holding an
/// old certificate can hold a root rotation back.
fn renew_grace(ctx: &Context) -> Duration {
    ctx.options.rotation_min_step + Duration::from_secs(5)
}

async fn session(
    ctx: &Context,
    peer: &Peer,
    hello: &Hello,
    admitted: &Admitted,
    lines: Lines<Incoming>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), (String, SidecarStatus)> {
    let mut written = None;
    stream_session(ctx, peer, hello, admitted, lines, tx, &mut written)
        .await
        .map_err(|e| (e, written.unwrap_or_default()))
}

/// Ports one instance may register beyond its service port (Kubernetes allows any number;
/// a bound keeps one sidecar from growing every config in the mesh).
const MAX_OTHER_PORTS: usize = 32;

async fn stream_session(
    ctx: &Context,
    peer: &Peer,
    hello: &Hello,
    admitted: &Admitted,
    mut lines: Lines<Incoming>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    last_written: &mut Option<SidecarStatus>,
) -> Result<(), String> {
    let w = &hello.workload;
    // Register the instance for as long as its stream lives.
    let mut registration = match (&hello.service, &admitted.address) {
        (Some(service), Some(address)) => {
            let inst = Instance {
                address: address.clone(),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
                port: hello.port.unwrap_or(80),
                protocol: hello.protocol,
                other_ports: hello.other_ports.clone(),
                metrics_port: hello.metrics_port,
            };
            let lease = ctx
                .store
                .register(&w.namespace, service, &admitted.key, &inst, REGISTRY_LEASE_SECONDS)
                .await
                .map_err(|e| e.to_string())?;
            Some(Lease::keep(ctx.store.clone(), lease))
        }
        _ => None,
    };
    let status = SidecarStatus {
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        instance: admitted.key.clone(),
        control_plane: ctx.id.clone(),
        acked_version: hello.applied_version.clone(),
        // The root of the certificate this connection proved, never what the sidecar says.
        issuer: peer.issuer.clone(),
        cert_expires: peer.expires,
        metrics: hello
            .metrics_port
            .filter(|p| *p != 0)
            .map(|p| std::net::SocketAddr::new(peer.addr.ip().to_canonical(), p).to_string()),
        ..Default::default()
    };
    // The first status is written before the first push (a rotation counts this sidecar from
    // now on); later ones by the writer, off this loop.
    ctx.status_batch.put(status.clone()).await;
    *last_written = Some(status.clone());
    let writer = StatusWriter::start(ctx.status_batch.clone(), status.clone());
    let ended =
        serve_stream(ctx, peer, (hello, admitted.deltas), &mut lines, &tx, &mut registration, status, &writer).await;
    // Whatever the writer last wrote is what the stream's end takes away.
    if let Some(last) = writer.finish().await {
        *last_written = Some(last);
    }
    if let Ok(Goodbye) = ended {
        let _ = ctx.store.delete_status(&ctx.id, &w.namespace, &admitted.key).await;
    }
    ended.map(|_| ())
}

/// A push the sidecar has not answered yet.
struct Sent {
    version: String,
    /// The etcd revision of the trust it carried.
    trust_revision: i64,
    delta: bool,
    /// A delta chained on a push the sidecar refused: it will be refused too, and a whole
    /// push has gone after it.
    doomed: bool,
}

/// Pushes a sidecar may leave unanswered before its stream is ended (an honest one answers
/// each within moments; the session keeps a few bytes for each until it does).
const MAX_UNANSWERED: usize = 256;

/// A clean end of a stream: the sidecar said goodbye (its status goes at once).
struct Goodbye;

/// The push loop of one admitted stream: pushes each new config, records ACKs and NACKs.
#[allow(clippy::too_many_arguments)]
async fn serve_stream(
    ctx: &Context,
    peer: &Peer,
    (hello, accepts_delta): (&Hello, bool),
    lines: &mut Lines<Incoming>,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    registration: &mut Option<Lease>,
    mut status: SidecarStatus,
    writer: &StatusWriter,
) -> Result<Goodbye, String> {
    let w = &hello.workload;
    let mut written = status.clone();
    let mut stale: Option<tokio::time::Instant> = None;
    let mut state_rx = ctx.state.clone();
    let mut trust_rx = ctx.trust.clone();
    // A digest of the last config sent (without its version): sessions keep no config copies.
    let mut last_sent: Option<u64> = None;
    // The stream's pushes, numbered from 1: the last one's index (what the next delta is
    // computed against, kept only for a sidecar that reads deltas) and number, and each push
    // not answered yet (the sidecar answers every push, in order).
    let mut seq = 0u64;
    let mut base: Option<(Arc<super::encode::Index>, u64)> = None;
    let mut in_flight = std::collections::VecDeque::<Sent>::new();
    let mut pending: Option<(String, Option<std::time::Instant>)> = None;
    // The sidecar's own fields, serialized once and again when the trust changes.
    let mut own_trust = trust_rx.borrow().clone();
    let mut own = super::encode::Own::new(w, &own_trust.0, ctx.options.path_normalization)?;
    let mut state_changed = true; // Push the current state at once.
    loop {
        if state_changed {
            let state = state_rx.borrow_and_update().clone();
            let trust = trust_rx.borrow_and_update().clone();
            // The version counts etcd revisions of both policies and trust: an ACK of a version at
            // or after the trust's revision proves the sidecar holds that trust (rotation waits on it).
            let version = state.revision.max(trust.1).to_string();
            let (shared, warnings, shared_digest) =
                ctx.translations.get(&state, w, &ctx.options.trust_domain, &ctx.metrics.translation_warnings);
            if !Arc::ptr_eq(&own_trust, &trust) {
                own = super::encode::Own::new(w, &trust.0, ctx.options.path_normalization)?;
                own_trust = trust.clone();
            }
            let digest = own.digest(shared_digest);
            if last_sent != Some(digest) {
                if in_flight.len() >= MAX_UNANSWERED {
                    return Err(format!("the sidecar left {MAX_UNANSWERED} pushes unanswered"));
                }
                let on = base.as_ref().map(|(index, n)| (index, *n));
                seq += 1;
                // Numbered only for a sidecar that reads deltas: an older one reads no `seq`.
                let numbered = if accepts_delta { seq } else { 0 };
                let (push, delta) = shared.line(on, numbered, &version, &own)?;
                // A sidecar that does not read its stream is not waited for forever.
                tokio::time::timeout(renew_grace(ctx), tx.send(push))
                    .await
                    .map_err(|_| "the sidecar does not read its stream".to_string())?
                    .map_err(|_| "sidecar went away".to_string())?;
                ctx.metrics.pushes.inc();
                if delta {
                    ctx.metrics.delta_pushes.inc();
                }
                status.sent_version = Some(version.clone());
                status.warnings =
                    warnings.iter().take(crate::store::MAX_STATUS_WARNINGS).map(|w| cut(w, 512)).collect();
                pending = Some((version.clone(), state.changed_at));
                last_sent = Some(digest);
                if accepts_delta {
                    base = Some((shared.index().clone(), seq));
                }
                in_flight.push_back(Sent { version: version.clone(), trust_revision: trust.1, delta, doomed: false });
            }
        }
        tokio::select! {
            changed = state_rx.changed() => {
                changed.map_err(|_| "control plane stopping".to_string())?;
                state_changed = true;
            }
            () = async { match stale { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                return Err("a new trust was not followed in time (no ACK, or no certificate from the root that signs)".into());
            }
            changed = trust_rx.changed() => {
                changed.map_err(|_| "control plane stopping".to_string())?;
                // A certificate from a root that left the bundle holds no stream any more:
                // the sidecar comes back with its current one (or not at all).
                let roots = crate::ca::fingerprints(&trust_rx.borrow().0.roots);
                if !peer.issuer.as_ref().is_some_and(|i| roots.contains(i)) {
                    return Err("the stream's certificate is from a root no longer trusted".into());
                }
                // The sidecar has a grace to ACK a config carrying the new trust and hold a
                // certificate from its signer: nobody can hold a root rotation back.
                stale.get_or_insert_with(|| tokio::time::Instant::now() + renew_grace(ctx));
                state_changed = true;
            }
            msg = lines.next::<Ack>() => {
                state_changed = false;
                let Some(ack) = msg.map_err(|e| e.to_string())? else {
                    // A clean goodbye: deregister at once.
                    if let Some(r) = registration.as_mut() {
                        r.revoke = true;
                    }
                    return Ok(Goodbye);
                };
                // An answer to no push is no answer.
                let Some(answered) = in_flight.pop_front() else { continue };
                if answered.doomed || answered.version != ack.version {
                    // A delta on a push the sidecar refused: its refusal was expected, and a
                    // whole push is on its way. (An answer out of order is ignored too.)
                    continue;
                }
                // NACK reasons are cut to 1 KiB; an unchanged status is not written again
                // (etcd is not a sidecar's log).
                match &ack.error {
                    Some(reason) => {
                        // The deltas chained on this push, up to a whole one, will be refused too.
                        in_flight.iter_mut().take_while(|s| s.delta).for_each(|s| s.doomed = true);
                        if in_flight.iter().all(|s| s.delta) {
                            // No whole push on its way: the next goes whole — at once when the
                            // refused one was a delta (the sidecar lacked its base, or it did not
                            // apply on it) or deltas of newer states are in flight: the whole
                            // config of the current state, once.
                            base = None;
                            if answered.delta || !in_flight.is_empty() {
                                last_sent = None;
                                state_changed = true;
                            }
                        }
                        ctx.metrics.nacks.inc();
                        let reason = cut(reason, 1024);
                        tracing::warn!(instance = %hello.instance, version = %ack.version, "sidecar NACKed: {reason}");
                        status.last_rejection = Some((ack.version.clone(), reason));
                    }
                    None => {
                        // The sidecar holds this push now (until it takes the next); a version a
                        // later push repeats waits for that push's answer.
                        if !in_flight.iter().any(|s| s.version == answered.version) {
                            status.acked_version = Some(ack.version.clone());
                        }
                        if in_flight.is_empty() {
                            if let Some((v, Some(at))) = &pending {
                                if *v == ack.version {
                                    ctx.metrics.convergence.observe(at.elapsed().as_secs_f64());
                                    pending = None;
                                }
                            }
                        }
                        // It holds the trust this push carried: the current one, from the root
                        // that signs, ends the grace.
                        let (revision, signer) = {
                            let t = trust_rx.borrow();
                            (t.1, t.0.signer.clone())
                        };
                        if answered.trust_revision >= revision && peer.issuer.as_deref() == Some(signer.as_str()) {
                            stale = None;
                        }
                    }
                }
                if status != written {
                    writer.set(status.clone());
                    written = status.clone();
                }
            }
        }
    }
}

/// Writes a stream's status to etcd off its push loop: the newest status wins and one write
/// is in flight at a time, so a slow etcd delays the record, never the next push.
struct StatusWriter {
    tx: tokio::sync::watch::Sender<SidecarStatus>,
    task: tokio::task::JoinHandle<Option<SidecarStatus>>,
}

impl StatusWriter {
    /// `written` is in etcd already.
    fn start(batch: super::context::StatusBatch, written: SidecarStatus) -> Self {
        let (tx, mut rx) = tokio::sync::watch::channel(written.clone());
        let task = tokio::spawn(async move {
            let mut last = written;
            loop {
                let closed = rx.changed().await.is_err();
                let next = rx.borrow_and_update().clone();
                if next != last {
                    batch.put(next.clone()).await;
                    last = next;
                }
                if closed {
                    return Some(last);
                }
            }
        });
        StatusWriter { tx, task }
    }

    fn set(&self, status: SidecarStatus) {
        self.tx.send_replace(status);
    }

    /// Writes what is pending and stops; the last status written.
    async fn finish(self) -> Option<SidecarStatus> {
        drop(self.tx);
        self.task.await.ok().flatten()
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
