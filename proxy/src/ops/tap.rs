//! `weftctl tap`: a live stream of this sidecar's requests, as `linkerd viz tap` shows
//! them — the access-log line of each request that matches a filter, as it finishes,
//! whether or not the access log is on. Served on the admin listener (`/tap`, localhost
//! by default). A line is built only while someone is watching; a watcher that falls
//! behind loses lines, never slows a request.

use crate::http::body::{Body, BoxError};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{broadcast, mpsc};

/// Lines kept for a slow watcher before it starts losing them.
const BACKLOG: usize = 1024;
/// A tap ends after this many lines at most (`max` asks for fewer).
pub(crate) const MAX_LINES: usize = 10_000;

#[derive(Debug)]
pub struct Tap {
    lines: broadcast::Sender<Arc<str>>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap { lines: broadcast::channel(BACKLOG).0 }
    }
}

impl Tap {
    /// Whether anyone is watching (else no line is built for the tap).
    pub fn watching(&self) -> bool {
        self.lines.receiver_count() > 0
    }

    pub fn send(&self, line: &str) {
        let _ = self.lines.send(line.into());
    }

    /// A stream of the lines that match `filter`, `max` of them at most, as an NDJSON body.
    pub fn watch(&self, filter: Filter, max: usize) -> Body {
        let mut lines = self.lines.subscribe();
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < max.min(MAX_LINES) {
                let line = match lines.recv().await {
                    Ok(line) => line,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if filter.matches(&line) {
                    if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                        break; // the watcher left
                    }
                    sent += 1;
                }
            }
        });
        Lines(rx).boxed()
    }
}

/// What a tap shows: every field that is set must match the line.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// The method, exactly.
    pub method: Option<String>,
    /// Part of the authority.
    pub authority: Option<String>,
    /// The start of the path.
    pub path: Option<String>,
}

impl Filter {
    /// From `method=GET&authority=orders&path=/api&max=10`; returns the filter and `max`.
    pub(crate) fn from_query(query: &str) -> (Filter, usize) {
        let mut f = Filter::default();
        let mut max = 100;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::http::route::percent_decode(v);
            match k {
                "method" => f.method = Some(v),
                "authority" => f.authority = Some(v),
                "path" => f.path = Some(v),
                "max" => max = v.parse().unwrap_or(max),
                _ => {}
            }
        }
        (f, max)
    }

    /// Reads the line's JSON fields (the access log writes them escaped, one object per line).
    fn matches(&self, line: &str) -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { return false };
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        self.method.as_ref().is_none_or(|m| field("method") == *m)
            && self.authority.as_ref().is_none_or(|a| field("authority").contains(a.as_str()))
            && self.path.as_ref().is_none_or(|p| field("path").starts_with(p.as_str()))
    }
}

/// The tap's body: lines as they come.
struct Lines(mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_the_lines_fields() {
        let (f, max) = Filter::from_query("method=GET&path=%2Fapi&max=5");
        assert_eq!(max, 5);
        assert!(f.matches(r#"{"method":"GET","authority":"orders","path":"/api/orders"}"#));
        assert!(!f.matches(r#"{"method":"POST","authority":"orders","path":"/api/orders"}"#));
        assert!(!f.matches(r#"{"method":"GET","authority":"orders","path":"/health"}"#));
        // A path that only contains the text elsewhere in the line is not a match.
        assert!(!f.matches(r#"{"method":"GET","authority":"/api","path":"/x"}"#));
        assert!(!f.matches("not json"));
    }
}
