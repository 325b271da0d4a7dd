//! MPI ranks (feature `mpi`): a run started by `mpirun`/`srun` is one rank of the job's
//! `MPI_COMM_WORLD`. Sums go through `MPI_Allreduce` in place, in buckets of a few MB, so no
//! send buffer is allocated or copied.

use std::ffi::c_void;

use mpi::environment::Universe;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::distributed::Collective;

unsafe extern "C" {
    /// `MPI_IN_PLACE` of the MPI this was built against (`csrc/mpi_in_place.c`).
    static KILN_MPI_IN_PLACE: *mut c_void;
}

/// Floats per all-reduce: 4 MB buckets, where Open MPI's all-reduce of a large buffer runs about
/// twice as fast as in one call (README, "Train on several processes or machines").
const BUCKET: usize = 1 << 20;

/// The job's ranks, as MPI numbers them. Finalises MPI when dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI and joins the job's world (`crate::launcher` asks only where a launcher
    /// started this process); `None` if MPI was initialised before.
    pub fn initialize() -> Option<Mpi> {
        let universe = mpi::initialize()?;
        Some(Mpi { world: universe.world(), _universe: universe })
    }

    fn sum_in_place<T>(&self, values: &mut [T], datatype: ffi::MPI_Datatype) {
        for bucket in values.chunks_mut(BUCKET) {
            // SAFETY: `bucket` is a live, exclusively borrowed buffer of `len` elements of
            // `datatype`; with MPI_IN_PLACE it is both input and output of the reduction.
            let code = unsafe {
                ffi::MPI_Allreduce(
                    KILN_MPI_IN_PLACE,
                    bucket.as_mut_ptr().cast(),
                    bucket.len() as i32,
                    datatype,
                    ffi::RSMPI_SUM,
                    self.world.as_raw(),
                )
            };
            // MPI's default error handler aborts the job before returning an error
            assert_eq!(code, 0, "MPI_Allreduce failed");
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn world(&self) -> usize {
        self.world.size() as usize
    }
    fn sum_f32(&self, values: &mut [f32]) {
        // SAFETY: reading a constant of the MPI library
        self.sum_in_place(values, unsafe { ffi::RSMPI_FLOAT });
    }
    fn sum_f64(&self, values: &mut [f64]) {
        // SAFETY: as above
        self.sum_in_place(values, unsafe { ffi::RSMPI_DOUBLE });
    }
    fn abort(&self, message: &str) -> ! {
        eprintln!("error on rank {} of {}: {message}; stopping every rank", self.rank(), self.world());
        self.world.abort(1)
    }
}
