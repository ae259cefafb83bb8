//! Durations on the command line: `500ms`, `10s`, `2m`, `1h` (a bare number means seconds).

use std::time::Duration;

/// Parses a duration flag.
pub fn parse(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {raw:?}: expected e.g. 500ms, 10s, 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "invalid duration unit in {raw:?}: use ms, s, m or h"
            ));
        }
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
        assert!(parse("0s").is_err());
        assert!(parse("ten").is_err());
        assert!(parse("5 parsecs").is_err());
    }
}
