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
    if let Some(mpi) = crate::mpi::Mpi::from_launcher() {
        return Ok(Box::new(mpi));
    }
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|var| std::env::var(var).ok().and_then(|n| n.parse::<usize>().ok()).filter(|&n| n > 1));
    match launched {
        Some(ranks) if !cfg!(feature = "mpi") => Err(TrainError::Distributed(format!(
            "a launcher started {ranks} ranks, but this kiln was built without MPI, so each would train alone: \
             rebuild with `cargo build --release --features mpi` (README, \"Train on several processes or machines\")"
        ))),
        _ => Ok(Box::new(SingleProcess)),
    }
}
