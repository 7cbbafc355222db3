//! weftctl's command line: every verb and its flags.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about = "Weft: Istio policies in, sidecar configs out")]
pub(crate) struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(long, global = true, env = "WEFT_ETCD", default_value = "http://127.0.0.1:2379")]
    pub(crate) etcd: String,
    /// etcd's CA (PEM): with --etcd-cert and --etcd-key, TLS to `https://` endpoints.
    #[arg(long, global = true, env = "WEFT_ETCD_CA")]
    pub(crate) etcd_ca: Option<PathBuf>,
    /// weftctl's etcd client certificate (CN `weft-admin`: writes policies and tokens).
    #[arg(long, global = true, env = "WEFT_ETCD_CERT")]
    pub(crate) etcd_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "WEFT_ETCD_KEY")]
    pub(crate) etcd_key: Option<PathBuf>,
    /// Key prefix in etcd.
    #[arg(long, global = true, env = "WEFT_PREFIX", default_value = "/weft/")]
    pub(crate) prefix: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    Explain(ExplainArgs),
    /// Bootstrap tokens: `weftctl token -n NS --service-account SA` mints one that lets a sidecar
    /// get its first certificate for NS/SA (printed once; etcd keeps only its hash);
    /// `weftctl token list`, `weftctl token revoke ID`.
    #[command(args_conflicts_with_subcommands = true)]
    Token(TokenArgs),
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
    Inject(InjectArgs),
    /// Writes the mesh trust bundle (PEM) the control planes published to stdout: the --ca-file sidecars trust.
    RootCert,
    /// Compiles the sidecar config one workload would get, offline, from policy files and a registry file.
    Translate(TranslateArgs),
    /// The mesh's edges now: requests per second, success rate (not 5xx), p50 and p99 latency
    /// per caller → service, from Prometheus scraping the sidecars (`linkerd viz top`'s view).
    /// One sidecar's requests live, a JSON line each as it finishes (whether or not its
    /// access log is on), filtered: `linkerd viz tap`'s view.
    Tap {
        /// The sidecar's admin listener.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: String,
        /// Only this method.
        #[arg(long)]
        method: Option<String>,
        /// Only authorities containing this.
        #[arg(long)]
        authority: Option<String>,
        /// Only paths starting with this.
        #[arg(long)]
        path: Option<String>,
        /// Stop after this many requests.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    Top {
        /// Prometheus's address.
        #[arg(long, env = "WEFT_PROMETHEUS", default_value = "http://127.0.0.1:9090")]
        prometheus: String,
        /// The window rates and quantiles are taken over (a Prometheus duration).
        #[arg(long, default_value = "1m")]
        window: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Lists every token: id, identity, audience, expiry, state (never the secret).
    List,
    /// Revokes one token: it can no longer get a certificate.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EtcdAction {
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
pub(crate) enum CaAction {
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

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// Instead of one request: for every service, which identities may call which
    /// operations (its sidecars' inbound authorization, as they would enforce it).
    #[arg(long)]
    pub(crate) access: bool,
    /// Source workload name.
    #[arg(long, required_unless_present = "access")]
    pub(crate) workload: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    /// Source workload labels, `k=v,k=v`.
    #[arg(long, default_value = "")]
    pub(crate) labels: String,
    /// Host the request names (`order-service`, `order-service.production:80`, ...).
    #[arg(long, required_unless_present = "access")]
    pub(crate) host: Option<String>,
    #[arg(long, default_value = "GET")]
    pub(crate) method: String,
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// Request headers, `-H 'x-canary: true'` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub(crate) headers: Vec<String>,
    /// The caller's proven identity for the authorization decision; default the
    /// source workload's `spiffe://cluster.local/ns/<ns>/sa/<service account>`.
    #[arg(long)]
    pub(crate) source_principal: Option<String>,
    /// The source workload's service account (default: the namespace's `default`).
    #[arg(long, default_value = "default")]
    pub(crate) service_account: String,
    /// Offline: policy files or folders instead of etcd (needs --registry).
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    pub(crate) paths: Vec<PathBuf>,
    #[arg(long)]
    pub(crate) registry: Option<PathBuf>,
    #[arg(short = 'o', long)]
    pub(crate) output: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TranslateArgs {
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub(crate) paths: Vec<PathBuf>,
    /// Registry YAML: namespace -> service -> instance -> {address, labels, serviceAccount, port}.
    #[arg(long)]
    pub(crate) registry: PathBuf,
    /// The workload (e.g. its Deployment name).
    #[arg(long)]
    pub(crate) workload: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    #[arg(long, default_value = "default")]
    pub(crate) service_account: String,
    /// Pod labels, `k=v,k=v`.
    #[arg(long, default_value = "")]
    pub(crate) labels: String,
    #[arg(short = 'o', long, default_value = "yaml")]
    pub(crate) output: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    pub(crate) action: Option<TokenAction>,
    #[arg(short = 'n', long)]
    pub(crate) namespace: Option<String>,
    #[arg(long)]
    pub(crate) service_account: Option<String>,
    /// How long the token may be used to ask for a first certificate (at most 30 days).
    #[arg(long, default_value = "48h", value_parser = weft_model::duration::parse)]
    pub(crate) ttl: std::time::Duration,
    /// The audience the control planes accept (their --token-audience).
    #[arg(long, default_value = weft_control_plane::token::DEFAULT_AUDIENCE)]
    pub(crate) audience: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InjectArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub(crate) path: PathBuf,
    /// The sidecar image.
    #[arg(long, default_value_t = weft_control_plane::inject::InjectOptions::default().image)]
    pub(crate) image: String,
    /// Where sidecars reach the control plane.
    #[arg(long, default_value_t = weft_control_plane::inject::InjectOptions::default().control_plane)]
    pub(crate) control_plane: String,
    /// A classic sidecar (first container, postStart hold) for Kubernetes older than 1.29.
    #[arg(long)]
    pub(crate) classic: bool,
}
