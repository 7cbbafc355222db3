//! Telemetry: the access log is the one part Weft reads.

use super::common::{unsupported, Problems, NOT_YET};
use crate::istio::types::*;
use crate::istio::Resource;

pub(super) fn check(t: &Telemetry, r: &Resource, p: &mut Problems) {
    let Telemetry { selector, target_ref, target_refs, tracing, metrics, access_logging } = t;
    for (field, v) in
        [("targetRef", target_ref), ("targetRefs", target_refs), ("tracing", tracing), ("metrics", metrics)]
    {
        unsupported(p, format!("spec.{field}"), v);
    }
    if selector.is_some() && r.namespace() == crate::istio::ROOT_NAMESPACE {
        p.push(("spec.selector".into(), "a mesh-wide Telemetry (root namespace) cannot have a selector".into()));
    }
    for (i, entry) in access_logging.iter().enumerate() {
        let AccessLogging { providers, disabled: _, filter, match_ } = entry;
        let at = format!("spec.accessLogging[{i}]");
        unsupported(p, format!("{at}.filter"), filter);
        unsupported(p, format!("{at}.match"), match_);
        for (j, ProviderRef { name }) in providers.iter().enumerate() {
            if name != ENVOY_PROVIDER {
                p.push((
                    format!("{at}.providers[{j}].name"),
                    format!(
                        "{name:?} is {NOT_YET} (Weft has `envoy`: a JSON line per request on the sidecar's stdout)"
                    ),
                ));
            }
        }
    }
}
