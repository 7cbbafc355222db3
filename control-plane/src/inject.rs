//! Sidecar injection: Kubernetes YAML in, the same YAML with Weft's sidecar in
//! every pod template out (`weftctl inject -f`; the admission webhook is next).
//!
//! What a pod gets (Istio's kube-inject, §7.4 of the semantics):
//! - `weft-init` (init container, NET_ADMIN/NET_RAW, root): `weft-proxy init-iptables`;
//! - `weft-proxy`: a native sidecar by default (an init container with
//!   `restartPolicy: Always`, so it starts before the app and Jobs complete), or,
//!   with `--classic`, the first container with a `postStart` hold
//!   (`weft-proxy wait`) for clusters older than Kubernetes 1.29;
//! - its identity from the downward API (pod name, namespace, service account,
//!   pod IP) and the pod's labels; the bootstrap token (Secret
//!   `weft-token-<service account>`) and the mesh root (ConfigMap `weft-root-ca`);
//! - the app's HTTP probes rewritten to the sidecar's status port 15020
//!   (`/app-health/<container>/livez|readyz|startupz`), the originals passed in
//!   `WEFT_APP_PROBES`, so probes work under STRICT mTLS;
//! - uid/gid 1337, read-only root, no privilege escalation, every capability dropped.
//!
//! The same code answers the control plane's mutating admission webhook
//! (`POST /inject`: AdmissionReview v1 in, a JSON patch out).
//!
//! Per pod, Istio's annotations: `traffic.sidecar.istio.io/excludeOutboundPorts`,
//! `excludeInboundPorts`, `excludeOutboundIPRanges` (interception), and
//! `sidecar.istio.io/proxyCPU`, `proxyMemory`, `proxyCPULimit`, `proxyMemoryLimit`
//! (the sidecar's resources); a malformed value, or an `include…` annotation
//! Weft does not implement yet, is an error naming it.
//!
//! Opt out with the annotation `sidecar.istio.io/inject: "false"` (or
//! `weft.io/inject`). Documents that are not pod-bearing, opted out or already
//! injected come back byte for byte, so injecting twice changes nothing.
//!
//! Size: one pod template made a meshed pod (containers, init, probes rewritten,
//! annotations read), the Kubernetes kinds that carry a template, and the admission
//! webhook's review built from the same code (push/server.rs only routes to it).

use serde_yaml::{Mapping, Value};

pub const SIDECAR: &str = "weft-proxy";
/// Where the control plane serves the admission webhook.
pub const WEBHOOK_PATH: &str = "/inject";
pub const INIT: &str = "weft-init";
/// The sidecar's status port (Istio's 15020): readiness and the app's probes.
pub const STATUS_PORT: u16 = 15020;
pub const PROXY_UID: i64 = 1337;

#[derive(Debug, Clone)]
pub struct InjectOptions {
    pub image: String,
    /// Where sidecars reach the control plane.
    pub control_plane: String,
    /// Native sidecar (Kubernetes ≥ 1.29) or a classic first container.
    pub native: bool,
    /// The port callers use for the service (`http://<service>` means 80).
    pub service_port: u16,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            image: format!("weft/proxy:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "http://weft-control-plane.weft-system.svc:15012".into(),
            native: true,
            service_port: 80,
        }
    }
}

/// Injects every document of a multi-document YAML text; `file` names it in errors.
pub fn inject_text(file: &str, text: &str, opts: &InjectOptions) -> Result<String, String> {
    let mut out = String::new();
    let mut line = 1;
    for (i, chunk) in split_documents(text).into_iter().enumerate() {
        if i > 0 {
            line += 1; // the `---` line
        }
        let start = line;
        line += chunk.matches('\n').count();
        if chunk.trim().lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            push_doc(&mut out, chunk);
            continue;
        }
        let mut doc: Value = serde_yaml::from_str(chunk).map_err(|e| {
            let at = e.location().map_or(start, |l| start + l.line() - 1);
            format!("{file}:{at}: {e}")
        })?;
        match inject(&mut doc, opts) {
            Ok(true) => push_doc(&mut out, &serde_yaml::to_string(&doc).map_err(|e| format!("{file}: {e}"))?),
            Ok(false) => push_doc(&mut out, chunk),
            Err(e) => return Err(format!("{file}:{start}: {}: {e}", describe(&doc))),
        }
    }
    Ok(out)
}

fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = doc.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("?");
    format!("{kind} {name}")
}

fn push_doc(out: &mut String, doc: &str) {
    if !out.is_empty() {
        out.push_str("---\n");
    }
    out.push_str(doc.trim_end_matches('\n'));
    out.push('\n');
}

/// Splits on `---` lines (the YAML document marker at the start of a line).
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for l in text.split_inclusive('\n') {
        if l.trim_end() == "---" || l.starts_with("--- ") {
            if offset > start || !docs.is_empty() {
                docs.push(&text[start..offset]);
            }
            start = offset + l.len();
        }
        offset += l.len();
    }
    if start < text.len() {
        docs.push(&text[start..]);
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// Injects one document in place. `Ok(false)`: nothing to do (not a pod-bearing
/// kind, opted out, or already injected).
pub fn inject(doc: &mut Value, opts: &InjectOptions) -> Result<bool, String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok(false),
    };
    if opted_out(doc) {
        return Ok(false);
    }
    let workload = workload_name(doc);
    let mut template = doc;
    for key in path {
        template = template.get_mut(*key).ok_or_else(|| format!("no {}", path.join(".")))?;
    }
    if opted_out(template) {
        return Ok(false);
    }
    let spec = template.get_mut("spec").and_then(Value::as_mapping_mut).ok_or("no pod spec")?;
    let has = |spec: &Mapping, list: &str| {
        spec.get(list)
            .and_then(Value::as_sequence)
            .is_some_and(|s| s.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR)))
    };
    if has(spec, "containers") || has(spec, "initContainers") {
        return Ok(false);
    }
    let service_account = spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("default").to_string();
    let containers = spec.get_mut("containers").and_then(Value::as_sequence_mut).ok_or("no containers")?;
    let first_port = containers.iter().find_map(|c| c.get("ports")?.as_sequence()?.first());
    let app_port = first_port.and_then(|p| p.get("containerPort")?.as_u64());
    // What a port speaks, as Istio reads it: `appProtocol`, else the port's name. A name
    // Weft does not proxy (UDP) is left out: the pod is still injected (never admitted
    // without its sidecar), and the sidecar detects the protocol per connection.
    let speaks = |p: &Value| {
        p.get("appProtocol")
            .or_else(|| p.get("name"))
            .and_then(Value::as_str)
            .filter(|s| weft_model::AppProtocol::from_port(s).is_ok_and(|p| p.is_some()))
            .map(str::to_string)
    };
    let app_protocol = first_port.and_then(speaks);
    // The containers' other ports named for a protocol, registered with the service (`NAME:PORT`);
    // a port the sidecar would refuse (the app's or the service port again, one of the
    // sidecar's own 15000-15090, a second time) is left out rather than failing the pod.
    let mut other_ports: Vec<String> = Vec::new();
    let mut seen: Vec<u64> = app_port.into_iter().chain([u64::from(opts.service_port)]).collect();
    for p in containers.iter().filter_map(|c| c.get("ports")?.as_sequence()).flatten() {
        let (Some(name), Some(number)) = (speaks(p), p.get("containerPort").and_then(Value::as_u64)) else { continue };
        if Some(p) == first_port || seen.contains(&number) || (15000..=15090).contains(&number) {
            continue;
        }
        seen.push(number);
        other_ports.push(format!("{name}:{number}"));
    }
    let first_app =
        containers.first().and_then(|c| c.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
    let probes = rewrite_probes(containers)?;
    let settings = PodSettings::from_annotations(template.get("metadata").and_then(|m| m.get("annotations")))?;

    let template = template.as_mapping_mut().ok_or("pod template is not a mapping")?;
    let meta = entry_map(template, "metadata")?;
    let labels: Vec<(String, String)> = meta
        .get("labels")
        .and_then(Value::as_mapping)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v)?))).collect())
        .unwrap_or_default();
    let annotations = entry_map(meta, "annotations")?;
    annotations.insert("weft.io/status".into(), "injected".into());
    if !first_app.is_empty() {
        annotations.insert("kubectl.kubernetes.io/default-container".into(), first_app.into());
    }
    let spec = entry_map(template, "spec")?;
    let mut sidecar = sidecar(opts, &workload, &labels, (app_port, app_protocol.as_deref()), &probes)?;
    // A TCP service port is the app's port: peers dial the pod's address on it.
    let tcp_first = app_protocol
        .as_deref()
        .is_some_and(|p| weft_model::AppProtocol::from_port(p) == Ok(Some(weft_model::AppProtocol::Tcp)));
    if let (true, Some(port), Value::Sequence(list)) = (tcp_first, app_port, &mut sidecar["env"]) {
        for e in list.iter_mut().filter(|e| e.get("name").and_then(Value::as_str) == Some("WEFT_SERVICE_PORT")) {
            e["value"] = port.to_string().into();
        }
    }
    if !other_ports.is_empty() {
        if let Value::Sequence(list) = &mut sidecar["env"] {
            let mut m = Mapping::new();
            m.insert("name".into(), "WEFT_OTHER_PORTS".into());
            m.insert("value".into(), other_ports.join(",").into());
            list.push(Value::Mapping(m));
        }
    }
    for (bound, resource, quantity) in &settings.resources {
        sidecar["resources"][*bound][*resource] = quantity.clone().into();
    }
    let mut init = init_container(opts)?;
    if let Value::Sequence(args) = &mut init["args"] {
        args.extend(settings.init_args.iter().map(|a| Value::from(a.clone())));
    }
    let mut init_list = vec![init];
    if opts.native {
        init_list.push(sidecar);
    } else if let Some(Value::Sequence(c)) = spec.get_mut("containers") {
        c.insert(0, sidecar);
    }
    match spec.get_mut("initContainers") {
        Some(Value::Sequence(existing)) => {
            for (i, c) in init_list.into_iter().enumerate() {
                existing.insert(i, c);
            }
        }
        _ => {
            spec.insert("initContainers".into(), Value::Sequence(init_list));
        }
    }
    let volumes = spec.entry("volumes".into()).or_insert_with(|| Value::Sequence(Vec::new()));
    if let Value::Sequence(v) = volumes {
        // Names from the input are set as values, never spliced into YAML text.
        let mut token = yaml("{name: weft-token, secret: {secretName: ''}}")?;
        token["secret"]["secretName"] = format!("weft-token-{service_account}").into();
        v.push(token);
        v.push(yaml("{name: weft-ca, configMap: {name: weft-root-ca}}")?);
    }
    Ok(true)
}

/// The object's name; for a pod created by a controller (the webhook sees those),
/// its `generateName` without the trailing `-` and ReplicaSet hash.
fn workload_name(doc: &Value) -> String {
    let meta = doc.get("metadata");
    let get = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(name) = get("name") {
        return name.to_string();
    }
    let base = get("generateName").unwrap_or_default().trim_end_matches('-');
    let hash = meta.and_then(|m| m.get("labels")).and_then(|l| l.get("pod-template-hash")).and_then(Value::as_str);
    match hash {
        Some(h) => base.strip_suffix(&format!("-{h}")).unwrap_or(base).to_string(),
        None => base.to_string(),
    }
}

/// What a pod's annotations change in its injection.
#[derive(Debug, Default)]
struct PodSettings {
    /// Extra `weft-proxy init-iptables` arguments.
    init_args: Vec<String>,
    /// (`requests` | `limits`, `cpu` | `memory`, quantity) for the sidecar.
    resources: Vec<(&'static str, &'static str, String)>,
}

impl PodSettings {
    fn from_annotations(annotations: Option<&Value>) -> Result<Self, String> {
        let mut s = PodSettings::default();
        let Some(Value::Mapping(a)) = annotations else { return Ok(s) };
        let get = |k: &str| a.get(k).and_then(scalar);
        let bad = |k: &str, v: &str, what: &str| format!("annotation {k}: {v:?} is not {what}");
        for (key, flag) in [
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "--exclude-outbound-ports"),
            ("traffic.sidecar.istio.io/excludeInboundPorts", "--exclude-inbound-ports"),
        ] {
            if let Some(v) = get(key) {
                if !v.split(',').all(|p| p.trim().parse::<u16>().is_ok_and(|p| p > 0)) {
                    return Err(bad(key, &v, "a comma-separated list of ports"));
                }
                s.init_args.extend([flag.to_string(), trimmed_list(&v)]);
            }
        }
        let key = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
        if let Some(v) = get(key) {
            if !v.split(',').all(|c| weft_proxy::net::iptables::is_cidr(c.trim())) {
                return Err(bad(key, &v, "a comma-separated list of IPv4 or IPv6 CIDRs"));
            }
            s.init_args.extend(["--exclude-outbound-cidrs".to_string(), trimmed_list(&v)]);
        }
        for (key, bound, resource) in [
            ("sidecar.istio.io/proxyCPU", "requests", "cpu"),
            ("sidecar.istio.io/proxyMemory", "requests", "memory"),
            ("sidecar.istio.io/proxyCPULimit", "limits", "cpu"),
            ("sidecar.istio.io/proxyMemoryLimit", "limits", "memory"),
        ] {
            if let Some(v) = get(key) {
                if !is_quantity(&v) {
                    return Err(bad(key, &v, "a Kubernetes quantity (e.g. 100m, 128Mi)"));
                }
                s.resources.push((bound, resource, v));
            }
        }
        for key in [
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "traffic.sidecar.istio.io/includeOutboundPorts",
            "traffic.sidecar.istio.io/includeInboundPorts",
        ] {
            if a.contains_key(key) {
                return Err(format!("annotation {key} is not supported yet by Weft (everything is captured; use the exclude… annotations)"));
            }
        }
        Ok(s)
    }
}

/// `a, b` → `a,b`: the flag's comma-separated form.
fn trimmed_list(v: &str) -> String {
    v.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
fn is_quantity(v: &str) -> bool {
    let number_end = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, suffix) = v.split_at(number_end);
    let number_ok = !number.is_empty() && number.parse::<f64>().is_ok() && !number.ends_with('.');
    number_ok && ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].contains(&suffix)
}

fn opted_out(v: &Value) -> bool {
    let a = v.get("metadata").and_then(|m| m.get("annotations"));
    ["sidecar.istio.io/inject", "weft.io/inject"]
        .iter()
        .any(|k| a.and_then(|a| a.get(*k)).and_then(scalar).is_some_and(|v| v == "false"))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The mapping under `key`, created when absent; anything else there is an error.
fn entry_map<'a>(m: &'a mut Mapping, key: &str) -> Result<&'a mut Mapping, String> {
    m.entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()))
        .as_mapping_mut()
        .ok_or_else(|| format!("{key} is not a mapping"))
}

/// One of this module's YAML literals (never with input spliced in).
fn yaml(text: &str) -> Result<Value, String> {
    serde_yaml::from_str(text).map_err(|e| format!("injector template: {e}"))
}

/// Rewrites each app container's HTTP probes to the sidecar's status port and
/// returns the originals, keyed by their new path (`WEFT_APP_PROBES`).
fn rewrite_probes(containers: &mut [Value]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut originals = serde_json::Map::new();
    for c in containers.iter_mut() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let ports: Vec<(String, u64)> = c
            .get("ports")
            .and_then(Value::as_sequence)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| Some((p.get("name")?.as_str()?.to_string(), p.get("containerPort")?.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (field, kind) in [("livenessProbe", "livez"), ("readinessProbe", "readyz"), ("startupProbe", "startupz")] {
            let Some(probe) = c.get_mut(field).and_then(Value::as_mapping_mut) else { continue };
            let Some(get) = probe.get("httpGet").and_then(Value::as_mapping).cloned() else { continue };
            let port = match get.get("port") {
                Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("container {name}: {field}: bad port"))?,
                Some(Value::String(p)) => match p.parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => ports
                        .iter()
                        .find(|(n, _)| n == p)
                        .map(|(_, n)| *n)
                        .ok_or_else(|| format!("container {name}: {field}: no container port named {p:?}"))?,
                },
                _ => return Err(format!("container {name}: {field}: httpGet without a port")),
            };
            let path = format!("/app-health/{name}/{kind}");
            let mut original = serde_json::json!({"httpGet": {"path": get.get("path").and_then(Value::as_str).unwrap_or("/"), "port": port}});
            if let Some(scheme) = get.get("scheme").and_then(Value::as_str) {
                original["httpGet"]["scheme"] = scheme.into();
            }
            if let Some(h) = get.get("httpHeaders") {
                original["httpGet"]["httpHeaders"] = serde_json::to_value(h).map_err(|e| e.to_string())?;
            }
            if let Some(t) = probe.get("timeoutSeconds").and_then(Value::as_u64) {
                original["timeoutSeconds"] = t.into();
            }
            originals.insert(path.clone(), original);
            let mut rewritten = yaml("{path: '', port: 0, scheme: HTTP}")?;
            rewritten["path"] = path.into();
            rewritten["port"] = STATUS_PORT.into();
            probe.insert("httpGet".into(), rewritten);
        }
    }
    Ok(originals)
}

fn init_container(opts: &InjectOptions) -> Result<Value, String> {
    let mut c = yaml(
        "name: weft-init
args: [init-iptables]
resources: {requests: {cpu: 10m, memory: 10Mi}, limits: {cpu: 100m, memory: 50Mi}}
securityContext:
  runAsUser: 0
  runAsGroup: 0
  runAsNonRoot: false
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {add: [NET_ADMIN, NET_RAW], drop: [ALL]}",
    )?;
    c["image"] = opts.image.clone().into();
    Ok(c)
}

fn sidecar(
    opts: &InjectOptions,
    workload: &str,
    labels: &[(String, String)],
    (app_port, app_protocol): (Option<u64>, Option<&str>),
    probes: &serde_json::Map<String, serde_json::Value>,
) -> Result<Value, String> {
    let mut c = yaml(
        "name: weft-proxy
args: [--inbound, '0.0.0.0:15006', --outbound, '127.0.0.1:15001', --admin, '127.0.0.1:15000',
       --status, '0.0.0.0:15020,0.0.0.0:15021', --token-file, /var/run/secrets/weft/token/token,
       --ca-file, /var/run/secrets/weft/ca/root.pem, --advertise, '$(POD_IP):15006']
env:
- {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: WEFT_INSTANCE, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
- {name: WEFT_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
- {name: WEFT_SERVICE_ACCOUNT, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
ports:
- {name: http-weft-status, containerPort: 15020, protocol: TCP}
- {name: http-weft-health, containerPort: 15021, protocol: TCP}
readinessProbe: {httpGet: {path: /healthz/ready, port: 15021}, periodSeconds: 2, failureThreshold: 30, timeoutSeconds: 3}
resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {cpu: '1', memory: 128Mi}}
securityContext:
  runAsUser: 1337
  runAsGroup: 1337
  runAsNonRoot: true
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
volumeMounts:
- {name: weft-token, mountPath: /var/run/secrets/weft/token, readOnly: true}
- {name: weft-ca, mountPath: /var/run/secrets/weft/ca, readOnly: true}",
    )?;
    c["image"] = opts.image.clone().into();
    let label_text = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let service = labels.iter().find(|(k, _)| k == "app").map(|(_, v)| v.clone());
    let mut env = vec![
        ("WEFT_CONTROL_PLANE", opts.control_plane.clone()),
        ("WEFT_WORKLOAD", workload.to_string()),
        ("WEFT_LABELS", label_text),
        ("WEFT_SERVICE_PORT", opts.service_port.to_string()),
    ];
    if let Some(s) = service {
        env.push(("WEFT_SERVICE", s));
    }
    if let Some(p) = app_port {
        env.push(("WEFT_APP", format!("127.0.0.1:{p}")));
    }
    if let Some(p) = app_protocol {
        env.push(("WEFT_APP_PROTOCOL", p.to_string()));
    }
    if !probes.is_empty() {
        env.push(("WEFT_APP_PROBES", serde_json::Value::Object(probes.clone()).to_string()));
    }
    if let Value::Sequence(list) = &mut c["env"] {
        for (k, v) in env {
            let mut m = Mapping::new();
            m.insert("name".into(), k.into());
            m.insert("value".into(), v.into());
            list.push(Value::Mapping(m));
        }
    }
    if opts.native {
        c["restartPolicy"] = "Always".into();
        c["startupProbe"] =
            yaml("{httpGet: {path: /healthz/ready, port: 15021}, periodSeconds: 1, failureThreshold: 600, timeoutSeconds: 3}")?;
    } else {
        c["lifecycle"] = yaml("{postStart: {exec: {command: [weft-proxy, wait]}}}")?;
    }
    Ok(c)
}

/// Answers one AdmissionReview (admission.k8s.io/v1) for a pod: allowed, with a
/// JSON patch when the pod is injected. A pod that cannot be injected is still
/// admitted, unpatched, with a warning: a broken injector must not stop deployments.
pub fn admission_review(body: &[u8], opts: &InjectOptions) -> Result<serde_json::Value, String> {
    let review: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request = review.get("request").ok_or("AdmissionReview without a request")?;
    let uid = request.get("uid").and_then(serde_json::Value::as_str).ok_or("request without a uid")?;
    let mut response = serde_json::json!({"uid": uid, "allowed": true});
    if let Some(object) = request.get("object") {
        let mut pod: Value = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        if pod.get("kind").is_none() {
            pod["kind"] = "Pod".into();
        }
        let before = pod.clone();
        match inject(&mut pod, opts) {
            Ok(true) => {
                let patch = json_patch(&before, &pod).map_err(|e| e.to_string())?;
                use base64::Engine;
                response["patchType"] = "JSONPatch".into();
                response["patch"] = base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(&patch).map_err(|e| e.to_string())?)
                    .into();
            }
            Ok(false) => {}
            Err(e) => response["warnings"] = serde_json::json!([format!("weft: sidecar not injected: {e}")]),
        }
    }
    Ok(serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

/// The JSON patch from `before` to `after` for the parts injection touches.
fn json_patch(before: &Value, after: &Value) -> Result<serde_json::Value, serde_json::Error> {
    let mut ops = Vec::new();
    for (parent, key) in
        [("metadata", "annotations"), ("spec", "initContainers"), ("spec", "containers"), ("spec", "volumes")]
    {
        let old = before.get(parent).and_then(|p| p.get(key));
        let Some(new) = after.get(parent).and_then(|p| p.get(key)) else { continue };
        if old == Some(new) {
            continue;
        }
        let op = if old.is_some() { "replace" } else { "add" };
        ops.push(
            serde_json::json!({"op": op, "path": format!("/{parent}/{key}"), "value": serde_json::to_value(new)?}),
        );
    }
    Ok(serde_json::Value::Array(ops))
}
