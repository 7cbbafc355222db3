//! `weftctl`: the command line of the Weft control plane. `cli` holds the
//! verbs and flags; each group of verbs has its module.

/// The value of a `Result`, or an error line and a failing exit.
macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return crate::fail(e),
        }
    };
}

mod cli;
mod explain;
mod inject;
mod policies;
mod trust;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;
use weft_control_plane::istio::{Diagnostic, Kind};
use weft_control_plane::registry::Registry;
use weft_control_plane::store::{Store, StoreError};

/// Where etcd is and how to reach it; connected only by the verbs that need it.
pub(crate) struct Etcd {
    endpoints: Vec<String>,
    prefix: String,
    tls: Option<weft_etcd::EtcdTls>,
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let endpoints: Vec<String> = cli.etcd.split(',').map(str::to_string).collect();
    let tls = match (&cli.etcd_ca, &cli.etcd_cert, &cli.etcd_key) {
        (Some(ca), Some(cert), Some(key)) => Some(ok!(weft_etcd::EtcdTls::from_files(ca, cert, key))),
        (None, None, None) => None,
        _ => return fail("--etcd-ca, --etcd-cert and --etcd-key go together"),
    };
    let etcd = Etcd { endpoints, prefix: cli.prefix, tls };
    match cli.command {
        Command::Validate { paths } => policies::validate(paths),
        Command::Apply { paths } => policies::apply(&etcd, paths).await,
        Command::Get { kind, name, namespace, output } => policies::get(&etcd, kind, name, namespace, output).await,
        Command::Delete { kind, name, namespace } => policies::delete(&etcd, kind, name, namespace).await,
        Command::Status { output } => policies::status(&etcd, output).await,
        Command::Translate(args) => policies::translate(args),
        Command::Explain(args) => explain::run(&etcd, args).await,
        Command::Token(args) => trust::token(&etcd, args).await,
        Command::Etcd { action } => trust::etcd(&etcd, action).await,
        Command::Ca { action } => trust::ca(&etcd, action).await,
        Command::RootCert => trust::root_cert(&etcd).await,
        Command::Inject(args) => inject::run(args),
    }
}
