//! What every resource kind's checks share: the problem list, Istio's name rules,
//! and how a field Weft lacks is told from one left at its default.

use crate::istio::types::{Duration, Unsupported};

pub(super) type Problems = Vec<(String, String)>;

pub(super) const NOT_YET: &str = "not supported yet by Weft";

/// A field Weft lacks is refused, unless it is set to what leaving it out means
/// (`false`, `null`, empty): then it asks for nothing Weft does not do.
pub(super) fn unsupported(p: &mut Problems, path: String, value: &Unsupported) {
    if is_set(value) {
        p.push((path, NOT_YET.into()));
    }
}

/// Whether a field is present with something other than what leaving it out means.
pub(super) fn is_set(value: &Unsupported) -> bool {
    use serde_yaml::Value;
    value.as_ref().is_some_and(|v| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        _ => true,
    })
}

/// Istio's minimum for most durations: 1ms.
pub(super) fn at_least_1ms(p: &mut Problems, path: String, value: &Option<Duration>) {
    let min = std::time::Duration::from_millis(1);
    if let Some(d) = value.filter(|d| d.get() < min) {
        p.push((path, format!("{:?} is shorter than the minimum 1ms", weft_model::duration::format(d.get()))));
    }
}

pub(super) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 1123 names: lowercase alphanumerics and '-', and '.' when `dots`.
pub(super) fn is_dns1123(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// `exportTo` entries: `.`, `*` or a namespace.
pub(super) fn export_to(p: &mut Problems, export_to: &[String]) {
    for (i, e) in export_to.iter().enumerate() {
        if e != "." && e != "*" && !is_dns1123(e, 63, false) {
            p.push((format!("spec.exportTo[{i}]"), format!("{e:?} is not `.`, `*` or a namespace")));
        }
    }
}
