//! etcd: where policies, the registry and sidecar status live. The control
//! plane keeps no state that is not here.
//!
//! Layout under the prefix (default `/weft/`):
//! - `policies/<Kind>/<namespace>/<name>` → the resource as JSON
//! - `registry/<namespace>/<service>/<instance>` → [`Instance`] JSON, on a 30 s lease
//! - `status/<control-plane id>/<namespace>/<instance>` → [`SidecarStatus`] JSON, on the control plane's lease
//! - `ca/bundle` → the mesh's trust bundle (public certificates only)
//! - `tokens/<id>` → a bootstrap token's record (its secret's hash only)

use crate::istio::{self, Diagnostic, Kind, Resource};
use crate::registry::{Instance, Registry};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The registry lease: an instance that stops renewing it is gone within this time.
pub const REGISTRY_LEASE_SECONDS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(Box<etcd_client::Error>),
    #[error("etcd holds an unreadable value at {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("policies changed concurrently {0} times in a row; try again")]
    Contended(usize),
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        StoreError::Etcd(Box::new(e))
    }
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub configured: Vec<String>,
    pub unchanged: Vec<String>,
    /// The etcd revision after the apply (unchanged for a no-op).
    pub revision: i64,
}

/// One sidecar as a control plane reports it (`weftctl status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    pub workload: String,
    pub namespace: String,
    pub instance: String,
    pub control_plane: String,
    /// Last version pushed.
    pub sent_version: Option<String>,
    /// Last version the sidecar ACKed.
    pub acked_version: Option<String>,
    /// Last NACK: version and reason.
    pub last_rejection: Option<(String, String)>,
    /// SHA-256 (hex) of the root the sidecar's certificate came from.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When the certificate the sidecar connected with expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires: Option<i64>,
    /// Translation warnings of the last config sent (conflicts, missing subsets, ignored
    /// fields): at most [`MAX_STATUS_WARNINGS`], each cut to 512 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Where Prometheus scrapes the sidecar's `/stats/prometheus`: the stream's source IP
    /// (never a host the sidecar names) and the admin port its Hello gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Operations in one etcd transaction (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// Warnings kept in one sidecar's status (etcd is not a log).
pub const MAX_STATUS_WARNINGS: usize = 20;

/// A connection to etcd with the key layout.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("prefix", &self.prefix).finish()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Store {
    /// Connects to etcd: over TLS with a client certificate when `tls` is
    /// given (`https://` endpoints; what etcd's RBAC knows us by), else plaintext.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&weft_etcd::EtcdTls>,
    ) -> Result<Self, StoreError> {
        let client = match weft_etcd::connect(endpoints, tls).await {
            Ok(c) => c,
            Err(weft_etcd::EtcdError::Etcd(e)) => return Err(StoreError::Etcd(e)),
            Err(e) => return Err(StoreError::Corrupt { key: "connect".into(), message: e.to_string() }),
        };
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Store { client, prefix })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn policy_key(&self, kind: Kind, ns: &str, name: &str) -> String {
        format!("{}policies/{}/{ns}/{name}", self.prefix, kind.name())
    }

    pub fn registry_key(&self, ns: &str, service: &str, instance: &str) -> String {
        format!("{}registry/{ns}/{service}/{instance}", self.prefix)
    }

    pub fn status_key(&self, control_plane: &str, ns: &str, instance: &str) -> String {
        format!("{}status/{control_plane}/{ns}/{instance}", self.prefix)
    }

    /// Writes `resources` in one transaction: all or nothing. Unchanged
    /// resources are not written, so re-applying the same files is a no-op.
    /// The transaction checks that nothing it read changed meanwhile.
    pub async fn apply(&self, resources: &[Resource]) -> Result<ApplyReport, StoreError> {
        // etcd answers "leader changed" and the like while a member fails over: try again.
        // Safe: the transaction is guarded, and a write that did land reads back as unchanged.
        let mut attempt = 0;
        loop {
            match self.apply_once(resources).await {
                Err(StoreError::Etcd(e)) if attempt < 10 => {
                    attempt += 1;
                    tracing::warn!("etcd: {e}; retrying the apply ({attempt}/10)");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&self, resources: &[Resource]) -> Result<ApplyReport, StoreError> {
        let mut kv = self.client.kv_client();
        for _attempt in 0..5 {
            let existing = kv.get(format!("{}policies/", self.prefix), Some(GetOptions::new().with_prefix())).await?;
            let revision = existing.header().map_or(0, |h| h.revision());
            let current: BTreeMap<String, (Vec<u8>, i64)> =
                existing.kvs().iter().map(|kv| (text(kv.key()), (kv.value().to_vec(), kv.mod_revision()))).collect();
            let mut report = ApplyReport { revision, ..Default::default() };
            let mut compares = Vec::new();
            let mut puts = Vec::new();
            for r in resources {
                let key = self.policy_key(r.kind, r.namespace(), r.name());
                let value = serde_json::to_vec(&r.to_value()).unwrap_or_default();
                let label = format!("{} {}/{}", r.kind, r.namespace(), r.name());
                match current.get(&key) {
                    Some((old, _)) if *old == value => report.unchanged.push(label),
                    Some((_, mod_rev)) => {
                        compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *mod_rev));
                        puts.push(TxnOp::put(key, value, None));
                        report.configured.push(label);
                    }
                    None => {
                        compares.push(Compare::version(key.clone(), CompareOp::Equal, 0));
                        puts.push(TxnOp::put(key, value, None));
                        report.created.push(label);
                    }
                }
            }
            if puts.is_empty() {
                return Ok(report);
            }
            let resp = kv.txn(Txn::new().when(compares).and_then(puts)).await?;
            if resp.succeeded() {
                report.revision = resp.header().map_or(revision, |h| h.revision());
                return Ok(report);
            }
        }
        Err(StoreError::Contended(5))
    }

    /// Policies, optionally of one kind and namespace.
    pub async fn policies(&self, kind: Option<Kind>, ns: Option<&str>) -> Result<(Vec<Resource>, i64), StoreError> {
        let mut prefix = format!("{}policies/", self.prefix);
        if let Some(k) = kind {
            prefix.push_str(k.name());
            prefix.push('/');
            if let Some(ns) = ns {
                prefix.push_str(ns);
                prefix.push('/');
            }
        }
        let resp = self.client.kv_client().get(prefix, Some(GetOptions::new().with_prefix())).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let r = parse_policy(&text(kv.key()), kv.value(), kv.create_revision())?;
            if ns.is_none_or(|ns| r.namespace() == ns) {
                out.push(r);
            }
        }
        Ok((out, revision))
    }

    /// Deletes one policy; false if there was none.
    pub async fn delete(&self, kind: Kind, ns: &str, name: &str) -> Result<bool, StoreError> {
        let resp = self.client.kv_client().delete(self.policy_key(kind, ns, name), None).await?;
        Ok(resp.deleted() > 0)
    }

    /// Everything the control plane compiles from, at one revision.
    pub async fn snapshot(&self) -> Result<(Vec<Resource>, Registry, i64), StoreError> {
        let resp = self.client.kv_client().get(self.prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut resources = Vec::new();
        let mut registry = Registry::default();
        for kv in resp.kvs() {
            match self.classify(&text(kv.key())) {
                Some(Entry::Policy) => resources.push(parse_policy(&text(kv.key()), kv.value(), kv.create_revision())?),
                Some(Entry::Instance { ns, service, instance }) => {
                    registry.insert(&ns, &service, &instance, parse_instance(&text(kv.key()), kv.value())?)
                }
                None => {}
            }
        }
        Ok((resources, registry, revision))
    }

    /// What a key under the prefix holds.
    pub fn classify(&self, key: &str) -> Option<Entry> {
        let rest = key.strip_prefix(&self.prefix)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["policies", _, _, _] => Some(Entry::Policy),
            ["registry", ns, service, instance] => Some(Entry::Instance {
                ns: ns.to_string(),
                service: service.to_string(),
                instance: instance.to_string(),
            }),
            _ => None,
        }
    }

    /// Registers an instance on a fresh lease; returns the lease id to keep alive or revoke.
    pub async fn register(
        &self,
        ns: &str,
        service: &str,
        instance: &str,
        value: &Instance,
        ttl: i64,
    ) -> Result<i64, StoreError> {
        let lease = self.client.lease_client().grant(ttl, None).await?.id();
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.client
            .kv_client()
            .put(self.registry_key(ns, service, instance), body, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(lease)
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        self.client.lease_client().revoke(lease).await?;
        Ok(())
    }

    /// Several statuses in one transaction (at most [`MAX_TXN_OPS`], etcd's default limit).
    pub async fn put_statuses(&self, statuses: &[SidecarStatus], lease: i64) -> Result<(), StoreError> {
        let puts: Vec<TxnOp> = statuses
            .iter()
            .map(|s| {
                let key = self.status_key(&s.control_plane, &s.namespace, &s.instance);
                TxnOp::put(key, serde_json::to_vec(s).unwrap_or_default(), Some(PutOptions::new().with_lease(lease)))
            })
            .collect();
        self.client.kv_client().txn(Txn::new().and_then(puts)).await?;
        Ok(())
    }

    pub async fn put_status(&self, s: &SidecarStatus, lease: i64) -> Result<(), StoreError> {
        let key = self.status_key(&s.control_plane, &s.namespace, &s.instance);
        let body = serde_json::to_vec(s).unwrap_or_default();
        self.client.kv_client().put(key, body, Some(PutOptions::new().with_lease(lease))).await?;
        Ok(())
    }

    pub async fn delete_status(&self, control_plane: &str, ns: &str, instance: &str) -> Result<(), StoreError> {
        self.client.kv_client().delete(self.status_key(control_plane, ns, instance), None).await?;
        Ok(())
    }

    /// Deletes a status only if it still holds `s` (a newer session of the same sidecar may have
    /// written it since: that one stays).
    pub async fn delete_status_if(&self, s: &SidecarStatus) -> Result<(), StoreError> {
        let key = self.status_key(&s.control_plane, &s.namespace, &s.instance);
        let body = serde_json::to_vec(s).unwrap_or_default();
        let txn =
            Txn::new().when([Compare::value(key.clone(), CompareOp::Equal, body)]).and_then([TxnOp::delete(key, None)]);
        self.client.kv_client().txn(txn).await?;
        Ok(())
    }

    pub async fn statuses(&self) -> Result<Vec<SidecarStatus>, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(format!("{}status/", self.prefix), Some(GetOptions::new().with_prefix()))
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value())
                    .map_err(|e| StoreError::Corrupt { key: text(kv.key()), message: e.to_string() })
            })
            .collect()
    }
}

/// A key's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Policy,
    Instance { ns: String, service: String, instance: String },
}

/// Reads a stored policy back through the same loader and validation as files.
/// One stored policy; `created` is its key's etcd create revision (its age, for ties).
pub fn parse_policy(key: &str, value: &[u8], created: i64) -> Result<Resource, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt { key: key.to_string(), message };
    let text = std::str::from_utf8(value).map_err(|e| corrupt(e.to_string()))?;
    let mut resources = istio::load_str(Path::new(key), text)
        .map_err(|d: Vec<Diagnostic>| corrupt(d.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    let mut r = resources.pop().ok_or_else(|| corrupt("empty".into()))?;
    r.created = Some(created);
    Ok(r)
}

pub fn parse_instance(key: &str, value: &[u8]) -> Result<Instance, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt { key: key.to_string(), message: e.to_string() })
}
