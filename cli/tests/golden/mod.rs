//! Golden files under `cli/tests/data/` (inferno's convention): compare a rendering with its
//! golden file, or rewrite the file when run with `BLESS=1`.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Compares `actual` with the golden file `name`, or rewrites it under `BLESS=1`. On a mismatch
/// the message names the first differing line and shows short files whole.
pub fn check_golden(name: &str, actual: &str) {
    let path = data_path(name);
    if std::env::var_os("BLESS").is_some_and(|v| v != "0") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        let whole = if expected.len() + actual.len() < 20_000 {
            format!("\n--- expected\n{expected}\n--- actual\n{actual}")
        } else {
            String::new()
        };
        panic!(
            "{} differs from the rendering at line {}; rerun with BLESS=1 if intended{whole}",
            path.display(),
            first_diff + 1
        );
    }
}
