//! Durations on the command line, in [`humantime`]'s grammar (`500ms`, `10s`, `2m`, `1h`,
//! `1.5s`, `1m 30s`, …; the controller accepts the same), plus a bare number meaning seconds, as
//! before humantime.

use std::time::Duration;

/// Parses a duration flag; zero is refused (every duration flag of the agent is a period or
/// a timeout).
///
/// # Errors
///
/// A message naming the input when it is not a positive duration.
pub fn parse(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let d = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw)
            .map_err(|e| format!("invalid duration {raw:?}: {e} (e.g. 500ms, 10s, 2m)"))?,
    };
    if d.is_zero() {
        return Err(format!("invalid duration {raw:?}: must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse("0s").is_err());
        assert!(parse("0").is_err());
        assert!(parse("ten").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
    }
}
