//! Puts xenpv's directory on the linker search path so `-Tlink.ld` (from
//! .cargo/config.toml) finds the guest linker script from any binary that links xenpv.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rustc-link-search=native={dir}");
}
