//! `cargo xtask`: the project's chores. Every command first makes sure the
//! machine has what the build needs (nightly's rust-src and bpf-linker for
//! the XDP program; kcat, iproute2 and strace for the tests), installing what
//! is missing, so a fresh machine needs no manual step.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

const BPF_LINKER_VERSION: &str = "0.10.1";
const EBPF_TOOLCHAIN: &str = "nightly";
/// Debian packages the tests drive: a real Kafka client, `ip`, and strace to
/// show which syscalls move the records.
const TEST_PACKAGES: [(&str, &str); 3] =
    [("kcat", "kcat"), ("ip", "iproute2"), ("strace", "strace")];

#[derive(Parser)]
#[command(about = "Build chores for dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Chore,
}

#[derive(Subcommand)]
enum Chore {
    /// Install what the build and the tests need, if missing.
    Setup,
    /// Run the whole test suite (unit, property, and the privileged
    /// integration tests, which need root: network namespaces, XDP, kcat).
    Test {
        /// Extra arguments for `cargo test`, e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build dataplane in release mode and run it with the given arguments,
    /// e.g. `cargo xtask run -- bench`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    setup()?;
    match cli.command {
        Chore::Setup => Ok(()),
        Chore::Test { args } => {
            // The default members (dataplane, dataplane-common, xtask); the eBPF
            // crate is built by dataplane's build.rs and has no host tests.
            run(
                // Every suite runs even when one fails, so CI shows all failures.
                Command::new("cargo")
                    .current_dir(&root)
                    .args(["test", "--no-fail-fast"])
                    .args(&args),
                "cargo test",
            )
        }
        Chore::Run { args } => {
            run(
                Command::new("cargo").current_dir(&root).args([
                    "build",
                    "--release",
                    "--quiet",
                    "--package",
                    "dataplane",
                ]),
                "cargo build --release",
            )?;
            run(
                Command::new(root.join("target/release/dataplane")).args(&args),
                "target/release/dataplane",
            )
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> Result<()> {
    let toolchains = output("rustup", &["toolchain", "list"])
        .context("rustup is needed to build the XDP program with nightly")?;
    if !toolchains.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN)) {
        eprintln!("xtask: installing the {EBPF_TOOLCHAIN} toolchain (builds the XDP program)");
        run(
            Command::new("rustup").args([
                "toolchain",
                "install",
                EBPF_TOOLCHAIN,
                "--profile",
                "minimal",
            ]),
            "rustup toolchain install nightly",
        )?;
    }
    let components = output(
        "rustup",
        &[
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ],
    )
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to {EBPF_TOOLCHAIN} (-Z build-std=core needs it)");
        run(
            Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                EBPF_TOOLCHAIN,
            ]),
            "rustup component add rust-src",
        )?;
    }
    let linker = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        // 0.10.1's default feature links against nightly's own LLVM; later
        // versions need a system LLVM.
        eprintln!("xtask: installing bpf-linker@{BPF_LINKER_VERSION} (links the XDP program)");
        run(
            Command::new("cargo").args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ]),
            "cargo install bpf-linker",
        )?;
    }
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(program, _)| {
            Command::new("which")
                .arg(program)
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {} with apt-get", missing.join(", "));
        run(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )?;
    }
    Ok(())
}
