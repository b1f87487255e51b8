//! `kpath vm`: run a kpath subcommand inside a stock Debian kernel under qemu.
//!
//! The host kernel here has no kprobes and refuses fentry; Debian's kernels have both, and older
//! ones still take the global `epmutex` on close. A guest boots from an initramfs built on the fly
//! (busybox, this kpath, its libraries), runs one kpath command in `/out`, and sends every file it
//! wrote back over a serial port; the host writes them under `--out-dir` at the same relative
//! paths, so `kpath vm --kernel bullseye -- record -o runs/old ...` leaves `runs/old/run.json`.
pub mod fetch;
pub mod initramfs;
pub mod qemu;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use qemu::{Accel, Phase};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sudo kpath vm --kernel bookworm -- doctor
  sudo kpath vm --kernel bullseye -- record -d 2 -o runs/bullseye -- kpath workload
  sudo kpath vm --kernel bookworm -- record --method kpaths=kprobe -- kpath workload --conns 200
  sudo kpath vm --kernel ./vmlinuz-6.6 --console -- doctor
Kernels by name: bookworm (6.1), bullseye (5.10), trixie: Debian's linux-image-amd64 of that
suite, fetched once with apt from the mirror in /etc/apt/sources.list(.d) and cached in
~/.cache/kpath/kernels. Paths the guest command writes must be relative (they come back under
--out-dir).")]
pub struct VmArgs {
    /// Debian suite (bookworm, bullseye, trixie) or a path to a vmlinux or vmlinuz.
    #[arg(long)]
    pub kernel: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Guest memory (qemu syntax).
    #[arg(long, default_value = "2G")]
    pub mem: String,
    /// Show the guest console on the terminal (it always goes to a log file).
    #[arg(long)]
    pub console: bool,
    /// Extra host binaries to install in the guest at the same paths (with their libraries).
    #[arg(long = "add", value_name = "PATH")]
    pub add: Vec<PathBuf>,
    /// Where the files the guest command wrote land.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Give up after this many seconds (boot included).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// The kpath subcommand and its arguments, run inside the guest.
    #[arg(last = true, required = true, value_name = "KPATH_ARGS")]
    pub args: Vec<String>,
}

/// Library form of [`VmArgs`] (the scenario runs guests through it).
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub kernel: String,
    pub smp: u32,
    pub mem: String,
    pub console: bool,
    pub add: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub timeout: Duration,
    /// Print the boot/run progress line on stderr.
    pub progress: bool,
    pub args: Vec<String>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            kernel: "bookworm".into(),
            smp: 2,
            mem: "2G".into(),
            console: false,
            add: Vec::new(),
            out_dir: PathBuf::from("."),
            timeout: Duration::from_secs(600),
            progress: true,
            args: Vec::new(),
        }
    }
}

impl From<VmArgs> for VmOptions {
    fn from(a: VmArgs) -> Self {
        VmOptions {
            kernel: a.kernel,
            smp: a.smp,
            mem: a.mem,
            console: a.console,
            add: a.add,
            out_dir: a.out_dir,
            timeout: Duration::from_secs(a.timeout),
            progress: true,
            args: a.args,
        }
    }
}

/// What a guest run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Guest `uname -r` and `uname -v`.
    pub release: String,
    pub version: String,
    pub accel: Accel,
    /// Why KVM was not used, when it was not.
    pub accel_note: Option<String>,
    pub exit_code: i32,
    /// The guest command's stdout and stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Files written on the host (under `out_dir`).
    pub files: Vec<PathBuf>,
    pub console_log: PathBuf,
    pub wall: Duration,
}

const STDOUT: &str = ".kpath-vm/stdout";
const STDERR: &str = ".kpath-vm/stderr";

pub fn run(args: VmArgs) -> anyhow::Result<()> {
    let o = run_guest(&VmOptions::from(args))?;
    std::io::stdout().write_all(&o.stdout)?;
    std::io::stderr().write_all(&o.stderr)?;
    eprintln!(
        "kpath vm: guest kernel {} ({}), {}{}; exit code {}; {:.1} s; console log {}",
        o.release,
        o.version,
        o.accel.describe(),
        o.accel_note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        o.exit_code,
        o.wall.as_secs_f64(),
        o.console_log.display()
    );
    std::process::exit(o.exit_code);
}

/// Boots the kernel, runs `kpath ARGS` inside, writes back its files.
pub fn run_guest(o: &VmOptions) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    if o.args.is_empty() {
        bail!("no kpath subcommand given to run in the guest");
    }
    let say = |msg: &str| {
        if o.progress {
            eprintln!("kpath vm: {msg}");
        }
    };
    let kernel = fetch::resolve(&o.kernel, &say)
        .with_context(|| format!("getting kernel {:?}", o.kernel))?;

    let work = fetch::cache_dir()
        .parent()
        .expect("cache dir has a parent")
        .join("vm");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let tag = format!("{}-{}", sanitize(&o.kernel), std::process::id());
    let initrd = work.join(format!("initrd-{tag}.cpio"));
    let data = work.join(format!("data-{tag}.txt"));
    let console_log = work.join(format!("console-{}.log", sanitize(&o.kernel)));
    let _cleanup = Cleanup(vec![initrd.clone(), data.clone()]);

    let contents = initramfs::Contents {
        // Not current_exe(): a rebuild may have replaced the file since this process started;
        // /proc/PID/exe still reads (and ldd still resolves) the running binary.
        kpath: PathBuf::from(format!("/proc/{}/exe", std::process::id())),
        busybox: which("busybox").context("busybox not found (apt-get install busybox-static)")?,
        extra: o
            .add
            .iter()
            .map(|p| std::fs::canonicalize(p).with_context(|| format!("--add {}", p.display())))
            .collect::<anyhow::Result<_>>()?,
        init: init_script(&o.args),
    };
    initramfs::build(&contents, &initrd).context("building the initramfs")?;

    let (first, mut note) = qemu::pick_accel();
    let mut boot = qemu::Boot {
        kernel: kernel.image.clone(),
        elf: kernel.elf,
        initrd: initrd.clone(),
        smp: o.smp,
        mem: o.mem.clone(),
        accel: first,
        console_log: console_log.clone(),
        data: data.clone(),
        boot_timeout: Duration::from_secs(if first == Accel::Kvm { 15 } else { 120 }),
        timeout: o.timeout,
    };
    let label = kernel
        .release
        .clone()
        .unwrap_or_else(|| kernel.name.clone());
    let text = match boot_once(&boot, o, &label, start) {
        Err(e) if boot.accel == Accel::Kvm => {
            note = Some(format!("KVM could not boot it: {e:#}"));
            boot.accel = Accel::Tcg;
            boot.boot_timeout = Duration::from_secs(120);
            boot_once(&boot, o, &label, start)?
        }
        r => r?,
    };
    let report = qemu::parse(&text);
    let exit_code = report
        .exit_code
        .context("the guest reported no exit code")?;
    let mut out = Outcome {
        release: report.release,
        version: report.version,
        accel: boot.accel,
        accel_note: note,
        exit_code,
        stdout: Vec::new(),
        stderr: Vec::new(),
        files: Vec::new(),
        console_log,
        wall: Duration::ZERO,
    };
    for (name, bytes) in report.files {
        match name.as_str() {
            STDOUT => out.stdout = bytes,
            STDERR => out.stderr = bytes,
            _ => {
                let rel = Path::new(&name);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    continue;
                }
                let dst = o.out_dir.join(rel);
                if let Some(p) = dst.parent() {
                    std::fs::create_dir_all(p)
                        .with_context(|| format!("creating {}", p.display()))?;
                }
                std::fs::write(&dst, &bytes)
                    .with_context(|| format!("writing {}", dst.display()))?;
                out.files.push(dst);
            }
        }
    }
    out.wall = start.elapsed();
    Ok(out)
}

/// One qemu run with the progress line (or the console, with `--console`).
fn boot_once(
    boot: &qemu::Boot,
    o: &VmOptions,
    label: &str,
    start: Instant,
) -> Result<String, qemu::QemuError> {
    let tty = std::io::stderr().is_terminal();
    let mut last_phase = None;
    let mut tick = |phase: Phase, console: &[u8]| {
        if o.console {
            let _ = std::io::stderr().write_all(console);
            return;
        }
        if !o.progress {
            return;
        }
        let what = match phase {
            Phase::Booting => "booting",
            Phase::Running => "running kpath",
            Phase::Sending => "copying results",
        };
        let msg = format!(
            "kpath vm: {label} under {}: {what} ({:.1} s)",
            boot.accel.describe(),
            start.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r\x1b[2K{msg}");
        } else if last_phase != Some(phase) {
            eprintln!("{msg}");
        }
        last_phase = Some(phase);
    };
    let r = qemu::run(boot, &mut tick);
    if tty && o.progress && !o.console {
        eprint!("\r\x1b[2K");
    }
    r
}

/// The guest's /init: mounts, loopback, limits, then `kpath ARGS` in /out, then every file under
/// /out (and the command's stdout/stderr) base64-encoded on ttyS1, then the exit code.
pub fn init_script(args: &[String]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /out
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
ulimit -n 1048576
D=/dev/ttyS1
stty -F $D raw -echo 2>/dev/null
exec 3>$D
echo "KPATH-BOOTED $(uname -r) | $(uname -v)" >&3
cd /out
kpath {args} </dev/null >/tmp/stdout 2>/tmp/stderr
rc=$?
send() {{ echo "KPATH-FILE $2" >&3; base64 "$1" >&3; echo "KPATH-END" >&3; }}
send /tmp/stdout {STDOUT}
send /tmp/stderr {STDERR}
find . -type f | while read -r f; do send "$f" "${{f#./}}"; done
echo "KPATH-EXIT $rc" >&3
exec 3>&-
poweroff -f
"#,
        args = quoted.join(" ")
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Removes the per-run files on the way out.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_quotes_arguments() {
        let s = init_script(&["record".into(), "--".into(), "it's".into()]);
        assert!(
            s.contains(r"kpath 'record' '--' 'it'\''s' </dev/null"),
            "{s}"
        );
        assert!(s.contains("KPATH-EXIT $rc"));
    }
}
