//! `weftctl explain`: one request's route, destinations and authorization, or every service's callers.

use crate::cli::ExplainArgs;
use crate::common::{fail, labels, print_diags, read_registry, Etcd};
use std::process::ExitCode;
use weft_control_plane::istio;

pub(crate) async fn run(etcd: &Etcd, args: ExplainArgs) -> ExitCode {
    let ExplainArgs {
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
    } = args;
    let (resources, registry) = if paths.is_empty() {
        let store = ok!(etcd.store().await);
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
    let workload = weft_model::Workload { name: workload, namespace, service_account, labels: labels(&label_text) };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let req = weft_control_plane::explain::Request { host, method, path, headers };
    let explained = weft_control_plane::explain::call(&resources, &registry, &workload, &principal, &req);
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
