//! What every verb shares: reaching etcd, failing with a message, reading
//! labels, a registry file and a kind from the command line.

use std::process::ExitCode;
use weft_control_plane::istio::{Diagnostic, Kind};
use weft_control_plane::registry::Registry;
use weft_control_plane::store::{Store, StoreError};

/// Where etcd is and how to reach it; connected only by the verbs that need it.
pub(crate) struct Etcd {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) tls: Option<weft_etcd::EtcdTls>,
}

impl Etcd {
    pub(crate) async fn store(&self) -> Result<Store, StoreError> {
        Store::connect(&self.endpoints, &self.prefix, self.tls.as_ref()).await
    }
}

pub(crate) fn labels(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub(crate) fn print_diags(diags: &[Diagnostic]) -> ExitCode {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("{} problem(s); nothing was applied", diags.len());
    ExitCode::FAILURE
}

pub(crate) fn read_registry(path: &std::path::Path) -> Result<Registry, ExitCode> {
    let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
    read.and_then(|t| serde_yaml::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| fail(format!("{}: {e}", path.display())))
}

pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

pub(crate) fn kind_arg(text: &str) -> Result<Kind, ExitCode> {
    Kind::parse(text).ok_or_else(|| {
        fail(format!("unknown kind {text:?}: use {} (or vs, dr, ap, pa, wg)", Kind::ALL.map(Kind::name).join(", ")))
    })
}
