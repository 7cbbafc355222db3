//! deploy/ checked strictly, since no cluster runs here: every Kubernetes object
//! is parsed into the `k8s-openapi` types and written back, and a field the
//! round trip drops (a typo, a wrong level, a field the API does not have)
//! fails the test; the injected manifests are exactly what `weftctl inject`
//! produces today.

use serde_json::Value;
use std::path::{Path, PathBuf};
use weft_control_plane::inject::{inject_text, InjectOptions};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn typed(v: &Value) -> Result<Value, String> {
    use k8s_openapi::api::{admissionregistration, apps, autoscaling, core, networking, policy};
    match (v["apiVersion"].as_str().unwrap_or(""), v["kind"].as_str().unwrap_or("")) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(v),
        ("v1", "Service") => round_trip::<core::v1::Service>(v),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(v),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(v),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(v),
        ("v1", "Pod") => round_trip::<core::v1::Pod>(v),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(v),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(v),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            round_trip::<admissionregistration::v1::MutatingWebhookConfiguration>(v)
        }
        ("policy/v1", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>(v),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<networking::v1::NetworkPolicy>(v),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => round_trip::<autoscaling::v2::HorizontalPodAutoscaler>(v),
        (api, kind) => Err(format!("{api} {kind}: not a kind this test knows; add it")),
    }
}

/// Paths present in `original` that the typed round trip lost or changed.
fn dropped(original: &Value, round: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => dropped(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

fn check(text: &str, file: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
        if v.is_null() {
            continue;
        }
        let what =
            format!("{file}: {} {}", v["kind"].as_str().unwrap_or("?"), v["metadata"]["name"].as_str().unwrap_or("?"));
        match typed(&v) {
            Ok(round) => {
                let mut lost = Vec::new();
                dropped(&v, &round, "", &mut lost);
                problems.extend(lost.into_iter().map(|p| format!("{what}: {p}")));
            }
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    problems
}

#[test]
fn every_manifest_survives_the_kubernetes_types_untouched() {
    let files = yaml_files(&deploy().join("k8s"));
    assert!(files.len() >= 10, "{files:?}");
    let problems: Vec<String> =
        files.iter().flat_map(|f| check(&std::fs::read_to_string(f).unwrap(), &f.display().to_string())).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_typo_in_a_manifest_fails_the_check() {
    let typo = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec:\n      containers:\n      - name: x\n        image: x\n        readinessProbe: {httpGet: {path: /ready, port: 3000}, periodSecond: 5}\n";
    let problems = check(typo, "typo.yaml");
    assert_eq!(problems, ["typo.yaml: Deployment x: .spec.template.spec.containers[0].readinessProbe.periodSecond"]);
}

#[test]
fn the_injected_manifests_are_what_weftctl_inject_writes_today() {
    for source in yaml_files(&deploy().join("k8s/shop")) {
        let name = source.file_name().unwrap();
        let injected = deploy().join("k8s/injected").join(name);
        let want = inject_text(
            &source.display().to_string(),
            &std::fs::read_to_string(&source).unwrap(),
            &InjectOptions::default(),
        )
        .unwrap();
        let have = std::fs::read_to_string(&injected).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run `weftctl inject -f {} > {}`",
            injected.display(),
            source.display(),
            injected.display()
        );
    }
}

/// No container engine runs here, so the Dockerfiles are read, not built: each is
/// multi-stage, runs as a non-root user and declares a HEALTHCHECK.
#[test]
fn every_dockerfile_is_multi_stage_non_root_with_a_healthcheck() {
    let dir = deploy().join("docker");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert!(lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2, "{}: multi-stage", path.display());
        let user = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("USER "))
            .unwrap_or_else(|| panic!("{}: no USER", path.display()));
        assert!(!matches!(user.trim_start_matches("USER ").trim(), "root" | "0"), "{}: runs as root", path.display());
        assert!(lines.iter().any(|l| l.starts_with("HEALTHCHECK ")), "{}: no HEALTHCHECK", path.display());
        seen += 1;
    }
    assert_eq!(seen, 3, "proxy, control plane, service");
}

/// In the compose file every app has an init service and a sidecar sharing its network namespace.
#[test]
fn compose_gives_every_app_a_sidecar_in_its_network_namespace() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy().join("compose.yaml")).unwrap()).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let apps =
        ["api-gateway", "user-service", "order-service", "order-service-v2", "product-service", "notification-service"];
    for app in apps {
        assert!(services.contains_key(app), "{app}");
        for part in ["init", "proxy"] {
            let s = &services[format!("{app}-{part}").as_str()];
            assert_eq!(s["network_mode"].as_str(), Some(format!("service:{app}").as_str()), "{app}-{part}");
        }
    }
}
