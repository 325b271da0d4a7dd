//! What the trainer's integration tests share.

use burn::prelude::*;
use kiln_train::distributed::{Devices, SingleProcess};
use kiln_train::network::Network;
use kiln_train::train_loop::{Evaluation, Task};

/// Evaluates `module` with `whole` (one process) and with `shards` (one task per rank, each on
/// its own thread, the threads meeting as [`Devices`] ranks on the CPU), asserts that every
/// rank gets the single process's metrics bit for bit, and returns them.
pub fn assert_sharded_evaluation_is_exact<T: Task + Sync>(
    whole: &T,
    shards: &[T],
    module: &<T::Net as Network>::Module,
    device: &Device,
) -> Evaluation
where
    <T::Net as Network>::Module: Sync,
{
    let alone = whole.evaluate(module, device, &SingleProcess).unwrap();
    let group = Devices::group(&vec![Device::flex(); shards.len()]);
    let sharded: Vec<Evaluation> = std::thread::scope(|s| {
        let handles: Vec<_> = shards.iter().zip(&group).map(|(task, member)| s.spawn(|| task.evaluate(module, device, member).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, eval) in sharded.iter().enumerate() {
        assert_eq!(eval.metrics, alone.metrics, "rank {rank} of {}", shards.len());
    }
    alone
}
