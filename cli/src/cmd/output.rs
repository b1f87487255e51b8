//! `-o/--output` as every subcommand spells it: `-o FILE` where one file is produced (`-o -`
//! is stdout, never a file named `-`), `-o DIR` where a directory is (`-o -` is refused).
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::render::flame::{self, FlameOptions};

/// Whether `-o` names stdout.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Refuses `-o -` where the output is a directory of several files.
pub fn directory(path: Option<&PathBuf>, what: &str, instead: &str) -> anyhow::Result<()> {
    match path {
        Some(p) if is_stdout(p) => {
            bail!("-o -: {what} is a directory of several files, not one stream; {instead}")
        }
        _ => Ok(()),
    }
}

/// Writes `text` to stdout; a closed pipe (`kpath report DIR | head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

/// Renders a flame graph to `out`, or to stdout for `-`; says where it went on stderr.
pub fn write_svg(folded: &str, opts: &FlameOptions, out: &Path) -> anyhow::Result<()> {
    if is_stdout(out) {
        let mut buf = Vec::new();
        flame::render(folded, opts, &mut buf)?;
        return write_stdout(&buf);
    }
    flame::render_file(folded, opts, out)?;
    eprintln!("kpath: wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_stdout_and_refused_for_directories() {
        assert!(is_stdout(Path::new("-")));
        assert!(!is_stdout(Path::new("./-")));
        let e = directory(Some(&PathBuf::from("-")), "a run", "use --json").unwrap_err();
        assert!(e.to_string().contains("use --json"), "{e}");
        assert!(directory(Some(&PathBuf::from("runs/x")), "a run", "").is_ok());
        assert!(directory(None, "a run", "").is_ok());
    }
}
