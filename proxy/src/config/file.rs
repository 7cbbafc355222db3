//! Reading a `ProxyConfig` file (YAML or JSON) and watching it for changes.
//!
//! A valid change is compiled and swapped in whole; an invalid one is logged
//! with the file and the field, counted as rejected, and the old config stays.

use crate::state::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weft_model::ProxyConfig;

/// A config file that cannot be used, with the reason naming file, line or field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

/// Parses a config from text; `.json` files as JSON, everything else as YAML.
pub fn parse(file: &Path, text: &str) -> Result<ProxyConfig, ConfigError> {
    let is_json = file.extension().is_some_and(|e| e == "json");
    let parsed = if is_json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| ConfigError { file: file.to_path_buf(), message })
}

/// Reads and parses a config file (validation happens when it is compiled).
pub fn read(file: &Path) -> Result<(ProxyConfig, Vec<u8>), ConfigError> {
    let bytes = std::fs::read(file).map_err(|e| ConfigError { file: file.to_path_buf(), message: e.to_string() })?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| ConfigError { file: file.to_path_buf(), message: e.to_string() })?;
    Ok((parse(file, text)?, bytes))
}

/// Polls `file` every `interval` and applies each change. Polling (not inotify)
/// also sees a ConfigMap's symlink swap and costs one `read` per interval.
pub async fn watch(file: PathBuf, shared: Arc<Shared>, mut last: Vec<u8>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(bytes) = tokio::fs::read(&file).await else {
            continue; // Mid-replace or gone for a moment: keep the current config.
        };
        if bytes == last {
            continue;
        }
        last = bytes;
        let result = std::str::from_utf8(&last)
            .map_err(|e| ConfigError { file: file.clone(), message: e.to_string() })
            .and_then(|text| parse(&file, text))
            .and_then(|config| {
                shared.apply(config).map_err(|e| ConfigError { file: file.clone(), message: e.to_string() })
            });
        match result {
            Ok(version) => tracing::info!(file = %file.display(), %version, "config applied"),
            Err(e) => {
                shared.metrics.config_reloads.with_label_values(&["rejected"]).inc();
                tracing::error!("config rejected, keeping version {:?}: {e}", shared.snapshot().config.version);
            }
        }
    }
}
