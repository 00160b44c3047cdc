//! Units shown to people: the one byte formatter of the project (Rust messages, logs, and the
//! JavaScript layer through the addon's `formatBytes`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
