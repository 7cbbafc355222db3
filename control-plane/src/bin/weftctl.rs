//! `weftctl`: the command line of the Weft control plane.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weft_control_plane::istio;

#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about = "Weft: Istio policies in, sidecar configs out")]
struct Cli {
    /// etcd endpoint (for the commands that talk to the mesh).
    #[arg(long, global = true, env = "WEFT_ETCD", default_value = "http://127.0.0.1:2379")]
    etcd: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks Istio YAML files or folders offline; prints `file:line: field: message` per problem.
    Validate {
        /// Files or folders (YAML, multi-document).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { paths } => match istio::load_paths(&paths) {
            Ok(resources) => {
                for r in &resources {
                    println!("{} {}/{}: valid", r.kind, r.namespace(), r.name());
                }
                ExitCode::SUCCESS
            }
            Err(diags) => {
                for d in &diags {
                    eprintln!("{d}");
                }
                eprintln!("{} problem(s); nothing was applied", diags.len());
                ExitCode::FAILURE
            }
        },
    }
}
