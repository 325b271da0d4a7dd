//! Picks the BLAS behind Kiln's matrix products (`KILN_BLAS` at build time):
//! - unset or `blis`: BLIS, built from the sources the `blis-src` crate vendors, so every
//!   machine gets the same BLAS with `cargo build` alone (measured level with Debian's OpenBLAS
//!   on AMD, and faster on an Intel Xeon once Kiln picks its kernels: issue #18);
//! - `openblas`: the system's OpenBLAS through pkg-config (`apt-get install libopenblas-dev
//!   pkg-config`; the build fails when it is not there);
//! - `0`: none, burn-flex's gemm.
//!
//! It sets `cfg(kiln_blas)` and `cfg(kiln_openblas)` or `cfg(kiln_blis)`. BLIS is compiled
//! either way (a crate's dependencies cannot depend on what its build script finds) but is
//! linked only when chosen.

fn main() {
    for cfg in ["kiln_blas", "kiln_openblas", "kiln_blis"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    println!("cargo::rerun-if-env-changed=KILN_BLAS");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_LIBDIR");
    let choice = std::env::var("KILN_BLAS").unwrap_or_default();
    let chosen = match choice.as_str() {
        "0" => return,
        "openblas" => match openblas() {
            Ok(()) => "kiln_openblas",
            Err(e) => panic!("KILN_BLAS=openblas, but pkg-config does not find OpenBLAS ({e}): `apt-get install libopenblas-dev pkg-config`"),
        },
        "" | "blis" => "kiln_blis",
        other => panic!("KILN_BLAS={other}: use blis (the default), openblas or 0"),
    };
    println!("cargo::rustc-cfg=kiln_blas");
    println!("cargo::rustc-cfg={chosen}");
}

/// Links OpenBLAS if pkg-config finds it (the crate prints the search paths and libraries).
fn openblas() -> Result<(), pkg_config::Error> {
    pkg_config::Config::new().cargo_metadata(true).probe("openblas").map(|_| ())
}
