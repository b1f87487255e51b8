//! Window directories: `DIR/window-<unix secs>[-N]`, the same files as a run directory, the
//! oldest removed beyond `--keep`.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("creating {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{base}: no free {prefix}-{secs}-N name")]
    NoName {
        base: PathBuf,
        prefix: &'static str,
        secs: u64,
    },
}

/// A new directory `base/window-<secs>` (`-2`, ... when taken).
pub fn fresh(base: &Path, secs: u64) -> Result<PathBuf, WindowError> {
    fresh_dir(base, "window", secs)
}

/// A new directory `base/<prefix>-<secs>` (`-2`, `-3`, ... when taken), created here, so two
/// that start in the same second never share one (record's run directories use it too).
pub fn fresh_dir(base: &Path, prefix: &'static str, secs: u64) -> Result<PathBuf, WindowError> {
    std::fs::create_dir_all(base).map_err(|source| WindowError::Create {
        path: base.to_path_buf(),
        source,
    })?;
    for n in 1..1000 {
        let dir = if n == 1 {
            base.join(format!("{prefix}-{secs}"))
        } else {
            base.join(format!("{prefix}-{secs}-{n}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(WindowError::Create { path: dir, source }),
        }
    }
    Err(WindowError::NoName {
        base: base.to_path_buf(),
        prefix,
        secs,
    })
}

/// The window directories in `base`, oldest first.
pub fn list(base: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut v: Vec<((u64, u64), PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("window-")?;
            let (secs, n) = match rest.split_once('-') {
                Some((s, n)) => (s.parse().ok()?, n.parse().ok()?),
                None => (rest.parse().ok()?, 1),
            };
            Some(((secs, n), e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Removes the oldest windows beyond `keep`; returns those it could not remove.
pub fn prune(base: &Path, keep: usize) -> Vec<(PathBuf, std::io::Error)> {
    let all = list(base);
    let extra = all.len().saturating_sub(keep);
    all.into_iter()
        .take(extra)
        .filter_map(|p| std::fs::remove_dir_all(&p).err().map(|e| (p, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_listed_oldest_first_and_pruned() {
        let base = std::env::temp_dir().join(format!("kpath-windows-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let a = fresh(&base, 100).unwrap();
        let b = fresh(&base, 100).unwrap();
        let c = fresh(&base, 99).unwrap();
        let d = fresh(&base, 1000).unwrap();
        std::fs::create_dir_all(base.join("unrelated")).unwrap();
        assert_eq!(list(&base), [c.clone(), a.clone(), b.clone(), d.clone()]);
        assert!(prune(&base, 2).is_empty());
        assert_eq!(list(&base), [b, d]);
        assert!(base.join("unrelated").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
