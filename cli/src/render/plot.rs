//! Plots as inline SVG drawn by kpath itself: no script, no font or library from the network,
//! readable offline and in a mail. Three shapes cover the report: horizontal bars (plain or
//! stacked, with a legend), log2-bucket histograms, and latency percentile curves on a log
//! axis (HdrHistogram's "percentile distribution" plot). Every mark carries a `<title>`, the
//! browser's tooltip, with its exact value. Each plot is one `<svg>` element for an HTML page
//! (no `xmlns`: the HTML parser gives it its namespace).
use std::fmt::Write as _;

/// Colours of series and segments, in order (Tableau 10: distinct in print and for most
/// colour-blind readers).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The colour of series `i` (wraps around).
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// How a value reads on an axis and in a tooltip.
pub type Fmt = fn(f64) -> String;

/// Nanoseconds as `fmt::ns` prints them.
pub fn fmt_ns(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        crate::fmt::ns(v.round() as u64)
    } else {
        "-".into()
    }
}

/// A count or rate with 3 significant digits and an SI suffix (`12.6`, `0.50`, `24.9k`);
/// whole numbers under 1000 stay whole (axis ticks: `5`, `10`).
pub fn fmt_count(v: f64) -> String {
    if !v.is_finite() || v.fract() == 0.0 || v.abs() >= 99.95 {
        crate::fmt::si(v)
    } else if v.abs() < 9.995 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

use super::markup::escape as esc;

/// Approximate width of `s` in the plots' 11 px sans-serif font.
fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * 7.0
}

/// Axis ticks from 0: a step of 1, 2 or 5 times a power of ten giving about `n` intervals,
/// and ticks up to the first one at or above `max`. `[0, 1]` when `max` is not positive.
pub fn ticks(max: f64, n: usize) -> Vec<f64> {
    if !max.is_finite() || max <= 0.0 {
        return vec![0.0, 1.0];
    }
    let raw = max / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let count = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

fn svg_open(out: &mut String, w: f64, h: f64, class: &str, title: &str) {
    let _ = write!(
        out,
        "<svg class=\"plot {class}\" width=\"{w:.0}\" \
         height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" \
         font-size=\"11\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"{:.0}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" \
         font-weight=\"bold\">{t}</text>",
        w / 2.0,
        t = esc(title)
    );
}

/// One row of a bar chart: its label and one value per key (one value: a plain bar).
#[derive(Debug, Clone, PartialEq)]
pub struct BarRow {
    pub label: String,
    pub values: Vec<f64>,
}

/// Horizontal bars, one per row; with several keys each bar is stacked from their values, in
/// key order, with a legend. Values that are not finite or below 0 count as 0.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    /// Segment names of a stacked chart; empty or one name: plain bars, no legend.
    pub keys: Vec<String>,
    pub rows: Vec<BarRow>,
    pub fmt: Fmt,
    /// Total width in px.
    pub width: f64,
    /// Plain bars take row `i`'s colour (rows are strategies, coloured alike in every plot);
    /// `false`: all one colour (rows are names).
    pub row_colors: bool,
}

impl BarChart {
    pub fn new(title: impl Into<String>, fmt: Fmt) -> BarChart {
        BarChart {
            title: title.into(),
            keys: Vec::new(),
            rows: Vec::new(),
            fmt,
            width: 560.0,
            row_colors: true,
        }
    }

    pub fn row(mut self, label: impl Into<String>, values: Vec<f64>) -> BarChart {
        self.rows.push(BarRow {
            label: label.into(),
            values,
        });
        self
    }
}

fn clean(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

const ROW_H: f64 = 22.0;
const BAR_H: f64 = 15.0;

/// The chart as one `<svg>` element; `None` when it has no row.
pub fn bars(c: &BarChart) -> Option<String> {
    if c.rows.is_empty() {
        return None;
    }
    let stacked = c.keys.len() > 1;
    let total = |r: &BarRow| r.values.iter().copied().map(clean).sum::<f64>();
    let max = c.rows.iter().map(total).fold(0.0, f64::max);
    let t = ticks(max, 4);
    let axis_max = *t.last().expect("ticks are never empty");
    let label_w = c
        .rows
        .iter()
        .map(|r| text_width(&r.label))
        .fold(0.0, f64::max)
        .min(240.0)
        + 8.0;
    let value_w = c
        .rows
        .iter()
        .map(|r| text_width(&(c.fmt)(total(r))))
        .fold(0.0, f64::max)
        + 8.0;
    let x0 = label_w + 4.0;
    let plot_w = (c.width - x0 - value_w - 4.0).max(60.0);
    let scale = |v: f64| plot_w * v / axis_max;
    // The legend: swatches in lines that fit the width.
    let mut legend = Vec::new();
    let (mut lx, mut ly) = (x0, 30.0);
    if stacked {
        for (i, k) in c.keys.iter().enumerate() {
            let w = 16.0 + text_width(k) + 12.0;
            if lx + w > c.width && lx > x0 {
                lx = x0;
                ly += 16.0;
            }
            legend.push((lx, ly, i, k));
            lx += w;
        }
    }
    let top = if stacked { ly + 16.0 } else { 28.0 };
    let axis_y = top + c.rows.len() as f64 * ROW_H + 4.0;
    let h = axis_y + 20.0;
    let mut out = String::new();
    svg_open(&mut out, c.width, h, "bars", &c.title);
    for (x, y, i, k) in legend {
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"11\" height=\"11\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y - 9.0,
            color(i),
            x + 15.0,
            y,
            esc(k)
        );
    }
    for &tv in &t {
        let x = x0 + scale(tv);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            axis_y + 14.0,
            esc(&(c.fmt)(tv))
        );
    }
    for (ri, r) in c.rows.iter().enumerate() {
        let y = top + ri as f64 * ROW_H;
        let _ = write!(
            out,
            "<text x=\"{label_w:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            y + BAR_H - 3.0,
            esc(&r.label)
        );
        let mut x = x0;
        for (ki, &v) in r.values.iter().enumerate() {
            let v = clean(v);
            if v == 0.0 {
                continue;
            }
            let w = scale(v);
            let what = match c.keys.get(ki) {
                Some(k) if stacked => format!("{}, {k}: {}", r.label, (c.fmt)(v)),
                _ => format!("{}: {}", r.label, (c.fmt)(v)),
            };
            let _ = write!(
                out,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" \
                 fill=\"{}\"><title>{}</title></rect>",
                match (stacked, c.row_colors) {
                    (true, _) => color(ki),
                    (false, true) => color(ri),
                    (false, false) => color(0),
                },
                esc(&what)
            );
            x += w;
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 4.0,
            y + BAR_H - 3.0,
            esc(&(c.fmt)(total(r)))
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{x0:.1}\" y1=\"{top:.1}\" x2=\"{x0:.1}\" y2=\"{axis_y:.1}\" stroke=\"#888\"/></svg>"
    );
    Some(out)
}

/// A log2-bucket histogram as the probes keep it (bucket `i` holds `[2^i, 2^(i+1))` ns, see
/// [`crate::hist`]): one vertical bar per bucket from the first to the last non-empty one,
/// labelled with the bucket's lower bound. `None` when every bucket is empty.
pub fn histogram(title: &str, hist: &[u64]) -> Option<String> {
    let first = hist.iter().position(|&c| c > 0)?;
    let last = hist.iter().rposition(|&c| c > 0)?;
    let counts = &hist[first..=last];
    let total = crate::hist::total(hist);
    let peak = counts.iter().copied().max().unwrap_or(1) as f64;
    let t = ticks(peak, 3);
    let axis_max = *t.last().expect("ticks are never empty");
    let (w, h) = (400.0, 190.0);
    let (x0, top, bottom) = (46.0, 28.0, h - 34.0);
    let plot_w = w - x0 - 10.0;
    let bw = plot_w / counts.len() as f64;
    let y_of = |v: f64| bottom - (bottom - top) * v / axis_max;
    let mut out = String::new();
    svg_open(
        &mut out,
        w,
        h,
        "histogram",
        &format!("{title} ({} events)", crate::fmt::si(total as f64)),
    );
    for &tv in &t {
        let y = y_of(tv);
        let _ = write!(
            out,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            w - 10.0,
            x0 - 4.0,
            y + 4.0,
            crate::fmt::si(tv)
        );
    }
    // Label every k-th bucket so that labels (about 40 px each) do not overlap.
    let every = ((44.0 / bw).ceil() as usize).max(1);
    for (j, &c) in counts.iter().enumerate() {
        let i = first + j;
        let (low, high) = crate::hist::bucket_range(i);
        let x = x0 + j as f64 * bw;
        if c > 0 {
            let y = y_of(c as f64);
            let range = if high == u64::MAX {
                format!("{} and more", crate::fmt::ns(low))
            } else {
                format!(
                    "{} to {}",
                    crate::fmt::ns(low),
                    crate::fmt::ns(high.saturating_add(1))
                )
            };
            let _ = write!(
                out,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 fill=\"{}\"><title>{range}: {c} ({:.1}%)</title></rect>",
                x + 1.0,
                (bw - 2.0).max(1.0),
                bottom - y,
                color(0),
                100.0 * c as f64 / total.max(1) as f64
            );
        }
        if j % every == 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                x + bw / 2.0,
                bottom + 14.0,
                crate::fmt::ns(low)
            );
        }
    }
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">latency (log2 buckets, lower bound)</text></svg>",
        w - 10.0,
        x0 + plot_w / 2.0,
        h - 4.0
    );
    Some(out)
}

/// One latency curve: `(percentile 0..100, nanoseconds)` points in rising percentile order.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Where a percentile sits on the log axis: `log10(100 / (100 - p))`, so 90% is 1, 99% is 2,
/// 99.9% is 3. `None` at or above 100 (the maximum has no place on this axis).
pub fn percentile_x(p: f64) -> Option<f64> {
    (p.is_finite() && (0.0..100.0).contains(&p)).then(|| (100.0 / (100.0 - p)).log10())
}

/// Latency against percentile, one line per curve, x on the `1 / (1 - q)` log axis with ticks
/// at 0%, 90%, 99%, 99.9%... up to the highest percentile shown. `None` when no curve has a
/// point below 100%.
pub fn percentile_curves(title: &str, curves: &[Curve]) -> Option<String> {
    let placed: Vec<Vec<(f64, f64, f64)>> = curves
        .iter()
        .map(|c| {
            c.points
                .iter()
                .filter_map(|&(p, ns)| Some((percentile_x(p)?, clean(ns), p)))
                .collect()
        })
        .collect();
    let x_max = placed
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(f64::NAN, f64::max);
    if x_max.is_nan() {
        return None;
    }
    let decades = x_max.ceil().max(1.0);
    let y_max = placed.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let t = ticks(y_max, 4);
    let axis_max = *t.last().expect("ticks are never empty");
    let (w, h) = (560.0, 260.0);
    let (x0, top, bottom, right) = (56.0, 30.0, h - 40.0, w - 150.0);
    let x_of = |x: f64| x0 + (right - x0) * x / decades;
    let y_of = |v: f64| bottom - (bottom - top) * v / axis_max;
    let mut out = String::new();
    svg_open(&mut out, w, h, "percentiles", title);
    for &tv in &t {
        let y = y_of(tv);
        let _ = write!(
            out,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            x0 - 4.0,
            y + 4.0,
            fmt_ns(tv)
        );
    }
    for d in 0..=decades as u32 {
        let x = x_of(d as f64);
        let label = match d {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            2 => "99%".to_string(),
            d => format!("99.{}%", "9".repeat(d as usize - 2)),
        };
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            bottom + 14.0
        );
    }
    for (i, (c, pts)) in curves.iter().zip(&placed).enumerate() {
        let line: Vec<String> = pts
            .iter()
            .map(|&(x, v, _)| format!("{:.1},{:.1}", x_of(x), y_of(v)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"curve\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            color(i),
            line.join(" ")
        );
        for &(x, v, p) in pts {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{}: p{} {}</title></circle>",
                x_of(x),
                y_of(v),
                color(i),
                esc(&c.name),
                p,
                fmt_ns(v)
            );
        }
        let ly = top + 4.0 + i as f64 * 16.0;
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"11\" height=\"11\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            right + 10.0,
            ly - 9.0,
            color(i),
            right + 25.0,
            ly,
            esc(&c.name)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#888\"/>\
         <line x1=\"{x0}\" y1=\"{top}\" x2=\"{x0}\" y2=\"{bottom}\" stroke=\"#888\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">percentile (log scale: each step is ten times rarer)</text></svg>",
        (x0 + right) / 2.0,
        h - 8.0
    );
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(100.0, 4), [0.0, 50.0, 100.0]);
        assert_eq!(ticks(101.0, 4), [0.0, 50.0, 100.0, 150.0]);
        assert_eq!(ticks(7.3, 4), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(0.0, 4), [0.0, 1.0]);
        assert_eq!(ticks(f64::NAN, 4), [0.0, 1.0]);
        let t = ticks(3_450_000.0, 4);
        assert_eq!(t, [0.0, 1e6, 2e6, 3e6, 4e6]);
        for max in [0.013, 1.0, 9.99, 123.0, 4.5e9] {
            let t = ticks(max, 4);
            assert!(*t.last().unwrap() >= max, "{max}: {t:?}");
            assert!(t.len() <= 6, "{max}: {t:?}");
        }
    }

    #[test]
    fn counts_keep_three_digits() {
        assert_eq!(fmt_count(12.6), "12.6");
        assert_eq!(fmt_count(0.5), "0.50");
        assert_eq!(fmt_count(5.0), "5");
        assert_eq!(fmt_count(24_900.0), "24.9k");
        assert_eq!(fmt_count(f64::NAN), "-");
    }

    #[test]
    fn percentiles_sit_on_a_log_axis() {
        assert_eq!(percentile_x(0.0), Some(0.0));
        assert!((percentile_x(90.0).unwrap() - 1.0).abs() < 1e-12);
        assert!((percentile_x(99.0).unwrap() - 2.0).abs() < 1e-12);
        assert!((percentile_x(99.9).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(percentile_x(100.0), None);
        assert_eq!(percentile_x(f64::NAN), None);
    }

    /// `(x, width)` of every `<rect class="bar"...>`.
    fn bar_rects(svg: &str) -> Vec<(f64, f64)> {
        let attr = |s: &str, name: &str| -> f64 {
            let k = format!(" {name}=\"");
            let i = s.find(&k).unwrap() + k.len();
            s[i..s[i..].find('"').unwrap() + i].parse().unwrap()
        };
        svg.split("<rect class=\"bar\"")
            .skip(1)
            .map(|r| (attr(r, "x"), attr(r, "width")))
            .collect()
    }

    #[test]
    fn bars_are_proportional_and_stack_in_key_order() {
        let c = BarChart::new("req/s", fmt_count)
            .row("a", vec![100.0])
            .row("b", vec![50.0])
            .row("c", vec![f64::NAN]);
        let svg = bars(&c).unwrap();
        let r = bar_rects(&svg);
        assert_eq!(r.len(), 2, "a NaN draws no bar: {svg}");
        assert!((r[0].1 / r[1].1 - 2.0).abs() < 0.01, "{r:?}");
        assert!(svg.contains("<title>b: 50</title>"), "{svg}");
        assert!(svg.starts_with("<svg class=\"plot bars\""));
        assert!(svg.ends_with("</svg>"));

        let mut s = BarChart::new("syscalls/req", fmt_count);
        s.keys = vec!["close".into(), "write".into()];
        let s = s.row("mmap", vec![2.0, 1.0]).row("cached", vec![1.0, 1.0]);
        let svg = bars(&s).unwrap();
        let r = bar_rects(&svg);
        assert_eq!(r.len(), 4);
        // The second segment starts where the first ends.
        assert!((r[0].0 + r[0].1 - r[1].0).abs() < 0.11, "{r:?}");
        assert!((r[0].1 / r[1].1 - 2.0).abs() < 0.01, "{r:?}");
        assert!(svg.contains("<title>mmap, close: 2</title>"), "{svg}");
        assert!(svg.contains(">write</text>"), "legend: {svg}");
        assert!(bars(&BarChart::new("empty", fmt_count)).is_none());
    }

    #[test]
    fn names_are_escaped() {
        let c = BarChart::new("<t>", fmt_count).row("a&b<script>", vec![1.0]);
        let svg = bars(&c).unwrap();
        assert!(!svg.contains("<script>") && !svg.contains("<t>"), "{svg}");
        assert!(svg.contains("a&amp;b&lt;script&gt;"));
    }

    #[test]
    fn histogram_spans_first_to_last_bucket() {
        let mut h = vec![0u64; 40];
        h[10] = 30;
        h[12] = 10;
        let svg = histogram("close latency", &h).unwrap();
        let r = bar_rects(&svg);
        assert_eq!(r.len(), 2, "empty buckets draw no bar");
        assert!(svg.contains("close latency (40 events)"), "{svg}");
        assert!(
            svg.contains("<title>1.02µs to 2.05µs: 30 (75.0%)</title>"),
            "{svg}"
        );
        // Three buckets wide: the second bar starts two bucket widths after the first.
        let bw = (r[1].0 - r[0].0) / 2.0;
        assert!(bw > 50.0, "{r:?}");
        assert_eq!(histogram("none", &[0, 0, 0]), None);
        assert_eq!(histogram("none", &[]), None);
    }

    #[test]
    fn curves_place_points_and_skip_the_maximum() {
        let c = Curve {
            name: "mmap".into(),
            points: vec![(0.0, 1000.0), (90.0, 2000.0), (99.0, 4000.0), (100.0, 9e9)],
        };
        let svg = percentile_curves("latency", std::slice::from_ref(&c)).unwrap();
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("<title>mmap: p99 4.00µs</title>"), "{svg}");
        assert!(
            svg.contains(">99%</text>") && !svg.contains(">99.9%</text>"),
            "{svg}"
        );
        // The y axis is scaled to the points shown, not to the maximum left out.
        assert!(svg.contains(">4.00µs</text>"), "{svg}");
        let only_max = Curve {
            name: "x".into(),
            points: vec![(100.0, 1.0)],
        };
        assert_eq!(percentile_curves("t", &[only_max]), None);
    }
}
