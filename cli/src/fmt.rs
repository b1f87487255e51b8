//! How numbers read: every renderer prints the same figure the same way.

/// A duration in the largest unit (ns, µs, ms, s) that keeps it at or above 1, with 3
/// significant digits: `999ns`, `1.23µs`, `45.6ms`, `2.00s`. Nanoseconds stay integers.
pub fn ns(v: u64) -> String {
    let ns = v;
    if ns < 1000 {
        return format!("{ns}ns");
    }
    const UNITS: [(f64, &str); 3] = [(1e3, "µs"), (1e6, "ms"), (1e9, "s")];
    let mut out = String::new();
    for (i, &(scale, unit)) in UNITS.iter().enumerate() {
        let v = ns as f64 / scale;
        // Rounding 999.5µs gives "1000µs": move up a unit instead, unless there is none.
        if v >= 999.5 && i + 1 < UNITS.len() {
            continue;
        }
        out = sig3(v, unit);
        break;
    }
    out
}

/// A count or rate with an SI suffix and 3 significant digits: `950`, `12.3k`, `4.56M`.
pub fn si(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    if v.abs() < 999.5 {
        return format!("{v:.0}");
    }
    const UNITS: [(f64, &str); 3] = [(1e3, "k"), (1e6, "M"), (1e9, "G")];
    for (i, &(scale, unit)) in UNITS.iter().enumerate() {
        let s = v / scale;
        if s.abs() >= 999.5 && i + 1 < UNITS.len() {
            continue;
        }
        return sig3(s, unit);
    }
    unreachable!("the last unit always formats")
}

/// A 0..1 share as a percentage with one decimal.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn sig3(v: f64, unit: &str) -> String {
    let a = v.abs();
    if a < 9.995 {
        format!("{v:.2}{unit}")
    } else if a < 99.95 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_picks_unit_and_three_digits() {
        let cases = [
            (0, "0ns"),
            (1, "1ns"),
            (999, "999ns"),
            (1000, "1.00µs"),
            (1234, "1.23µs"),
            (9_994, "9.99µs"),
            (9_996, "10.0µs"),
            (12_345, "12.3µs"),
            (99_960, "100µs"),
            (123_456, "123µs"),
            (999_499, "999µs"),
            (999_500, "1.00ms"),
            (999_999, "1.00ms"),
            (45_600_000, "45.6ms"),
            (2_000_000_000, "2.00s"),
            (10_000_000_000, "10.0s"),
            (3_600_000_000_000, "3600s"),
        ];
        for (v, want) in cases {
            assert_eq!(ns(v), want, "ns({v})");
        }
    }

    #[test]
    fn si_and_percent() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(950.4), "950");
        assert_eq!(si(999.6), "1.00k");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(4_560_000.0), "4.56M");
        assert_eq!(si(f64::NAN), "-");
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(percent(0.0), "0.0%");
    }
}
