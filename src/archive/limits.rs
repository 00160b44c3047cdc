//! The configurable bounds of the artifact check ([`ValidationLimits`]): the entry count, the
//! expanded size and the expansion ratio. One parser for `nx-open-cache serve` (flags, variables,
//! config file) and the plugin (nx.json options, variables): the same forms, ranges and words.
//!
//! - text (a flag, a variable, a string in a file or in nx.json): counts and ratios are whole
//!   numbers; sizes need a unit (`2GiB`, `500MB`), as every size of the project does
//!   ([`crate::units::parse_size`]): a bare `32` is a mistake, not 32 bytes;
//! - a number (nx.json, a TOML integer read as text by `serve`): counts and ratios as above, sizes
//!   a whole number of bytes. Checked whole and in range before any conversion
//!   ([`crate::number::whole`]).

use super::validate::ValidationLimits;
use std::ops::RangeInclusive;

/// Most paths an artifact may be configured to hold.
pub const ENTRIES_RANGE: RangeInclusive<u64> = 1..=100_000_000;
/// The expansion ratio's range.
pub const RATIO_RANGE: RangeInclusive<u64> = 1..=1_000_000;
pub use crate::units::SIZE_FORM;

/// One configurable bound of the artifact check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`ValidationLimits::max_entries`].
    Entries,
    /// [`ValidationLimits::max_expanded_bytes`].
    ExpandedSize,
    /// [`ValidationLimits::max_expansion_ratio`].
    ExpansionRatio,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::Entries, Limit::ExpandedSize, Limit::ExpansionRatio];

    /// What a text value may be.
    pub fn text_form(self) -> String {
        match self {
            Limit::ExpandedSize => SIZE_FORM.to_owned(),
            Limit::Entries => whole_form(&ENTRIES_RANGE),
            Limit::ExpansionRatio => whole_form(&RATIO_RANGE),
        }
    }

    /// What a number or a text value may be (where both are accepted: nx.json).
    pub fn form(self) -> String {
        match self {
            Limit::ExpandedSize => format!("{SIZE_FORM}, or a whole number of bytes (at least 1)"),
            other => other.text_form(),
        }
    }

    /// Parses a text value; `label` names the setting in the error (e.g. `--max-expanded-size`).
    pub fn parse_text(self, label: &str, text: &str) -> Result<u64, String> {
        let bad = || {
            format!(
                "invalid value {text:?} for {label}: expected {}",
                self.text_form()
            )
        };
        match self {
            Limit::ExpandedSize => match crate::units::parse_size(label, text) {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad()),
            },
            Limit::Entries | Limit::ExpansionRatio => match text.trim().parse::<u64>() {
                Ok(n) if self.range().contains(&n) => Ok(n),
                _ => Err(bad()),
            },
        }
    }

    /// Checks a number (as JavaScript holds it); `label` names the setting in the error.
    pub fn parse_number(self, label: &str, v: f64) -> Result<u64, String> {
        crate::number::whole(label, v, self.range()).map_err(|_| {
            format!(
                "invalid value {} for {label}: expected {}",
                crate::number::show(v),
                self.form()
            )
        })
    }

    /// Checks a whole number (as JSON holds it); `label` names the setting in the error.
    pub fn parse_whole(self, label: &str, n: u64) -> Result<u64, String> {
        if self.range().contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "invalid value {n} for {label}: expected {}",
                self.form()
            ))
        }
    }

    fn range(self) -> RangeInclusive<u64> {
        match self {
            Limit::Entries => ENTRIES_RANGE,
            Limit::ExpandedSize => 1..=u64::MAX,
            Limit::ExpansionRatio => RATIO_RANGE,
        }
    }

    /// The bound's value in `limits`.
    pub fn get(self, limits: &ValidationLimits) -> u64 {
        match self {
            Limit::Entries => limits.max_entries,
            Limit::ExpandedSize => limits.max_expanded_bytes,
            Limit::ExpansionRatio => limits.max_expansion_ratio,
        }
    }

    /// Sets the bound in `limits`.
    pub fn set(self, limits: &mut ValidationLimits, value: u64) {
        match self {
            Limit::Entries => limits.max_entries = value,
            Limit::ExpandedSize => limits.max_expanded_bytes = value,
            Limit::ExpansionRatio => limits.max_expansion_ratio = value,
        }
    }
}

fn whole_form(range: &RangeInclusive<u64>) -> String {
    format!("a whole number from {} to {}", range.start(), range.end())
}

impl ValidationLimits {
    /// Whether a configurable bound is below its default: such a checker refuses artifacts that
    /// others (with the defaults) accept.
    pub fn lowered(&self) -> bool {
        let defaults = ValidationLimits::default();
        Limit::ALL.iter().any(|l| l.get(self) < l.get(&defaults))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values() {
        assert_eq!(Limit::Entries.parse_text("--n", " 5000 "), Ok(5000));
        assert_eq!(Limit::ExpandedSize.parse_text("--s", "2GiB"), Ok(2 << 30));
        assert_eq!(
            Limit::ExpansionRatio.parse_text("--r", "1000000"),
            Ok(1_000_000)
        );
        for (limit, text) in [
            (Limit::Entries, "0"),
            (Limit::Entries, "100000001"),
            (Limit::Entries, "1.5"),
            (Limit::Entries, "-3"),
            (Limit::Entries, "1e6"),
            (Limit::ExpansionRatio, "0"),
            (Limit::ExpansionRatio, "1000001"),
            (Limit::ExpandedSize, "0B"),
            (Limit::ExpandedSize, "32"),
            (Limit::ExpandedSize, "99999999999999999999TiB"),
            (Limit::ExpandedSize, "lots"),
        ] {
            let e = limit.parse_text("--x", text).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid value {text:?} for --x: expected ")),
                "{e}"
            );
            assert!(e.ends_with(&limit.text_form()), "{e}");
        }
    }

    #[test]
    fn numbers_are_checked_before_any_conversion() {
        assert_eq!(Limit::Entries.parse_number("n", 12.0), Ok(12));
        assert_eq!(Limit::ExpandedSize.parse_number("s", 1024.0), Ok(1024));
        assert_eq!(Limit::ExpandedSize.parse_whole("s", u64::MAX), Ok(u64::MAX));
        assert_eq!(
            Limit::Entries.parse_whole("n", 100_000_001),
            Err(format!(
                "invalid value 100000001 for n: expected {}",
                Limit::Entries.form()
            ))
        );
        for (limit, v) in [
            (Limit::Entries, 0.0),
            (Limit::Entries, 1e300),
            (Limit::Entries, 2.5),
            (Limit::ExpandedSize, -1.0),
            (Limit::ExpandedSize, 0.0),
            (Limit::ExpandedSize, 18446744073709551616.0),
            (Limit::ExpansionRatio, f64::NAN),
            (Limit::ExpansionRatio, f64::INFINITY),
        ] {
            let e = limit.parse_number("n", v).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "invalid value {} for n: expected ",
                    crate::number::show(v)
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn lowered_compares_each_bound_with_its_default() {
        let mut l = ValidationLimits::default();
        assert!(!l.lowered());
        Limit::Entries.set(&mut l, 2_000_000);
        assert!(!l.lowered(), "raised is not lowered");
        Limit::ExpansionRatio.set(&mut l, 10);
        assert!(l.lowered());
        assert_eq!(Limit::ExpansionRatio.get(&l), 10);
    }
}
