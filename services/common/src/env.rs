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

/// Structured logs on stderr: `RUST_LOG` filters (default `info`), each line
/// carries the service name and, inside a request, its request id.
pub fn init_logging(service: &'static str) {
    let level = std::env::var("RUST_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt().with_max_level(level).with_target(false).with_writer(std::io::stderr).try_init();
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}
