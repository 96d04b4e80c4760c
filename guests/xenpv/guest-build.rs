//! Build script of every guest binary (`build = "../xenpv/guest-build.rs"` in its Cargo.toml):
//! links it freestanding (no crt, no libc, static, non-PIE) with xenpv's linker script. Only
//! the package's binaries get these flags, so the libraries' host unit tests link normally.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let script = format!("{dir}/../xenpv/link.ld");
    println!("cargo:rerun-if-changed={script}");
    for arg in [
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=4096",
        "-Wl,--gc-sections",
        &format!("-T{script}"),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
