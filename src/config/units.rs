//! Human-friendly durations (`25s`, `500ms`, `1h`) and sizes (`64KiB`, `1MiB`).

use std::time::Duration;

/// Splits `s` into its leading ASCII digits and the (whitespace-trimmed) rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

/// Parses a duration such as `"250ms"`, `"25s"`, `"5m"`, `"1h"` or `"2d"`.
///
/// A bare integer (`"30"`) is a number of seconds. Whitespace around the value
/// and between number and unit is allowed; units are lower-case. Fractions and
/// negative values are refused. The error describes what is wrong, without the
/// key (the caller names it).
///
/// ```
/// use std::time::Duration;
/// use switchboard::config::parse_duration;
/// assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
/// assert!(parse_duration("25x").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty duration".to_owned());
    }
    let (digits, unit) = split_number(trimmed);
    if digits.is_empty() {
        return Err(format!("`{trimmed}` does not start with a number"));
    }
    let too_large = || format!("`{trimmed}` is too large");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let secs_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{trimmed}` (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(secs_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(too_large)
}

/// Parses a byte size such as `"512"`, `"10KB"`, `"64KiB"` or `"1MiB"`.
///
/// A bare integer is a number of bytes. Decimal units (`KB`, `MB`, `GB`) are
/// powers of 1000, binary units (`KiB`, `MiB`, `GiB`) powers of 1024; `B`
/// means bytes. Units are matched case-insensitively, whitespace between number
/// and unit is allowed. The error describes what is wrong, without the key.
///
/// ```
/// use switchboard::config::parse_size;
/// assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
/// assert_eq!(parse_size("10KB"), Ok(10_000));
/// assert_eq!(parse_size("512"), Ok(512));
/// assert!(parse_size("1XB").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<usize, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty size".to_owned());
    }
    let (digits, unit) = split_number(trimmed);
    if digits.is_empty() {
        return Err(format!("`{trimmed}` does not start with a number"));
    }
    let too_large = || format!("`{trimmed}` is too large");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{trimmed}` (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(multiplier)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_bare_integer_is_seconds() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_allows_whitespace() {
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn duration_rejects_garbage() {
        for bad in [
            "", "  ", "s", "25x", "1.5s", "-5s", "5 m s", "5S", "ms5", "1h30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        let err = parse_duration("25x").unwrap_err();
        assert!(err.contains("`x`"), "{err}");
    }

    #[test]
    fn duration_overflow_is_an_error() {
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("18446744073709551615ms").is_ok());
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn size_units_are_case_insensitive_and_allow_space() {
        assert_eq!(parse_size("64kib"), Ok(65_536));
        assert_eq!(parse_size(" 10 kb "), Ok(10_000));
    }

    #[test]
    fn size_rejects_garbage() {
        for bad in ["", "KiB", "1XB", "1.5MiB", "-1", "1 MiB extra", "1K"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn size_overflow_is_an_error() {
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("18446744073709551615GiB").is_err());
    }
}
