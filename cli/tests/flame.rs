//! Flame graphs: golden folding and rendering (no root), and stacks of a real external server
//! (Debian's nginx) that carry both its own frames and kernel frames (root).
//!
//! Run with `BLESS=1` to rewrite the `tests/data/flame_*` goldens after an intended change.
mod common;

mod golden;

use golden::check_golden;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kpath::render::flame::{diff_folded, diff_options};
use kpath::render::flame::{render, FlameKind, FlameOptions};
use kpath::run::{OffcpuSummary, OncpuSummary, Run, Target};
use kpath::stacks::{folded, symbolize::Folded};

fn stack(frames: &str, weight: u64) -> Folded {
    Folded {
        frames: frames.split(';').map(String::from).collect(),
        weight,
    }
}

/// Symbolized stacks like an nginx worker's: user frames, kernel frames, an inlined frame, a
/// stack whose user part is unknown, and a duplicate that folding must merge.
fn oncpu_stacks() -> Vec<Folded> {
    vec![
        stack("nginx;[unknown];ngx_writev;__GI___writev;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];do_writev_[k];sock_write_iter_[k];tcp_sendmsg_[k];tcp_sendmsg_locked_[k]", 361),
        stack("nginx;[unknown];ngx_writev;__GI___writev;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];do_writev_[k];sock_write_iter_[k];tcp_sendmsg_[k]", 40),
        stack("nginx;[unknown];ngx_read_file;__libc_pread64;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];__x64_sys_pread64_[k];vfs_read_[k];filemap_read_[k]", 18),
        stack("nginx;[unknown] (nginx);epoll_wait;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];do_epoll_wait_[k];ep_poll_[k]", 25),
        stack("nginx;ngx_http_parse_request_line;ngx_http_parse_request_line_part_[i]", 7),
        stack("nginx;[unknown];ngx_writev;__GI___writev;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];do_writev_[k];sock_write_iter_[k];tcp_sendmsg_[k]", 2),
    ]
}

fn offcpu_stacks() -> Vec<Folded> {
    vec![
        stack("nginx;[unknown] (nginx);epoll_wait;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];__x64_sys_epoll_wait_[k];do_epoll_wait_[k];schedule_hrtimeout_range_clock_[k];schedule_[k];__schedule_[k]", 232_905_949),
        stack("nginx;[unknown];ngx_writev;__GI___writev;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];exit_to_user_mode_loop_[k];schedule_[k];__schedule_[k]", 2_537_564),
    ]
}

fn run_meta() -> Run {
    Run {
        target: Target {
            kind: "pid".into(),
            pid: Some(4242),
            ..Default::default()
        },
        oncpu: Some(OncpuSummary {
            frequency_hz: 99,
            ..Default::default()
        }),
        offcpu: Some(OffcpuSummary {
            min_block_ns: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn svg(text: &str, opts: &FlameOptions) -> String {
    let mut out = Vec::new();
    render(text, opts, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn oncpu_folding_and_svg_match_golden() {
    let text = folded::fold(&oncpu_stacks());
    assert_eq!(folded::total(&text), 453, "folding must keep every sample");
    check_golden("flame_oncpu.folded", &text);
    let out = svg(&text, &FlameOptions::for_run(FlameKind::OnCpu, &run_meta()));
    assert!(out.contains("On-CPU, 99 Hz cpu-clock samples, pid 4242"));
    check_golden("flame_oncpu.svg", &out);
}

#[test]
fn offcpu_folding_and_svg_match_golden() {
    let text = folded::fold(&offcpu_stacks());
    check_golden("flame_offcpu.folded", &text);
    let out = svg(
        &text,
        &FlameOptions::for_run(FlameKind::OffCpu, &run_meta()),
    );
    assert!(out.contains("Off-CPU time (ns), sched_switch, pid 4242"));
    assert!(out.contains(" ns"), "count name");
    check_golden("flame_offcpu.svg", &out);
}

#[test]
fn differential_svg_matches_golden() {
    let a = folded::fold(&oncpu_stacks());
    // B: twice as long a run with the same shape, except reads got 10x more expensive.
    let b: Vec<Folded> = oncpu_stacks()
        .into_iter()
        .map(|mut s| {
            s.weight *= if s.frames.iter().any(|f| f == "ngx_read_file") {
                20
            } else {
                2
            };
            s
        })
        .collect();
    let b = folded::fold(&b);
    let d = diff_folded(&a, &b).unwrap();
    // Normalized: both columns sum to B's total, so the share that grew shows as a rise.
    let rows: Vec<(String, u64, u64)> = d
        .lines()
        .map(|l| {
            let mut it = l.rsplitn(3, ' ');
            let b: u64 = it.next().unwrap().parse().unwrap();
            let a: u64 = it.next().unwrap().parse().unwrap();
            (it.next().unwrap().to_string(), a, b)
        })
        .collect();
    let (sa, sb) = rows.iter().fold((0, 0), |(x, y), r| (x + r.1, y + r.2));
    assert!(sa.abs_diff(sb) <= rows.len() as u64, "{sa} vs {sb}:\n{d}");
    for (stack, a, b) in &rows {
        assert_eq!(
            stack.contains("ngx_read_file"),
            b > a,
            "{stack}: {a} -> {b}"
        );
    }
    let out = svg(&d, &diff_options(FlameKind::OnCpu, "a", "b"));
    check_golden("flame_diff.svg", &out);
}

/// Kills nginx's process group when the test ends, however it ends.
struct Nginx {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill takes no pointers; nginx was spawned as the leader of its own process
        // group and is reaped only below, so the group is still ours.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// nginx with one worker on a loopback port, serving a 1.4 KB file from a temp root.
fn start_nginx(bin: &Path) -> Nginx {
    let dir = common::tmpdir("nginx");
    std::fs::create_dir_all(dir.join("html")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("html/index.html"), "x".repeat(1400)).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
         fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
         server {{ listen 127.0.0.1:{port}; root {d}/html; }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = common::spawn_group(
        Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf")),
    );
    let n = Nginx { child, port, dir };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not listen on {port}: {}",
            std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}

/// The worker: the master's child.
fn worker_pid(master: u32) -> u32 {
    let start = Instant::now();
    loop {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        if let Some(p) = children.split_whitespace().next() {
            return p.parse().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no nginx worker");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_get(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "nginx answered {status:?}");
}

#[test]
fn nginx_worker_stacks_carry_ngx_and_kernel_frames() {
    if !common::require_root() {
        return;
    }
    let bin = Path::new("/usr/sbin/nginx");
    if !bin.exists() {
        assert!(
            std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
            "nginx is missing: run `cargo xtask setup`"
        );
        eprintln!("skipped: /usr/sbin/nginx missing (cargo xtask setup installs it)");
        return;
    }
    let nginx = start_nginx(bin);
    check_get(nginx.port);
    let worker = worker_pid(nginx.child.id());
    let url = format!("http://127.0.0.1:{}/index.html", nginx.port);
    let load =
        common::spawn_group(Command::new(common::KPATH).args(["load", &url, "-c", "4", "-d", "6"]));
    std::thread::sleep(Duration::from_millis(300));
    let w = worker.to_string();
    let (run, stderr, dir) = common::record_dir(&["-p", &w, "-d", "3", "-F", "999"], &[]);
    let _ = common::wait_with_timeout(load, Duration::from_secs(10));

    let art = &run["artifacts"];
    assert_eq!(art["oncpu_folded"], "oncpu.folded", "{stderr}");
    assert_eq!(art["offcpu_folded"], "offcpu.folded");
    let oncpu = std::fs::read_to_string(dir.join("oncpu.folded")).unwrap();
    let both: Vec<&str> = oncpu
        .lines()
        .filter(|l| l.contains(";ngx_") && l.contains("_[k]"))
        .collect();
    let best = both
        .iter()
        .max_by_key(|l| folded::parse(l).unwrap()[0].1)
        .unwrap_or_else(|| {
            panic!("no on-CPU stack with both an ngx_ and a kernel frame:\n{oncpu}\n{stderr}")
        });
    eprintln!("heaviest stack with ngx_ and kernel frames:\n{best}");
    assert!(
        oncpu.lines().all(|l| l.starts_with("nginx;")),
        "the root frame is the thread name"
    );
    let offcpu = std::fs::read_to_string(dir.join("offcpu.folded")).unwrap();
    assert!(folded::total(&offcpu) > 0, "no off-CPU time: {stderr}");
    assert_eq!(
        common::u64_of(&run["offcpu"], "total_ns"),
        folded::total(&offcpu)
    );
    let svg = std::fs::read_to_string(dir.join("oncpu.svg")).unwrap();
    assert!(svg.contains(&format!("On-CPU, 999 Hz cpu-clock samples, pid {worker}")));
    assert!(svg.contains("ngx_"));
    let off_svg = std::fs::read_to_string(dir.join("offcpu.svg")).unwrap();
    assert!(off_svg.contains("Off-CPU time (ns), sched_switch"));

    // Re-rendering and diffing work from the run directory alone.
    let out = dir.join("again.svg");
    let f = common::run_with_timeout(
        Command::new(common::KPATH)
            .arg("flame")
            .arg(&dir)
            .arg("--offcpu")
            .arg("-o")
            .arg(&out),
        Duration::from_secs(30),
    );
    assert!(f.status.success(), "kpath flame: {}", f.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), off_svg);
    let diff = dir.join("diff.svg");
    let f = common::run_with_timeout(
        Command::new(common::KPATH)
            .arg("diff")
            .arg(&dir)
            .arg(&dir)
            .arg("-o")
            .arg(&diff),
        Duration::from_secs(30),
    );
    assert!(f.status.success(), "kpath diff: {}", f.stderr);
    assert!(std::fs::read_to_string(&diff)
        .unwrap()
        .contains("Differential"));
}
