//! The access log: one JSON line per request on stdout. Off by default, as in
//! Istio (`meshConfig.accessLogFile` is empty); `--access-log` or an Istio
//! `Telemetry` resource with `accessLogging` turns it on. A line is written by
//! hand into one pre-sized buffer (no map, no serializer per request) and
//! handed to its own thread, so a slow terminal or pipe never stalls a
//! request. When the writer falls behind, lines are dropped and counted,
//! never queued without bound.

use prometheus::IntCounter;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::OnceLock;
use std::time::Duration;
use weft_model::ProxyConfig;

/// Lines buffered before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// The access log on stdout. Its writer thread starts with the first line, so
/// a sidecar that never logs has none.
#[derive(Debug)]
pub struct AccessLog {
    /// The sidecar's own default (`--access-log`), when the config does not say.
    default_on: bool,
    writer: OnceLock<Option<SyncSender<String>>>,
    dropped: IntCounter,
}

impl AccessLog {
    pub fn new(default_on: bool, dropped: IntCounter) -> Self {
        AccessLog { default_on, writer: OnceLock::new(), dropped }
    }

    /// Whether requests under `config` are logged: its Telemetry setting, else the sidecar's default.
    pub(crate) fn enabled_for(&self, config: &ProxyConfig) -> bool {
        config.access_log.unwrap_or(self.default_on)
    }

    /// Queues a finished line ([`Line::finish`]).
    pub fn write(&self, line: String) {
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE);
            match std::thread::Builder::new()
                .name("weft-access-log".into())
                .spawn(move || write_loop(rx, std::io::stdout()))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!("access log disabled: cannot start its thread: {e}");
                    None
                }
            }
        });
        match writer {
            Some(tx) if tx.try_send(line).is_ok() => {}
            _ => self.dropped.inc(),
        }
    }
}

/// Batches lines and flushes whenever the queue runs dry.
fn write_loop(rx: Receiver<String>, out: std::io::Stdout) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out.lock());
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = writeln!(out, "{line}");
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

/// One line as a JSON object, fields in the order they are added.
#[derive(Debug)]
pub(crate) struct Line(String);

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    pub(crate) fn new() -> Self {
        let mut s = String::with_capacity(384);
        s.push('{');
        Line(s)
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    /// A string, escaped (values come from the network).
    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        escape_into(&mut self.0, value);
        self
    }

    /// A string or `null`.
    pub(crate) fn opt(mut self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key);
                self.0.push_str("null");
                self
            }
        }
    }

    /// A socket address (its text has nothing to escape) or `null`.
    pub(crate) fn addr(mut self, key: &str, value: Option<std::net::SocketAddr>) -> Self {
        self.key(key);
        match value {
            Some(a) => {
                let _ = write!(self.0, "\"{a}\"");
            }
            None => self.0.push_str("null"),
        }
        self
    }

    pub(crate) fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.0, "{value}");
        self
    }

    /// Milliseconds with microsecond precision (`1.250`).
    pub(crate) fn millis(mut self, key: &str, d: Duration) -> Self {
        self.key(key);
        let us = d.as_micros();
        let _ = write!(self.0, "{}.{:03}", us / 1000, us % 1000);
        self
    }

    pub(crate) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A JSON string: `"` and `\` escaped, control characters as `\uXXXX`.
fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_whatever_the_values() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}ü😀\"}{\"x\":1";
        let line = Line::new()
            .str("path", nasty)
            .opt("route", None)
            .opt("cluster", Some("outbound|80||a.b.svc.cluster.local"))
            .addr("upstream", Some("[::1]:8080".parse().unwrap()))
            .num("status", 200)
            .millis("duration_ms", Duration::from_micros(1_250))
            .finish();
        assert!(!line.contains('\n'), "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], nasty);
        assert!(v["route"].is_null());
        assert_eq!(v["upstream"], "[::1]:8080");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"].as_f64(), Some(1.25));
        assert_eq!(v.as_object().unwrap().len(), 6, "no field injected: {line}");
    }
}
