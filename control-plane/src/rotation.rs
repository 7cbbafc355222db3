//! Root rotation with no failed request (Linkerd users' worst outages were an
//! expired trust anchor). `weftctl ca rotate` puts a next root beside the
//! current one in the CA directory; the control planes then walk three steps,
//! each only when the one before has reached every live sidecar, and publish
//! each step in etcd (`ca/trust`) so every control plane signs alike:
//!
//! 1. **Trust both**: the bundle holds the current and the next root; the current one signs.
//!    Pushed to every sidecar with its config.
//! 2. **Sign with the next**, once every sidecar has ACKed a config carrying step 1:
//!    sidecars whose certificate came from the old root renew at once.
//! 3. **Drop the old root**, once every live sidecar's stream is held with a certificate from the
//!    new one (the root the control plane verified on the connection, never what a sidecar says).
//!
//! Each step also stays at least `min_step` (30 s by default, the registry lease): a sidecar whose
//! stream broke, or every sidecar after the control planes restart, is back and counted before
//! the rotation moves on. This control plane's own certificate comes from the oldest root of the
//! bundle, which every sidecar trusts until the last step.
//!
//! `weftctl ca rotate --finish` then makes the next root the current one in the directory.

use crate::ca::{fingerprints, read_trust, trust_key, Ca, Published};
use crate::store::{SidecarStatus, Store};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_model::Trust;

/// The trust to publish, from the roots this CA holds, what is published
/// (with its revision and how long it has stood) and the live sidecars' status.
pub fn plan(
    current: &(String, String),
    next: Option<&(String, String)>,
    published: Option<(&Trust, i64, Duration)>,
    min_step: Duration,
    statuses: &[SidecarStatus],
) -> Trust {
    let Some((n_fp, n_pem)) = next else {
        return Trust { roots: current.1.clone(), signer: current.0.clone() };
    };
    let (c_fp, c_pem) = current;
    let only_next = Trust { roots: n_pem.clone(), signer: n_fp.clone() };
    let mut both = Trust { roots: format!("{}\n{}", c_pem.trim_end(), n_pem), signer: c_fp.clone() };
    let Some((p, revision, age)) = published else { return both };
    let published_roots = fingerprints(&p.roots);
    if p.signer == *n_fp && published_roots == [n_fp.clone()] {
        return only_next;
    }
    if age < min_step {
        // Not long enough on this step for every sidecar to be back and counted.
        return if p.signer == *n_fp && published_roots.len() == 2 {
            Trust { signer: n_fp.clone(), ..both }
        } else {
            both
        };
    }
    if p.signer == *n_fp {
        // Step 3 once no live sidecar holds a certificate from the old root.
        if statuses.iter().all(|s| s.issuer.as_deref() == Some(n_fp.as_str())) {
            return only_next;
        }
        both.signer = n_fp.clone();
        return both;
    }
    let acked = |s: &SidecarStatus| s.acked_version.as_deref().and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
    if published_roots == [c_fp.clone(), n_fp.clone()] && statuses.iter().all(|s| acked(s) >= revision) {
        both.signer = n_fp.clone();
    }
    both
}

/// One step: reload the CA directory, publish what [`plan`] says if it
/// differs (only over the revision read, and never when the published trust
/// names a root this control plane does not hold: it is behind, not ahead),
/// and return the published trust with its revision.
pub async fn step(ca: &Ca, store: &Store, min_step: Duration) -> Result<Option<(Trust, i64)>, crate::ca::CaError> {
    if let Err(e) = ca.reload() {
        tracing::error!("the CA directory is unreadable, keeping the roots loaded: {e}");
    }
    let (current, next) = ca.roots();
    let read = read_trust(store).await?;
    let published = read.as_ref().map(|(p, r)| (p.trust(), *r));
    let held: Vec<&String> = std::iter::once(&current.0).chain(next.as_ref().map(|n| &n.0)).collect();
    if let Some((p, _)) = &published {
        if fingerprints(&p.roots).iter().any(|fp| !held.contains(&fp)) {
            return Ok(published);
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let statuses = store.statuses().await?;
    let standing = read.as_ref().zip(published.as_ref()).map(|((stored, revision), (trust, _))| {
        (trust, *revision, Duration::from_secs(now.saturating_sub(stored.since)))
    });
    let desired = plan(&current, next.as_ref(), standing, min_step, &statuses);
    if published.as_ref().map(|(p, _)| p) == Some(&desired) {
        return Ok(published);
    }
    let key = trust_key(store);
    let body =
        serde_json::to_vec(&Published { roots: desired.roots.clone(), signer: desired.signer.clone(), since: now })
            .unwrap_or_default();
    let guard = match &published {
        Some((_, revision)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *revision),
        None => Compare::version(key.clone(), CompareOp::Equal, 0),
    };
    store.client().kv_client().txn(Txn::new().when([guard]).and_then([TxnOp::put(key, body, None)])).await?;
    let published = read_trust(store).await?.map(|(p, r)| (p.trust(), r));
    if let Some((t, _)) = &published {
        tracing::info!(roots = fingerprints(&t.roots).len(), signer = %t.signer, "trust published");
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaParts;

    fn root() -> (String, String) {
        let pem = CaParts::generate("cluster.local").unwrap().root_pem;
        (crate::ca::fingerprint(&pem).unwrap(), pem)
    }

    fn status(acked: &str, issuer: &str) -> SidecarStatus {
        SidecarStatus { acked_version: Some(acked.into()), issuer: Some(issuer.into()), ..Default::default() }
    }

    #[test]
    fn the_three_steps_each_wait_for_every_sidecar() {
        let (c, n) = (root(), root());
        // No rotation: the current root alone.
        let steady = plan(&c, None, None, Duration::ZERO, &[]);
        assert_eq!((fingerprints(&steady.roots), &steady.signer), (vec![c.0.clone()], &c.0));
        // Step 1: trust both, the current one signs.
        let one = plan(&c, Some(&n), Some((&steady, 5, Duration::ZERO)), Duration::ZERO, &[status("5", &c.0)]);
        assert_eq!((fingerprints(&one.roots), &one.signer), (vec![c.0.clone(), n.0.clone()], &c.0));
        // Step 2 waits until every sidecar ACKed a config at or after step 1's revision.
        let lagging = [status("12", &c.0), status("9", &c.0)];
        assert_eq!(plan(&c, Some(&n), Some((&one.clone(), 10, Duration::ZERO)), Duration::ZERO, &lagging), one);
        let two = plan(
            &c,
            Some(&n),
            Some((&one.clone(), 10, Duration::ZERO)),
            Duration::ZERO,
            &[status("12", &c.0), status("10", &c.0)],
        );
        assert_eq!((fingerprints(&two.roots).len(), &two.signer), (2, &n.0));
        // Step 3 waits until no sidecar holds a certificate from the old root.
        assert_eq!(
            plan(
                &c,
                Some(&n),
                Some((&two.clone(), 11, Duration::ZERO)),
                Duration::ZERO,
                &[status("11", &n.0), status("11", &c.0)]
            ),
            two
        );
        let three = plan(&c, Some(&n), Some((&two, 11, Duration::ZERO)), Duration::ZERO, &[status("11", &n.0)]);
        assert_eq!((fingerprints(&three.roots), &three.signer), (vec![n.0.clone()], &n.0));
        // Done stays done; after `--finish` the next root is the current one.
        assert_eq!(
            plan(&c, Some(&n), Some((&three.clone(), 12, Duration::ZERO)), Duration::ZERO, &[status("1", &c.0)]),
            three
        );
        assert_eq!(plan(&n, None, Some((&three, 12, Duration::ZERO)), Duration::ZERO, &[]), three);
        // No step is taken before the last one has stood `min_step`, even with every sidecar ready.
        let young = Some((&one, 10, Duration::from_secs(5)));
        assert_eq!(plan(&c, Some(&n), young, Duration::from_secs(30), &[status("12", &c.0)]), one);
    }
}
