//! A bench's `report.html`: the comparison, its plots, per-strategy tables and plots,
//! differential and per-run flame graphs (on-CPU, off-CPU, wall-clock), in one self-contained
//! file built from `render::html`'s pieces.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::json::{Bench, BenchRun, DiffTotals};
use super::plots as bench_plots;
use super::table as bench_table;
use crate::render::flame::{diff_note, FlameKind};
use crate::render::html::{
    escape, figures, page, plots, run_figures, run_plots, run_tables, search_box, table,
    write_file, Figure, HtmlError,
};
use crate::run::Run;

/// One run of a bench with the graphs found in its directory.
#[derive(Debug, Clone)]
pub struct RunSection {
    pub name: String,
    pub run: Run,
    pub figures: Vec<Figure>,
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
grew and blue frames shrank compared with the baseline (normalized to equal totals). Each \
states both sides' sample counts and warns when either has fewer than 500.</li>\
<li>Flame graphs are interactive: click a frame to zoom into it, <i>Reset Zoom</i> to go back, \
hover for its full name and share; the search box searches every graph at once and each \
graph shows the share of its samples that matched. The standalone SVGs sit next to this file \
under <code>runs/</code> and <code>diff/</code>.</li></ul></div>\n";

/// A bench's report: comparison and its plots, differential graphs, then per strategy its
/// tables, plots and graphs.
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
    plots(&mut body, bench_plots::all(bench));
    table(
        &mut body,
        "syscalls-per-request",
        &bench_table::syscall_rows(bench, bench_table::TOP_SYSCALLS),
    );
    let k = bench_table::kpath_rows(bench);
    if k.len() > 1 {
        table(&mut body, "kpaths-per-request", &k);
    }
    body.push_str(&crate::findings::html(&bench.findings));
    let any_graph = !diffs.is_empty() || runs.iter().any(|r| !r.figures.is_empty());
    if any_graph {
        search_box(&mut body);
    }
    let mut n = 0;
    if !diffs.is_empty() {
        body.push_str("<h2>Differential flame graphs (against the baseline)</h2>");
        figures(&mut body, n, diffs);
        n += diffs.len();
    }
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(body, "<h2>{}</h2>", escape(&r.name));
        run_tables(&mut body, &format!("run{i}"), &r.run, 15);
        run_plots(&mut body, &r.run);
        figures(&mut body, n, &r.figures);
        n += r.figures.len();
    }
    page(&title, &body)
}

/// The differential graph of `kind` of run `r` against the baseline, with both totals.
fn diff_figure(dir: &Path, bench: &Bench, r: &BenchRun, kind: FlameKind) -> Option<Figure> {
    let (file, totals, what): (&Option<String>, &Option<DiffTotals>, _) = match kind {
        FlameKind::OnCpu => (&r.diff_oncpu_svg, &r.diff_oncpu_samples, "on-CPU"),
        FlameKind::OffCpu => (&r.diff_offcpu_svg, &r.diff_offcpu_ns, "off-CPU"),
        // Wall-clock graphs are shown per run, not differenced.
        FlameKind::Wall => return None,
    };
    let file = file.as_ref()?;
    let svg = std::fs::read_to_string(dir.join(file)).ok()?;
    let note = totals.map(|t| diff_note(kind, (&bench.baseline, t.baseline), (&r.name, t.run)));
    Some(Figure {
        link: Some(file.clone()),
        note: note.as_ref().map(|n| n.totals.clone()),
        warning: note.and_then(|n| n.warning),
        ..Figure::new(format!("{what}: {} vs {}", r.name, bench.baseline), svg)
    })
}

/// Writes `DIR/report.html` for a bench whose runs and graphs are under `dir`; runs whose
/// `run.json` cannot be read are left out of the per-run part.
pub fn write_bench_report(dir: &Path, bench: &Bench) -> Result<PathBuf, HtmlError> {
    let path = dir.join("report.html");
    write_file(&path, &bench_report_html(dir, bench))?;
    Ok(path)
}

/// The bench page of the bench directory `dir`, with its runs' graphs and diffs.
pub fn bench_report_html(dir: &Path, bench: &Bench) -> String {
    let mut runs = Vec::new();
    let mut diffs = Vec::new();
    for r in &bench.runs {
        let rd = dir.join(&r.run_dir);
        match crate::render::json::from_file(&rd.join("run.json")) {
            Ok(run) => runs.push(RunSection {
                name: r.name.clone(),
                figures: run_figures(&rd, &run, &r.name)
                    .into_iter()
                    .map(|f| Figure {
                        link: f.link.as_ref().map(|l| format!("{}/{l}", r.run_dir)),
                        ..f
                    })
                    .collect(),
                run,
            }),
            Err(e) => log::warn!("report.html: {}: {e}", r.name),
        }
    }
    for kind in [FlameKind::OnCpu, FlameKind::OffCpu] {
        diffs.extend(
            bench
                .runs
                .iter()
                .filter_map(|r| diff_figure(dir, bench, r, kind)),
        );
    }
    bench_page(bench, &runs, &diffs)
}
