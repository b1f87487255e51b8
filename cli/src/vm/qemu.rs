//! Booting the guest: accelerator choice, the qemu command line, and the guest-to-host protocol on
//! the second serial port (the first is the console, which goes to a log file).
//!
//! Stock Debian kernels have virtio drivers only as modules, which the initramfs does not carry,
//! but the 8250 UART is built in: so results come back as base64 text on ttyS1, framed by
//! `KPATH-*` marker lines, and the host decodes them after qemu exits.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::process::KillOnDrop;

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn describe(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "software emulation (qemu TCG)",
        }
    }
}

/// The accelerator to try first, and why KVM is skipped when it is.
pub fn pick_accel() -> (Accel, Option<String>) {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (
            Accel::Tcg,
            Some("/dev/kvm is PVM (kvm_pvm loaded), which boots only PVM guests".into()),
        );
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => (Accel::Kvm, None),
        Err(e) => (Accel::Tcg, Some(format!("/dev/kvm: {e}"))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("starting qemu-system-x86_64 failed (is qemu-system-x86 installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest did not finish within {secs} s (console log: {log})")]
    Timeout { secs: u64, log: PathBuf },
    #[error("the guest never booted to /init ({why}; console log: {log})")]
    NoBoot { why: String, log: PathBuf },
    #[error("the guest stopped before reporting an exit code (console log: {log})")]
    NoExit { log: PathBuf },
}

/// One boot.
#[derive(Debug, Clone)]
pub struct Boot {
    pub kernel: PathBuf,
    /// ELF vmlinux (qboot, fast) or bzImage (default firmware).
    pub elf: bool,
    pub initrd: PathBuf,
    pub smp: u32,
    pub mem: String,
    pub accel: Accel,
    pub console_log: PathBuf,
    pub data: PathBuf,
    /// Give up on the boot (not the run) when /init has not spoken by then.
    pub boot_timeout: Duration,
    pub timeout: Duration,
}

/// Where the guest is, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Booting,
    Running,
    Sending,
}

pub fn command(b: &Boot) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    match b.accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => c.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    c.args(["-m", &b.mem, "-smp", &b.smp.to_string()]);
    c.args(["-display", "none", "-vga", "none", "-monitor", "none"]);
    c.args(["-no-reboot", "-net", "none"]);
    if b.elf {
        c.args(["-bios", "/usr/share/qemu/qboot.rom"]);
    }
    c.arg("-kernel").arg(&b.kernel);
    c.arg("-initrd").arg(&b.initrd);
    c.args(["-append", "console=ttyS0 panic=-1 quiet"]);
    c.arg("-serial")
        .arg(format!("file:{}", b.console_log.display()));
    c.arg("-serial").arg(format!("file:{}", b.data.display()));
    c
}

/// Boots, waits for the guest to power off, and returns the data port's text. `tick` is called
/// every 100 ms with the phase and the console bytes written since the last call.
pub fn run(b: &Boot, tick: &mut dyn FnMut(Phase, &[u8])) -> Result<String, QemuError> {
    let _ = std::fs::remove_file(&b.data);
    let qemu_log = b.console_log.with_extension("qemu.log");
    let err = std::fs::File::create(&qemu_log).map_err(|source| QemuError::Io {
        path: qemu_log.clone(),
        source,
    })?;
    // An error (or a panic) on the way drops it: qemu is terminated, never left running.
    let mut child = KillOnDrop::adopt(
        command(b)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(QemuError::Spawn)?,
    );
    let start = Instant::now();
    let mut console_seen = 0usize;
    let mut phase = Phase::Booting;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let data = std::fs::read_to_string(&b.data).unwrap_or_default();
        phase = if data.contains("KPATH-FILE ") || data.contains("KPATH-EXIT") {
            Phase::Sending
        } else if data.contains("KPATH-BOOTED") {
            Phase::Running
        } else {
            phase
        };
        let console = std::fs::read(&b.console_log).unwrap_or_default();
        tick(phase, console.get(console_seen..).unwrap_or_default());
        console_seen = console.len().max(console_seen);
        if child.try_wait().is_some() {
            let data = std::fs::read_to_string(&b.data).unwrap_or_default();
            if !data.contains("KPATH-BOOTED") {
                let why = std::fs::read_to_string(&qemu_log)
                    .ok()
                    .map(|s| s.lines().last().unwrap_or("qemu exited").to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "qemu exited".into());
                return Err(QemuError::NoBoot {
                    why,
                    log: b.console_log.clone(),
                });
            }
            if !data.contains("KPATH-EXIT") {
                return Err(QemuError::NoExit {
                    log: b.console_log.clone(),
                });
            }
            return Ok(data);
        }
        if phase == Phase::Booting && start.elapsed() > b.boot_timeout {
            return Err(QemuError::NoBoot {
                why: format!("no word from /init after {} s", b.boot_timeout.as_secs()),
                log: b.console_log.clone(),
            });
        }
        if start.elapsed() > b.timeout {
            return Err(QemuError::Timeout {
                secs: b.timeout.as_secs(),
                log: b.console_log.clone(),
            });
        }
    }
}

/// What the guest sent back on the data port.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestOutput {
    /// `uname -r` and `uname -v` of the guest.
    pub release: String,
    pub version: String,
    pub exit_code: Option<i32>,
    /// Relative path -> contents.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Parses the data port: `KPATH-BOOTED release | version`, `KPATH-FILE path` + base64 lines +
/// `KPATH-END`, `KPATH-EXIT rc`. Carriage returns (the tty's onlcr) are ignored; a file whose
/// base64 does not decode is dropped with a warning.
pub fn parse(data: &str) -> GuestOutput {
    let mut r = GuestOutput::default();
    let mut cur: Option<(String, String)> = None;
    for line in data.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some((name, b64)) = cur.as_mut() {
            if line == "KPATH-END" {
                match base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()) {
                    Ok(bytes) => r.files.push((std::mem::take(name), bytes)),
                    Err(e) => log::warn!("the guest's {name} arrived garbled ({e}): dropped"),
                }
                cur = None;
            } else {
                b64.push_str(line.trim());
            }
        } else if let Some(rest) = line.strip_prefix("KPATH-BOOTED ") {
            let (rel, ver) = rest.split_once(" | ").unwrap_or((rest, ""));
            r.release = rel.trim().into();
            r.version = ver.trim().into();
        } else if let Some(name) = line.strip_prefix("KPATH-FILE ") {
            cur = Some((name.trim().into(), String::new()));
        } else if let Some(rc) = line.strip_prefix("KPATH-EXIT ") {
            r.exit_code = rc.trim().parse().ok();
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_port_protocol() {
        let d = "KPATH-BOOTED 5.10.0-32-amd64 | #1 SMP Debian 5.10.223-1\r\n\
                 KPATH-FILE runs/r/run.json\r\neyJhIjox\r\nfQ==\r\nKPATH-END\r\n\
                 KPATH-FILE empty\r\nKPATH-END\r\nKPATH-EXIT 3\r\n";
        let r = parse(d);
        assert_eq!(r.release, "5.10.0-32-amd64");
        assert_eq!(r.version, "#1 SMP Debian 5.10.223-1");
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(
            r.files,
            vec![
                ("runs/r/run.json".to_string(), b"{\"a\":1}".to_vec()),
                ("empty".to_string(), Vec::new())
            ]
        );
        // A guest that died mid-file reports no exit code and drops the partial file.
        let r = parse("KPATH-BOOTED x | y\nKPATH-FILE a\nYQ==\n");
        assert_eq!(r.exit_code, None);
        assert!(r.files.is_empty());
        // busybox wraps base64 at 76 columns; a body that does not decode is dropped.
        let r = parse(
            "KPATH-FILE a\r\naGVsbG8g\r\nd29ybGQ=\r\nKPATH-END\r\nKPATH-FILE b\nY?Q=\nKPATH-END\n",
        );
        assert_eq!(r.files, vec![("a".to_string(), b"hello world".to_vec())]);
    }
}
