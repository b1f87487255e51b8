//! `report.html`: a run (and the pieces of a bench's, see `bench::report`) as one
//! self-contained file (inline CSS, scripts, plots and flame graphs; no network), so it can be
//! mailed, archived or opened from a CI artifact.
//!
//! Flame graphs keep inferno's own script (click to zoom, Reset Zoom, Search with the matched
//! share, the details line and `<title>` tooltips): each graph is a whole SVG document in an
//! `<iframe>` of its own (a `data:` URL), so the scripts and element ids of several graphs never
//! meet. A search box above them searches every graph at once through `postMessage`. Plots are
//! inline SVG made by [`super::plot`].
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::{fmt_ns, fmt_si, plot};
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

/// A flame graph to show: its caption, the SVG file's text, and what to say around it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figure {
    pub title: String,
    pub svg: String,
    /// The standalone SVG file, relative to the report.
    pub link: Option<String>,
    /// A line under the caption (a differential graph's totals).
    pub note: Option<String>,
    /// Why the graph should not be trusted as it stands.
    pub warning: Option<String>,
}

impl Figure {
    pub fn new(title: impl Into<String>, svg: impl Into<String>) -> Figure {
        Figure {
            title: title.into(),
            svg: svg.into(),
            ..Default::default()
        }
    }
}

pub use super::markup::escape;

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1260px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{padding:3px 10px;border-bottom:1px solid #e4e4e4}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.method{color:#666;font-size:.9em}.warn{color:#9a5b00}
iframe.flame{width:100%;border:1px solid #ddd;display:block;scroll-margin-top:4em}.figure{scroll-margin-top:3.5em}.flame-links{color:#666;font-size:.9em;margin:.2em 0 1.5em}
.matched{color:#8a008a;font-weight:bold}.search{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ddd;z-index:1}
.plots{display:flex;flex-wrap:wrap;align-items:flex-start;gap:1em;margin:.5em 0 1em}.plotbox{border:1px solid #e4e4e4;padding:4px}
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

/// Added to every graph's document: `history.replaceState` made harmless (inferno keeps its
/// zoom and search in the URL, which a `data:` document cannot change, and the exception
/// would stop the search before it shows the matched share), the Search button made visible,
/// and the page-wide search: a `{kpath: "search", term, id}` message searches this graph
/// (an empty term resets it) and answers `{kpath: "matched", id, matched}`.
const FRAME_HOOK: &str = "<style type=\"text/css\">text#search{opacity:0.7}</style>\
<script type=\"text/ecmascript\"><![CDATA[
try { history.replaceState = function () {}; } catch (e) {}
window.addEventListener('message', function (e) {
  var d = e.data;
  if (!d || d.kpath !== 'search' || typeof search !== 'function' || !frames) return;
  var matched = '';
  try {
    if (searching) { search_prompt(); }
    if (d.term) { search(d.term); matched = searching ? matchedtxt.firstChild.nodeValue : 'no match'; }
  } catch (err) { matched = 'bad pattern'; }
  parent.postMessage({kpath: 'matched', id: d.id, matched: matched}, '*');
}, false);
]]></script>";

/// The SVG document with [`FRAME_HOOK`] after its `<svg ...>` tag; unchanged when it has none.
pub fn interactive_svg(svg: &str) -> String {
    let Some(open) = svg.find("<svg") else {
        return svg.to_string();
    };
    let Some(end) = svg[open..].find('>').map(|e| open + e + 1) else {
        return svg.to_string();
    };
    format!("{}{FRAME_HOOK}{}", &svg[..end], &svg[end..])
}

/// The `height` of an SVG's outer element in px (inferno's graphs grow with stack depth).
fn svg_height(svg: &str) -> Option<f64> {
    let open = svg.find("<svg")?;
    let tag = &svg[open..open + svg[open..].find('>')?];
    let i = tag.find(" height=\"")? + " height=\"".len();
    tag[i..i + tag[i..].find('"')?].parse().ok()
}

/// A flame graph: caption, its totals and warning, the interactive graph in its own frame,
/// and a link to the standalone file. `n` numbers the graphs of a page.
pub fn figure(out: &mut String, n: usize, f: &Figure) {
    let _ = write!(
        out,
        "<div class=\"figure\" id=\"flame-{n}\"><h3>{}</h3>",
        escape(&f.title)
    );
    if let Some(note) = &f.note {
        let _ = write!(out, "<p class=\"method\">{}</p>", escape(note));
    }
    if let Some(w) = &f.warning {
        let _ = write!(out, "<p class=\"warn\">{}</p>", escape(w));
    }
    let height = svg_height(&f.svg).unwrap_or(400.0).ceil() + 4.0;
    let data = base64::engine::general_purpose::STANDARD.encode(interactive_svg(&f.svg));
    let _ = write!(
        out,
        "<iframe class=\"flame\" data-flame=\"{n}\" title=\"{}\" style=\"height:{height}px\" \
         src=\"data:image/svg+xml;base64,{data}\"></iframe><p class=\"flame-links\">",
        escape(&f.title)
    );
    if let Some(link) = &f.link {
        let _ = write!(out, "<a href=\"{}\">standalone SVG</a> · ", escape(link));
    }
    let _ = writeln!(
        out,
        "click a frame to zoom, Reset Zoom to go back, Search (top right) to highlight; \
         <span class=\"matched\" data-flame=\"{n}\"></span></p></div>"
    );
}

/// The page-wide search box over every flame graph, and its script.
const SEARCH: &str = "<div class=\"search\"><label>Search every flame graph (a function name or \
regular expression): <input id=\"flame-search\" type=\"search\" placeholder=\"tcp_close\"></label> \
<button id=\"flame-search-go\">Search</button> <button id=\"flame-search-reset\">Reset</button> \
<span id=\"flame-search-status\"></span></div>
<script>
(function () {
  function post(term) {
    // Looked up here: the graphs come after this script in the page.
    var frames = document.querySelectorAll('iframe.flame');
    for (var i = 0; i < frames.length; i++) {
      var id = frames[i].getAttribute('data-flame');
      frames[i].contentWindow.postMessage({kpath: 'search', term: term, id: id}, '*');
    }
    document.getElementById('flame-search-status').textContent =
      term ? 'searching ' + frames.length + ' graphs for ' + term : '';
  }
  window.addEventListener('message', function (e) {
    var d = e.data;
    if (!d || d.kpath !== 'matched') return;
    var s = document.querySelector('span.matched[data-flame=\"' + d.id + '\"]');
    if (s) s.textContent = d.matched ? 'search: ' + d.matched : '';
  });
  var input = document.getElementById('flame-search');
  document.getElementById('flame-search-go').onclick = function () { post(input.value); };
  document.getElementById('flame-search-reset').onclick = function () { input.value = ''; post(''); };
  input.addEventListener('keydown', function (e) { if (e.key === 'Enter') post(input.value); });
})();
</script>
";

/// Flame graphs numbered from `first` (ids and search replies are per number).
pub fn figures(out: &mut String, first: usize, figs: &[Figure]) {
    for (i, f) in figs.iter().enumerate() {
        figure(out, first + i, f);
    }
}

/// The search box over all graphs of a page; put it once, before the first graph.
pub fn search_box(out: &mut String) {
    out.push_str(SEARCH);
}

/// Plots side by side (`None`s, plots with nothing to draw, are left out).
pub fn plots(out: &mut String, svgs: impl IntoIterator<Item = Option<String>>) {
    let svgs: Vec<String> = svgs.into_iter().flatten().collect();
    if svgs.is_empty() {
        return;
    }
    out.push_str("<div class=\"plots\">");
    for s in svgs {
        let _ = write!(out, "<div class=\"plotbox\">{s}</div>");
    }
    out.push_str("</div>\n");
}

/// Syscall histograms drawn per run, at most.
const RUN_HISTOGRAMS: usize = 6;

/// A run's plots: the latency histograms its sections keep (the top syscalls, timed kernel
/// paths, the run-queue delay) and lock wait by caller.
pub fn run_plots(out: &mut String, run: &Run) {
    let mut svgs = Vec::new();
    for s in families::sections(
        run,
        &SectionOptions {
            top: RUN_HISTOGRAMS,
            ..Default::default()
        },
    ) {
        for (label, h) in &s.histograms {
            svgs.push(plot::histogram(label, h));
        }
    }
    svgs.push(lock_plot(run));
    plots(out, svgs);
}

/// Lock contention wait by waiting caller (offsets dropped), the longest first.
fn lock_plot(run: &Run) -> Option<String> {
    let mut by: std::collections::BTreeMap<&str, u64> = Default::default();
    for l in &run.locks {
        let caller = l.caller.split('+').next().unwrap_or_default();
        *by.entry(caller).or_default() += l.wait_ns;
    }
    let mut v: Vec<(&str, u64)> = by.into_iter().filter(|e| e.1 > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut c = plot::BarChart::new("Lock wait by caller (total)", plot::fmt_ns);
    c.row_colors = false;
    for (caller, ns) in v.into_iter().take(10) {
        c = c.row(caller, vec![ns as f64]);
    }
    plot::bars(&c)
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
    // The wall-clock graph (on-CPU and off-CPU time in one) is drawn when its file exists.
    let wall = a
        .wall_svg
        .clone()
        .or_else(|| Some(WALL_SVG.to_string()).filter(|f| dir.join(f).is_file()));
    for (what, file) in [
        ("on-CPU", &a.oncpu_svg),
        ("off-CPU", &a.offcpu_svg),
        ("wall-clock", &wall),
    ] {
        let Some(file) = file else { continue };
        if let Ok(svg) = std::fs::read_to_string(dir.join(file)) {
            out.push(Figure {
                link: Some(file.clone()),
                ..Figure::new(format!("{name}: {what} flame graph"), svg)
            });
        }
    }
    out
}

/// The wall-clock flame graph's file in a run directory.
pub const WALL_SVG: &str = "wall.svg";

/// A single run's report.
pub fn run_page(run: &Run, figures: &[Figure]) -> String {
    let mut body = String::new();
    let title = format!("kpath run: {}", run.kernel.release);
    let _ = writeln!(body, "<h1>{}</h1>", escape(&title));
    run_tables(&mut body, "run", run, 25);
    body.push_str(&crate::findings::html(&run.findings));
    run_plots(&mut body, run);
    if !figures.is_empty() {
        body.push_str("<h2>Flame graphs</h2>");
        search_box(&mut body);
        self::figures(&mut body, 0, figures);
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
    fn graphs_keep_their_script_in_a_frame_of_their_own() {
        let svg = "<?xml version=\"1.0\"?><svg version=\"1.1\" width=\"1200\" height=\"246\" \
                   onload=\"init(evt)\"><script>function init(e){}</script><g><title>f</title></g></svg>";
        let i = interactive_svg(svg);
        assert!(i.starts_with("<?xml version=\"1.0\"?><svg version=\"1.1\" width=\"1200\" height=\"246\" onload=\"init(evt)\"><style"), "{i}");
        assert!(i.contains("history.replaceState = function"), "{i}");
        assert!(
            i.ends_with("<script>function init(e){}</script><g><title>f</title></g></svg>"),
            "{i}"
        );
        assert_eq!(interactive_svg("not an svg"), "not an svg");
        assert_eq!(svg_height(svg), Some(246.0));

        let mut out = String::new();
        let f = Figure {
            link: Some("runs/a b/oncpu.svg".into()),
            note: Some("a 64 samples".into()),
            warning: Some("too <few>".into()),
            ..Figure::new("t<1>", svg)
        };
        figure(&mut out, 3, &f);
        assert!(
            out.starts_with("<div class=\"figure\" id=\"flame-3\"><h3>t&lt;1&gt;</h3>"),
            "{out}"
        );
        assert!(
            out.contains("<p class=\"warn\">too &lt;few&gt;</p>"),
            "{out}"
        );
        assert!(out.contains("style=\"height:250px\""), "{out}");
        assert!(
            out.contains("<a href=\"runs/a b/oncpu.svg\">standalone SVG</a>"),
            "{out}"
        );
        // The frame's document is the graph with the hook, whole.
        let src = out
            .split("src=\"data:image/svg+xml;base64,")
            .nth(1)
            .unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(&src[..src.find('"').unwrap()])
            .unwrap();
        assert_eq!(String::from_utf8(data).unwrap(), i);
    }

    #[test]
    fn run_figures_add_the_wall_clock_graph_when_its_file_exists() {
        let dir = std::env::temp_dir().join(format!("kpath-html-wall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("oncpu.svg"), "<svg height=\"10\"></svg>").unwrap();
        let run = Run {
            artifacts: Some(crate::run::Artifacts {
                oncpu_svg: Some("oncpu.svg".into()),
                offcpu_svg: Some("missing.svg".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let titles = |f: Vec<Figure>| -> Vec<String> { f.into_iter().map(|f| f.title).collect() };
        assert_eq!(
            titles(run_figures(&dir, &run, "r")),
            ["r: on-CPU flame graph"]
        );
        std::fs::write(dir.join(WALL_SVG), "<svg height=\"10\"></svg>").unwrap();
        let figs = run_figures(&dir, &run, "r");
        assert_eq!(figs[1].title, "r: wall-clock flame graph");
        assert_eq!(figs[1].link.as_deref(), Some("wall.svg"));
        let _ = std::fs::remove_dir_all(&dir);
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
        let html = run_page(&run, &[Figure::new("t<1>", "<svg><g/></svg>")]);
        assert!(html.contains("<td>&lt;b&gt;evil&lt;/b&gt;</td><td class=\"n\">7</td>"));
        assert!(html.contains("<td>a&amp;b</td>"));
        assert!(html.contains("&lt;img src=x&gt;"));
        assert!(!html.contains("<b>evil"));
        assert!(!html.contains("<img"));
        assert!(
            html.contains("<h3>t&lt;1&gt;</h3><iframe class=\"flame\""),
            "{html}"
        );
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no network"
        );
    }
}
