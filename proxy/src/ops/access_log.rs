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
    let put = |out: &mut std::io::BufWriter<_>, line: String| {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
    };
    while let Ok(line) = rx.recv() {
        put(&mut out, line);
        loop {
            match rx.try_recv() {
                Ok(line) => put(&mut out, line),
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
    /// Room for a typical line (about 450 bytes with a trace context): one allocation.
    const CAPACITY: usize = 640;

    pub(crate) fn new() -> Self {
        let mut s = String::with_capacity(Self::CAPACITY);
        s.push('{');
        Line(s)
    }

    // Inlined with the callers' literal keys, so their copies are a few moves, not memcpy calls.
    #[inline(always)]
    fn key(&mut self, key: &str) {
        self.0.push_str(if self.0.len() > 1 { ",\"" } else { "\"" });
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    /// A string, escaped (values come from the network).
    #[inline]
    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        escape_into(&mut self.0, value);
        self
    }

    /// A string or `null`.
    #[inline]
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
            Some(std::net::SocketAddr::V4(a)) => {
                self.0.push('"');
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.0.push('.');
                    }
                    push_decimal(&mut self.0, u64::from(octet));
                }
                self.0.push(':');
                push_decimal(&mut self.0, u64::from(a.port()));
                self.0.push('"');
            }
            Some(a) => {
                let _ = write!(self.0, "\"{a}\"");
            }
            None => self.0.push_str("null"),
        }
        self
    }

    #[inline]
    pub(crate) fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        push_decimal(&mut self.0, value);
        self
    }

    /// Milliseconds with microsecond precision (`1.250`).
    pub(crate) fn millis(mut self, key: &str, d: Duration) -> Self {
        self.key(key);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        push_decimal(&mut self.0, us / 1000);
        let frac = us % 1000;
        self.0.push('.');
        for digit in [frac / 100, frac / 10 % 10, frac % 10] {
            self.0.push(char::from(b'0' + digit as u8));
        }
        self
    }

    /// `value`'s low `digits` hex digits, zero-padded, quoted (W3C trace and span IDs), or `null`.
    pub(crate) fn hex(mut self, key: &str, value: Option<u128>, digits: u32) -> Self {
        self.key(key);
        match value {
            Some(v) => {
                // Quoted, written into a buffer and appended once.
                let n = digits.min(32) as usize;
                let mut buf = [b'"'; 34];
                crate::text::hex_into(&mut buf[1..=n], v);
                self.0.push_str(std::str::from_utf8(&buf[..n + 2]).unwrap_or_default());
            }
            None => self.0.push_str("null"),
        }
        self
    }

    pub(crate) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `n` in decimal (a line writes several per request).
fn push_decimal(out: &mut String, n: u64) {
    out.push_str(crate::text::decimal(n, &mut [0u8; 20]));
}

/// A JSON string: `"` and `\` escaped, control characters as `\uXXXX`.
fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if !ESCAPE[usize::from(b)] {
            continue;
        }
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => "",
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(crate::text::HEX[usize::from(b >> 4)]));
            out.push(char::from(crate::text::HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether `s` holds a byte [`ESCAPE`] names: eight bytes at a time (the classic
/// "has a byte less than n / equal to c" word tricks, exact for existence), the rest by table.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
        if control || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\'))) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| ESCAPE[usize::from(b)])
}

/// The bytes a JSON string must escape: control characters, `"` and `\`.
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

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

    #[test]
    fn numbers_addresses_and_ids_are_written_as_the_formatter_would() {
        let line = Line::new()
            .num("zero", 0)
            .num("max", u64::MAX)
            .addr("v4", Some("10.0.0.255:65535".parse().unwrap()))
            .addr("none", None)
            .millis("ms0", Duration::ZERO)
            .millis("ms1", Duration::from_micros(1_000_001))
            .millis("ms2", Duration::from_micros(999))
            .hex("trace", Some(0xab_u128 << 120 | 0x1f), 32)
            .hex("span", Some(0x0102_0304), 16)
            .hex("no_span", None, 16)
            .str("ctl", "\u{0}\u{1f}x")
            .num("ten", 10)
            .num("n", 1_234_567_890)
            .num("nine", 9)
            .finish();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["zero"], 0);
        assert_eq!(v["max"], u64::MAX);
        assert_eq!(v["v4"], "10.0.0.255:65535");
        assert!(v["none"].is_null());
        assert!(line.contains("\"ms0\":0.000,"), "{line}");
        assert!(line.contains("\"ms1\":1000.001,"), "{line}");
        assert!(line.contains("\"ms2\":0.999,"), "{line}");
        assert_eq!(v["trace"], format!("{:032x}", 0xab_u128 << 120 | 0x1f));
        assert_eq!(v["span"], "0000000001020304");
        assert!(v["no_span"].is_null());
        assert_eq!(v["ctl"], "\u{0}\u{1f}x");
        assert!(line.contains("\\u0000\\u001fx"), "{line}");
        // The word-at-a-time check agrees with the table for every byte at every position.
        for b in 0..=255u8 {
            for at in 0..17 {
                let mut bytes = vec![b'a'; 17];
                bytes[at] = b;
                assert_eq!(needs_escape(&bytes), ESCAPE[usize::from(b)], "byte {b:#x} at {at}");
            }
        }
        assert!(!needs_escape(b"/api/v1/orders?page=2&size=50 outbound|80||x.svc"));
        assert_eq!((v["ten"].as_u64(), v["n"].as_u64(), v["nine"].as_u64()), (Some(10), Some(1_234_567_890), Some(9)));
    }
}
