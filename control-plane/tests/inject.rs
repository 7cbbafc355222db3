//! `weftctl inject`: the seed's Deployment made meshed, every pod-bearing kind,
//! opt-out, idempotence, other documents untouched, errors with file and line.

use serde_yaml::Value;
use std::path::Path;
use weft_control_plane::inject::{inject_text, InjectOptions};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

fn env<'a>(c: &'a Value, name: &str) -> &'a str {
    named(&c["env"], name)["value"].as_str().unwrap()
}

#[test]
fn the_seed_deployment_gets_a_native_sidecar_and_probes_through_it() {
    let out = inject_text("seed.yaml", &fixture("seed-deployment.yaml"), &InjectOptions::default()).unwrap();
    let d = &docs(&out)[0];
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["weft.io/status"], "injected");
    let init = &pod["spec"]["initContainers"];
    assert_eq!(init[0]["name"], "weft-init", "interception first");
    assert_eq!(init[0]["args"][0], "init-iptables");
    assert_eq!(init[0]["securityContext"]["capabilities"]["add"], serde_yaml::from_str::<Value>("[NET_ADMIN, NET_RAW]").unwrap());
    let sidecar = &init[1];
    assert_eq!((sidecar["name"].as_str(), sidecar["restartPolicy"].as_str()), (Some("weft-proxy"), Some("Always")));
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1337);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(sidecar["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(env(sidecar, "WEFT_LABELS"), "app=user-service,version=v1");
    assert_eq!(env(sidecar, "WEFT_SERVICE"), "user-service");
    assert_eq!(env(sidecar, "WEFT_APP"), "127.0.0.1:3000");
    assert_eq!(named(&sidecar["env"], "WEFT_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    let probes: serde_json::Value = serde_json::from_str(env(sidecar, "WEFT_APP_PROBES")).unwrap();
    assert_eq!(probes["/app-health/user-service/livez"], serde_json::json!({"httpGet": {"path": "/health", "port": 3000}}));
    assert_eq!(probes["/app-health/user-service/readyz"]["httpGet"]["path"], "/ready");
    let app = named(&pod["spec"]["containers"], "user-service");
    assert_eq!(app["livenessProbe"]["httpGet"]["port"], 15020);
    assert_eq!(app["livenessProbe"]["httpGet"]["path"], "/app-health/user-service/livez");
    assert_eq!(app["livenessProbe"]["initialDelaySeconds"], 30, "the probe's timing is kept");
    assert_eq!(named(&pod["spec"]["volumes"], "weft-token")["secret"]["secretName"], "weft-token-default");
    assert_eq!(pod["spec"]["containers"].as_sequence().unwrap().len(), 1, "the app's containers are not touched otherwise");
}

#[test]
fn injecting_twice_changes_nothing_and_other_documents_come_back_byte_for_byte() {
    let input = fixture("seed-deployment.yaml") + "---\n# a comment survives\napiVersion: v1\nkind: Service\nmetadata: {name: user-service}\nspec: {ports: [{port: 80, targetPort: 3000}]}\n";
    let once = inject_text("x.yaml", &input, &InjectOptions::default()).unwrap();
    assert!(once.contains("# a comment survives\napiVersion: v1\nkind: Service\nmetadata: {name: user-service}\n"), "{once}");
    let twice = inject_text("x.yaml", &once, &InjectOptions::default()).unwrap();
    assert_eq!(once, twice);
}

#[test]
fn every_pod_bearing_kind_is_injected_and_opt_out_is_respected() {
    let pod = "spec: {containers: [{name: app, image: a}]}";
    let input = format!(
        "kind: Pod\nmetadata: {{name: p}}\n{pod}\n---\nkind: StatefulSet\nmetadata: {{name: s}}\nspec: {{template: {{{pod}}}}}\n---\n\
         kind: DaemonSet\nmetadata: {{name: d}}\nspec: {{template: {{{pod}}}}}\n---\nkind: Job\nmetadata: {{name: j}}\nspec: {{template: {{{pod}}}}}\n---\n\
         kind: CronJob\nmetadata: {{name: c}}\nspec: {{jobTemplate: {{spec: {{template: {{{pod}}}}}}}}}\n---\n\
         kind: Deployment\nmetadata: {{name: out}}\nspec: {{template: {{metadata: {{annotations: {{sidecar.istio.io/inject: 'false'}}}}, {pod}}}}}\n"
    );
    let out = docs(&inject_text("k.yaml", &input, &InjectOptions::default()).unwrap());
    let injected = |d: &Value| serde_yaml::to_string(d).unwrap().contains("name: weft-proxy");
    assert!(out[..5].iter().all(injected), "Pod, StatefulSet, DaemonSet, Job, CronJob");
    assert!(!injected(&out[5]), "opted out");
}

#[test]
fn classic_mode_puts_the_sidecar_first_and_holds_the_app_until_it_is_ready() {
    let opts = InjectOptions { native: false, ..Default::default() };
    let out = docs(&inject_text("seed.yaml", &fixture("seed-deployment.yaml"), &opts).unwrap());
    let spec = &out[0]["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["name"], "weft-proxy");
    assert_eq!(spec["containers"][0]["lifecycle"]["postStart"]["exec"]["command"][1], "wait");
    assert_eq!(spec["initContainers"].as_sequence().unwrap().len(), 1, "only weft-init");
}

#[test]
fn errors_name_the_file_the_line_and_the_object() {
    let bad = "kind: Service\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: b}\nspec:\n  template: [unclosed\n";
    let e = inject_text("bad.yaml", bad, &InjectOptions::default()).unwrap_err();
    assert!(e.starts_with("bad.yaml:"), "{e}");
    let named_port = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n    livenessProbe: {httpGet: {port: http}}\n";
    let e = inject_text("p.yaml", named_port, &InjectOptions::default()).unwrap_err();
    assert!(e.contains("Pod p") && e.contains("no container port named \"http\""), "{e}");
}
