//! A registration's etcd lease, kept alive while its holder lives.

use crate::store::{Store, REGISTRY_LEASE_SECONDS};
use std::time::Duration;

/// Keeps an etcd lease alive until dropped, then revokes it.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    id: i64,
    task: tokio::task::JoinHandle<()>,
    /// Revoke on drop (a clean goodbye). Otherwise the lease just stops being
    /// renewed: if the sidecar is alive it re-registers through another
    /// control plane long before the lease runs out, and traffic never notices.
    pub(super) revoke: bool,
}

impl Lease {
    pub(super) fn keep(store: Store, id: i64) -> Self {
        Self::keep_only(store, id, Duration::from_secs((REGISTRY_LEASE_SECONDS / 3) as u64))
    }

    pub(super) fn keep_only(store: Store, id: i64, every: Duration) -> Self {
        let client = store.client();
        let task = tokio::spawn(async move {
            // An etcd hiccup does not end the renewals: the keeper is opened again.
            loop {
                let mut lease = client.lease_client();
                if let Ok((mut keeper, mut responses)) = lease.keep_alive(id).await {
                    while keeper.keep_alive().await.is_ok() && responses.message().await.is_ok() {
                        tokio::time::sleep(every).await;
                    }
                }
                tracing::warn!(lease = id, "etcd lease renewal interrupted; retrying");
                tokio::time::sleep(every.min(Duration::from_secs(1))).await;
            }
        });
        Lease { store, id, task, revoke: false }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
        if !self.revoke {
            return;
        }
        let (store, id) = (self.store.clone(), self.id);
        tokio::spawn(async move {
            let _ = store.revoke(id).await;
        });
    }
}
