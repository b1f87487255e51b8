//! `kpath vm`: run a kpath subcommand inside a stock Debian kernel under qemu.
//!
//! The host kernel here has no kprobes and refuses fentry; Debian's kernels have both, and older
//! ones still take the global `epmutex` on close. A guest boots from an initramfs built on the fly
//! (busybox, this kpath, its libraries), runs one kpath command in `/out`, and sends every file it
//! wrote back over a serial port; the host writes them under `-o DIR` at the same relative
//! paths, so `kpath vm --kernel bullseye -- record -o runs/old ...` leaves `runs/old/run.json`.
pub mod fetch;
pub mod initramfs;
pub mod qemu;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use qemu::{Accel, Phase};

/// What [`run_guest`] boots and runs (`kpath vm`'s arguments, and the epoll-close scenario's
/// guests).
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
    initramfs::build(&contents(o)?, &initrd).context("building the initramfs")?;

    let (first, note) = qemu::pick_accel();
    let boot = qemu::Boot {
        kernel: kernel.image.clone(),
        elf: kernel.elf,
        initrd,
        smp: o.smp,
        mem: o.mem.clone(),
        accel: first,
        console_log: console_log.clone(),
        data,
        boot_timeout: Duration::from_secs(if first == Accel::Kvm { 15 } else { 120 }),
        timeout: o.timeout,
    };
    let label = kernel.release.unwrap_or(kernel.name);
    let (text, accel, accel_note) = boot_falling_back_to_tcg(boot, note, o, &label, start)?;
    let guest = qemu::parse(&text);
    let exit_code = guest.exit_code.context("the guest reported no exit code")?;
    let mut out = Outcome {
        release: guest.release,
        version: guest.version,
        accel,
        accel_note,
        exit_code,
        stdout: Vec::new(),
        stderr: Vec::new(),
        files: Vec::new(),
        console_log,
        wall: Duration::ZERO,
    };
    for (name, bytes) in guest.files {
        match name.as_str() {
            STDOUT => out.stdout = bytes,
            STDERR => out.stderr = bytes,
            _ => out.files.extend(write_back(&o.out_dir, &name, &bytes)?),
        }
    }
    out.wall = start.elapsed();
    Ok(out)
}

/// What the initramfs carries: busybox, this kpath, `--add` binaries, the init script.
fn contents(o: &VmOptions) -> anyhow::Result<initramfs::Contents> {
    Ok(initramfs::Contents {
        // Not current_exe(): a rebuild may have replaced the file since this process started;
        // /proc/PID/exe still reads (and ldd still resolves) the running binary.
        kpath: PathBuf::from(format!("/proc/{}/exe", std::process::id())),
        busybox: which::which("busybox")
            .context("busybox not found (apt-get install busybox-static)")?,
        extra: o
            .add
            .iter()
            .map(|p| std::fs::canonicalize(p).with_context(|| format!("--add {}", p.display())))
            .collect::<anyhow::Result<_>>()?,
        init: init_script(&o.args),
    })
}

/// Boots once; when KVM was tried and could not boot the guest, once more under TCG. The data
/// port's text, the accelerator that ran it, and why KVM was not used (if it was not).
fn boot_falling_back_to_tcg(
    mut boot: qemu::Boot,
    note: Option<String>,
    o: &VmOptions,
    label: &str,
    start: Instant,
) -> anyhow::Result<(String, Accel, Option<String>)> {
    match boot_once(&boot, o, label, start) {
        Err(e) if boot.accel == Accel::Kvm => {
            let note = Some(format!("KVM could not boot it: {e:#}"));
            boot.accel = Accel::Tcg;
            boot.boot_timeout = Duration::from_secs(120);
            Ok((boot_once(&boot, o, label, start)?, boot.accel, note))
        }
        r => Ok((r?, boot.accel, note)),
    }
}

/// Writes a file the guest sent under `out_dir` at its relative path; `None` for a path that
/// would leave `out_dir` (absolute, or with `..`), which is skipped.
fn write_back(out_dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<Option<PathBuf>> {
    let rel = Path::new(name);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Ok(None);
    }
    let dst = out_dir.join(rel);
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    std::fs::write(&dst, bytes).with_context(|| format!("writing {}", dst.display()))?;
    Ok(Some(dst))
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
