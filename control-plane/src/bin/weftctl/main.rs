//! `weftctl`: the command line of the Weft control plane. `cli` holds the
//! verbs and flags; each group of verbs has its module.

/// The value of a `Result`, or an error line and a failing exit.
macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return crate::common::fail(e),
        }
    };
}

mod cli;
mod common;
mod explain;
mod inject;
mod policies;
mod trust;

use clap::Parser;
use cli::{Cli, Command};
use common::{fail, Etcd};
use std::process::ExitCode;

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
        Command::Tap { admin, method, authority, path, max } => {
            let watch = weft_control_plane::tap::Watch { method, authority, path, max };
            let started = || {
                use std::io::Write as _;
                println!("# tapping {admin}");
                let _ = std::io::stdout().flush();
            };
            let line = |l: &str| {
                use std::io::Write as _;
                println!("{l}");
                let _ = std::io::stdout().flush();
            };
            ok!(weft_control_plane::tap::tap(&admin, &watch, started, line).await);
            ExitCode::SUCCESS
        }
        Command::Top { prometheus, window } => {
            let edges = ok!(weft_control_plane::top::edges(&prometheus, &window).await);
            print!("{}", weft_control_plane::top::table(&edges));
            ExitCode::SUCCESS
        }
    }
}
