//! Checkpoints of a run: model, EMA, optimiser state and run position, written whole or not at
//! all, and read back for `--resume`.

use std::fs;
use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ema::Ema;
use crate::error::{TrainError, io};
use crate::network::Network;


/// Where a run is: saved with every checkpoint, so a resumed run continues exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Data position: epoch and next batch.
    pub epoch: usize,
    /// Next batch of `epoch`.
    pub next_batch: usize,
    /// Best evaluation so far (by `checkpoint.keep_best_by`).
    pub best: Option<f64>,
    /// Examples per optimiser step over all ranks (per-rank batch x ranks) when saved; absent in
    /// checkpoints from before data-parallel training, which were single-process.
    #[serde(default)]
    pub global_batch: Option<usize>,
}

impl RunState {
    /// Moves the data position of a run saved with another global batch (another number of
    /// ranks) to the first batch at or after the examples already seen, so a run resumed on more
    /// or fewer ranks repeats none of the epoch; an epoch's last, partial stretch may be skipped.
    pub(crate) fn continue_with_global_batch(&mut self, global_batch: usize, batches_per_epoch: usize, quiet: bool) {
        let saved = self.global_batch.unwrap_or(global_batch);
        if saved == global_batch {
            return;
        }
        let seen = self.next_batch * saved;
        self.next_batch = seen.div_ceil(global_batch);
        if self.next_batch >= batches_per_epoch {
            (self.epoch, self.next_batch) = (self.epoch + 1, 0);
        }
        if !quiet {
            eprintln!(
                "resuming a run saved with global batch {saved} at global batch {global_batch}: {seen} examples of epoch {} were seen; continuing at batch {}",
                self.epoch + 1,
                self.next_batch
            );
        }
    }
}


/// Writes model, EMA, optimiser and run state into `dir` whole or not at all: everything goes
/// to a sibling `*.partial` directory first, which then replaces `dir` by renames, so an
/// interruption leaves the previous checkpoint (or, mid-swap, `*.previous`) intact.
pub(crate) fn save_checkpoint<N: Network>(
    dir: &Path,
    net: &N,
    ema: Option<&Ema<N::Module>>,
    optim: &ModuleOptimizer,
    state: &RunState,
) -> Result<(), TrainError> {
    // burn folds the last training forward's BatchNorm statistics in lazily; a validation
    // snapshot applies them, so the checkpoint holds them
    let _ = net.module().valid();
    let partial = dir.with_extension("partial");
    let previous = dir.with_extension("previous");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    net.save_module(net.module(), &partial.join("model.bpk"))?;
    if let Some(ema) = ema {
        net.save_module(&ema.model, &partial.join("ema.bpk"))?;
    }
    let optim_path = partial.join("optimizer.bin");
    optim.save(&optim_path).map_err(|e| TrainError::Io { path: optim_path.clone(), reason: format!("{e:?}") })?;
    let state_path = partial.join("state.json");
    fs::write(&state_path, serde_json::to_string_pretty(state).expect("state serialises")).map_err(io(&state_path))?;
    let _ = fs::remove_dir_all(&previous);
    if dir.exists() {
        fs::rename(dir, &previous).map_err(io(dir))?;
    }
    fs::rename(&partial, dir).map_err(io(dir))?;
    let _ = fs::remove_dir_all(&previous);
    Ok(())
}

/// Reads the model, EMA and run state [`save_checkpoint`] wrote (falling back to `*.previous`
/// if a swap was cut short) and returns the directory, whose optimiser state is loaded once
/// the optimiser is built for the restored parameters.
pub(crate) fn load_checkpoint<N: Network>(
    dir: &Path,
    net: &mut N,
    state: &mut RunState,
    ema: &mut Option<Ema<N::Module>>,
    device: &Device,
) -> Result<PathBuf, TrainError> {
    let previous = dir.with_extension("previous");
    let dir = if dir.exists() { dir.to_path_buf() } else { previous };
    let fail = |reason: String| TrainError::Resume { path: dir.clone(), reason };
    if !dir.exists() {
        return Err(fail("no checkpoint there; run without --resume to start".into()));
    }
    let differs = || fail("the checkpoint's model configuration differs from the experiment's".into());
    *net.module_mut() = net.load_module(&dir.join("model.bpk"), device)?.ok_or_else(differs)?;
    if let Some(ema) = ema {
        let path = dir.join("ema.bpk");
        if !path.exists() {
            return Err(fail("train.ema is on but the checkpoint has no ema.bpk (it was saved without EMA)".into()));
        }
        let averaged = net.load_module(&path, &device.clone().inner())?.ok_or_else(differs)?;
        *ema = Ema::resume(averaged, ema.decay());
    }
    let text = fs::read_to_string(dir.join("state.json")).map_err(|e| fail(e.to_string()))?;
    *state = serde_json::from_str(&text).map_err(|e| fail(format!("state.json: {e}")))?;
    Ok(dir)
}
