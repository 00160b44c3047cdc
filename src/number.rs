//! Numbers from outside (JavaScript arguments, JSON options) into integer types: each is checked,
//! whole and in range, before it is converted. A plain `as` cast or N-API's integer conversion
//! would wrap or saturate instead (2^40 as a u32 exit code becomes 0, -1 becomes 4294967295).

use std::fmt::Display;
use std::ops::RangeInclusive;

/// `v` as a whole number of `range`, or an error naming `option`, the value and the range, e.g.
/// `invalid value 1099511627776 for code: expected a whole number from 0 to 4294967295`.
pub fn whole<T>(option: &str, v: f64, range: RangeInclusive<T>) -> Result<T, String>
where
    T: Copy + Display + Into<i128> + TryFrom<i128>,
{
    let (lo, hi) = (*range.start(), *range.end());
    let bad = || {
        format!(
            "invalid value {} for {option}: expected a whole number from {lo} to {hi}",
            show(v)
        )
    };
    // NaN fails every comparison; the bounds as f64 may round up (u64::MAX becomes 2^64), which
    // the exact conversion below still refuses.
    if !v.is_finite() || v.fract() != 0.0 || v < lo.into() as f64 || v > hi.into() as f64 {
        return Err(bad());
    }
    // Finite, whole and within i128 (every bound is): exact.
    let n = v as i128;
    if n < lo.into() || n > hi.into() {
        return Err(bad());
    }
    T::try_from(n).map_err(|_| bad())
}

/// A JavaScript number as JavaScript prints it (`Infinity`, `NaN`, `1.5`, `1099511627776`,
/// `1.7976931348623157e+308`).
pub fn show(v: f64) -> String {
    let a = v.abs();
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if a >= 1e21 || (a != 0.0 && a < 1e-6) {
        let e = format!("{v:e}");
        match e.split_once('e') {
            Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
            _ => e,
        }
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_in_range_only() {
        assert_eq!(whole("code", 0.0, 0..=u32::MAX), Ok(0));
        assert_eq!(whole("code", 4294967295.0, 0..=u32::MAX), Ok(u32::MAX));
        assert_eq!(whole("level", -5.0, -7..=22i32), Ok(-5));
        assert_eq!(
            whole("maxSize", 9007199254740992.0, 0..=u64::MAX),
            Ok(1 << 53)
        );
        for v in [
            2f64.powi(40),
            4294967296.0,
            -1.0,
            1.5,
            -0.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            1e300,
        ] {
            let err = whole("code", v, 0..=u32::MAX).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid value {} for code", show(v)))
                    && err.ends_with("expected a whole number from 0 to 4294967295"),
                "{err}"
            );
        }
        // u64::MAX as f64 is 2^64, one above the range: refused, not saturated.
        assert!(whole("maxSize", 18446744073709551616.0, 0..=u64::MAX).is_err());
        assert!(whole("maxSize", -1.0, 0..=u64::MAX).is_err());
        assert_eq!(show(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(show(1099511627776.0), "1099511627776");
        assert_eq!(show(f64::MAX), "1.7976931348623157e+308");
        assert_eq!(show(1e21), "1e+21");
        assert_eq!(show(1e-7), "1e-7");
        assert_eq!(show(-0.5), "-0.5");
    }
}
