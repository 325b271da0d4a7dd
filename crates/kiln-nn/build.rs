//! Links the system's OpenBLAS when pkg-config finds it (Debian: `apt-get install
//! libopenblas-dev`) and sets `cfg(kiln_openblas)`; without it Kiln's matrix products stay on
//! burn-flex's gemm. `KILN_BLAS=0` at build time leaves OpenBLAS out even when it is there.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_openblas)");
    println!("cargo::rerun-if-env-changed=KILN_BLAS");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var("KILN_BLAS").as_deref() == Ok("0") {
        return;
    }
    let libs = Command::new("pkg-config").args(["--libs", "openblas"]).output();
    let libs = match libs {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            println!(
                "cargo::warning=OpenBLAS not found by pkg-config: matrix products use burn-flex's gemm \
                 (about two thirds of OpenBLAS's speed). `apt-get install libopenblas-dev pkg-config`, then \
                 `cargo clean -p kiln-nn`, to link it."
            );
            return;
        }
    };
    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo::rustc-link-lib={lib}");
        }
    }
    println!("cargo::rustc-cfg=kiln_openblas");
}
