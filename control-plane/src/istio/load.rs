//! Reading Istio resources from multi-document YAML files and folders.

use super::lines::LineIndex;
use super::resource::{Diagnostic, Kind, Resource, Source, Spec};
use super::types::Object;
use super::validate;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Reads every `.yaml`/`.yml` file under `paths` (files or folders, sorted).
/// All problems of all files are returned together; nothing is returned on
/// any error, so a caller applies all or nothing.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Resource>, Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut diags);
    }
    let mut resources = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match load_str(&file, &text) {
                Ok(r) => resources.extend(r),
                Err(d) => diags.extend(d),
            },
            Err(e) => diags.push(Diagnostic { file, line: 0, field: String::new(), message: e.to_string() }),
        }
    }
    if let Err(d) = validate::unique(&resources) {
        diags.extend(d);
    }
    if diags.is_empty() {
        Ok(resources)
    } else {
        Err(diags)
    }
}

fn collect_files(p: &Path, files: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                diags.push(Diagnostic { file: p.to_path_buf(), line: 0, field: String::new(), message: e.to_string() });
                return;
            }
        };
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                collect_files(&e, files, diags);
            }
        }
    } else if p.exists() {
        files.push(p.to_path_buf());
    } else {
        diags.push(Diagnostic {
            file: p.to_path_buf(),
            line: 0,
            field: String::new(),
            message: "no such file or folder".into(),
        });
    }
}

/// Splits a YAML stream at `---` lines: (first line number, text) per document.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() || line.trim_end() == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // Keep line numbers: the separator line becomes an empty line.
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, d)| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .collect()
}

/// Parses and validates every document of one file's text.
pub fn load_str(file: &Path, text: &str) -> Result<Vec<Resource>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for (first_line, doc) in documents(text) {
        match load_doc(file, first_line, &doc) {
            Ok(r) => out.push(r),
            Err(d) => diags.extend(d),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn load_doc(file: &Path, first_line: usize, doc: &str) -> Result<Resource, Vec<Diagnostic>> {
    let here = |line: usize, field: &str, message: String| Diagnostic {
        file: file.to_path_buf(),
        line: first_line + line.saturating_sub(1),
        field: field.to_string(),
        message,
    };
    let head: serde_yaml::Value =
        serde_yaml::from_str(doc).map_err(|e| vec![here(yaml_line(&e), "", strip_location(&e.to_string()))])?;
    let text_of = |k: &str| head.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(api_version), Some(kind_name)) = (text_of("apiVersion"), text_of("kind")) else {
        return Err(vec![here(1, "", "not a Kubernetes object: apiVersion and kind are required".into())]);
    };
    let index = LineIndex::build(doc, first_line);
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == kind_name) else {
        return Err(vec![Diagnostic::at(
            file,
            &index,
            first_line,
            "kind",
            format!("{kind_name} is not a kind Weft reads ({})", Kind::ALL.map(Kind::name).join(", ")),
        )]);
    };
    if !kind.api_versions().contains(&api_version.as_str()) {
        return Err(vec![Diagnostic::at(
            file,
            &index,
            first_line,
            "apiVersion",
            format!("{kind} is served as {}, not {api_version}", kind.api_versions().join(", ")),
        )]);
    }
    let parsed = match kind {
        Kind::VirtualService => typed(file, first_line, doc).map(|o| (o.metadata, Spec::VirtualService(o.spec))),
        Kind::DestinationRule => typed(file, first_line, doc).map(|o| (o.metadata, Spec::DestinationRule(o.spec))),
        Kind::AuthorizationPolicy => {
            typed(file, first_line, doc).map(|o| (o.metadata, Spec::AuthorizationPolicy(o.spec)))
        }
        Kind::Sidecar => typed(file, first_line, doc).map(|o| (o.metadata, Spec::Sidecar(o.spec))),
        Kind::WorkloadGroup => typed(file, first_line, doc).map(|o| (o.metadata, Spec::WorkloadGroup(o.spec))),
        Kind::PeerAuthentication => {
            typed(file, first_line, doc).map(|o| (o.metadata, Spec::PeerAuthentication(o.spec)))
        }
        Kind::Telemetry => typed(file, first_line, doc).map(|o| (o.metadata, Spec::Telemetry(o.spec))),
        Kind::ServiceEntry => typed(file, first_line, doc).map(|o| (o.metadata, Spec::ServiceEntry(o.spec))),
        Kind::Gateway => typed(file, first_line, doc).map(|o| (o.metadata, Spec::Gateway(o.spec))),
        Kind::RequestAuthentication => {
            typed(file, first_line, doc).map(|o| (o.metadata, Spec::RequestAuthentication(o.spec)))
        }
    };
    let (metadata, spec) = parsed.map_err(|d| vec![d])?;
    let resource = Resource {
        api_version,
        kind,
        metadata,
        spec,
        source: Source { file: file.to_path_buf(), line: first_line },
        created: None,
    };
    let problems = validate::resource(&resource);
    if problems.is_empty() {
        Ok(resource)
    } else {
        Err(problems.into_iter().map(|(field, msg)| Diagnostic::at(file, &index, first_line, &field, msg)).collect())
    }
}

/// Deserializes one document into its typed form; the error names the field path and line.
fn typed<S: DeserializeOwned>(file: &Path, first_line: usize, doc: &str) -> Result<Object<S>, Diagnostic> {
    let de = serde_yaml::Deserializer::from_str(doc);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.inner();
        let mut message = strip_location(&inner.to_string());
        // A bad value (a duration, an enum) is on its field's line; serde_yaml places checks
        // that run after the scalar is read at the enclosing mapping. An unknown field's
        // path is its parent's, so its own position is serde_yaml's.
        let line = match message.starts_with("unknown field") {
            false => LineIndex::build(doc, first_line).line(&field),
            true => None,
        }
        .unwrap_or(first_line + yaml_line(inner).saturating_sub(1));
        if let Some(hint) = hint_for(&message) {
            message = hint;
        }
        Diagnostic { file: file.to_path_buf(), line, field: if field == "." { String::new() } else { field }, message }
    })
}

fn yaml_line(e: &serde_yaml::Error) -> usize {
    e.location().map_or(1, |l| l.line())
}

/// serde_yaml prefixes the field path and appends " at line L column C"; the
/// diagnostic carries both itself.
fn strip_location(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// Better words for unknown fields people really write.
fn hint_for(message: &str) -> Option<String> {
    if message.starts_with("unknown field `circuitBreaker`") {
        return Some(
            "unknown field `circuitBreaker`: Istio has no such field (it was the pre-1.0 DestinationPolicy API, \
             removed in 2018); write `outlierDetection` (consecutive5xxErrors, interval, baseEjectionTime, \
             maxEjectionPercent) and `connectionPool` instead"
                .into(),
        );
    }
    // serde: "unknown variant `X`, expected one of `A`, `B`" (or "expected `A` or `B`").
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once("`, expected ")?;
        let expected = expected.strip_prefix("one of ").unwrap_or(expected).replace("` or `", ", ").replace("`", "");
        return Some(format!("{value:?} is not one of {expected}"));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return Some(format!("unknown field {rest}; Istio has no such field here"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_line_numbers() {
        let docs = documents("# c\n---\na: 1\n---\n\nb: 2\n...\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 3);
        assert_eq!(docs[1].0, 5);
    }
}
