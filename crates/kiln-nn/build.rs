//! Links the system's OpenBLAS when pkg-config finds it (Debian: `apt-get install
//! libopenblas-dev`) and sets `cfg(kiln_openblas)`; without it Kiln's matrix products stay on
//! burn-flex's gemm. `KILN_BLAS=0` at build time leaves OpenBLAS out even when it is there.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_openblas)");
    println!("cargo::rerun-if-env-changed=KILN_BLAS");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var("KILN_BLAS").as_deref() == Ok("0") {
        return;
    }
    // the pkg-config crate prints the link search paths and libraries when it finds the library
    match pkg_config::Config::new().cargo_metadata(true).probe("openblas") {
        Ok(_) => println!("cargo::rustc-cfg=kiln_openblas"),
        Err(_) => println!(
            "cargo::warning=OpenBLAS not found by pkg-config: matrix products use burn-flex's gemm \
             (about two thirds of OpenBLAS's speed). `apt-get install libopenblas-dev pkg-config`, then \
             `cargo clean -p kiln-nn`, to link it."
        ),
    }
}
