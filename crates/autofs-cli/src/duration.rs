//! The one grammar of duration flags: [`humantime`]'s (`500ms`, `10s`, `2m`, `1h`, `1.5s`,
//! `1m 30s`, …), plus a bare number meaning seconds. Every duration flag of both binaries is a
//! period, a timeout or a deadline, so zero is refused.

use std::time::Duration;

/// Parses a duration flag (clap's `value_parser`).
///
/// # Errors
///
/// A message quoting the input when it is not a duration in this grammar
/// (`` `soon` is not a duration: … ``) or is zero (`` `0s` is not a positive duration ``).
pub fn parse(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let d = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("`{raw}` is not a duration: {e} (e.g. 500ms, 10s, 1m 30s, or a bare number of seconds)")
        })?,
    };
    if d.is_zero() {
        return Err(format!(
            "`{raw}` is not a positive duration (every duration flag is a period, a timeout or a deadline)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_units_and_bare_seconds_parse() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse(" 10 "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_durations_are_refused_with_a_message_quoting_them() {
        for (raw, needle) in [
            ("soon", "`soon` is not a duration: "),
            ("5 parsecs", "unknown time unit \"parsecs\""),
            ("", "`` is not a duration: value was empty"),
            ("-5s", "`-5s` is not a duration: "),
            ("1.5", "`1.5` is not a duration: "),
            ("0", "`0` is not a positive duration"),
            ("0s", "`0s` is not a positive duration"),
            ("0ms 0s", "`0ms 0s` is not a positive duration"),
        ] {
            let err = parse(raw).unwrap_err();
            assert!(err.contains(needle), "{raw:?}: {err}");
        }
        assert!(
            parse("soon")
                .unwrap_err()
                .ends_with("(e.g. 500ms, 10s, 1m 30s, or a bare number of seconds)")
        );
    }
}
