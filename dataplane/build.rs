//! Builds the XDP program (dataplane-ebpf) with nightly for bpfel-unknown-none
//! and leaves the object in OUT_DIR, where `xdp::loader` embeds it.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("dataplane crate has no parent directory")?
        .join("dataplane-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "bpf-linker is not on PATH, so the XDP program cannot be built. \
             Run `cargo xtask setup` once (it installs bpf-linker@0.10.1 and nightly's rust-src)."
        );
    }
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to dataplane-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dataplane-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
