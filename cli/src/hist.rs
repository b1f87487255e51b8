//! Log2 nanosecond histograms as the probes aggregate them (see [`probe_common::HIST_BUCKETS`]).
//!
//! Percentiles are estimates: the probes keep only log2 buckets, so a percentile is placed by
//! linear interpolation inside the bucket that holds its rank (as Prometheus'
//! `histogram_quantile` does), with the exactly tracked maximum closing the top bucket. Reporting
//! bucket upper bounds instead put p50 above the mean and made p50 equal p99 whenever both
//! fell in one bucket.

use std::fmt::Write as _;

use probe_common::HIST_BUCKETS;

/// What the reports say under a table with percentiles.
pub const ESTIMATE_NOTE: &str = "p50, p99: estimates, interpolated within log2 buckets";

/// Sum of all bucket counts.
pub fn total(hist: &[u64]) -> u64 {
    hist.iter().fold(0u64, |acc, &c| acc.saturating_add(c))
}

/// Inclusive `[low, high]` nanosecond range of bucket `i`; the last bucket is open-ended
/// (`high == u64::MAX`) because it also holds everything above it.
pub fn bucket_range(i: usize) -> (u64, u64) {
    let low = if i == 0 { 0 } else { 1u64 << i.min(63) };
    let high = if i + 1 >= HIST_BUCKETS || i >= 63 {
        u64::MAX
    } else {
        (1u64 << (i + 1)) - 1
    };
    (low, high)
}

/// The `q` quantile (clamped to `0..=1`) estimated from a log2 histogram: the bucket holding
/// rank `q * total`, and within it the rank's share of the bucket's count, linearly between the
/// bucket's bounds; the top is never past `max_ns`. 0 for an empty histogram.
pub fn percentile(hist: &[u64], q: f64, max_ns: u64) -> u64 {
    let total = total(hist);
    if total == 0 {
        return 0;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if (below + c) as f64 >= rank {
            let (low, high) = bucket_range(i);
            // The bucket spans [low, high + 1); the maximum closes it when it lies inside.
            let top = (high.saturating_add(1)).min(max_ns.saturating_add(1));
            let low = low.min(top);
            let share = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
            let v = low as f64 + (top - low) as f64 * share;
            return (v as u64).min(max_ns);
        }
        below += c;
    }
    max_ns
}

/// Adds `other` into `acc` element-wise (saturating); extra buckets in `other` are ignored.
pub fn add_into(acc: &mut [u64], other: &[u64]) {
    for (a, &b) in acc.iter_mut().zip(other) {
        *a = a.saturating_add(b);
    }
}

/// Element-wise sum of per-CPU histograms; the result is as long as the longest input.
pub fn merge<'a, I>(hists: I) -> Vec<u64>
where
    I: IntoIterator<Item = &'a [u64]>,
{
    let mut acc: Vec<u64> = Vec::new();
    for h in hists {
        if h.len() > acc.len() {
            acc.resize(h.len(), 0);
        }
        add_into(&mut acc, h);
    }
    acc
}

/// Default bar width of [`render_bars`], as in bcc's `print_log2_hist`.
pub const BAR_WIDTH: usize = 40;

/// bcc-style text histogram, one line per bucket from the first to the last non-empty one:
///
/// ```text
///               ns range : count    distribution
///           1024 -> 2047 : 12       |****************************************|
/// ```
///
/// Returns an empty string for an empty histogram so callers can skip it.
pub fn render_bars(hist: &[u64], width: usize) -> String {
    let (Some(first), Some(last)) = (
        hist.iter().position(|&c| c > 0),
        hist.iter().rposition(|&c| c > 0),
    ) else {
        return String::new();
    };
    let peak = hist.iter().copied().max().unwrap_or(0).max(1);
    let ranges: Vec<String> = (first..=last)
        .map(|i| match bucket_range(i) {
            (low, u64::MAX) => format!("{low} -> inf"),
            (low, high) => format!("{low} -> {high}"),
        })
        .collect();
    let range_w = ranges.iter().map(String::len).max().unwrap_or(0).max(8);
    let count_w = hist[first..=last]
        .iter()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>range_w$} : {:<count_w$} distribution",
        "ns range", "count"
    );
    for (range, &c) in ranges.iter().zip(&hist[first..=last]) {
        // Round up so any non-zero bucket shows at least one star.
        let stars = ((c as u128 * width as u128).div_ceil(peak as u128)) as usize;
        let _ = writeln!(
            out,
            "{range:>range_w$} : {c:<count_w$} |{:<width$}|",
            "*".repeat(stars.min(width))
        );
    }
    out
}

/// Eighth blocks from low to high, for [`compact_rows`].
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Histograms as compact bar rows, one character per log2 bucket on one axis shared by every
/// row (so rows compare by position), each bucket's height relative to its own row's peak; an
/// empty bucket is a space, a non-empty one at least `▁`. The first line names the axis:
///
/// ```text
/// 1.02µs .. 4.19ms, one column per doubling
/// close latency  ▂▆█▃▁  ▁
/// ```
///
/// Empty histograms are left out; `None` when all are.
pub fn compact_rows(rows: &[(String, Vec<u64>)]) -> Option<String> {
    let live: Vec<&(String, Vec<u64>)> = rows.iter().filter(|(_, h)| total(h) > 0).collect();
    let first = live
        .iter()
        .filter_map(|(_, h)| h.iter().position(|&c| c > 0))
        .min()?;
    let last = live
        .iter()
        .filter_map(|(_, h)| h.iter().rposition(|&c| c > 0))
        .max()?;
    let label_w = live
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let top = match bucket_range(last) {
        (low, u64::MAX) => format!("{} and more", crate::fmt::ns(low)),
        (_, high) => crate::fmt::ns(high.saturating_add(1)),
    };
    let mut out = format!(
        "{:label_w$}  {} .. {top}, one column per doubling\n",
        "",
        crate::fmt::ns(bucket_range(first).0)
    );
    for (label, h) in live {
        let peak = h.iter().copied().max().unwrap_or(1).max(1);
        let bars: String = (first..=last)
            .map(|i| match h.get(i).copied().unwrap_or(0) {
                0 => ' ',
                c => {
                    let k = (c as u128 * BLOCKS.len() as u128).div_ceil(peak as u128) as usize;
                    BLOCKS[k.clamp(1, BLOCKS.len()) - 1]
                }
            })
            .collect();
        let _ = writeln!(out, "{label:<label_w$}  {}", bars.trim_end());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_rows_share_one_axis() {
        let a = hist_with(&[(10, 80), (11, 10), (13, 1)]);
        let b = hist_with(&[(12, 5)]);
        let rows = vec![
            ("close".to_string(), a),
            ("idle".to_string(), vec![0; HIST_BUCKETS]),
            ("munmap".to_string(), b),
        ];
        let text = compact_rows(&rows).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "the empty row is left out: {text}");
        assert_eq!(
            lines[0],
            "        1.02µs .. 16.4µs, one column per doubling"
        );
        // 80 is the peak (a full block); 10 of 80 is the first eighth; 1 still shows as ▁.
        assert_eq!(lines[1], "close   █▁ ▁");
        assert_eq!(lines[2], "munmap    █");
        assert_eq!(compact_rows(&[("x".into(), vec![0; 4])]), None);
        assert_eq!(compact_rows(&[]), None);
    }

    fn hist_with(entries: &[(usize, u64)]) -> Vec<u64> {
        let mut h = vec![0u64; HIST_BUCKETS];
        for &(i, c) in entries {
            h[i] = c;
        }
        h
    }

    #[test]
    fn empty_histogram() {
        let h = vec![0u64; HIST_BUCKETS];
        assert_eq!(total(&h), 0);
        assert_eq!(percentile(&h, 0.5, 1000), 0);
        assert_eq!(percentile(&[], 0.99, 1000), 0);
        assert_eq!(render_bars(&h, BAR_WIDTH), "");
    }

    #[test]
    fn within_a_bucket_the_rank_is_interpolated_and_the_max_closes_it() {
        // 100 events in [1024, 2047].
        let h = hist_with(&[(10, 100)]);
        assert_eq!(total(&h), 100);
        assert_eq!(percentile(&h, 0.5, 5000), 1536);
        assert_eq!(percentile(&h, 0.99, 5000), 2037);
        // A maximum inside the bucket narrows it to [1024, 1500].
        assert_eq!(percentile(&h, 0.5, 1500), 1262);
        assert_eq!(percentile(&h, 1.0, 1500), 1500);
        // p50 and p99 differ even inside one bucket.
        assert!(percentile(&h, 0.5, 5000) < percentile(&h, 0.99, 5000));
    }

    #[test]
    fn bucket_zero_holds_zero_and_one() {
        let h = hist_with(&[(0, 3)]);
        assert_eq!(bucket_range(0), (0, 1));
        assert!(percentile(&h, 0.5, 1) <= 1);
        assert_eq!(percentile(&h, 0.5, 0), 0);
    }

    #[test]
    fn all_in_last_bucket_is_bounded_by_max() {
        let last = HIST_BUCKETS - 1;
        let h = hist_with(&[(last, 7)]);
        assert_eq!(bucket_range(last), (1 << last, u64::MAX));
        let max = 3 * (1u64 << last);
        let p50 = percentile(&h, 0.5, max);
        assert!(((1 << last)..max).contains(&p50), "{p50}");
        assert_eq!(percentile(&h, 1.0, max), max);
    }

    #[test]
    fn ranks_across_buckets() {
        // 50 in bucket 3 ([8,15]), 49 in bucket 5 ([32,63]), 1 in bucket 20.
        let h = hist_with(&[(3, 50), (5, 49), (20, 1)]);
        let max = 3_000_000;
        // Rank 50 is the last event of bucket 3: its top.
        assert_eq!(percentile(&h, 0.5, max), 16);
        // Rank 51 is 1/49 into bucket 5.
        assert_eq!(percentile(&h, 0.51, max), 32);
        // Rank 99 ends bucket 5; the single outlier only shows above it.
        assert_eq!(percentile(&h, 0.99, max), 64);
        assert!(percentile(&h, 0.995, max) >= 1 << 20);
        assert_eq!(percentile(&h, 1.0, 1_500_000), 1_500_000);
        // q = 0 is the bottom of the first non-empty bucket.
        assert_eq!(percentile(&h, 0.0, max), 8);
    }

    /// Histograms of known distributions, as the probes would bucket them.
    fn hist_of(values: impl Iterator<Item = u64>) -> (Vec<u64>, u64) {
        let mut h = vec![0u64; HIST_BUCKETS];
        let mut max = 0;
        for v in values {
            h[probe_common::log2_bucket(v)] += 1;
            max = max.max(v);
        }
        (h, max)
    }

    #[test]
    fn estimates_of_known_distributions() {
        // Uniform on [1000, 9000]: p50 5000, p99 8920; uniform inside each bucket, so linear
        // interpolation is close.
        let (h, max) = hist_of(1000..=9000);
        let p50 = percentile(&h, 0.5, max) as f64;
        let p99 = percentile(&h, 0.99, max) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.02, "{p50}");
        assert!((p99 - 8920.0).abs() / 8920.0 < 0.02, "{p99}");
        // Geometric (each value twice as rare as half of it): p50 of 2^k-spaced values
        // 1..2^20 with weights halving: 50% at 1, 25% at 2, ...; never above the maximum.
        let values = (0..20u32).flat_map(|k| std::iter::repeat_n(1u64 << k, 1 << (19 - k)));
        let (h, max) = hist_of(values);
        assert!(percentile(&h, 0.5, max) <= 2);
        assert!(percentile(&h, 0.999, max) <= max);
        // A constant 6250 ns: the estimate stays inside its bucket [4096, 6250] and below
        // the mean, unlike the bucket's upper bound (8191) before.
        let (h, max) = hist_of(std::iter::repeat_n(6250, 1000));
        let p50 = percentile(&h, 0.5, max);
        assert!((4096..=6250).contains(&p50), "{p50}");
        // Monotone in q.
        let (h, max) = hist_of((1..200_000).step_by(7));
        let mut last = 0;
        for i in 0..=100 {
            let p = percentile(&h, i as f64 / 100.0, max);
            assert!(p >= last && p <= max, "q={i}%: {p} after {last}");
            last = p;
        }
    }

    #[test]
    fn merge_sums_per_cpu_histograms() {
        let a = hist_with(&[(1, 2), (4, 1)]);
        let b = hist_with(&[(1, 3), (39, 5)]);
        let m = merge([a.as_slice(), b.as_slice()]);
        assert_eq!(m.len(), HIST_BUCKETS);
        assert_eq!(m[1], 5);
        assert_eq!(m[4], 1);
        assert_eq!(m[39], 5);
        assert_eq!(total(&m), 11);
        assert!(merge(std::iter::empty::<&[u64]>()).is_empty());
        // Different lengths: the result covers the longest.
        assert_eq!(merge([&[1u64][..], &[1, 2][..]]), vec![2, 2]);
    }

    #[test]
    fn add_into_saturates() {
        let mut acc = vec![u64::MAX, 1];
        add_into(&mut acc, &[5, 1, 9]);
        assert_eq!(acc, vec![u64::MAX, 2]);
    }

    #[test]
    fn bars_cover_first_to_last_non_empty_bucket() {
        let h = hist_with(&[(10, 40), (12, 10)]);
        let text = render_bars(&h, 40);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].trim_start().starts_with("ns range : count"));
        assert_eq!(
            lines[1],
            format!("1024 -> 2047 : 40    |{}|", "*".repeat(40))
        );
        assert_eq!(
            lines[2],
            format!("2048 -> 4095 : 0     |{}|", " ".repeat(40))
        );
        assert_eq!(
            lines[3],
            format!("4096 -> 8191 : 10    |{:<40}|", "*".repeat(10))
        );
    }

    #[test]
    fn bars_show_at_least_one_star_and_open_last_bucket() {
        let last = HIST_BUCKETS - 1;
        let h = hist_with(&[(0, 1_000_000), (last, 1)]);
        let text = render_bars(&h, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains(&format!("|{}|", "*".repeat(20))),
            "{text}"
        );
        let last_line = lines.last().unwrap();
        assert!(last_line.contains("549755813888 -> inf"), "{text}");
        assert!(
            last_line.ends_with(&format!("|*{}|", " ".repeat(19))),
            "{text}"
        );
    }
}
