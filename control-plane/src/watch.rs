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
        State { resources: self.policies.values().cloned().collect(), registry, revision: self.revision, changed_at }
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

async fn run(store: Store, mut mirror: Mirror, tx: watch::Sender<Arc<State>>) {
    let mut first_change: Option<Instant> = None;
    let mut last_change = Instant::now();
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
            let deadline = first_change.map(|f| (last_change + DEBOUNCE).min(f + DEBOUNCE_MAX));
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), events.message()).await {
                    Ok(m) => m,
                    Err(_) => {
                        let _ = tx.send(Arc::new(mirror.state(first_change.take())));
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
                    first_change.get_or_insert_with(Instant::now);
                    last_change = Instant::now();
                }
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                mirror.revision = mirror.revision.max(kv.mod_revision());
                let entry = store.classify(&key);
                match (ev.event_type(), entry) {
                    (EventType::Put, Some(Entry::Policy)) => match parse_policy(&key, kv.value()) {
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
                first_change.get_or_insert_with(Instant::now);
                last_change = Instant::now();
            }
        }
    }
}
