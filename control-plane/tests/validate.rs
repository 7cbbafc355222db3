//! Validation: one case per rule and per refused field, each asserting the
//! file, the line and the message a user sees.

use std::path::Path;
use weft_control_plane::istio::load_str;

const VS_HEAD: &str =
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: prod\nspec:\n";
const DR_HEAD: &str =
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\n  namespace: prod\nspec:\n";

/// Loads `text` as `case.yaml` and returns its one diagnostic as `line: field: message`.
fn problem(text: &str) -> String {
    let diags = load_str(Path::new("case.yaml"), text).expect_err("expected a problem");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    assert_eq!(d.file, Path::new("case.yaml"));
    format!("{}: {}: {}", d.line, d.field, d.message)
}

fn check(text: &str, want_line: usize, want_field: &str, want_msg: &str) {
    let got = problem(text);
    let want = format!("{want_line}: {want_field}: ");
    assert!(got.starts_with(&want) && got.contains(want_msg), "got {got:?}\nwant {want}…{want_msg}");
}

#[test]
fn the_seeds_circuit_breaker_points_to_outlier_detection() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seed-istio.yaml")).unwrap();
    let diags = load_str(Path::new("seed.yaml"), &text).unwrap_err();
    let first = diags[0].to_string();
    assert!(
        first.starts_with("seed.yaml:47: spec.trafficPolicy.circuitBreaker: unknown field `circuitBreaker`"),
        "{first}"
    );
    assert!(first.contains("write `outlierDetection`"), "{first}");
    assert_eq!(diags.len(), 1, "the seed's AuthorizationPolicy is valid: {diags:?}");
}

#[test]
fn shipped_policies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let resources = weft_control_plane::istio::load_paths(&[dir]).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(resources.len() >= 2);
}

#[test]
fn virtual_service_rules() {
    let route = "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n";
    // Each case: spec body, line, field, message.
    let cases: &[(&str, usize, &str, &str)] = &[
        ("  hosts: []\n  http:\n  - route:\n    - destination: {host: a}\n", 7, "spec.hosts", "at least one host"),
        ("  hosts: [\"10.0.0.1\"]\n  http:\n  - route:\n    - destination: {host: a}\n", 7, "spec.hosts[0]", "is not a service host"),
        ("  hosts: [a]\n", 6, "spec.http", "http, tcp or tls must be provided"),
        ("  hosts: [a]\n  http:\n  - name: x\n", 9, "spec.http[0].route", "HTTP route, redirect or directResponse is required"),
        ("  hosts: [a]\n  http:\n  - match:\n    - {}\n    route:\n    - destination: {host: a}\n", 10, "spec.http[0].match[0]", "an empty match is not allowed"),
        ("  hosts: [a]\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: a}\n", 10, "spec.http[0].match[0].uri", "set only one of exact, prefix, regex"),
        ("  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: '('}\n    route:\n    - destination: {host: a}\n", 10, "spec.http[0].match[0].uri.regex", "invalid RE2 regex"),
        ("  hosts: [a]\n  http:\n  - match:\n    - headers: {x-a: {prefix: ''}}\n    route:\n    - destination: {host: a}\n", 10, "spec.http[0].match[0].headers.x-a.prefix", "must not be empty"),
        ("  hosts: [a]\n  http:\n  - match:\n    - headers: {\"x up\": {exact: a}}\n    route:\n    - destination: {host: a}\n", 10, "spec.http[0].match[0].headers.x up", "is not a header name"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: -1\n", 11, "spec.http[0].route[0].weight", "must not be negative"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n", 9, "spec.http[0].route", "total weight must be above 0"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    retries: {attempts: 0, perTryTimeout: 1s}\n", 11, "spec.http[0].retries.attempts", "attempts is 0"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    retries: {attempts: 2, retryOn: 'connect-failure,sometimes'}\n", 11, "spec.http[0].retries.retryOn", "\"sometimes\" is not a retry condition"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    timeout: soon\n", 11, "spec.http[0].timeout", "is not a number followed by a unit"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    fault: {abort: {httpStatus: 99, percentage: {value: 5}}}\n", 11, "spec.http[0].fault.abort.httpStatus", "between 200 and 599"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n", 11, "spec.http[0].fault.delay.percentage.value", "between 0 and 100"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    headers: {request: {remove: [host]}}\n", 11, "spec.http[0].headers.request.remove[0]", "cannot be removed"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrors: [{destination: {host: c}}]\n", 12, "spec.http[0].mirrors", "mirror and mirrors are mutually exclusive"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrorPercentage: {value: 101}\n", 12, "spec.http[0].mirrorPercentage.value", "between 0 and 100"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    corsPolicy: {allowOrigins: [{exact: a.example}], allowMethods: [FETCH]}\n", 11, "spec.http[0].corsPolicy.allowMethods[0]", "\"FETCH\" is not a valid HTTP method"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    corsPolicy: {maxAge: 1.5s}\n", 11, "spec.http[0].corsPolicy.maxAge", "seconds precision"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    redirect: {uri: /b}\n", 11, "spec.http[0].redirect", "cannot contain both route and redirect"),
        ("  hosts: [a]\n  http:\n  - redirect: {uri: /b}\n    fault: {abort: {httpStatus: 500, percentage: {value: 5}}}\n", 9, "spec.http[0].redirect", "cannot contain both fault and redirect"),
        ("  hosts: [a]\n  http:\n  - redirect: {uri: /b, redirectCode: 200}\n", 9, "spec.http[0].redirect.redirectCode", "must be 3xx"),
        ("  hosts: [a]\n  http:\n  - redirect: {uri: /b, redirectCode: 305}\n", 9, "spec.http[0].redirect.redirectCode", "not one of 301, 302, 303, 307, 308"),
        ("  hosts: [a]\n  http:\n  - redirect: {redirectCode: 302}\n", 9, "spec.http[0].redirect", "must specify uri"),
        ("  hosts: [a]\n  http:\n  - redirect: {prefixRewrite: /x}\n", 9, "spec.http[0].redirect.prefixRewrite", "needs a uri prefix in every match entry"),
        ("  hosts: [a]\n  http:\n  - directResponse: {status: 700}\n", 9, "spec.http[0].directResponse.status", "not between 200 and 599"),
        ("  hosts: [a]\n  http:\n  - directResponse: {status: 200, body: {bytes: '%%%'}}\n", 9, "spec.http[0].directResponse.body.bytes", "is not base64"),
        ("  hosts: [a]\n  http:\n  - directResponse: {status: 200}\n    redirect: {uri: /b}\n", 9, "spec.http[0].directResponse", "cannot contain both redirect and directResponse"),
        ("  hosts: ['*']\n  http:\n  - directResponse: {status: 200}\n", 7, "spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    rewrite: {uri: /x, uriRegexRewrite: {match: '^/a', rewrite: /b}}\n", 11, "spec.http[0].rewrite", "only contain one of uri or uriRegexRewrite"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    rewrite: {uriRegexRewrite: {match: '(?!x)', rewrite: /b}}\n", 11, "spec.http[0].rewrite.uriRegexRewrite.match.regex", "invalid RE2 regex"),
        ("  hosts: [a]\n  gateways: [mesh, Bad/Gw]\n  http:\n  - route:\n    - destination: {host: a}\n", 8, "spec.gateways[1]", "is not `mesh`, a gateway name or namespace/name"),
        ("  hosts: [a]\n  tcp: [{route: [{destination: {host: a}}]}]\n", 8, "spec.tcp", "not supported yet"),
        ("  hosts: [a]\n  tcp: []\n", 6, "spec.http", "http, tcp or tls must be provided"),
        ("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    retires: {attempts: 1}\n", 11, "spec.http[0].retires", "unknown field `retires`"),
    ];
    for (spec, line, field, msg) in cases {
        check(&format!("{VS_HEAD}{spec}"), *line, field, msg);
    }
    assert!(load_str(Path::new("ok.yaml"), &format!("{VS_HEAD}{route}")).is_ok());
}

#[test]
fn destination_rule_rules() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("  host: a\n  trafficPolicy: {}\n", 8, "spec.trafficPolicy", "at least one field"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n", 9, "spec.trafficPolicy.loadBalancer.simple", "is not one of"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 10}}}\n", 9, "spec.trafficPolicy.loadBalancer.consistentHash", "one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {consistentHash: {httpCookie: {name: user}}}\n", 9, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl", "ttl required for HttpCookie"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}\n", 9, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "must be prime"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n", 9, "spec.trafficPolicy.loadBalancer.consistentHash", "set simple or consistentHash, not both"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {distribute: [{from: 'us/*', to: {'us/a/*': 70, 'us/b/*': 20}}]}}\n", 9, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "total locality weight 90 != 100"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r1}]}}\n", 9, "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "must specify different regions"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {distribute: [{from: 'us/*', to: {'us/*': 50, 'us/a/*': 50}}]}}\n", 9, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to.us/a/*", "overlaps with one specified before"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {failover: [{from: r1/z1, to: r2}]}}\n", 9, "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "only specify region"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {distribute: [{from: '*/a', to: {'us': 100}}]}}\n", 9, "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from", "with `*` only as the last part"),
        ("  host: a\n  trafficPolicy:\n    loadBalancer: {localityLbSetting: {distribute: [{from: us, to: {us: 100}}], failover: [{from: r1, to: r2}]}}\n", 9, "spec.trafficPolicy.loadBalancer.localityLbSetting", "can not simultaneously specify 'distribute' and 'failover'"),
        ("  host: a\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: -1}}\n", 9, "spec.trafficPolicy.connectionPool.tcp.maxConnections", "must not be negative"),
        ("  host: a\n  trafficPolicy:\n    connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}\n", 9, "spec.trafficPolicy.connectionPool.http.useClientProtocol", "cannot be combined"),
        ("  host: a\n  trafficPolicy:\n    connectionPool: {http: {h2UpgradePolicy: SOMETIMES}}\n", 9, "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy", "\"SOMETIMES\" is not one of DEFAULT, DO_NOT_UPGRADE, UPGRADE"),
        ("  host: a\n  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 150}\n", 9, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "between 0 and 100"),
        ("  host: a\n  trafficPolicy:\n    outlierDetection:\n      interval: 5\n", 10, "spec.trafficPolicy.outlierDetection.interval", "lacks a unit"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n", 9, "spec.trafficPolicy.tls.clientCertificate", "MUTUAL needs a client certificate"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: /c.pem}\n", 9, "spec.trafficPolicy.tls.privateKey", "go together"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL, clientCertificate: c.pem, privateKey: /k.pem}\n", 9, "spec.trafficPolicy.tls.clientCertificate", "absolute path"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL, credentialName: ../../etc}\n", 9, "spec.trafficPolicy.tls.credentialName", "not a Secret name"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL, credentialName: c, clientCertificate: /c.pem, privateKey: /k.pem}\n", 9, "spec.trafficPolicy.tls.credentialName", "not both"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: SIMPLE, clientCertificate: /c.pem, privateKey: /k.pem}\n", 9, "spec.trafficPolicy.tls.clientCertificate", "for mode MUTUAL"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, sni: a.example}\n", 9, "spec.trafficPolicy.tls.sni", "applies to modes SIMPLE and MUTUAL only"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: DISABLE, insecureSkipVerify: true}\n", 9, "spec.trafficPolicy.tls.insecureSkipVerify", "applies to modes SIMPLE and MUTUAL only"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: 'a b'}\n", 9, "spec.trafficPolicy.tls.sni", "not a host name"),
        ("  host: a\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: ca.pem}\n", 9, "spec.trafficPolicy.tls.caCertificates", "absolute path"),
        ("  host: a\n  subsets:\n  - name: v1\n  - name: v1\n", 10, "spec.subsets[1].name", "defined twice"),
        ("  host: a\n  subsets:\n  - name: V1\n", 9, "spec.subsets[0].name", "not a valid subset name"),
        ("  host: a\n  trafficPolicy:\n    circuitBreaker: {simpleCb: {maxConnections: 1}}\n", 9, "spec.trafficPolicy.circuitBreaker", "write `outlierDetection`"),
    ];
    for (spec, line, field, msg) in cases {
        check(&format!("{DR_HEAD}{spec}"), *line, field, msg);
    }
}

#[test]
fn object_level_rules() {
    check(
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a]}\n",
        1,
        "apiVersion",
        "served as",
    );
    check("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", 2, "kind", "ConfigMap is not a kind Weft reads");
    check("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: Bad_Name}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n", 3, "metadata.name", "is not a valid name");
    check("kind: [", 2, "", "did not find expected node content");
    let twice = format!("{VS_HEAD}  hosts: [a]\n  http:\n  - route:\n    - destination: {{host: a}}\n---\n{VS_HEAD}  hosts: [b]\n  http:\n  - route:\n    - destination: {{host: b}}\n");
    let dir = std::env::temp_dir().join(format!("weft-twice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("twice.yaml"), twice).unwrap();
    let diags = weft_control_plane::istio::load_paths(std::slice::from_ref(&dir)).unwrap_err();
    assert!(
        diags[0].to_string().contains("twice.yaml:12: metadata.name: VirtualService prod/r is defined twice"),
        "{}",
        diags[0]
    );
    let _ = std::fs::remove_dir_all(dir);
}

const AP_HEAD: &str =
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: r\n  namespace: prod\nspec:\n";

#[test]
fn authorization_policy_rules() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("  action: CUSTOM\n", 7, "spec.action", "CUSTOM (external authorization) is not supported yet"),
        ("  action: MAYBE\n", 7, "spec.action", "\"MAYBE\" is not one of ALLOW, DENY, AUDIT, CUSTOM"),
        (
            "  rules:\n  - from:\n    - source: {remoteIpBlocks: ['10.0.0.0/8']}\n",
            9,
            "spec.rules[0].from[0].source.remoteIpBlocks",
            "not supported yet",
        ),
        (
            "  rules:\n  - from:\n    - source: {ipBlocks: ['10.0.0.0/99']}\n",
            9,
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "is not an IP or CIDR",
        ),
        (
            "  rules:\n  - from:\n    - source: {}\n",
            9,
            "spec.rules[0].from[0].source",
            "an empty source is not allowed",
        ),
        (
            "  rules:\n  - when:\n    - key: connection.sni\n      values: [x]\n",
            9,
            "spec.rules[0].when[0].key",
            "not supported yet",
        ),
        ("  rules:\n  - when:\n    - key: source.ip\n", 9, "spec.rules[0].when[0]", "needs values or notValues"),
        // Attacks on an ALLOW found by review: a source naming only empty unsupported
        // fields, an explicit empty `from`, an empty value; each would have matched anyone.
        (
            "  rules:\n  - from:\n    - source: {requestPrincipals: []}\n",
            9,
            "spec.rules[0].from[0].source",
            "an empty source is not allowed",
        ),
        (
            "  rules:\n  - from: []\n    to: [{operation: {paths: [/admin/*]}}]\n",
            8,
            "spec.rules[0].from",
            "`from` must not be empty",
        ),
        (
            "  rules:\n  - from:\n    - source: {principals: ['']}\n",
            9,
            "spec.rules[0].from[0].source.principals[0]",
            "must not be empty",
        ),
        (
            "  rules:\n  - to:\n    - operation: {ports: ['0']}\n",
            9,
            "spec.rules[0].to[0].operation.ports[0]",
            "is not a port number",
        ),
        (
            "  rules:\n  - from:\n    - source: {principal: [a]}\n",
            9,
            "spec.rules[0].from[0].source.principal",
            "unknown field `principal`",
        ),
    ];
    for (spec, line, field, msg) in cases {
        check(&format!("{AP_HEAD}{spec}"), *line, field, msg);
    }
}

const SC_HEAD: &str =
    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: r\n  namespace: prod\nspec:\n";

#[test]
fn sidecar_rules() {
    let ok = format!(
        "{SC_HEAD}  workloadSelector:\n    labels: {{app: a}}\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n"
    );
    load_str(Path::new("case.yaml"), &ok).unwrap();
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "  outboundTrafficPolicy:\n    mode: DENY_ALL\n",
            8,
            "spec.outboundTrafficPolicy.mode",
            "\"DENY_ALL\" is not one of REGISTRY_ONLY, ALLOW_ANY",
        ),
        ("  egress:\n  - hosts: [./*]\n", 7, "spec.egress", "not supported yet"),
        (
            "  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n    egressProxy: {host: egress}\n",
            9,
            "spec.outboundTrafficPolicy.egressProxy",
            "not supported yet",
        ),
        (
            "  outboundTrafficPolicy:\n    mod: REGISTRY_ONLY\n",
            8,
            "spec.outboundTrafficPolicy.mod",
            "unknown field `mod`, expected `mode` or `egressProxy`",
        ),
        // The networking API's selector says `labels` (the security API's says `matchLabels`).
        (
            "  workloadSelector:\n    matchLabels: {app: a}\n",
            8,
            "spec.workloadSelector.matchLabels",
            "unknown field `matchLabels`",
        ),
    ];
    for (body, line, field, msg) in cases {
        check(&format!("{SC_HEAD}{body}"), *line, field, msg);
    }
    // Istio's own invalid input: a Sidecar that configures nothing.
    check(&format!("{SC_HEAD}  egress: []\n"), 6, "spec", "sidecar: empty configuration provided");
    let root = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  workloadSelector:\n    labels: {app: a}\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    check(root, 5, "spec.workloadSelector", "the mesh-wide Sidecar (root namespace) cannot have a workloadSelector");
}

#[test]
fn a_workload_group_names_its_service_account_and_service() {
    const WG: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata:\n  name: orders\n  namespace: prod\nspec:\n";
    let ok = format!("{WG}  metadata:\n    labels: {{app: order-service, tier: backend}}\n  template:\n    serviceAccount: orders-sa\n");
    assert_eq!(load_str(Path::new("case.yaml"), &ok).unwrap().len(), 1);
    check(
        &format!("{WG}  metadata:\n    labels: {{app: order-service}}\n  template: {{}}\n"),
        9,
        "spec.template.serviceAccount",
        "required",
    );
    check(
        &format!("{WG}  template:\n    serviceAccount: orders-sa\n"),
        6,
        "spec.metadata.labels",
        "an `app` label is required",
    );
    check(
        &format!("{WG}  metadata:\n    labels: {{app: order-service}}\n  template:\n    serviceAccount: orders-sa\n    address: 10.0.0.1\n"),
        11,
        "spec.template.address",
        "not supported yet",
    );
    check(
        &format!("{WG}  metadata:\n    labels: {{app: o}}\n  template:\n    serviceAccount: Bad/Name\n"),
        10,
        "spec.template.serviceAccount",
        "not a valid service account name",
    );
}

#[test]
fn path_templates_are_refused_by_name_never_taken_literally() {
    let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: d\n  namespace: prod\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/admin/{**}\"]\n";
    check(ap, 11, "spec.rules[0].to[0].operation.paths[0]", "the {*} and {**} path templates are not supported yet");
}

/// A field Weft lacks, set to what leaving it out means, asks for nothing: accepted.
#[test]
fn fields_set_to_their_defaults_are_accepted() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: prod}\nspec:\n  hosts: [a]\n  gateways: [mesh, istio-system/ingress]\n  http:\n  - match:\n    - headers: {X-Tenant: {exact: a}}\n    route:\n    - destination: {host: a}\n    retries: {attempts: 2, retryRemoteLocalities: false}\n    corsPolicy: {}\n";
    weft_control_plane::istio::load_str(std::path::Path::new("d.yaml"), yaml).unwrap_or_else(|d| panic!("{d:#?}"));
}
