//! Which ranks this process belongs to, from what started it.

use crate::distributed::{Collective, SingleProcess};
use crate::error::TrainError;

/// The ranks this process belongs to: the MPI job's, when an MPI launcher started it and kiln
/// was built with the `mpi` feature; otherwise this process alone.
///
/// # Errors
/// A launcher started several ranks but this kiln was built without `mpi` (each would train
/// alone, overwriting the others' run directory).
pub fn from_launcher() -> Result<Box<dyn Collective>, TrainError> {
    #[cfg(feature = "mpi")]
    if LAUNCHED.iter().any(|var| std::env::var_os(var).is_some())
        && let Some(mpi) = crate::mpi::Mpi::initialize()
    {
        return Ok(Box::new(mpi));
    }
    let ranks = RANKS.iter().find_map(|var| std::env::var(var).ok().and_then(|n| n.parse::<usize>().ok())).unwrap_or(1);
    if ranks > 1 && !cfg!(feature = "mpi") {
        return Err(TrainError::Distributed(format!(
            "a launcher started {ranks} ranks, but this kiln was built without MPI, so each would train alone: \
             rebuild with `cargo build --release --features mpi` (README, \"Train on several processes or machines\")"
        )));
    }
    Ok(Box::new(SingleProcess))
}

/// Variables an MPI launcher sets in every rank it starts (Open MPI's `mpirun`, Slurm's `srun`
/// with PMIx or PMI-2, MPICH's Hydra); a process started by hand has none and trains alone.
#[cfg(feature = "mpi")]
const LAUNCHED: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"];

/// Those of them that give the number of ranks.
const RANKS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];
