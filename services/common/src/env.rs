//! Configuration from the environment. Only `main` reads the environment; the
//! services take a config struct, so tests build one and never set variables.

use std::str::FromStr;

/// `key` from the environment, or `default`.
pub fn var(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// `key` parsed as `T`, or `default`; a value that does not parse is an error that names the key.
pub fn parse<T: FromStr>(key: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(key).ok().filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{key}={v:?}: {e}")),
    }
}

/// Structured logs on stderr: `key=value` fields, or one JSON object per line
/// with `LOG_FORMAT=json`; `RUST_LOG` sets the level (default `info`). Inside a
/// request each line carries the request id, method and path.
pub fn init_logging(service: &'static str) {
    let level = std::env::var("RUST_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    let builder = tracing_subscriber::fmt().with_max_level(level).with_target(false).with_writer(std::io::stderr);
    let _ = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}
