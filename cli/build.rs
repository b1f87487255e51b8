//! Builds the eBPF programs (probe-ebpf) for the BPF target and places the object in OUT_DIR.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("cli has no parent directory"))?
        .join("probe-ebpf");
    let root = root.to_str().context("non-UTF-8 path to probe-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probe-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
