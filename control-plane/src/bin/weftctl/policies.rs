//! The Istio policy verbs: validate, apply (with the analysis), get, delete, status, translate.

use crate::cli::TranslateArgs;
use crate::common::{fail, kind_arg, labels, print_diags, read_registry, Etcd};
use std::path::PathBuf;
use std::process::ExitCode;
use weft_control_plane::istio;

pub(crate) fn validate(paths: Vec<PathBuf>) -> ExitCode {
    match istio::load_paths(&paths) {
        Ok(resources) => {
            for r in &resources {
                println!("{} {}/{}: valid", r.kind, r.namespace(), r.name());
            }
            ExitCode::SUCCESS
        }
        Err(diags) => print_diags(&diags),
    }
}

pub(crate) async fn apply(etcd: &Etcd, paths: Vec<PathBuf>) -> ExitCode {
    let resources = match istio::load_paths(&paths) {
        Ok(r) => r,
        Err(d) => return print_diags(&d),
    };
    let store = ok!(etcd.store().await);
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
            for (list, what) in
                [(&report.created, "created"), (&report.configured, "configured"), (&report.unchanged, "unchanged")]
            {
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

pub(crate) async fn get(
    etcd: &Etcd,
    kind: String,
    name: Option<String>,
    namespace: Option<String>,
    output: Option<String>,
) -> ExitCode {
    let kind = match kind_arg(&kind) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let store = ok!(etcd.store().await);
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

pub(crate) async fn delete(etcd: &Etcd, kind: String, name: String, namespace: String) -> ExitCode {
    let kind = match kind_arg(&kind) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let store = ok!(etcd.store().await);
    match store.delete(kind, &namespace, &name).await {
        Ok(true) => {
            println!("{kind} {namespace}/{name} deleted");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(format!("{kind} {namespace}/{name} not found")),
        Err(e) => fail(e),
    }
}

pub(crate) async fn status(etcd: &Etcd, output: Option<String>) -> ExitCode {
    let store = ok!(etcd.store().await);
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
        for w in &s.warnings {
            println!("    warning: {w}");
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn translate(args: TranslateArgs) -> ExitCode {
    let TranslateArgs { paths, registry, workload, namespace, service_account, labels: label_text, output } = args;
    let resources = match istio::load_paths(&paths) {
        Ok(r) => r,
        Err(d) => return print_diags(&d),
    };
    let registry = match read_registry(&registry) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let workload = weft_model::Workload { name: workload, namespace, service_account, labels: labels(&label_text) };
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
