//! `report.html`: a run, or a whole bench, as one self-contained file (inline CSS, flame graphs
//! as inline SVG, no network), so it can be mailed, archived or opened from a CI artifact.
//!
//! Flame graphs are inlined without inferno's script: several graphs share one document, and
//! their scripts would fight over the same element ids. The graphs stay readable (inferno
//! truncates labels itself, and every frame keeps its `<title>` tooltip); the interactive SVG
//! files sit next to the report.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{fmt_ns, fmt_percent, fmt_si};
use crate::bench::json::Bench;
use crate::bench::table as bench_table;
use crate::run::Run;

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A flame graph to inline: its caption and the SVG file's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub svg: String,
}

/// One run of a bench with the graphs found in its directory.
#[derive(Debug, Clone)]
pub struct RunSection {
    pub name: String,
    pub run: Run,
    pub figures: Vec<Figure>,
}

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document made fit for inlining: no XML declaration, no DOCTYPE, no scripts and no
/// `onload` handler (whose function went with the scripts).
pub fn inline_svg(svg: &str) -> String {
    let mut s = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => return String::new(),
    }
    .to_string();
    while let Some(start) = s.find("<script") {
        let end = s[start..]
            .find("</script>")
            .map_or(s.len(), |e| start + e + "</script>".len());
        s.replace_range(start..end, "");
    }
    s.replacen(" onload=\"init(evt)\"", "", 1)
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1260px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{padding:3px 10px;border-bottom:1px solid #e4e4e4}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.method{color:#666;font-size:.9em}.warn{color:#9a5b00}
.flame{overflow-x:auto;border:1px solid #ddd;margin:.5em 0 1.5em}.flame svg{max-width:100%;height:auto;display:block}
.guide{background:#f7f9fc;border-left:4px solid #6b8fc7;padding:.5em 1em}
code{background:#f2f2f2;padding:0 3px}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    )
}

/// A table whose first row is the header; cells after the first are right-aligned numbers.
fn table(out: &mut String, id: &str, rows: &[Vec<String>]) {
    let _ = write!(out, "<table id=\"{}\">", escape(id));
    for (i, row) in rows.iter().enumerate() {
        out.push_str("<tr>");
        for (j, cell) in row.iter().enumerate() {
            let (tag, class) = match (i, j) {
                (0, _) => ("th", ""),
                (_, 0) => ("td", ""),
                _ => ("td", " class=\"n\""),
            };
            let _ = write!(out, "<{tag}{class}>{}</{tag}>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

fn figure(out: &mut String, f: &Figure) {
    let _ = writeln!(
        out,
        "<h3>{}</h3><div class=\"flame\">{}</div>",
        escape(&f.title),
        inline_svg(&f.svg)
    );
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.map(String::from).to_vec()
}

fn method_note(out: &mut String, run: &Run, family: &str) {
    if let Some(m) = run.methods.get(family) {
        let _ = write!(out, "<p class=\"method\">measured by: {}</p>", escape(m));
    }
}

/// The tables of one run (syscalls, kpaths, sched, locks, methods and overhead); `id` prefixes
/// element ids so a bench page can hold several runs.
fn run_tables(out: &mut String, id: &str, run: &Run, top: usize) {
    let k = &run.kernel;
    let _ = writeln!(
        out,
        "<p>kernel <code>{}</code>, duration {}, target {} {}</p>",
        escape(&k.release),
        fmt_ns(run.duration_ns),
        escape(&run.target.kind),
        run.target.pid.map_or_else(String::new, |p| p.to_string())
    );
    if !run.syscalls.is_empty() {
        out.push_str("<h3>Top syscalls (by total time)</h3>");
        method_note(out, run, "syscalls");
        let mut rows = vec![row([
            "syscall", "count", "errors", "total", "p50", "p99", "max",
        ])];
        let mut sc: Vec<_> = run.syscalls.iter().collect();
        sc.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.name.cmp(&b.name)));
        for r in sc.into_iter().take(top) {
            rows.push(vec![
                r.name.clone(),
                r.count.to_string(),
                r.errors.to_string(),
                fmt_ns(r.total_ns),
                fmt_ns(r.p50_ns),
                fmt_ns(r.p99_ns),
                fmt_ns(r.max_ns),
            ]);
        }
        table(out, &format!("{id}-syscalls"), &rows);
    }
    if !run.kpaths.is_empty() {
        out.push_str("<h3>Kernel paths</h3>");
        method_note(out, run, "kpaths");
        let mut rows = vec![row([
            "function",
            "method",
            "calls",
            "total",
            "max",
            "on-CPU share",
            "in syscall",
        ])];
        let opt = |v: Option<u64>, f: fn(u64) -> String| v.map_or_else(|| "-".into(), f);
        for r in &run.kpaths {
            rows.push(vec![
                r.function.clone(),
                r.method.clone(),
                opt(r.calls, |c| c.to_string()),
                opt(r.total_ns, fmt_ns),
                opt(r.max_ns, fmt_ns),
                fmt_percent(r.oncpu_share),
                r.syscall.clone(),
            ]);
        }
        table(out, &format!("{id}-kpaths"), &rows);
    }
    if let Some(s) = &run.sched {
        out.push_str("<h3>Scheduling</h3>");
        method_note(out, run, "sched");
        let rows = vec![
            row([
                "voluntary switches",
                "involuntary switches",
                "off-CPU",
                "wakeups",
                "run-queue delay p50",
                "p99",
                "max",
            ]),
            vec![
                s.voluntary_switches.to_string(),
                s.involuntary_switches.to_string(),
                fmt_ns(s.offcpu_ns),
                s.wakeups.to_string(),
                fmt_ns(s.runq_delay_p50_ns),
                fmt_ns(s.runq_delay_p99_ns),
                fmt_ns(s.runq_delay_max_ns),
            ],
        ];
        table(out, &format!("{id}-sched"), &rows);
    }
    if run.methods.contains_key("locks") {
        out.push_str("<h3>Lock contention</h3>");
        method_note(out, run, "locks");
        if run.locks.is_empty() {
            out.push_str("<p>No contention seen.</p>");
        } else {
            let mut rows = vec![row(["caller", "lock", "type", "count", "wait", "max"])];
            for l in run.locks.iter().take(top) {
                rows.push(vec![
                    l.caller.clone(),
                    l.lock.clone(),
                    l.lock_type.clone(),
                    l.count.to_string(),
                    fmt_ns(l.wait_ns),
                    fmt_ns(l.max_ns),
                ]);
            }
            table(out, &format!("{id}-locks"), &rows);
        }
    }
    out.push_str("<h3>Methods and overhead</h3>");
    let mut rows = vec![row([
        "family",
        "method",
        "BPF events",
        "events/s",
        "ns/event",
        "lost",
    ])];
    for (fam, m) in &run.methods {
        let o = run.overhead.families.get(fam);
        rows.push(vec![
            fam.clone(),
            m.clone(),
            o.map_or_else(|| "-".into(), |o| o.events.to_string()),
            o.map_or_else(|| "-".into(), |o| fmt_si(o.events_per_sec)),
            match o {
                Some(o) if run.overhead.bpf_stats_enabled => format!("{:.0}", o.ns_per_event),
                _ => "-".into(),
            },
            run.lost.get(fam).copied().unwrap_or(0).to_string(),
        ]);
    }
    table(out, &format!("{id}-methods"), &rows);
    if !run.warnings.is_empty() {
        out.push_str("<ul class=\"warn\">");
        for w in &run.warnings {
            let _ = write!(out, "<li>{}</li>", escape(w));
        }
        out.push_str("</ul>\n");
    }
}

/// The flame graphs `kpath record` wrote next to `run.json`; missing files are skipped.
pub fn run_figures(dir: &Path, run: &Run, name: &str) -> Vec<Figure> {
    let Some(a) = &run.artifacts else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (what, file) in [("on-CPU", &a.oncpu_svg), ("off-CPU", &a.offcpu_svg)] {
        if let Some(svg) = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(dir.join(f)).ok())
        {
            out.push(Figure {
                title: format!("{name}: {what} flame graph"),
                svg,
            });
        }
    }
    out
}

/// A single run's report.
pub fn run_page(run: &Run, figures: &[Figure]) -> String {
    let mut body = String::new();
    let title = format!("kpath run: {}", run.kernel.release);
    let _ = writeln!(body, "<h1>{}</h1>", escape(&title));
    run_tables(&mut body, "run", run, 25);
    if !figures.is_empty() {
        body.push_str("<h2>Flame graphs</h2>");
        for f in figures {
            figure(&mut body, f);
        }
    }
    page(&title, &body)
}

const GUIDE: &str =
    "<div class=\"guide\"><p><b>Reading this report.</b> Every strategy served the \
same file to the same load (runs named <code>-Nfiles</code> spread the same requests over N \
files of that size), each in its own server process with all probe families attached; every \
figure is divided by the requests the load generator completed, so rows compare \
directly.</p><ul>\
<li><b>syscalls/req</b>: fewer means less kernel crossing per request (mmap adds mmap+munmap, \
sendfile adds open+close and TCP_CORK setsockopts, cached needs neither).</li>\
<li><b>syscall time/req</b> counts time inside syscalls, including waiting in epoll_wait or \
accept; <b>busy/req</b> leaves those waiting syscalls out and is the better cost figure.</li>\
<li><b>TCP segs/req</b> counts segments both ways, from the load generator's sockets (TCP_INFO) \
up to each close: a reply in two segments (header, then body) shows here.</li>\
<li><b>Kernel paths</b> show where the close and open paths go (tcp_close, \
eventpoll_release_file, do_sys_openat2, __vm_munmap); the method column says whether a row was \
timed (fentry, kprobe) or estimated from on-CPU samples.</li>\
<li>In the <b>differential flame graphs</b> widths are the strategy's own samples; red frames \
grew and blue frames shrank compared with the baseline (normalized to equal totals).</li>\
<li>Hover a frame for its full name and sample count; the interactive SVGs sit next to this \
file under <code>runs/</code> and <code>diff/</code>.</li></ul></div>\n";

/// A bench's report: comparison, per-strategy tables, differential and per-run graphs.
pub fn bench_page(bench: &Bench, runs: &[RunSection], diffs: &[Figure]) -> String {
    let mut body = String::new();
    let title = format!("kpath bench: {}", bench.kernel.release);
    let _ = writeln!(body, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        body,
        "<p>{} s of load per strategy, {} connections, a {} byte file; baseline <b>{}</b>.</p>",
        bench.duration_secs,
        bench.connections,
        bench.file_size,
        escape(&bench.baseline)
    );
    body.push_str(GUIDE);
    body.push_str("<h2>Comparison (per request)</h2>");
    table(&mut body, "comparison", &bench_table::summary_rows(bench));
    table(
        &mut body,
        "syscalls-per-request",
        &bench_table::syscall_rows(bench, bench_table::TOP_SYSCALLS),
    );
    let k = bench_table::kpath_rows(bench);
    if k.len() > 1 {
        table(&mut body, "kpaths-per-request", &k);
    }
    if !diffs.is_empty() {
        body.push_str("<h2>Differential flame graphs (on-CPU, against the baseline)</h2>");
        for f in diffs {
            figure(&mut body, f);
        }
    }
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(body, "<h2>{}</h2>", escape(&r.name));
        run_tables(&mut body, &format!("run{i}"), &r.run, 15);
        for f in &r.figures {
            figure(&mut body, f);
        }
    }
    page(&title, &body)
}

fn write_file(path: &Path, text: &str) -> Result<(), HtmlError> {
    std::fs::write(path, text).map_err(|source| HtmlError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `DIR/report.html` for a bench whose runs and graphs are under `dir`; runs whose
/// `run.json` cannot be read are left out of the per-run part.
pub fn write_bench_report(dir: &Path, bench: &Bench) -> Result<PathBuf, HtmlError> {
    let mut runs = Vec::new();
    let mut diffs = Vec::new();
    for r in &bench.runs {
        let rd = dir.join(&r.run_dir);
        match super::json::from_file(&rd.join("run.json")) {
            Ok(run) => runs.push(RunSection {
                name: r.name.clone(),
                figures: run_figures(&rd, &run, &r.name)
                    .into_iter()
                    .filter(|f| f.title.contains("on-CPU"))
                    .collect(),
                run,
            }),
            Err(e) => log::warn!("report.html: {}: {e}", r.name),
        }
        if let Some(svg) = r
            .diff_oncpu_svg
            .as_ref()
            .and_then(|f| std::fs::read_to_string(dir.join(f)).ok())
        {
            diffs.push(Figure {
                title: format!("{} vs {}", r.name, bench.baseline),
                svg,
            });
        }
    }
    let path = dir.join("report.html");
    write_file(&path, &bench_page(bench, &runs, &diffs))?;
    Ok(path)
}

/// Writes `DIR/report.html` for a single recorded run.
pub fn write_run_report(dir: &Path, run: &Run) -> Result<PathBuf, HtmlError> {
    let path = dir.join("report.html");
    write_file(&path, &run_page(run, &run_figures(dir, run, "run")))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{KpathRow, SyscallRow};

    #[test]
    fn escapes_markup_in_names() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'q'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"
        );
        assert_eq!(escape("tcp_close+0x1f"), "tcp_close+0x1f");
    }

    #[test]
    fn inlined_svg_loses_prolog_and_scripts() {
        let svg = "<?xml version=\"1.0\"?><!DOCTYPE svg PUBLIC \"x\" \"y\"><svg version=\"1.1\" \
                   onload=\"init(evt)\"><style>text{}</style><script type=\"text/ecmascript\">\
                   <![CDATA[var a = 1 < 2;]]></script><g><title>f</title></g><script>x</script></svg>";
        assert_eq!(
            inline_svg(svg),
            "<svg version=\"1.1\"><style>text{}</style><g><title>f</title></g></svg>"
        );
        assert_eq!(inline_svg("not an svg"), "");
    }

    #[test]
    fn run_page_escapes_every_name() {
        let mut run = Run {
            syscalls: vec![SyscallRow {
                name: "<b>evil</b>".into(),
                count: 7,
                ..Default::default()
            }],
            kpaths: vec![KpathRow {
                function: "a&b".into(),
                method: "sampled".into(),
                ..Default::default()
            }],
            warnings: vec!["<img src=x>".into()],
            ..Default::default()
        };
        run.methods.insert("syscalls".into(), "raw_tp".into());
        let html = run_page(
            &run,
            &[Figure {
                title: "t<1>".into(),
                svg: "<svg><g/></svg>".into(),
            }],
        );
        assert!(html.contains("<td>&lt;b&gt;evil&lt;/b&gt;</td><td class=\"n\">7</td>"));
        assert!(html.contains("<td>a&amp;b</td>"));
        assert!(html.contains("&lt;img src=x&gt;"));
        assert!(!html.contains("<b>evil"));
        assert!(!html.contains("<img"));
        assert!(html.contains("<h3>t&lt;1&gt;</h3><div class=\"flame\"><svg><g/></svg></div>"));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no network"
        );
    }
}
