//! With the `mpi` feature: compiles `csrc/mpi_in_place.c` against the MPI found on this machine
//! (rsmpi's own probe: `mpicc`, then pkg-config), so the gradient all-reduce can work in place.

fn main() {
    println!("cargo:rerun-if-changed=csrc/mpi_in_place.c");
    #[cfg(feature = "mpi")]
    {
        let mpi = build_probe_mpi::probe().unwrap_or_else(|errors| {
            panic!(
                "the `mpi` feature needs an MPI library with its headers (Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev): {errors:?}"
            )
        });
        cc::Build::new().file("csrc/mpi_in_place.c").includes(&mpi.include_paths).compile("kiln_mpi_in_place");
    }
}
