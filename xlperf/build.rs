//! Builds the eBPF object (xlperf-ebpf, for bpfel-unknown-none, with nightly and
//! bpf-linker) and leaves it in OUT_DIR, where src/probe/loader.rs embeds it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};
use cargo_metadata::MetadataCommand;

fn main() -> anyhow::Result<()> {
    let metadata = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name == "xlperf-ebpf")
        .ok_or_else(|| anyhow!("xlperf-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("xlperf-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: &ebpf.name,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs: run `cargo xtask setup` to install nightly rust-src and bpf-linker")
}
