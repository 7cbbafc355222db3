//! Durations as Istio writes them in YAML: `"10s"`, `"250ms"`, `"1.5s"`, `"1h"`, `"1m30s"`.
//!
//! Serialised back in the shortest exact form (`"250ms"`, `"10s"`), so a config
//! dump reads like the input.

use std::time::Duration;

/// Parses `"1h"`, `"30m"`, `"10s"`, `"1.5s"`, `"250ms"`, `"100us"`, `"5ns"`, and sums like `"1m30s"`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit (ns, us, ms, s, m, h)"))?;
        if num_end == 0 {
            return Err(format!("duration {text:?} is not a number followed by a unit"));
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| format!("duration {text:?} has a bad number"))?;
        let after = &rest[num_end..];
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let scale = match &after[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("duration {text:?} has unknown unit {other:?} (use ns, us, ms, s, m, h)")),
        };
        total += value * scale;
        rest = &after[unit_end..];
    }
    if !total.is_finite() || total > 10.0 * 365.0 * 86400.0 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// The shortest exact text for `d` in the units [`parse`] accepts.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".into()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// `#[serde(with = "crate::duration::opt")]` for `Option<Duration>` fields.
pub mod opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| super::parse(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// `#[serde(with = "crate::duration::req")]` for required `Duration` fields.
pub mod req {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse("10").is_err());
        assert!(parse("s").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn formats_back_exactly() {
        for text in ["0s", "10s", "250ms", "15us", "7ns", "3600s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
