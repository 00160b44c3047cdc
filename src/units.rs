//! Sizes and durations, as every option of the project takes them (the plugin's options,
//! `serve`'s flags, variables and config file, `gc`), and the one byte formatter of the project
//! (Rust messages and logs, and the JavaScript layer through the addon's `formatBytes`).
//!
//! Written by hand: the documented forms are a number with a required unit, a fraction allowed
//! (`1.5KiB`, `1.5h`), a space allowed before the unit; sizes with case-insensitive decimal and
//! binary units, durations with `s m h d w` only. The crates checked accept other forms: `bytesize`
//! and `parse-size` take a bare `50` as bytes (here a mistake: 50 what?), `humantime` takes no
//! fraction (`1.5h`) and takes words (`1 day`, `2months`); wrapping them would need the same
//! checks again.

use std::time::Duration;

/// A size in text, for error messages.
pub const SIZE_FORM: &str =
    "a size such as 500MB or 2GiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)";
/// A duration in text, for error messages.
pub const DURATION_FORM: &str = "a duration such as 90s, 10m, 12h, 30d or 2w";

const SIZE_FORMS: &str = "a number with a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 50GiB or 500MB";
const DURATION_FORMS: &str =
    "a number with a unit: s (seconds), m (minutes), h (hours), d (days), w (weeks), e.g. 30d or 12h";

fn split_number(value: &str) -> Option<(f64, &str)> {
    let v = value.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

/// Parses a size such as `50GiB`, `500MB` or `1024B` (units case-insensitive, a unit is required).
/// `option` names the setting in the error, e.g. `--max-size`.
pub fn parse_size(option: &str, value: &str) -> Result<u64, String> {
    let bad =
        |why: &str| format!("invalid value {value:?} for {option}: {why}; expected {SIZE_FORMS}");
    let Some((n, unit)) = split_number(value) else {
        return Err(bad("not a number with a unit"));
    };
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "" => return Err(bad("the unit is missing")),
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    let bytes = n * factor as f64;
    if bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `30d`, `12h`, `90m`, `2w` or `45s` (a unit is required).
/// `option` names the setting in the error, e.g. `--max-age`.
pub fn parse_duration(option: &str, value: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("invalid value {value:?} for {option}: {why}; expected {DURATION_FORMS}")
    };
    let Some((n, unit)) = split_number(value) else {
        return Err(bad("not a number with a unit"));
    };
    let secs: f64 = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        "" => return Err(bad("the unit is missing")),
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    Duration::try_from_secs_f64(n * secs).map_err(|_| bad("too large"))
}

/// Seconds from a plain number (`"30"`) or a duration with a unit (`"30s"`, `"2m"`), as
/// [`parse_duration`] reads it. Not range-checked: the error says why it is not a duration.
pub fn seconds(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() => Ok(secs),
        Ok(_) => Err("not a finite number".into()),
        Err(_) => match parse_duration("it", v) {
            Ok(d) => Ok(d.as_secs_f64()),
            Err(e) if e.contains("too large") => Err("out of range".into()),
            Err(_) => Err("not a number of seconds nor a duration with a unit (s, m, h)".into()),
        },
    }
}

/// Binary units after bytes.
const BINARY_UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];

/// A byte count in binary units, one decimal at most (a `.0` is dropped): `100 B`, `1.5 KiB`,
/// `4 GiB`, `1024 TiB`.
pub fn format_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Rounded to one decimal, 1023.96 KiB would show as "1024 KiB": that is 1 MiB.
    while value >= 1023.95 && unit < BINARY_UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let shown = format!("{value:.1}");
    format!("{} {}", shown.trim_end_matches(".0"), BINARY_UNITS[unit])
}

/// A count with its noun in the grammatical number: `1 object`, `0 objects`, `2 directories`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration in the largest unit that shows it whole, in the form [`parse_duration`] reads:
/// `30d`, `12h`, `10m`, `90s`.
pub fn format_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s != 0 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s != 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s != 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_noun_in_its_number() {
        assert_eq!(count(0, "object", "objects"), "0 objects");
        assert_eq!(count(1, "object", "objects"), "1 object");
        assert_eq!(count(2, "directory", "directories"), "2 directories");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--max-size", "50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("--max-size", "500MB"), Ok(500_000_000));
        assert_eq!(parse_size("--max-size", "1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("--max-size", "2tib"), Ok(2 << 40));
        assert_eq!(parse_size("--max-size", "0B"), Ok(0));
        for bad in ["", "50", "GiB", "-1GB", "5XB", ".5GB", "1e3GB"] {
            let e = parse_size("--max-size", bad).unwrap_err();
            assert!(
                e.contains("--max-size") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
            assert!(e.contains("KiB, MiB, GiB, TiB"), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("--max-age", "30d"),
            Ok(Duration::from_secs(30 * 86400))
        );
        assert_eq!(
            parse_duration("maxAge", "1.5h"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("maxAge", "2w"),
            Ok(Duration::from_secs(14 * 86400))
        );
        for bad in ["30", "d", "3y", "1 day", "", "1e400d"] {
            let e = parse_duration("--max-age", bad).unwrap_err();
            assert!(e.contains("--max-age") && e.contains("s (seconds)"), "{e}");
        }
    }

    #[test]
    fn durations_shown_as_read() {
        for (secs, shown) in [
            (0, "0s"),
            (90, "90s"),
            (600, "10m"),
            (7200, "2h"),
            (30 * 86400, "30d"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format_duration(d), shown);
            if secs > 0 {
                assert_eq!(parse_duration("it", shown), Ok(d));
            }
        }
    }

    #[test]
    fn bytes_in_binary_units() {
        for (n, shown) in [
            (0, "0 B"),
            (12, "12 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            ((1 << 20) - 1, "1 MiB"),
            (8 << 20, "8 MiB"),
            (4 << 30, "4 GiB"),
            ((1 << 30) + (1 << 29), "1.5 GiB"),
            (5 << 40, "5 TiB"),
            (u64::MAX, "16777216 TiB"),
        ] {
            assert_eq!(format_bytes(n), shown, "{n}");
        }
    }
}
