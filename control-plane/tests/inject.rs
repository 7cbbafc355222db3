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
    assert_eq!(
        init[0]["securityContext"]["capabilities"]["add"],
        serde_yaml::from_str::<Value>("[NET_ADMIN, NET_RAW]").unwrap()
    );
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
    assert_eq!(
        probes["/app-health/user-service/livez"],
        serde_json::json!({"httpGet": {"path": "/health", "port": 3000}})
    );
    assert_eq!(probes["/app-health/user-service/readyz"]["httpGet"]["path"], "/ready");
    let app = named(&pod["spec"]["containers"], "user-service");
    assert_eq!(app["livenessProbe"]["httpGet"]["port"], 15020);
    assert_eq!(app["livenessProbe"]["httpGet"]["path"], "/app-health/user-service/livez");
    assert_eq!(app["livenessProbe"]["initialDelaySeconds"], 30, "the probe's timing is kept");
    assert_eq!(named(&pod["spec"]["volumes"], "weft-token")["secret"]["secretName"], "weft-token-default");
    assert_eq!(
        pod["spec"]["containers"].as_sequence().unwrap().len(),
        1,
        "the app's containers are not touched otherwise"
    );
}

#[test]
fn injecting_twice_changes_nothing_and_other_documents_come_back_byte_for_byte() {
    let input = fixture("seed-deployment.yaml") + "---\n# a comment survives\napiVersion: v1\nkind: Service\nmetadata: {name: user-service}\nspec: {ports: [{port: 80, targetPort: 3000}]}\n";
    let once = inject_text("x.yaml", &input, &InjectOptions::default()).unwrap();
    assert!(
        once.contains("# a comment survives\napiVersion: v1\nkind: Service\nmetadata: {name: user-service}\n"),
        "{once}"
    );
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

/// Applies a JSON patch of `add`/`replace` operations on top-level paths (all the webhook emits).
fn apply_patch(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    for op in patch.as_array().unwrap() {
        let path: Vec<&str> = op["path"].as_str().unwrap().trim_start_matches('/').split('/').collect();
        assert!(matches!(op["op"].as_str(), Some("add" | "replace")), "{op}");
        assert_eq!(path.len(), 2, "{op}");
        doc[path[0]][path[1]] = op["value"].clone();
    }
}

fn review(pod: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "4f1c", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "production", "operation": "CREATE", "object": pod}})
}

fn seed_pod() -> serde_json::Value {
    let d = &docs(&fixture("seed-deployment.yaml"))[0];
    let mut pod: serde_json::Value = serde_json::to_value(&d["spec"]["template"]).unwrap();
    pod["metadata"]["generateName"] = "user-service-5d8f7c9b6-".into();
    pod["metadata"]["labels"]["pod-template-hash"] = "5d8f7c9b6".into();
    pod
}

#[test]
fn the_webhook_answers_with_a_patch_that_makes_the_pod_what_inject_makes_it() {
    use base64::Engine;
    let pod = seed_pod();
    let answer = weft_control_plane::inject::admission_review(
        &serde_json::to_vec(&review(pod.clone())).unwrap(),
        &InjectOptions::default(),
    )
    .unwrap();
    let response = &answer["response"];
    assert_eq!(
        (response["uid"].as_str(), response["allowed"].as_bool(), response["patchType"].as_str()),
        (Some("4f1c"), Some(true), Some("JSONPatch"))
    );
    let patch: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let mut patched = pod.clone();
    apply_patch(&mut patched, &patch);
    let mut expected: Value = serde_json::from_value(pod).unwrap();
    expected["kind"] = "Pod".into();
    assert!(weft_control_plane::inject::inject(&mut expected, &InjectOptions::default()).unwrap());
    let mut expected = serde_json::to_value(expected).unwrap();
    expected.as_object_mut().unwrap().remove("kind");
    assert_eq!(patched, expected);
    let sidecar =
        named(&docs(&serde_yaml::to_string(&patched).unwrap())[0]["spec"]["initContainers"], "weft-proxy").clone();
    assert_eq!(env(&sidecar, "WEFT_WORKLOAD"), "user-service", "the workload, not the pod");

    // An injected pod is admitted unchanged; an opted-out one too.
    let again = weft_control_plane::inject::admission_review(
        &serde_json::to_vec(&review(patched)).unwrap(),
        &InjectOptions::default(),
    )
    .unwrap();
    assert!(again["response"].get("patch").is_none());
    assert!(weft_control_plane::inject::admission_review(b"{}", &InjectOptions::default()).is_err());
}

#[tokio::test]
async fn the_control_plane_serves_the_webhook() {
    use http_body_util::BodyExt;
    let etcd = weft_testkit::Etcd::start();
    let store =
        weft_control_plane::store::Store::connect(&[etcd.url()], "/weft/", Some(&etcd.tls(weft_etcd::CONTROL_PLANE)))
            .await
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let parts = weft_control_plane::ca::CaParts::generate("cluster.local").unwrap();
    let ca = std::sync::Arc::new(weft_control_plane::ca::Ca::from_parts(&parts, "cluster.local").unwrap());
    let _cp = weft_control_plane::push::start(store, "cp-hook".into(), listener, ca.clone()).await.unwrap();
    // The API server calls the webhook over TLS, trusting the mesh root (the caBundle) and checking the DNS name.
    let mut roots = rustls::RootCertStore::empty();
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca.root_pem().as_bytes()).unwrap();
    roots.add(rustls::pki_types::CertificateDer::from(pem.contents)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(weft_proxy::security::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("weft-control-plane.weft-system.svc").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let body = serde_json::to_vec(&review(seed_pod())).unwrap();
    let req = http::Request::post("/inject")
        .header("host", "cp")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
}

/// Names from the input are values, never YAML text: a hostile name cannot add fields.
#[test]
fn names_from_the_input_cannot_inject_yaml() {
    let input = "kind: Pod\nmetadata: {name: p}\nspec:\n  serviceAccountName: 'sa}, hostPath: {path: /'\n  containers:\n  - name: 'app}, port: 1'\n    livenessProbe: {httpGet: {path: /h, port: 3000}}\n";
    let out = docs(&inject_text("h.yaml", input, &InjectOptions::default()).unwrap());
    let spec = &out[0]["spec"];
    let token = named(&spec["volumes"], "weft-token");
    assert_eq!(token["secret"]["secretName"], "weft-token-sa}, hostPath: {path: /");
    assert!(token.get("hostPath").is_none());
    let probe = &spec["containers"][0]["livenessProbe"]["httpGet"];
    assert_eq!(
        (probe["path"].as_str(), probe["port"].as_u64()),
        (Some("/app-health/app}, port: 1/livez"), Some(15020))
    );
}

#[test]
fn istios_pod_annotations_set_interception_and_the_sidecars_resources() {
    let pod = |annotations: &str| {
        format!("kind: Deployment\nmetadata: {{name: api}}\nspec:\n  template:\n    metadata:\n      labels: {{app: api}}\n      annotations:\n{annotations}    spec:\n      containers:\n      - name: app\n        image: api\n")
    };
    let text = pod("        traffic.sidecar.istio.io/excludeOutboundPorts: \"3306, 6379\"\n        traffic.sidecar.istio.io/excludeInboundPorts: \"9100\"\n        traffic.sidecar.istio.io/excludeOutboundIPRanges: 10.96.0.0/12,169.254.169.254,fd00:10:96::/112\n        sidecar.istio.io/proxyCPU: 100m\n        sidecar.istio.io/proxyMemoryLimit: 256Mi\n");
    let out = inject_text("api.yaml", &text, &InjectOptions::default()).unwrap();
    let spec = &docs(&out)[0]["spec"]["template"]["spec"];
    let args: Vec<&str> = named(&spec["initContainers"], "weft-init")["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "init-iptables",
            "--exclude-outbound-ports",
            "3306,6379",
            "--exclude-inbound-ports",
            "9100",
            "--exclude-outbound-cidrs",
            "10.96.0.0/12,169.254.169.254,fd00:10:96::/112"
        ]
    );
    let resources = &named(&spec["initContainers"], "weft-proxy")["resources"];
    assert_eq!(
        (resources["requests"]["cpu"].as_str(), resources["requests"]["memory"].as_str()),
        (Some("100m"), Some("32Mi"))
    );
    assert_eq!(
        (resources["limits"]["cpu"].as_str(), resources["limits"]["memory"].as_str()),
        (Some("1"), Some("256Mi"))
    );

    for (annotation, message) in [
        (
            "traffic.sidecar.istio.io/excludeOutboundPorts: \"3306,mysql\"",
            "\"3306,mysql\" is not a comma-separated list of ports",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges: 10.0.0.0/33",
            "is not a comma-separated list of IPv4 or IPv6 CIDRs",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges: \"fd00::/8,fd00::/200\"",
            "is not a comma-separated list of IPv4 or IPv6 CIDRs",
        ),
        ("sidecar.istio.io/proxyMemory: lots", "\"lots\" is not a Kubernetes quantity"),
        ("traffic.sidecar.istio.io/includeOutboundIPRanges: 10.0.0.0/8", "is not supported yet by Weft"),
    ] {
        let e =
            inject_text("api.yaml", &pod(&format!("        {annotation}\n")), &InjectOptions::default()).unwrap_err();
        assert!(e.starts_with("api.yaml:1: Deployment api: annotation ") && e.contains(message), "{e}");
    }
}

/// Istio reads what a port speaks from its `appProtocol`, else its name: the sidecar is
/// told, and of the other named ports too; UDP is not (the pod is injected all the same).
#[test]
fn the_app_ports_name_or_app_protocol_tells_the_sidecar_what_it_speaks() {
    let pod = |port: &str| {
        format!("kind: Pod\nmetadata: {{name: p, labels: {{app: orders}}}}\nspec:\n  containers:\n  - name: app\n    ports: [{port}]\n")
    };
    let env = |text: &str, name: &str| {
        let d = &docs(text)[0];
        let c = named(&d["spec"]["initContainers"], "weft-proxy").clone();
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    let sidecar_env = |text: &str| env(text, "WEFT_APP_PROTOCOL");
    let out =
        inject_text("p.yaml", &pod("{name: grpc-orders, containerPort: 50051}"), &InjectOptions::default()).unwrap();
    assert_eq!(sidecar_env(&out).as_deref(), Some("grpc-orders"));
    let out = inject_text(
        "p.yaml",
        &pod("{name: web, appProtocol: kubernetes.io/h2c, containerPort: 8080}"),
        &InjectOptions::default(),
    )
    .unwrap();
    assert_eq!(sidecar_env(&out).as_deref(), Some("kubernetes.io/h2c"), "appProtocol first");
    let out = inject_text("p.yaml", &pod("{name: web, containerPort: 8080}"), &InjectOptions::default()).unwrap();
    assert_eq!(sidecar_env(&out), None, "a name Istio does not know: detected per connection");
    // A TCP port: relayed as opaque TCP between the sidecars.
    let out = inject_text("p.yaml", &pod("{name: tcp-db, containerPort: 5432}"), &InjectOptions::default()).unwrap();
    assert_eq!(sidecar_env(&out).as_deref(), Some("tcp-db"));
    assert_eq!(env(&out, "WEFT_SERVICE_PORT").as_deref(), Some("5432"), "a TCP service port is the app's port");
    // UDP: neither Istio nor Weft proxies it; the pod is still injected, nothing said.
    let out = inject_text("p.yaml", &pod("{name: udp-dns, containerPort: 53}"), &InjectOptions::default()).unwrap();
    assert_eq!(sidecar_env(&out), None);
    // The other ports named for a protocol are registered with the service; a name Istio
    // does not know (`metrics`) is not, nor what the sidecar would refuse (8081 twice, the
    // service port 80, the sidecar's own 15000).
    let out = inject_text(
        "p.yaml",
        &pod("{name: http, containerPort: 3000}, {name: tcp-db, containerPort: 5432}, {name: redis, containerPort: 6379}, {name: metrics, containerPort: 9090}, {name: http-admin, containerPort: 8081}, {name: http-again, containerPort: 8081}, {name: http-web, containerPort: 80}, {name: http-envoy, containerPort: 15000}"),
        &InjectOptions::default(),
    )
    .unwrap();
    assert_eq!(env(&out, "WEFT_OTHER_PORTS").as_deref(), Some("tcp-db:5432,redis:6379,http-admin:8081"));
}
