//! `cargo xtask setup`: check each piece kpath needs and install only what is missing.
//!
//! Every step checks first and is skipped fast when its piece is present (a no-op run costs a few
//! rustup/dpkg queries), so build, test and demo call this on every run.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util::{self, display, stdout_if_ok, Stopwatch};

/// The bpf-linker release that builds against the nightly toolchain's libLLVM here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests, benchmarks and later issues use, and why (printed when installing).
const PACKAGES: &[(&str, &str)] = &[
    ("strace", "cross-checks syscall counts"),
    ("wrk", "HTTP load to compare with `kpath load`"),
    ("nginx", "reference server the tests start"),
    ("linux-perf", "cross-checks on-CPU samples"),
    ("bpftool", "inspects loaded BPF programs and maps"),
    (
        "bpftrace",
        "the peer `cargo xtask bench-startup` compares start-up with",
    ),
    ("gcc", "C toolchain for linking"),
    ("make", "builds small C helpers"),
    ("qemu-system-x86", "boots stock kernels with kprobes"),
    ("busybox-static", "userland for those qemu guests"),
    (
        "xz-utils",
        "cuts the vmlinux out of a Debian vmlinuz for qemu's fast qboot path",
    ),
    ("chromium", "headless checks of the HTML report"),
    (
        "chromium-driver",
        "selenium drives the report in chromium (cli/tests/browser.rs)",
    ),
    (
        "python3-selenium",
        "the browser test's driver script (for /usr/bin/python3)",
    ),
    (
        "golang-go",
        "`go tool pprof` reads the pprof profiles in the tests",
    ),
    (
        "prometheus",
        "a real Prometheus scrapes `kpath agent` in the tests; its promtool checks the metrics and the rules in deploy/",
    ),
];

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Only check and print what would be installed or mounted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `cargo xtask setup`: fails unless everything is in place (or, with --dry-run, only reports).
pub fn run(args: &Args) -> Result<()> {
    let pending = setup(args.dry_run)?;
    if !args.dry_run && !pending.is_empty() {
        bail!(
            "setup is incomplete: run as root:\n  {}",
            pending.join("\n  ")
        );
    }
    Ok(())
}

/// Setup before a build or lint: the toolchain must be complete; system pieces (packages,
/// mounts) that need root only warn, since building does not need them.
pub fn for_build() -> Result<()> {
    let pending = setup(false)?;
    if !pending.is_empty() {
        eprintln!(
            "warning: not root, so these were skipped (building does not need them):\n  {}",
            pending.join("\n  ")
        );
    }
    Ok(())
}

/// Setup before tests or the demo: everything must be in place.
pub fn for_run() -> Result<()> {
    run(&Args { dry_run: false })
}

/// Runs every step; returns the commands that need root and were not run.
fn setup(dry_run: bool) -> Result<Vec<String>> {
    let clock = Stopwatch::start();
    let mut ctx = Ctx {
        dry_run,
        root: util::is_root(),
        needs_root: Vec::new(),
    };
    rustup_self_update(&mut ctx)?;
    if let Some(nightly) = nightly(&mut ctx)? {
        rust_src(&mut ctx, &nightly)?;
        bpf_linker(&mut ctx, &nightly)?;
    }
    packages(&mut ctx)?;
    mounts(&mut ctx)?;
    let verb = if dry_run { "checked" } else { "done" };
    println!("setup: {verb} in {}", clock.secs());
    Ok(ctx.needs_root)
}

struct Ctx {
    dry_run: bool,
    root: bool,
    needs_root: Vec<String>,
}

impl Ctx {
    /// One line per step that has work to do: "installing: x", or "missing: x" on a dry run.
    /// Steps that need root say so up front when we are not root.
    fn announce(&self, doing: &str, what: &str, needs_root: bool) {
        let doing = if self.dry_run {
            "missing"
        } else if needs_root && !self.root {
            "missing (needs root)"
        } else {
            doing
        };
        println!("{doing}: {what}");
    }

    /// Runs `cmd` unless this is a dry run, or it needs root and we are not root.
    /// Returns whether it ran.
    fn act(&mut self, cmd: &mut Command, needs_root: bool) -> Result<bool> {
        let shown = display(cmd);
        if self.dry_run {
            println!("  would run: {shown}");
            Ok(false)
        } else if needs_root && !self.root {
            println!("  needs root: {shown}");
            self.needs_root.push(shown);
            Ok(false)
        } else {
            let clock = Stopwatch::start();
            util::run(cmd.stdin(Stdio::null()))?;
            if clock.elapsed_secs() >= 1.0 {
                println!("  done in {}", clock.secs());
            }
            Ok(true)
        }
    }
}

/// rustup must never update itself from here (a new RUSTUP_HOME defaults to updating).
fn rustup_self_update(ctx: &mut Ctx) -> Result<()> {
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::home().join(".rustup"));
    let settings = fs::read_to_string(home.join("settings.toml")).unwrap_or_default();
    if settings.contains("auto_self_update = \"disable\"") {
        println!("ok: rustup self-update disabled");
        return Ok(());
    }
    ctx.announce("configuring", "rustup self-update off", false);
    ctx.act(
        Command::new("rustup").args(["set", "auto-self-update", "disable"]),
        false,
    )
    .context("could not turn off rustup self-update")?;
    Ok(())
}

/// What we learn about the nightly toolchain that compiles the eBPF crate.
struct Nightly {
    sysroot: PathBuf,
    /// LLVM major version, e.g. "22": bpf-linker must be built against the same one.
    llvm_major: String,
}

fn nightly(ctx: &mut Ctx) -> Result<Option<Nightly>> {
    let list = stdout_if_ok(Command::new("rustup").args(["toolchain", "list"]))?.context(
        "`rustup toolchain list` failed: kpath needs rustup (https://rustup.rs) with a stable \
         and a nightly toolchain",
    )?;
    let present = list.lines().any(|line| {
        // `nightly-<host>`, not a dated `nightly-2026-05-19-<host>`.
        line.strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    if !present {
        ctx.announce(
            "installing",
            "rust nightly toolchain (minimal, with rust-src)",
            false,
        );
        let installed = ctx
            .act(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]),
                false,
            )
            .context(
                "could not install the nightly toolchain, which builds the eBPF crate \
                 (-Z build-std=core); if static.rust-lang.org is unreachable here, install it \
                 on a machine that can reach it",
            )?;
        if !installed {
            println!("  (later toolchain steps need the nightly toolchain; skipped)");
            return Ok(None);
        }
    }
    let vv = stdout_if_ok(Command::new("rustc").args(["+nightly", "-vV"]))?
        .context("`rustc +nightly -vV` failed although rustup lists a nightly toolchain")?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    let (release, llvm) = (field("release:"), field("LLVM version:"));
    let llvm_major = llvm.split('.').next().unwrap_or_default().to_string();
    if llvm_major.is_empty() || !llvm_major.bytes().all(|b| b.is_ascii_digit()) {
        bail!("could not read the LLVM version from `rustc +nightly -vV`:\n{vv}");
    }
    let sysroot = stdout_if_ok(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?
        .context("`rustc +nightly --print sysroot` failed")?;
    println!("ok: nightly toolchain (rustc {release}, LLVM {llvm})");
    Ok(Some(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        llvm_major,
    }))
}

fn rust_src(ctx: &mut Ctx, nightly: &Nightly) -> Result<()> {
    let core = nightly
        .sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if core.exists() {
        println!("ok: rust-src for nightly");
        return Ok(());
    }
    ctx.announce(
        "installing",
        "rust-src for nightly (needed by -Z build-std=core)",
        false,
    );
    ctx.act(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        false,
    )
    .context("could not add rust-src to the nightly toolchain")?;
    Ok(())
}

/// bpf-linker links the eBPF object. It is built against the nightly toolchain's own libLLVM
/// (no Debian LLVM needed), through a folder of symlinks whose path is baked into the binary's
/// rpath; so a working `bpf-linker --version` also proves that libLLVM still resolves.
fn bpf_linker(ctx: &mut Ctx, nightly: &Nightly) -> Result<()> {
    let root = util::cargo_install_root();
    let bin = root.join("bin/bpf-linker");
    let feature = format!("llvm-{}", nightly.llvm_major);
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");

    let reason = match stdout_if_ok(Command::new(&bin).arg("--version"))? {
        None if bin.exists() => "it does not run (libLLVM gone?)".to_string(),
        None => format!("missing from {}", root.join("bin").display()),
        Some(out) if out.trim() != want => format!("found {}", out.trim()),
        Some(_) => match installed_features(&root)? {
            Some(features) if !features.contains(&feature) => {
                format!("built with {features:?}, nightly needs {feature}")
            }
            _ => {
                println!("ok: {want} ({})", bin.display());
                warn_if_shadowed(&bin);
                return Ok(());
            }
        },
    };
    ctx.announce(
        "installing",
        &format!("{want} with {feature} ({reason}; builds in about a minute)"),
        false,
    );

    let prefix = llvm_prefix_dir();
    if ctx.dry_run {
        println!(
            "  would link {}/lib/libLLVM.so -> {}",
            prefix.display(),
            nightly.sysroot.join("lib/libLLVM.so.*").display()
        );
    } else {
        link_nightly_llvm(&nightly.sysroot.join("lib"), &prefix.join("lib"))?;
    }
    let mut cmd = Command::new("cargo");
    cmd.env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTUP_TOOLCHAIN_SOURCE")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(&feature);
    if ctx
        .act(&mut cmd, false)
        .context("could not install bpf-linker")?
    {
        let out = stdout_if_ok(Command::new(&bin).arg("--version"))?;
        if out.as_deref().map(str::trim) != Some(want.as_str()) {
            bail!("{} still does not run after installing it", bin.display());
        }
        println!("ok: {want} ({})", bin.display());
        warn_if_shadowed(&bin);
    }
    Ok(())
}

/// The folder whose `lib/` holds symlinks to the nightly libLLVM (`LLVM_PREFIX` for the build).
/// It must outlive the build: the bpf-linker binary loads libLLVM through it.
fn llvm_prefix_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::home().join(".cache"))
        .join("kpath-llvm")
}

/// Points `lib_dir/libLLVM.so` and `lib_dir/<versioned name>` at the nightly's real libLLVM.
fn link_nightly_llvm(toolchain_lib: &Path, lib_dir: &Path) -> Result<()> {
    // The real library is `libLLVM.so.<ver>-rust-<release>`; `libLLVM-<major>-rust-*.so` next to
    // it is a small linker script, so pick the largest regular file named libLLVM*.
    let mut real: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(toolchain_lib)
        .with_context(|| format!("could not list {}", toolchain_lib.display()))?
    {
        let entry = entry?;
        let meta = entry.metadata()?;
        if entry.file_name().to_string_lossy().starts_with("libLLVM")
            && meta.is_file()
            && real.as_ref().is_none_or(|(size, _)| meta.len() > *size)
        {
            real = Some((meta.len(), entry.path()));
        }
    }
    let (_, real) = real.with_context(|| format!("no libLLVM in {}", toolchain_lib.display()))?;
    fs::create_dir_all(lib_dir)
        .with_context(|| format!("could not create {}", lib_dir.display()))?;
    // Drop links to an older toolchain's library so nothing resolves to a stale one.
    for entry in fs::read_dir(lib_dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM"))
        {
            fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    let versioned = real.file_name().context("libLLVM path has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(versioned)] {
        let link = lib_dir.join(name);
        std::os::unix::fs::symlink(&real, &link)
            .with_context(|| format!("could not link {} -> {}", link.display(), real.display()))?;
    }
    Ok(())
}

/// The `--features` cargo recorded when it installed bpf-linker into `root`, if it did.
fn installed_features(root: &Path) -> Result<Option<Vec<String>>> {
    let Ok(json) = fs::read_to_string(root.join(".crates2.json")) else {
        return Ok(None);
    };
    Ok(features_in_crates2(&json))
}

/// cargo's install ledger, `.crates2.json`: only the parts read here.
#[derive(serde::Deserialize)]
struct Crates2 {
    installs: HashMap<String, Install>,
}

#[derive(serde::Deserialize)]
struct Install {
    features: Option<Vec<String>>,
}

/// The features of bpf-linker [`BPF_LINKER_VERSION`] in a `.crates2.json`, whose keys read
/// `"bpf-linker 0.13.0 (registry+https://...)"`. `None` when it is not there or unreadable.
fn features_in_crates2(json: &str) -> Option<Vec<String>> {
    let ledger: Crates2 = serde_json::from_str(json).ok()?;
    let prefix = format!("bpf-linker {BPF_LINKER_VERSION} ");
    ledger
        .installs
        .into_iter()
        .find(|(key, _)| key.starts_with(&prefix))
        .and_then(|(_, install)| install.features)
}

/// aya-build finds bpf-linker on PATH; xtask puts `bin`'s folder first, plain cargo does not.
fn warn_if_shadowed(bin: &Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let first = std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file());
    match first {
        Some(found) if found == bin => {}
        Some(found) => eprintln!(
            "  warning: {} comes first on PATH; plain `cargo build` will use it, not {}",
            found.display(),
            bin.display()
        ),
        None => eprintln!(
            "  warning: {} is not on PATH; `cargo xtask` adds it, plain `cargo build` needs it",
            bin.display()
        ),
    }
}

fn packages(ctx: &mut Ctx) -> Result<()> {
    let names: Vec<&str> = PACKAGES.iter().map(|(name, _)| *name).collect();
    let missing = not_installed(&names)?;
    if missing.is_empty() {
        println!("ok: debian packages ({})", names.join(" "));
        return Ok(());
    }
    ctx.announce(
        "installing",
        &format!("debian packages {}", missing.join(" ")),
        true,
    );
    for (name, why) in PACKAGES.iter().filter(|(name, _)| missing.contains(name)) {
        println!("  {name}: {why}");
    }
    // apt-get update only now that something is missing, and once.
    ctx.act(&mut apt(&["update", "-q"]), true)
        .context("could not update the apt package lists")?;
    let before = installed_packages(&[])?;
    let ran = ctx
        .act(
            apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&missing),
            true,
        )
        .context("could not install the debian packages")?;
    if !ran {
        return Ok(());
    }
    reinstall_removed(ctx, &before)?;
    if missing.contains(&"nginx") {
        quiet_nginx()?;
    }
    let still = not_installed(&missing)?;
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    println!("ok: debian packages ({})", names.join(" "));
    Ok(())
}

/// An apt-get command that waits for another apt/dpkg run (say, another engineer's) instead of
/// failing on the lock.
fn apt(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(args);
    cmd
}

/// Those of `names` that are not fully installed.
fn not_installed<'a>(names: &[&'a str]) -> Result<Vec<&'a str>> {
    let status = installed_packages(names)?;
    Ok(names
        .iter()
        .copied()
        .filter(|name| !status.get(*name).copied().unwrap_or(false))
        .collect())
}

/// apt may remove a conflicting package to get ours in (this machine image ships a backported
/// qemu-utils that qemu-system-x86 7.2 displaces); put Debian's own version of it back.
fn reinstall_removed(ctx: &mut Ctx, before: &HashMap<String, bool>) -> Result<()> {
    let after = installed_packages(&[])?;
    let mut removed: Vec<&str> = before
        .iter()
        .filter(|(name, ok)| **ok && !after.get(*name).copied().unwrap_or(false))
        .map(|(name, _)| name.as_str())
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    removed.sort_unstable();
    println!(
        "  apt removed {} to resolve a conflict; installing Debian's version back",
        removed.join(" ")
    );
    if let Err(e) = ctx.act(
        apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&removed),
        true,
    ) {
        eprintln!(
            "  warning: could not reinstall {}: {e:#}",
            removed.join(" ")
        );
    }
    Ok(())
}

/// Package name -> fully installed, from one `dpkg-query` call (every known package when `names`
/// is empty).
fn installed_packages(names: &[&str]) -> Result<HashMap<String, bool>> {
    let out = util::output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\n"])
            .args(names),
    )?
    .context("dpkg-query not found: setup installs packages with apt and needs a Debian system")?;
    // dpkg-query exits 1 when some names are unknown; the known ones are still listed.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, status)| (name.to_string(), status.trim() == "install ok installed"))
        .collect())
}

/// nginx's postinst starts the packaged service on port 80; tests run their own nginx, so stop
/// it and keep it from coming back at boot.
fn quiet_nginx() -> Result<()> {
    if Path::new("/run/systemd/system").exists() {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "nginx"])
            .stdin(Stdio::null())
            .status();
    } else if Path::new("/run/nginx.pid").exists() {
        util::run(
            Command::new("nginx")
                .args(["-s", "quit"])
                .stdin(Stdio::null()),
        )
        .context("could not stop the nginx that the package started")?;
        for _ in 0..50 {
            if !Path::new("/run/nginx.pid").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    if Path::new("/usr/sbin/update-rc.d").exists() {
        let _ = Command::new("update-rc.d")
            .args(["nginx", "disable"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if Path::new("/run/nginx.pid").exists() {
        eprintln!(
            "  warning: the packaged nginx still runs (/run/nginx.pid); port 80 may be taken"
        );
    } else {
        println!("ok: packaged nginx service stopped and disabled");
    }
    Ok(())
}

fn mounts(ctx: &mut Ctx) -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        println!("ok: tracefs at /sys/kernel/tracing");
    } else {
        ctx.announce(
            "mounting",
            "tracefs at /sys/kernel/tracing (tracepoint attach needs it)",
            true,
        );
        ctx.act(
            Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]),
            true,
        )
        .context("could not mount tracefs")?;
    }
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/kernel/debug"))
    {
        println!("ok: debugfs at /sys/kernel/debug");
    } else {
        ctx.announce("mounting", "debugfs at /sys/kernel/debug", true);
        // Optional: kpath does not depend on it, so a refusal (lockdown) or a missing root is
        // only a note, never a reason for setup to fail.
        if !ctx.root && !ctx.dry_run {
            println!("  skipped (needs root): mount -t debugfs debugfs /sys/kernel/debug");
        } else if let Err(e) = ctx.act(
            Command::new("mount").args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"]),
            true,
        ) {
            eprintln!("  warning: {e:#}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bpf_linker_features_from_cargos_install_ledger() {
        let json = format!(
            r#"{{"installs":{{
                "ripgrep 14.0.0 (registry+https://github.com/rust-lang/crates.io-index)":
                    {{"features":["pcre2"],"bins":["rg"]}},
                "bpf-linker {BPF_LINKER_VERSION} (registry+https://github.com/rust-lang/crates.io-index)":
                    {{"version_req":"=0.13.0","bins":["bpf-linker"],"features":["llvm-22"],
                      "all_features":false,"no_default_features":true}}}}}}"#
        );
        assert_eq!(
            features_in_crates2(&json),
            Some(vec!["llvm-22".to_string()])
        );
        assert_eq!(features_in_crates2(r#"{"installs":{}}"#), None);
        assert_eq!(features_in_crates2("not json"), None);
    }
}
