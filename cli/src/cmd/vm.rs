//! `kpath vm`: its arguments, converted into [`VmOptions`] for [`crate::vm::run_guest`].
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::vm::{run_guest, VmOptions};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sudo kpath vm --kernel bookworm -- doctor
  sudo kpath vm --kernel bullseye -- record -d 2 -o runs/bullseye -- kpath workload
  sudo kpath vm --kernel bookworm -- record --method kpaths=kprobe -- kpath workload --conns 200
  sudo kpath vm --kernel ./vmlinuz-6.6 --console -- doctor
Kernels by name: bookworm (6.1), bullseye (5.10), trixie: Debian's linux-image-amd64 of that
suite, fetched once with apt from the mirror in /etc/apt/sources.list(.d) and cached in
~/.cache/kpath/kernels. Paths the guest command writes must be relative (they come back under
-o DIR).")]
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
    /// Directory where the files the guest command wrote land (`--out-dir` still works).
    #[arg(
        short,
        long = "output",
        alias = "out-dir",
        value_name = "DIR",
        default_value = "."
    )]
    pub out_dir: PathBuf,
    /// Give up after this many seconds (boot included).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// The kpath subcommand and its arguments, run inside the guest.
    #[arg(last = true, required = true, value_name = "KPATH_ARGS")]
    pub args: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        vm: VmArgs,
    }

    #[test]
    fn defaults_match_the_library() {
        let o =
            VmOptions::from(Cli::parse_from(["kpath", "--kernel", "bookworm", "--", "doctor"]).vm);
        let d = VmOptions::default();
        assert_eq!(
            (o.kernel, o.smp, o.mem, o.out_dir, o.timeout),
            (d.kernel, d.smp, d.mem, d.out_dir, d.timeout)
        );
        assert_eq!(o.args, ["doctor"]);
    }
}
