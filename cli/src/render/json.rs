//! `run.json`: the [`Run`] as pretty JSON, and back.

use std::path::{Path, PathBuf};

use crate::run::{Run, RUN_FORMAT_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid run.json", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A newer kpath changed what some field means; reading it as ours would mislead.
    #[error(
        "{} has format version {found}, this kpath reads up to {supported}: use a newer kpath",
        path.display()
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

/// Pretty JSON with a trailing newline, as written to `run.json`.
pub fn to_string_pretty(run: &Run) -> String {
    // A Run is plain data with string map keys; serde_json writes non-finite floats as null
    // rather than failing, so serialization cannot fail.
    let mut s = serde_json::to_string_pretty(run).expect("a Run always serializes");
    s.push('\n');
    s
}

/// Parses a run from JSON text; `path` only names the source in errors.
pub fn from_str(text: &str, path: &Path) -> Result<Run, JsonError> {
    let run: Run = serde_json::from_str(text).map_err(|source| JsonError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if run.format_version > RUN_FORMAT_VERSION {
        return Err(JsonError::NewerFormat {
            path: path.to_path_buf(),
            found: run.format_version,
            supported: RUN_FORMAT_VERSION,
        });
    }
    Ok(run)
}

/// Reads a `run.json`.
pub fn from_file(path: &Path) -> Result<Run, JsonError> {
    let text = std::fs::read_to_string(path).map_err(|source| JsonError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_str(&text, path)
}

/// Writes `run` as pretty JSON to `path`.
pub fn to_file(run: &Run, path: &Path) -> Result<(), JsonError> {
    std::fs::write(path, to_string_pretty(run)).map_err(|source| JsonError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("kpath-json-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trips_through_a_file() {
        let mut run = Run {
            format_version: RUN_FORMAT_VERSION,
            duration_ns: 5,
            ..Default::default()
        };
        run.lost.insert("syscalls".into(), 0);
        let path = tmp_path("roundtrip.json");
        to_file(&run, &path).unwrap();
        let back = from_file(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(back, run);
        assert!(to_string_pretty(&run).ends_with("}\n"));
    }

    #[test]
    fn errors_name_the_file() {
        let missing = tmp_path("missing.json");
        let e = from_file(&missing).unwrap_err();
        assert!(matches!(e, JsonError::Read { .. }));
        assert_eq!(e.to_string(), format!("cannot read {}", missing.display()));

        let e = from_str("{\"format_version\": 1", Path::new("x/run.json")).unwrap_err();
        assert!(matches!(e, JsonError::Parse { .. }));
        assert_eq!(e.to_string(), "x/run.json is not a valid run.json");
    }

    #[test]
    fn newer_format_is_refused() {
        let run = Run {
            format_version: RUN_FORMAT_VERSION + 1,
            ..Default::default()
        };
        let e = from_str(&to_string_pretty(&run), Path::new("run.json")).unwrap_err();
        assert!(
            matches!(e, JsonError::NewerFormat { found, .. } if found == RUN_FORMAT_VERSION + 1)
        );
    }
}
