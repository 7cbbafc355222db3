//! `weftctl`: the command line of the Weft control plane.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weft_control_plane::istio::{self, Diagnostic, Kind};
use weft_control_plane::registry::Registry;
use weft_control_plane::store::Store;

#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about = "Weft: Istio policies in, sidecar configs out")]
struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(long, global = true, env = "WEFT_ETCD", default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// etcd's CA (PEM): with --etcd-cert and --etcd-key, TLS to `https://` endpoints.
    #[arg(long, global = true, env = "WEFT_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// weftctl's etcd client certificate (CN `weft-admin`: writes policies and tokens).
    #[arg(long, global = true, env = "WEFT_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "WEFT_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// Key prefix in etcd.
    #[arg(long, global = true, env = "WEFT_PREFIX", default_value = "/weft/")]
    prefix: String,
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
    /// Validates everything, then writes all resources in one etcd transaction (all or nothing).
    Apply {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Lists stored policies: KIND (vs, dr, VirtualService, ...) and optionally NAME.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// yaml or json; default a table.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Deletes one stored policy.
    Delete {
        kind: String,
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// The sidecars connected to each control plane, the version each ACKed, and the last rejection.
    Status {
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Which route a request from a workload takes, its destinations and weights, and the cluster settings,
    /// decided by the sidecar's own matching code. From etcd, or offline with -f and --registry.
    Explain {
        /// Instead of one request: for every service, which identities may call which
        /// operations (its sidecars' inbound authorization, as they would enforce it).
        #[arg(long)]
        access: bool,
        /// Source workload name.
        #[arg(long, required_unless_present = "access")]
        workload: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Source workload labels, `k=v,k=v`.
        #[arg(long, default_value = "")]
        labels: String,
        /// Host the request names (`order-service`, `order-service.production:80`, ...).
        #[arg(long, required_unless_present = "access")]
        host: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// Request headers, `-H 'x-canary: true'` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The caller's proven identity for the authorization decision; default the
        /// source workload's `spiffe://cluster.local/ns/<ns>/sa/<service account>`.
        #[arg(long)]
        source_principal: Option<String>,
        /// The source workload's service account (default: the namespace's `default`).
        #[arg(long, default_value = "default")]
        service_account: String,
        /// Offline: policy files or folders instead of etcd (needs --registry).
        #[arg(short = 'f', long = "filename", num_args = 1..)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        registry: Option<PathBuf>,
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Bootstrap tokens: `weftctl token -n NS --service-account SA` mints one that lets a sidecar
    /// get its first certificate for NS/SA (printed once; etcd keeps only its hash);
    /// `weftctl token list`, `weftctl token revoke ID`.
    #[command(args_conflicts_with_subcommands = true)]
    Token {
        #[command(subcommand)]
        action: Option<TokenAction>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        service_account: Option<String>,
        /// How long the token may be used to ask for a first certificate (at most 30 days).
        #[arg(long, default_value = "48h", value_parser = weft_model::duration::parse)]
        ttl: std::time::Duration,
        /// The audience the control planes accept (their --token-audience).
        #[arg(long, default_value = weft_control_plane::token::DEFAULT_AUDIENCE)]
        audience: String,
    },
    /// etcd locked down: `weftctl etcd certs --dir DIR --hosts 127.0.0.1,etcd` writes etcd's own CA, its
    /// server certificate and client certificates for root, weft-control-plane and weft-admin;
    /// `weftctl etcd lockdown` (with root's certificate) creates their users and roles and turns auth on.
    Etcd {
        #[command(subcommand)]
        action: EtcdAction,
    },
    /// The mesh CA: `weftctl ca init --dir DIR` writes a new root (ca-cert.pem) and its
    /// key (ca-key.pem, mode 0600) for the control planes' --ca-dir.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Writes Kubernetes YAML back with Weft's sidecar injected into every pod template
    /// (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod); other documents,
    /// opted-out and already-injected ones come back unchanged. `-f -` reads stdin.
    Inject {
        #[arg(short = 'f', long = "filename", required = true)]
        path: PathBuf,
        /// The sidecar image.
        #[arg(long, default_value_t = weft_control_plane::inject::InjectOptions::default().image)]
        image: String,
        /// Where sidecars reach the control plane.
        #[arg(long, default_value_t = weft_control_plane::inject::InjectOptions::default().control_plane)]
        control_plane: String,
        /// A classic sidecar (first container, postStart hold) for Kubernetes older than 1.29.
        #[arg(long)]
        classic: bool,
    },
    /// Writes the mesh trust bundle (PEM) the control planes published to stdout: the --ca-file sidecars trust.
    RootCert,
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

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Lists every token: id, identity, audience, expiry, state (never the secret).
    List,
    /// Revokes one token: it can no longer get a certificate.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum EtcdAction {
    /// Writes etcd's CA and certificates into DIR (keys mode 0600).
    Certs {
        #[arg(long)]
        dir: PathBuf,
        /// Names and IPs the etcd server certificate is for, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
        hosts: Vec<String>,
    },
    /// Creates the users and roles of Weft's etcd RBAC and runs `auth enable` (as root; idempotent).
    Lockdown,
}

#[derive(Debug, Subcommand)]
enum CaAction {
    /// Writes a new root certificate and key into DIR (refuses to overwrite a key).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Starts a root rotation: writes the next root into DIR (next-ca-cert.pem, next-ca-key.pem).
    /// The control planes then trust both, sign with the next, and drop the old one, each step once
    /// every sidecar has followed (`weftctl ca status`). With --finish, once the old root is gone
    /// from the published bundle, the next root becomes the current one in DIR.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        finish: bool,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// The published trust: the roots in the bundle, the one that signs, and which root each sidecar's certificate is from.
    Status,
}

fn labels(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn print_diags(diags: &[Diagnostic]) -> ExitCode {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("{} problem(s); nothing was applied", diags.len());
    ExitCode::FAILURE
}

fn read_registry(path: &std::path::Path) -> Result<Registry, ExitCode> {
    let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
    read.and_then(|t| serde_yaml::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| fail(format!("{}: {e}", path.display())))
}

/// The value of a `Result`, or an error line and a failing exit.
macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return fail(e),
        }
    };
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn kind_arg(text: &str) -> Result<Kind, ExitCode> {
    Kind::parse(text).ok_or_else(|| fail(format!("unknown kind {text:?}: use VirtualService (vs), DestinationRule (dr), AuthorizationPolicy (ap), PeerAuthentication (pa), Sidecar, WorkloadGroup (wg)")))
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
    let store = || async { Store::connect(&endpoints, &cli.prefix, tls.as_ref()).await };
    match cli.command {
        Command::Validate { paths } => match istio::load_paths(&paths) {
            Ok(resources) => {
                for r in &resources {
                    println!("{} {}/{}: valid", r.kind, r.namespace(), r.name());
                }
                ExitCode::SUCCESS
            }
            Err(diags) => print_diags(&diags),
        },
        Command::Apply { paths } => {
            let resources = match istio::load_paths(&paths) {
                Ok(r) => r,
                Err(d) => return print_diags(&d),
            };
            let store = ok!(store().await);
            // What the set does to every registered workload, before anything is written.
            let (stored, registry, _) = ok!(store.snapshot().await);
            let merged = weft_control_plane::analyze::merged(&stored, &resources);
            let analysis =
                weft_control_plane::analyze::analyze(&merged, &registry, weft_control_plane::ca::DEFAULT_TRUST_DOMAIN);
            for w in &analysis.warnings {
                eprintln!("warning: {w}");
            }
            if !analysis.refusals.is_empty() {
                for r in &analysis.refusals {
                    eprintln!("error: {r}");
                }
                return fail("nothing applied: a sidecar would refuse its config");
            }
            match store.apply(&resources).await {
                Ok(report) => {
                    for (list, what) in [
                        (&report.created, "created"),
                        (&report.configured, "configured"),
                        (&report.unchanged, "unchanged"),
                    ] {
                        for r in list {
                            println!("{r} {what}");
                        }
                    }
                    println!("revision {}", report.revision);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Get { kind, name, namespace, output } => {
            let kind = match kind_arg(&kind) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let store = ok!(store().await);
            let (mut found, _) = ok!(store.policies(Some(kind), namespace.as_deref()).await);
            if let Some(n) = &name {
                found.retain(|r| r.name() == n);
                if found.is_empty() {
                    return fail(format!("{kind} {n:?} not found"));
                }
            }
            match output.as_deref() {
                Some("json") => {
                    let values: Vec<_> = found.iter().map(|r| r.to_value()).collect();
                    println!("{}", serde_json::to_string_pretty(&values).unwrap_or_default());
                }
                Some("yaml") => {
                    for r in &found {
                        println!("---\n{}", serde_yaml::to_string(&r.to_value()).unwrap_or_default());
                    }
                }
                _ => {
                    println!("{:<20} {:<30}", "NAMESPACE", "NAME");
                    for r in &found {
                        println!("{:<20} {:<30}", r.namespace(), r.name());
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Command::Delete { kind, name, namespace } => {
            let kind = match kind_arg(&kind) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let store = ok!(store().await);
            match store.delete(kind, &namespace, &name).await {
                Ok(true) => {
                    println!("{kind} {namespace}/{name} deleted");
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(format!("{kind} {namespace}/{name} not found")),
                Err(e) => fail(e),
            }
        }
        Command::Status { output } => {
            let store = ok!(store().await);
            let statuses = ok!(store.statuses().await);
            if output.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&statuses).unwrap_or_default());
                return ExitCode::SUCCESS;
            }
            println!(
                "{:<16} {:<40} {:<20} {:<8} {:<8} LAST REJECTION",
                "CONTROL PLANE", "SIDECAR", "WORKLOAD", "SENT", "ACKED"
            );
            for s in statuses {
                let rejection = s.last_rejection.map_or("-".to_string(), |(v, why)| format!("{v}: {why}"));
                println!(
                    "{:<16} {:<40} {:<20} {:<8} {:<8} {rejection}",
                    s.control_plane,
                    format!("{}.{}", s.instance, s.namespace),
                    s.workload,
                    s.sent_version.unwrap_or_else(|| "-".into()),
                    s.acked_version.unwrap_or_else(|| "-".into()),
                );
            }
            ExitCode::SUCCESS
        }
        Command::Explain {
            access,
            workload,
            namespace,
            labels: label_text,
            host,
            method,
            path,
            headers,
            source_principal,
            service_account,
            paths,
            registry,
            output,
        } => {
            let (resources, registry) = if paths.is_empty() {
                let store = ok!(store().await);
                match store.snapshot().await {
                    Ok((r, reg, _)) => (r, reg),
                    Err(e) => return fail(e),
                }
            } else {
                let resources = match istio::load_paths(&paths) {
                    Ok(r) => r,
                    Err(d) => return print_diags(&d),
                };
                let Some(registry) = registry else { return fail("offline explain needs --registry FILE") };
                match read_registry(&registry) {
                    Ok(reg) => (resources, reg),
                    Err(code) => return code,
                }
            };
            if access {
                let listed = weft_control_plane::explain::access(&resources, &registry);
                if output.as_deref() == Some("json") {
                    println!("{}", serde_json::to_string_pretty(&listed).unwrap_or_default());
                } else {
                    listed.iter().for_each(|a| print!("{a}"));
                }
                return ExitCode::SUCCESS;
            }
            let (Some(workload), Some(host)) = (workload, host) else {
                return fail("explain needs --workload and --host (or --access)");
            };
            let principal = source_principal.unwrap_or_else(|| {
                format!("spiffe://{}/ns/{namespace}/sa/{service_account}", weft_control_plane::ca::DEFAULT_TRUST_DOMAIN)
            });
            let workload =
                weft_model::Workload { name: workload, namespace, service_account, labels: labels(&label_text) };
            let config = weft_control_plane::translate::translate(&resources, &registry, &workload, "explain").config;
            let headers: Vec<(String, String)> = headers
                .iter()
                .filter_map(|h| h.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let req = weft_control_plane::explain::Request { host, method, path, headers };
            let explained = weft_control_plane::explain::explain(&config, &req).map(|mut e| {
                // The destination decides: translate its inbound side and run its authorization.
                let service = e.service.as_deref().and_then(|s| registry.service(s));
                if let Some(dest) = service.as_ref().and_then(weft_control_plane::explain::workload_of) {
                    let dest_config =
                        weft_control_plane::translate::translate(&resources, &registry, &dest, "explain").config;
                    e.authorization =
                        Some(weft_control_plane::explain::authorize(&dest_config, Some(&principal), &req));
                }
                e
            });
            match explained {
                Ok(e) if output.as_deref() == Some("json") => {
                    println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(e) => {
                    print!("{e}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Token { action: Some(TokenAction::List), .. } => {
            let store = ok!(store().await);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            println!("{:<16}  {:<40}  {:<10}  {:<20}  STATE", "ID", "IDENTITY", "AUDIENCE", "EXPIRES (UTC)");
            for t in ok!(weft_control_plane::token::list(&store).await) {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires <= now {
                    "expired"
                } else {
                    "valid"
                };
                let expires = time::OffsetDateTime::from_unix_timestamp(t.expires as i64)
                    .map(|d| {
                        format!(
                            "{:04}-{:02}-{:02} {:02}:{:02}",
                            d.year(),
                            d.month() as u8,
                            d.day(),
                            d.hour(),
                            d.minute()
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{:<16}  {:<40}  {:<10}  {:<20}  {state}",
                    t.id,
                    format!("{}/{}", t.namespace, t.service_account),
                    t.audience,
                    expires
                );
            }
            ExitCode::SUCCESS
        }
        Command::Token { action: Some(TokenAction::Revoke { id }), .. } => {
            let store = ok!(store().await);
            let t = ok!(weft_control_plane::token::revoke(&store, &id).await);
            println!("token {} for {}/{} revoked", t.id, t.namespace, t.service_account);
            ExitCode::SUCCESS
        }
        Command::Token { action: None, namespace, service_account, ttl, audience } => {
            let (Some(namespace), Some(service_account)) = (namespace, service_account) else {
                return fail("a token needs -n NAMESPACE and --service-account SA");
            };
            for (what, name) in [("namespace", &namespace), ("service account", &service_account)] {
                if !weft_control_plane::registry::name_ok(name) {
                    return fail(format!("bad {what} {name:?}"));
                }
            }
            let store = ok!(store().await);
            let now = std::time::SystemTime::now();
            let (token, record) =
                ok!(weft_control_plane::token::mint(&store, &namespace, &service_account, &audience, ttl, now).await);
            eprintln!("token {} for {namespace}/{service_account}, valid {ttl:?}", record.id);
            println!("{token}");
            ExitCode::SUCCESS
        }
        Command::Etcd { action: EtcdAction::Certs { dir, hosts } } => {
            ok!(weft_etcd::generate(&dir, &hosts));
            println!("wrote etcd's CA, server and client certificates into {}", dir.display());
            ExitCode::SUCCESS
        }
        Command::Etcd { action: EtcdAction::Lockdown } => {
            let store = ok!(store().await);
            ok!(weft_etcd::lockdown(&mut store.client(), store.prefix()).await);
            println!("etcd auth enabled: {} and {} have their roles", weft_etcd::CONTROL_PLANE, weft_etcd::ADMIN);
            ExitCode::SUCCESS
        }
        Command::Ca { action: CaAction::Rotate { dir, finish: false, trust_domain } } => {
            if dir.join(weft_control_plane::ca::NEXT_KEY_FILE).exists() {
                return fail(format!("{}: a rotation is already under way", dir.display()));
            }
            let parts = ok!(weft_control_plane::ca::CaParts::generate(&trust_domain));
            ok!(parts.write_next(&dir));
            println!(
                "next root {} written; the control planes take it from here (weftctl ca status)",
                ok!(weft_control_plane::ca::fingerprint(&parts.root_pem))
            );
            ExitCode::SUCCESS
        }
        Command::Ca { action: CaAction::Rotate { dir, finish: true, .. } } => {
            use weft_control_plane::ca::{
                fingerprint, fingerprints, CaParts, CERT_FILE, KEY_FILE, NEXT_CERT_FILE, NEXT_KEY_FILE,
            };
            let Some(next) = ok!(CaParts::read_next(&dir)) else { return fail("no rotation under way") };
            let store = ok!(store().await);
            let published = ok!(weft_control_plane::ca::read_trust(&store).await);
            let next_fp = ok!(fingerprint(&next.root_pem));
            match published {
                Some((t, _)) if fingerprints(&t.roots) == [next_fp.clone()] && t.signer == next_fp => {}
                _ => {
                    return fail(
                        "the old root is still in the published bundle: some sidecar still uses it (weftctl ca status)",
                    )
                }
            }
            for (from, to) in [(NEXT_CERT_FILE, CERT_FILE), (NEXT_KEY_FILE, KEY_FILE)] {
                ok!(std::fs::rename(dir.join(from), dir.join(to)));
            }
            println!("rotation finished: {next_fp} is the current root");
            ExitCode::SUCCESS
        }
        Command::Ca { action: CaAction::Status } => {
            let store = ok!(store().await);
            let Some((trust, revision)) = ok!(weft_control_plane::ca::read_trust(&store).await) else {
                return fail("no trust published yet: start a control plane first");
            };
            println!("published at revision {revision}");
            for fp in weft_control_plane::ca::fingerprints(&trust.roots) {
                println!("  root {fp}{}", if fp == trust.signer { "  (signs)" } else { "" });
            }
            let mut by_issuer = std::collections::BTreeMap::<String, usize>::new();
            for s in ok!(store.statuses().await) {
                *by_issuer.entry(s.issuer.unwrap_or_else(|| "unknown".into())).or_default() += 1;
            }
            for (issuer, n) in by_issuer {
                println!("  {n} sidecar(s) hold a certificate from {issuer}");
            }
            ExitCode::SUCCESS
        }
        Command::Ca { action: CaAction::Init { dir, trust_domain } } => {
            let parts = ok!(weft_control_plane::ca::CaParts::generate(&trust_domain));
            ok!(parts.write_dir(&dir));
            println!(
                "wrote {} and {} (mode 0600)",
                dir.join("ca-cert.pem").display(),
                dir.join("ca-key.pem").display()
            );
            ExitCode::SUCCESS
        }
        Command::Inject { path, image, control_plane, classic } => {
            let (name, text) = if path.as_os_str() == "-" {
                let mut text = String::new();
                ok!(std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| ()));
                ("<stdin>".to_string(), text)
            } else {
                (path.display().to_string(), ok!(std::fs::read_to_string(&path)))
            };
            let opts = weft_control_plane::inject::InjectOptions {
                image,
                control_plane,
                native: !classic,
                ..Default::default()
            };
            match weft_control_plane::inject::inject_text(&name, &text, &opts) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::RootCert => {
            let store = ok!(store().await);
            match weft_control_plane::ca::read_bundle(&store).await {
                Ok(Some(pem)) => {
                    print!("{pem}");
                    ExitCode::SUCCESS
                }
                Ok(None) => fail("no trust bundle in etcd yet: start a control plane first"),
                Err(e) => fail(e),
            }
        }
        Command::Translate { paths, registry, workload, namespace, service_account, labels: label_text, output } => {
            let resources = match istio::load_paths(&paths) {
                Ok(r) => r,
                Err(d) => return print_diags(&d),
            };
            let registry = match read_registry(&registry) {
                Ok(r) => r,
                Err(code) => return code,
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
    }
}
