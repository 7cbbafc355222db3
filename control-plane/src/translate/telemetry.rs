//! Telemetry → whether the workload writes an access log.

use super::common::{by_precedence, several};
use crate::istio::types::{AccessLogging, ProviderRef, Telemetry, ENVOY_PROVIDER};
use crate::istio::{Resource, Spec};
use weft_model as model;

/// Whether `workload` writes an access log. Istio's inheritance: the most
/// specific level whose Telemetry sets `accessLogging` decides (the workload's
/// selector, then its namespace, then the root namespace), and replaces the
/// levels above it. Within it, the entries for Weft's provider (`envoy`, or no
/// provider named: the default one) turn it on unless one says `disabled:
/// true`. `None`: no Telemetry says (the sidecar's default, off as in Istio).
pub fn access_log(resources: &[Resource], workload: &model::Workload, warnings: &mut Vec<String>) -> Option<bool> {
    let levels = by_precedence(
        resources,
        workload,
        |s| match s {
            Spec::Telemetry(t) => Some(t),
            _ => None,
        },
        |t| t.selector.as_ref().map(|s| &s.match_labels),
    );
    for level in levels {
        // Telemetry that does not set `accessLogging` leaves it to the level above.
        let setting: Vec<_> = level.iter().filter(|(_, t)| !t.access_logging.is_empty()).collect();
        let Some((_, first)) = setting.first() else { continue };
        if let Some(w) = several(
            workload,
            setting.iter().map(|(r, _)| *r),
            "gets accessLogging from several Telemetry resources",
            "Istio: undefined",
        ) {
            warnings.push(w);
        }
        // The selector chose the level; the rest is refused by validation.
        let Telemetry { selector: _, target_ref: _, target_refs: _, tracing: _, metrics: _, access_logging } = first;
        let ours = access_logging.iter().filter(|AccessLogging { providers, disabled: _, filter: _, match_: _ }| {
            providers.is_empty() || providers.iter().any(|ProviderRef { name }| name == ENVOY_PROVIDER)
        });
        let mut on = None;
        for entry in ours {
            on = Some(on.unwrap_or(true) && entry.disabled != Some(true));
        }
        return on;
    }
    None
}
