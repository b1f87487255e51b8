//! Unwind-table sizes and build / cache-hit times per binary (issue 11's numbers):
//! `cargo run --release -p kpath --example unwind_tables -- /usr/sbin/nginx /lib/x86_64-linux-gnu/libc.so.6`.
//! Each file is built into a fresh disk cache, then loaded from it by a second registry;
//! `--runs N` repeats both and prints medians.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kpath::unwind::{CacheOptions, Registry};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 5;
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args.get(i + 1).context("--runs N")?.parse()?;
        args.drain(i..i + 2);
    }
    let dir = std::env::temp_dir().join(format!("kpath-unwind-tables-{}", std::process::id()));
    println!(
        "{:<44} {:>8} {:>9} {:>10} {:>10}",
        "binary", "rows", "KiB", "build ms", "cached ms"
    );
    for path in args.iter().map(PathBuf::from) {
        let (mut build, mut hit, mut rows) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            let _ = std::fs::remove_dir_all(&dir);
            let options = CacheOptions {
                dir: Some(dir.clone()),
                ..CacheOptions::default()
            };
            let built = Registry::new(options.clone()).add_file(&path)?.clone();
            anyhow::ensure!(!built.from_cache, "{} came from the cache", path.display());
            let loaded = Registry::new(options).add_file(&path)?.clone();
            anyhow::ensure!(loaded.from_cache, "{} was not cached", path.display());
            anyhow::ensure!(loaded.rows == built.rows);
            build.push(built.build_ms);
            hit.push(loaded.build_ms);
            rows = built.rows;
        }
        let name = Path::new(&path).display().to_string();
        println!(
            "{name:<44} {rows:>8} {:>9.0} {:>10.1} {:>10.2}",
            f64::from(rows) * 12.0 / 1024.0,
            median(build),
            median(hit)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
