//! Traffic mirroring (Istio `mirror`/`mirrors`, Envoy's request mirror policies): a
//! copy of the request goes to each mirror's cluster, to `<host>-shadow`, on a task of
//! its own. Its answer is read and dropped as it comes; it never delays or changes the
//! request it copies, is never retried, and ends with the route's timeout (or 60 s).
//! At most [`MAX_IN_FLIGHT`] copies are out at once: a slow mirror costs dropped copies,
//! not the sidecar's memory.

use crate::config::snapshot::Snapshot;
use crate::http::forward::{forward, Outgoing, RequestBody};
use crate::http::retry::RetryPolicy;
use crate::http::route::MirrorTarget;
use crate::state::Shared;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// A copy's longest life when the route has no timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(60);

/// Copies in flight at once, per sidecar.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// Sends the copies `targets` draw for this request. A body too large to keep
/// (streamed on to the real destination) cannot be copied: that copy is skipped and counted.
pub(crate) fn send(
    targets: &[MirrorTarget],
    snap: &Arc<Snapshot>,
    out: &Outgoing,
    body: &RequestBody,
    timeout: Option<Duration>,
    grpc: bool,
    shared: &Arc<Shared>,
) {
    for target in targets {
        if rand::random::<u32>() % 1_000_000 >= target.per_million {
            continue;
        }
        let count = |result: &str| shared.metrics.mirror_requests.with_label_values(&[&target.cluster, result]).inc();
        let (Some(bytes), Some(cluster)) = (body.bytes(), snap.cluster(&target.cluster)) else {
            count("skipped");
            continue;
        };
        let Ok(copy) = out.shadow(cluster.protocol_for(out.parts.version, grpc)) else {
            count("skipped");
            continue;
        };
        let Ok(slot) = shared.mirror_slots.clone().try_acquire_owned() else {
            count("skipped");
            continue;
        };
        let (snap, shared, name) = (snap.clone(), shared.clone(), target.cluster.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(cluster) = snap.cluster(&name) else { return };
            let mut body = RequestBody::Buffered(bytes);
            let no_retries = RetryPolicy::none();
            let sent = forward(&copy, &mut body, cluster, &no_retries, &shared.metrics);
            let result = match tokio::time::timeout(timeout.unwrap_or(MIRROR_TIMEOUT), async {
                let done = sent.await.ok()?;
                // Read the answer to its end, keeping none of it, so the connection can serve again.
                let mut body = done.response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.ok()?;
                }
                Some(())
            })
            .await
            {
                Ok(Some(_)) => "answered",
                _ => "failed",
            };
            shared.metrics.mirror_requests.with_label_values(&[&name, result]).inc();
        });
    }
}
