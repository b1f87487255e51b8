//! `report.html`: a run (and the pieces of a bench's, see `bench::report`) as one self-contained file (inline CSS, flame graphs
//! as inline SVG, no network), so it can be mailed, archived or opened from a CI artifact.
//!
//! Flame graphs are inlined without inferno's script: several graphs share one document, and
//! their scripts would fight over the same element ids. The graphs stay readable (inferno
//! truncates labels itself, and every frame keeps its `<title>` tooltip); the interactive SVG
//! files sit next to the report.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{fmt_ns, fmt_si};
use crate::families::{
    self,
    section::{Block, Section, SectionOptions},
};
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

pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    )
}

/// A table whose first row is the header; cells after the first are right-aligned numbers.
pub fn table(out: &mut String, id: &str, rows: &[Vec<String>]) {
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

pub fn figure(out: &mut String, f: &Figure) {
    let _ = writeln!(
        out,
        "<h3>{}</h3><div class=\"flame\">{}</div>",
        escape(&f.title),
        inline_svg(&f.svg)
    );
}

pub fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.map(String::from).to_vec()
}

/// A family's section: its heading, what measured it, its tables and lines.
fn section(out: &mut String, id: &str, s: &Section) {
    let _ = write!(out, "<h3>{}</h3>", escape(s.heading));
    if let Some(m) = &s.method {
        let _ = write!(out, "<p class=\"method\">measured by: {}</p>", escape(m));
    }
    for b in &s.blocks {
        match b {
            Block::Line(l) => {
                let _ = write!(out, "<p>{}</p>", escape(l));
            }
            Block::Table(t) => {
                let mut rows = vec![t.columns.iter().map(|c| c.0.to_string()).collect()];
                rows.extend(t.rows.iter().cloned());
                table(out, &format!("{id}-{}", t.id), &rows);
                if t.hidden > 0 {
                    let _ = write!(
                        out,
                        "<p>... {} more {}</p>",
                        t.hidden,
                        escape(t.hidden_what)
                    );
                }
            }
        }
    }
}

/// The sections of one run, then its methods and overhead; `id` prefixes element ids so a
/// bench page can hold several runs.
pub fn run_tables(out: &mut String, id: &str, run: &Run, top: usize) {
    let k = &run.kernel;
    let _ = writeln!(
        out,
        "<p>kernel <code>{}</code>, duration {}, target {} {}</p>",
        escape(&k.release),
        fmt_ns(run.duration_ns),
        escape(&run.target.kind),
        run.target.pid.map_or_else(String::new, |p| p.to_string())
    );
    for s in families::sections(
        run,
        &SectionOptions {
            top,
            ..Default::default()
        },
    ) {
        section(out, id, &s);
    }
    methods(out, id, run);
}

/// Each family's method, BPF events and lost counts, and the run's warnings.
fn methods(out: &mut String, id: &str, run: &Run) {
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
    if let Some(cg) = &run.call_graph {
        // The stack method serves oncpu, sched and locks alike: a row of its own.
        let mut r = vec!["user stacks".to_string(), format!("call-graph={cg}")];
        r.extend(std::iter::repeat_n("-".to_string(), 4));
        rows.push(r);
    }
    table(out, &format!("{id}-methods"), &rows);
    if let Some(u) = &run.unwind {
        let _ = write!(
            out,
            "<p>{}</p>",
            escape(&crate::render::table::unwind_line(u))
        );
    }
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
    for (what, file) in [
        ("on-CPU", &a.oncpu_svg),
        ("off-CPU", &a.offcpu_svg),
        ("wall-clock", &a.wall_svg),
    ] {
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
    body.push_str(&crate::findings::html(&run.findings));
    if !figures.is_empty() {
        body.push_str("<h2>Flame graphs</h2>");
        for f in figures {
            figure(&mut body, f);
        }
    }
    page(&title, &body)
}

pub fn write_file(path: &Path, text: &str) -> Result<(), HtmlError> {
    std::fs::write(path, text).map_err(|source| HtmlError::Write {
        path: path.to_path_buf(),
        source,
    })
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
        // Sections are drawn for the families the run recorded, as in the terminal.
        run.methods.insert("syscalls".into(), "raw_tp".into());
        run.methods.insert("kpaths".into(), "sampled".into());
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
