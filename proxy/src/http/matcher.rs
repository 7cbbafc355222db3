//! String matchers compiled once per config (Istio's `StringMatch`): exact, prefix,
//! RE2 full-match regex, or presence. Shared by route matching and CORS origins.

use regex::Regex;
use weft_model as model;

/// A string matcher compiled from [`model::StringMatch`].
#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    /// Anchored `^(?:...)$`, so `is_match` is RE2's FullMatch.
    Regex(Regex),
    Present,
}

impl StrMatch {
    /// Compiles a matcher; `None` of exact/prefix/regex means presence.
    pub fn compile(m: &model::StringMatch) -> Result<Self, regex::Error> {
        Ok(match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), _, _) => StrMatch::Exact(e.clone()),
            (_, Some(p), _) => StrMatch::Prefix(p.clone()),
            (_, _, Some(r)) => StrMatch::Regex(Regex::new(&format!("^(?:{r})$"))?),
            _ => StrMatch::Present,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value == e,
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(value),
            StrMatch::Present => true,
        }
    }

    pub(crate) fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => {
                value.len() >= p.len() && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            other => other.matches(value),
        }
    }
}
