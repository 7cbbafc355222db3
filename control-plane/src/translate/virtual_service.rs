//! VirtualService → the routes of each host: matches, weighted destinations,
//! timeouts, retries, faults, rewrites and header operations.
//!
//! Size: every field of an HTTP route destructured and translated.

use super::common::{duration, visible, Translator};
use crate::istio::types::{
    CorsPolicy, Destination, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpBody, HttpDirectResponse,
    HttpFault, HttpMatchRequest, HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
    HttpRouteDestination, Percent, PortSelector, RegexRewrite, StringMatch, VirtualService,
};
use crate::istio::{Resource, Spec};
use crate::registry::{host_matches, resolve_host, ServiceView};
use std::collections::BTreeMap;
use weft_model as model;

impl<'a> Translator<'a> {
    /// The VirtualService for `fqdn` visible to this workload. With several, the oldest
    /// wins (Istio's creationTimestamp; then namespace/name) and the rest are reported.
    pub(super) fn virtual_service_for(&mut self, fqdn: &str) -> Option<(&'a VirtualService, &'a str)> {
        let mut found: Vec<(&'a Resource, &'a VirtualService)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(vs) => Some((r, vs)),
                _ => None,
            })
            .filter(|(r, vs)| {
                let VirtualService { hosts, gateways, http: _, tls: _, tcp: _, export_to } = vs;
                (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
                    && visible(export_to, r.namespace(), &self.workload.namespace)
                    && hosts.iter().any(|h| host_matches(&resolve_host(h, r.namespace()), fqdn))
            })
            .collect();
        found.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
        if found.len() > 1 {
            let names: Vec<String> = found.iter().map(|(r, _)| format!("{}/{}", r.namespace(), r.name())).collect();
            self.warnings.push(format!(
                "host {fqdn} is claimed by several VirtualServices ({}); {} is used (Istio IST0109)",
                names.join(", "),
                names[0]
            ));
        }
        found.first().map(|(r, vs)| (*vs, r.namespace()))
    }

    /// A host without a VirtualService: everything to its one cluster.
    pub(super) fn default_route(&mut self, svc: &ServiceView<'_>) -> model::Route {
        self.route_to(&svc.fqdn(), svc.port)
    }

    /// Everything to the one cluster of `fqdn`:`port`.
    pub(super) fn route_to(&mut self, fqdn: &str, port: u16) -> model::Route {
        let cluster = self.cluster(fqdn, port, None);
        model::Route {
            name: Some("default".into()),
            matches: Vec::new(),
            route: vec![model::Destination { cluster, weight: 100, headers: None, authority: None }],
            redirect: None,
            direct_response: None,
            mirrors: Vec::new(),
            cors: None,
            timeout: None,
            retries: None,
            fault: None,
            headers: None,
            rewrite: None,
        }
    }

    pub(super) fn routes(&mut self, vs: &'a VirtualService, vs_ns: &str, port: u16) -> Vec<model::Route> {
        self.routes_on(vs, vs_ns, &[port])
    }

    /// A gateway's routes from `vs`: match entries for its servers' `ports` and its Gateways.
    pub(super) fn gateway_routes(&mut self, vs: &'a VirtualService, vs_ns: &str, ports: &[u16]) -> Vec<model::Route> {
        self.routes_on(vs, vs_ns, ports)
    }

    fn routes_on(&mut self, vs: &'a VirtualService, vs_ns: &str, ports: &[u16]) -> Vec<model::Route> {
        // `tls` and `tcp` are refused by validation; hosts, gateways and exportTo chose this VirtualService.
        let VirtualService { hosts: _, gateways: _, http, tls: _, tcp: _, export_to: _ } = vs;
        let mut out = Vec::new();
        for (i, rule) in http.iter().enumerate() {
            let selected: Vec<model::Match> =
                rule.matches.iter().filter(|m| self.selects(m, ports, vs_ns)).map(translate_match).collect();
            if !rule.matches.is_empty() && selected.is_empty() {
                continue; // Every match entry is for other workloads or ports.
            }
            // A selected entry with only config-time selectors (sourceLabels, port, …) matches
            // every request: the rule is a catch-all, as in Istio (never an empty match the
            // sidecar would refuse).
            let catch_all = selected.is_empty() || selected.iter().any(|m| *m == model::Match::default());
            let matches = if catch_all { Vec::new() } else { selected };
            out.push(self.route(i, rule, matches, vs_ns));
            if catch_all {
                break; // Later rules are unreachable.
            }
        }
        out
    }

    /// Config-time selectors: sourceLabels, sourceNamespace, port (one of `ports`: a sidecar's
    /// service port, a gateway's server ports), gateways (this sidecar's `mesh`, or one of
    /// this gateway workload's Gateways, named from the VirtualService's namespace `vs_ns`).
    fn selects(&self, m: &HttpMatchRequest, ports: &[u16], vs_ns: &str) -> bool {
        let HttpMatchRequest {
            source_labels,
            source_namespace,
            port: match_port,
            gateways,
            // The request-time half, translated by `translate_match`:
            name: _,
            uri: _,
            scheme: _,
            method: _,
            authority: _,
            headers: _,
            query_params: _,
            ignore_uri_case: _,
            without_headers: _,
            stat_prefix: _,
        } = m;
        let labels_ok = source_labels.iter().all(|(k, v)| self.workload.labels.get(k) == Some(v));
        let ns_ok = source_namespace.as_deref().is_none_or(|ns| ns == self.workload.namespace);
        let port_ok = match_port.is_none_or(|p| ports.iter().any(|&port| p == u32::from(port)));
        // A match entry naming gateways applies to sidecars only when `mesh` is one of them,
        // to a gateway only when it names one of its Gateways.
        let bound = gateways.is_empty()
            || match self.gateways.is_empty() {
                true => gateways.iter().any(|g| g == "mesh"),
                false => gateways.iter().any(|g| self.names_our_gateway(g, vs_ns)),
            };
        labels_ok && ns_ok && port_ok && bound
    }

    fn route(&mut self, index: usize, rule: &HttpRoute, matches: Vec<model::Match>, vs_ns: &str) -> model::Route {
        let HttpRoute {
            name,
            matches: _, // translated by the caller
            route,
            redirect,
            direct_response,
            delegate: _, // refused by validation (not supported yet)
            mirror,
            mirrors,
            mirror_percentage,
            mirror_percent,
            cors_policy,
            rewrite,
            timeout,
            retries,
            fault,
            headers: route_headers,
        } = rule;
        let rule_name = name.clone().unwrap_or_else(|| format!("route-{index}"));
        let mut destinations = Vec::new();
        for HttpRouteDestination { destination, weight, headers: destination_headers } in route {
            let cluster = self.destination_cluster(&rule_name, destination, vs_ns);
            destinations.push(model::Destination {
                cluster,
                weight: weight.unwrap_or(0).max(0) as u32,
                headers: destination_headers.as_ref().map(|h| headers(h).0),
                authority: destination_headers.as_ref().and_then(|h| headers(h).1),
            });
        }
        let (route_headers, header_authority) =
            route_headers.as_ref().map(headers).map_or((None, None), |(h, a)| (Some(h), a));
        let rewrite = match (rewrite, header_authority) {
            (None, None) => None,
            (None, authority) => Some(model::Rewrite { uri: None, authority, uri_regex: None }),
            (Some(HttpRewrite { uri, authority, uri_regex_rewrite }), header_authority) => Some(model::Rewrite {
                uri: uri.clone(),
                authority: authority.clone().or(header_authority),
                uri_regex: uri_regex_rewrite.as_ref().map(|RegexRewrite { pattern, rewrite }| model::RegexRewrite {
                    pattern: pattern.clone(),
                    substitution: rewrite.clone(),
                }),
            }),
        };
        // `mirror` with its percentage (else the deprecated integer one, else 100), or `mirrors`.
        let single = mirror.as_ref().map(|d| {
            let percentage = match (mirror_percentage, mirror_percent) {
                (Some(Percent { value }), _) => *value,
                (None, Some(p)) => f64::from(*p),
                (None, None) => 100.0,
            };
            (d, percentage)
        });
        let listed = mirrors.iter().map(|HttpMirrorPolicy { destination, percentage }| {
            (destination, percentage.as_ref().map_or(100.0, |p| p.value))
        });
        // A route that answers itself forwards nothing to copy: Istio accepts its mirror, Envoy never uses it.
        let copies: Vec<_> = single.into_iter().chain(listed).collect();
        if route.is_empty() && !copies.is_empty() {
            self.warnings.push(format!(
                "route {rule_name} answers itself (redirect or directResponse): its mirror is never used"
            ));
        }
        let mirrors = copies
            .into_iter()
            .filter(|_| !route.is_empty())
            .map(|(d, percentage)| model::Mirror {
                cluster: self.destination_cluster(&rule_name, d, vs_ns),
                percentage,
            })
            .collect();
        model::Route {
            name: Some(rule_name),
            matches,
            route: destinations,
            redirect: redirect.as_ref().map(translate_redirect),
            direct_response: direct_response.as_ref().map(translate_direct_response),
            mirrors,
            cors: cors_policy.as_ref().map(translate_cors),
            timeout: duration(timeout),
            retries: retries.as_ref().map(retry),
            fault: fault.as_ref().and_then(translate_fault),
            headers: route_headers.filter(|h| *h != model::Headers::default()),
            rewrite,
        }
    }
}

impl Translator<'_> {
    /// The cluster a route or mirror destination names; a host without instances is reported.
    fn destination_cluster(&mut self, rule_name: &str, destination: &Destination, vs_ns: &str) -> String {
        let Destination { host, subset, port } = destination;
        let fqdn = resolve_host(host, vs_ns);
        let entry_port = |t: &mut Self| t.service_entry_for(&fqdn).map(|e| e.port.number as u16);
        let port = match (port, self.registry.service(&fqdn)) {
            (Some(PortSelector { number }), _) => *number as u16,
            (None, Some(s)) => match self.listener_port {
                Some(p) if s.other_http_ports().contains(&p) => p,
                _ => s.port,
            },
            (None, None) => entry_port(self).unwrap_or(80),
        };
        if self.registry.service(&fqdn).is_none() && entry_port(self).is_none() {
            self.warnings.push(format!("route {rule_name} sends traffic to {fqdn}, which has no registered instances"));
        }
        self.cluster(&fqdn, port, subset.as_deref())
    }
}

fn translate_redirect(r: &HttpRedirect) -> model::Redirect {
    let HttpRedirect { uri, prefix_rewrite, authority, port, derive_port, scheme, redirect_code } = r;
    // Validation allows only these two names, and not both with `port`.
    let derive_port = match derive_port.as_deref() {
        Some("FROM_REQUEST_PORT") => Some(model::DerivePort::FromRequestPort),
        Some(_) => Some(model::DerivePort::FromProtocolDefault),
        None => None,
    };
    model::Redirect {
        uri: uri.clone(),
        prefix_rewrite: prefix_rewrite.clone(),
        authority: authority.clone(),
        port: port.map(|n| n as u16),
        derive_port,
        scheme: scheme.clone(),
        code: redirect_code.map_or(301, |c| c as u16),
    }
}

fn translate_direct_response(d: &HttpDirectResponse) -> model::DirectResponse {
    let HttpDirectResponse { status, body } = d;
    let body = body
        .as_ref()
        .filter(|HttpBody { string, bytes }| string.is_some() || bytes.is_some())
        .map(|HttpBody { string, bytes }| model::DirectBody { string: string.clone(), bytes: bytes.clone() });
    model::DirectResponse { status: *status as u16, body }
}

fn translate_cors(c: &CorsPolicy) -> model::Cors {
    let CorsPolicy {
        allow_origins,
        allow_origin,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        unmatched_preflights,
        allow_private_network: _, // refused by validation
    } = c;
    // The deprecated `allowOrigin` strings are exact origins (`*` allows every one).
    let deprecated =
        allow_origin.iter().map(|o| model::StringMatch { exact: Some(o.clone()), prefix: None, regex: None });
    model::Cors {
        allow_origins: allow_origins.iter().map(string_match).chain(deprecated).collect(),
        allow_methods: allow_methods.clone(),
        allow_headers: allow_headers.clone(),
        expose_headers: expose_headers.clone(),
        max_age: duration(max_age),
        allow_credentials: allow_credentials.unwrap_or(false),
        forward_unmatched_preflights: unmatched_preflights.as_deref() != Some("IGNORE"),
    }
}

fn string_match(m: &StringMatch) -> model::StringMatch {
    let StringMatch { exact, prefix, regex } = m;
    model::StringMatch { exact: exact.clone(), prefix: prefix.clone(), regex: regex.clone() }
}

/// The request-time half of a match entry (the config-time half is [`Translator::selects`]).
fn translate_match(m: &HttpMatchRequest) -> model::Match {
    let HttpMatchRequest {
        name,
        uri,
        scheme: _, // refused by validation
        method,
        authority,
        headers,
        // Config-time selectors, applied by `selects` and `virtual_service_for`:
        port: _,
        source_labels: _,
        gateways: _,
        source_namespace: _,
        query_params,
        ignore_uri_case,
        without_headers,
        stat_prefix: _, // refused by validation
    } = m;
    // Istio ignores these keys under `headers`: they are pseudo-headers matched elsewhere.
    let header_map = |h: &BTreeMap<String, StringMatch>| {
        h.iter()
            .filter(|(k, _)| !["uri", "scheme", "method", "authority"].contains(&k.as_str()))
            .map(|(k, v)| (k.to_ascii_lowercase(), string_match(v)))
            .collect()
    };
    model::Match {
        name: name.clone(),
        uri: uri.as_ref().map(string_match),
        ignore_uri_case: ignore_uri_case.unwrap_or(false),
        method: method.as_ref().map(string_match),
        authority: authority.as_ref().map(string_match),
        headers: header_map(headers),
        without_headers: header_map(without_headers),
        query_params: query_params.iter().map(|(k, v)| (k.clone(), string_match(v))).collect(),
    }
}

fn retry(r: &HttpRetry) -> model::Retry {
    let HttpRetry {
        attempts,
        per_try_timeout,
        retry_on: conditions,
        retry_remote_localities,
        retry_ignore_previous_hosts,
        backoff,
    } = r;
    if *attempts <= 0 {
        return model::Retry {
            attempts: 0,
            per_try_timeout: None,
            retry_on: vec![],
            retriable_status_codes: vec![],
            backoff: None,
            previous_hosts: false,
            remote_localities: false,
        };
    }
    let mut retry_on = Vec::new();
    let mut codes = Vec::new();
    for cond in conditions.as_deref().unwrap_or("").split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if let Ok(code) = cond.parse::<u16>() {
            codes.push(code);
            if !retry_on.contains(&model::RetryOn::RetriableStatusCodes) {
                retry_on.push(model::RetryOn::RetriableStatusCodes);
            }
        } else if let Ok(c) = serde_json::from_value::<model::RetryOn>(serde_json::Value::String(cond.into())) {
            if !retry_on.contains(&c) {
                retry_on.push(c);
            }
        }
    }
    model::Retry {
        attempts: *attempts as u32,
        per_try_timeout: duration(per_try_timeout),
        retry_on,
        retriable_status_codes: codes,
        backoff: duration(backoff),
        previous_hosts: *retry_ignore_previous_hosts == Some(false),
        remote_localities: *retry_remote_localities == Some(true),
    }
}

fn translate_fault(f: &HttpFault) -> Option<model::Fault> {
    let HttpFault { delay, abort } = f;
    let percent = |p: &Option<Percent>| p.as_ref().map(|Percent { value }| *value);
    let delay = delay.as_ref().and_then(|d| {
        let FaultDelay { fixed_delay, exponential_delay: _, percentage, percent: old_percent } = d;
        Some(model::FaultDelay {
            fixed_delay: duration(fixed_delay)?,
            // `percentage` wins; the deprecated int `percent` is the fallback (default 0).
            percentage: percent(percentage).unwrap_or_else(|| f64::from(old_percent.unwrap_or(0))),
        })
    });
    let abort = abort.as_ref().and_then(|a| {
        // gRPC and HTTP/2 aborts are refused by validation.
        let FaultAbort { http_status, grpc_status: _, http2_error: _, percentage } = a;
        Some(model::FaultAbort { http_status: (*http_status)? as u16, percentage: percent(percentage).unwrap_or(0.0) })
    });
    (delay.is_some() || abort.is_some()).then_some(model::Fault { delay, abort })
}

/// Header operations; `host`/`:authority` in `set`/`add` become an authority rewrite.
fn headers(h: &Headers) -> (model::Headers, Option<String>) {
    let Headers { request, response } = h;
    let mut authority = None;
    let mut ops = |o: &Option<HeaderOperations>, request: bool| -> model::HeaderOps {
        let Some(HeaderOperations { set, add, remove }) = o else { return model::HeaderOps::default() };
        let mut take = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(k, v)| {
                    let is_authority = k.eq_ignore_ascii_case("host") || k.as_str() == ":authority";
                    if is_authority && request {
                        authority = Some((*v).clone());
                    }
                    !is_authority && !k.starts_with(':')
                })
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        model::HeaderOps {
            set: take(set),
            add: take(add),
            remove: remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
        }
    };
    let request = ops(request, true);
    let response = ops(response, false);
    (model::Headers { request, response }, authority)
}
