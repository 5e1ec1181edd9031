use which::which;

/// The crate has an undeclared dependency on the `bpf-linker` binary: rebuild
/// when it changes, and say how to get it when it is missing.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker is not on PATH; run `cargo xtask setup` to install it"),
    }
}
