//! Small helpers shared by the subcommands: where the workspace is, running child processes with
//! errors that name the command, and who we are running as.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// Every workspace member that builds for the host. probe-ebpf is a BPF-only binary (`#![no_std]`,
/// `#![no_main]`); cli/build.rs builds it through aya-build and `cargo xtask lint` checks it for
/// its own target, so plain `--workspace` would wrongly compile it for the host.
pub const HOST_WORKSPACE: [&str; 3] = ["--workspace", "--exclude", "probe-ebpf"];

/// A `cargo` command run from the workspace root, as if typed in a shell there.
///
/// `cargo xtask` runs us under the rustup proxy, which pins `RUSTUP_TOOLCHAIN` to the toolchain
/// that built xtask; we drop it so child cargo calls pick the toolchain the normal way (`+nightly`,
/// rust-toolchain files, the default). The cargo-install bin dir goes first on `PATH` so that
/// aya-build finds the bpf-linker that setup checked.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(repo_root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    prepend_path(&mut cmd, &cargo_install_root().join("bin"));
    cmd
}

/// Puts `dir` in front of the inherited `PATH` of `cmd` (no-op when it is already first).
pub fn prepend_path(cmd: &mut Command, dir: &Path) {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&old).collect();
    if dirs.first().map(PathBuf::as_path) != Some(dir) {
        dirs.insert(0, dir.to_path_buf());
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        cmd.env("PATH", joined);
    }
}

/// Where `cargo install` puts things: `CARGO_INSTALL_ROOT`, else `CARGO_HOME`, else `~/.cargo`.
pub fn cargo_install_root() -> PathBuf {
    std::env::var_os("CARGO_INSTALL_ROOT")
        .or_else(|| std::env::var_os("CARGO_HOME"))
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// The first executable file called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// How a command looks when typed in a shell, for messages.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio and fails (naming the command) unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with captured output; `Ok(None)` when the program does not exist.
pub fn output(cmd: &mut Command) -> Result<Option<Output>> {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not start `{}`", display(cmd))),
    }
}

/// Stdout of `cmd` when it exits 0, `None` when it is missing or fails.
pub fn stdout_if_ok(cmd: &mut Command) -> Result<Option<String>> {
    Ok(output(cmd)?
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()))
}

/// Wall-clock timing for summaries.
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    pub fn secs(&self) -> String {
        let secs = self.elapsed_secs();
        if secs < 10.0 {
            format!("{secs:.2}s")
        } else {
            format!("{secs:.0}s")
        }
    }
}
