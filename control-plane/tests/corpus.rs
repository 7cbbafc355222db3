//! Real public Istio YAML (`../shared/istio-corpus`, with its MANIFEST.tsv): every file
//! Istio accepts loads unchanged, or — where it uses a feature Weft does not have — is
//! refused by that feature's name with its line; every file Istio refuses is refused here
//! too, with its line. Nothing is skipped: a file missing from the folder or the manifest
//! fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use weft_control_plane::istio::{load_str, Diagnostic};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio-corpus")
}

/// Files that Istio accepts and Weft refuses, each by the field it does not support.
/// The list only shrinks: a file here that starts loading fails the test (move it out).
const NOT_YET: &[(&str, &str)] = &[
    ("bookinfo-egress-rule-google-apis.yaml", "portLevelSettings"),
    ("istio-api-authz-custom-provider.yaml", "provider"),
    ("istio-api-dr-tcp-connection-pool.yaml", "tcpKeepalive"),
    ("istio-api-dr-zone-aware-failover.yaml", "zoneAwareLbSetting"),
    ("istio-api-peerauth-port-level-mtls.yaml", "portLevelMtls"),
    ("istio-api-sidecar-ingress-tls-peerauth.yaml", "ingress"),
    ("istio-api-sidecar-namespace-egress.yaml", "egress"),
    ("istio-api-vs-delegate-root.yaml", "delegate"),
    ("istio-api-vs-tcp-port-route.yaml", "tcp"),
    ("istio-api-vs-tls-sni-gateway.yaml", "tls"),
    ("istio-dataset-networking-v1beta1-sidecar.yaml", "egress"),
    ("istio-io-authz-ingress-remote-ipblocks.yaml", "remoteIpBlocks"),
    ("multicluster-expose-istiod-https.yaml", "portLevelSettings"),
];

struct Entry {
    file: String,
    category: String,
    docs: usize,
}

fn manifest() -> Vec<Entry> {
    let text =
        std::fs::read_to_string(corpus().join("MANIFEST.tsv")).expect("the shared Istio corpus beside the repository");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Entry { file: cols[0].to_string(), category: cols[3].to_string(), docs: cols[5].parse().unwrap_or(1) }
        })
        .collect()
}

fn load(file: &str) -> Result<usize, Vec<Diagnostic>> {
    let path = corpus().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    load_str(&path, &text).map(|r| r.len())
}

fn show(d: &[Diagnostic]) -> String {
    d.iter().map(|d| format!("\n  {d}")).collect()
}

#[test]
fn every_file_of_the_istio_corpus_loads_or_is_refused_by_name_with_its_line() {
    let entries = manifest();
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = entries.iter().map(|e| e.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "the manifest lists every file of the corpus");
    assert!(entries.len() >= 65, "{} files", entries.len());

    let not_yet: BTreeMap<&str, &str> = NOT_YET.iter().copied().collect();
    let mut failures = Vec::new();
    let (mut loaded, mut refused_invalid, mut refused_unsupported) = (0, 0, 0);
    for e in &entries {
        let result = load(&e.file);
        match (e.category.as_str(), result, not_yet.get(e.file.as_str())) {
            ("invalid", Ok(_), _) => failures.push(format!("{}: Istio refuses it, Weft loaded it", e.file)),
            ("invalid", Err(d), _) => {
                if d.iter().any(|d| d.line == 0) {
                    failures.push(format!("{}: refused without a line:{}", e.file, show(&d)));
                }
                refused_invalid += 1;
            }
            (_, Ok(n), None) => {
                if n != e.docs {
                    failures.push(format!("{}: {n} resources, the manifest says {} documents", e.file, e.docs));
                }
                loaded += 1;
            }
            (_, Ok(_), Some(_)) => failures.push(format!("{}: loads now; take it off NOT_YET", e.file)),
            (_, Err(d), None) => failures.push(format!("{}: Istio accepts it, Weft refused it:{}", e.file, show(&d))),
            (_, Err(d), Some(feature)) => {
                if !d.iter().all(|d| d.line > 0) || !d.iter().any(|d| d.to_string().contains(feature)) {
                    failures.push(format!(
                        "{}: expected a refusal naming {feature} with its line:{}",
                        e.file,
                        show(&d)
                    ));
                }
                refused_unsupported += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{loaded} files load, {refused_unsupported} refused by an unsupported feature's name, {refused_invalid} invalid ones refused"
    );
}
