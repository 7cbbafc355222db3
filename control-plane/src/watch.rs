//! Following etcd: one snapshot, then a watch from the next revision, so no
//! event is missed — also after a reconnect, which resumes from the last
//! revision seen (or takes a new snapshot if etcd compacted past it). Bursts
//! are debounced: 100 ms of quiet, at most 1 s after the first event.

use crate::istio::Resource;
use crate::registry::Registry;
use crate::store::{parse_instance, parse_policy, Entry, Store};
use etcd_client::{EventType, WatchOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Quiet time before a burst of changes is published.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest a change waits while events keep coming.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// Everything translation needs, at one etcd revision.
#[derive(Debug, Default)]
pub struct State {
    pub resources: Vec<Resource>,
    pub registry: Registry,
    pub revision: i64,
    /// Generation of the fetched JWKS written into `resources` (see `jwks`): a
    /// refreshed key set changes the configs at the same etcd revision.
    pub keys: u64,
    /// When the first change in this state reached the control plane (convergence starts here).
    pub changed_at: Option<Instant>,
}

#[derive(Default)]
struct Mirror {
    policies: BTreeMap<String, Resource>,
    instances: BTreeMap<String, (String, String, String, crate::registry::Instance)>,
    revision: i64,
}

impl Mirror {
    fn state(&self, changed_at: Option<Instant>) -> State {
        let mut registry = Registry::default();
        for (ns, svc, id, inst) in self.instances.values() {
            registry.insert(ns, svc, id, inst.clone());
        }
        State {
            resources: self.policies.values().cloned().collect(),
            registry,
            revision: self.revision,
            keys: 0,
            changed_at,
        }
    }

    fn load(store: &Store, resources: Vec<Resource>, registry: Registry, revision: i64) -> Self {
        let mut m = Mirror { revision, ..Default::default() };
        for r in resources {
            m.policies.insert(store.policy_key(r.kind, r.namespace(), r.name()), r);
        }
        for (ns, services) in registry.namespaces {
            for (svc, instances) in services {
                for (id, inst) in instances {
                    m.instances.insert(store.registry_key(&ns, &svc, &id), (ns.clone(), svc.clone(), id, inst));
                }
            }
        }
        m
    }
}

/// Starts following etcd; the receiver always holds the latest state.
pub async fn follow(store: Store) -> Result<watch::Receiver<Arc<State>>, crate::store::StoreError> {
    let (resources, registry, revision) = store.snapshot().await?;
    let mirror = Mirror::load(&store, resources, registry, revision);
    let (tx, rx) = watch::channel(Arc::new(mirror.state(None)));
    tokio::spawn(run(store, mirror, tx));
    Ok(rx)
}

/// When a burst of etcd changes is published: [`DEBOUNCE`] after the last change,
/// and at most [`DEBOUNCE_MAX`] after the first, so a steady trickle of changes
/// cannot hold a push back forever.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// A change was seen at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending changes are due; `None` when nothing is pending.
    pub fn due(&self) -> Option<Instant> {
        Some((self.last? + DEBOUNCE).min(self.first? + DEBOUNCE_MAX))
    }

    /// Publishing now: the first change of the burst (for convergence time), and nothing pending after.
    pub fn publish(&mut self) -> Option<Instant> {
        self.last = None;
        self.first.take()
    }
}

async fn run(store: Store, mut mirror: Mirror, tx: watch::Sender<Arc<State>>) {
    let mut debounce = Debounce::default();
    loop {
        let options = WatchOptions::new().with_prefix().with_start_revision(mirror.revision + 1);
        let watched = store.client().watch(store.prefix().to_string(), Some(options)).await;
        let (_watcher, mut events) = match watched {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("etcd watch failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let next = match debounce.due() {
                Some(d) => match tokio::time::timeout_at(d.into(), events.message()).await {
                    Ok(m) => m,
                    Err(_) => {
                        let _ = tx.send(Arc::new(mirror.state(debounce.publish())));
                        continue;
                    }
                },
                None => events.message().await,
            };
            let resp = match next {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => break, // Reconnect and resume from mirror.revision.
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                // Compacted past us: start over from a snapshot.
                if let Ok((resources, registry, revision)) = store.snapshot().await {
                    mirror = Mirror::load(&store, resources, registry, revision);
                    debounce.changed(Instant::now());
                }
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                mirror.revision = mirror.revision.max(kv.mod_revision());
                let entry = store.classify(&key);
                match (ev.event_type(), entry) {
                    (EventType::Put, Some(Entry::Policy)) => match parse_policy(&key, kv.value(), kv.create_revision())
                    {
                        Ok(r) => {
                            mirror.policies.insert(key, r);
                        }
                        Err(e) => tracing::error!("ignoring a stored policy that no longer validates: {e}"),
                    },
                    (EventType::Delete, Some(Entry::Policy)) => {
                        mirror.policies.remove(&key);
                    }
                    (EventType::Put, Some(Entry::Instance { ns, service, instance })) => {
                        if let Ok(inst) = parse_instance(&key, kv.value()) {
                            mirror.instances.insert(key, (ns, service, instance, inst));
                        }
                    }
                    (EventType::Delete, Some(Entry::Instance { .. })) => {
                        mirror.instances.remove(&key);
                    }
                    _ => continue,
                }
                debounce.changed(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_published_after_it_quiets_down_and_never_later_than_the_cap() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut d = Debounce::default();
        assert_eq!(d.due(), None, "nothing pending");
        d.changed(ms(0));
        assert_eq!(d.due(), Some(ms(100)), "100 ms after the last change");
        d.changed(ms(50));
        assert_eq!(d.due(), Some(ms(150)), "a new change moves it");
        // A change every 90 ms never lets it quiet down: the first change's cap wins.
        for n in (140..1200).step_by(90) {
            d.changed(ms(n));
        }
        assert_eq!(d.due(), Some(ms(1000)), "at most 1 s after the first change");
        assert_eq!(d.publish(), Some(ms(0)), "the burst's first change, for convergence time");
        assert_eq!(d.due(), None);
        d.changed(ms(2000));
        assert_eq!(d.due(), Some(ms(2100)), "a new burst starts afresh");
    }
}
