//! A bench's `report.html`: the comparison, per-strategy tables, differential and per-run flame
//! graphs, in one self-contained file built from `render::html`'s pieces.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::json::Bench;
use super::table as bench_table;
use crate::render::html::{
    escape, figure, page, run_figures, run_tables, table, write_file, Figure, HtmlError,
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
    body.push_str(&crate::findings::html(&bench.findings));
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

/// Writes `DIR/report.html` for a bench whose runs and graphs are under `dir`; runs whose
/// `run.json` cannot be read are left out of the per-run part.
pub fn write_bench_report(dir: &Path, bench: &Bench) -> Result<PathBuf, HtmlError> {
    let path = dir.join("report.html");
    write_file(&path, &bench_report_html(dir, bench))?;
    Ok(path)
}

/// The bench page of the bench directory `dir`, with its runs' on-CPU graphs and diffs inlined.
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
    bench_page(bench, &runs, &diffs)
}
