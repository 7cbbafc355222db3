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
    /// Compiles the sidecar config one workload would get, offline, from policy files and a registry file.
    Translate {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// Registry YAML: namespace -> service -> instance -> {address, labels, serviceAccount, port}.
        #[arg(long)]
        registry: PathBuf,
        /// The workload (e.g. its Deployment name).
        #[arg(long)]
        workload: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "default")]
        service_account: String,
        /// Pod labels, `k=v,k=v`.
        #[arg(long, default_value = "")]
        labels: String,
        #[arg(short = 'o', long, default_value = "yaml")]
        output: String,
    },
}

fn labels(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn print_diags(diags: &[istio::Diagnostic]) -> ExitCode {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("{} problem(s); nothing was applied", diags.len());
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Translate { paths, registry, workload, namespace, service_account, labels: label_text, output } => {
            let resources = match istio::load_paths(&paths) {
                Ok(r) => r,
                Err(d) => return print_diags(&d),
            };
            let registry: weft_control_plane::registry::Registry = match std::fs::read_to_string(&registry)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_yaml::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", registry.display());
                    return ExitCode::FAILURE;
                }
            };
            let workload =
                weft_model::Workload { name: workload, namespace, service_account, labels: labels(&label_text) };
            let t = weft_control_plane::translate::translate(&resources, &registry, &workload, "offline");
            for w in &t.warnings {
                eprintln!("warning: {w}");
            }
            let text = if output == "json" {
                serde_json::to_string_pretty(&t.config).unwrap_or_default()
            } else {
                serde_yaml::to_string(&t.config).unwrap_or_default()
            };
            println!("{text}");
            ExitCode::SUCCESS
        }
        Command::Validate { paths } => match istio::load_paths(&paths) {
            Ok(resources) => {
                for r in &resources {
                    println!("{} {}/{}: valid", r.kind, r.namespace(), r.name());
                }
                ExitCode::SUCCESS
            }
            Err(diags) => print_diags(&diags),
        },
    }
}
