//! Batching on worker threads, reproducible and resumable.
//!
//! [`DataLoader`] decodes and transforms examples on `workers` threads ahead of the consumer and
//! hands out [`Batch`]es in order. Every random choice is drawn from a stream derived from the run
//! seed and the work's coordinates, never from a shared generator:
//!
//! | what | stream |
//! |---|---|
//! | the order of epoch `e` | `Rng::derive(seed, [SHUFFLE, e])` |
//! | the augmentation of the `i`-th example of epoch `e` | `Rng::derive(seed, [SAMPLE, e, i])` |
//! | the Mixup/CutMix draw of batch `b` of epoch `e` | `Rng::derive(seed, [MIX, e, b])` |
//!
//! so the batches are the same for any number of workers and any thread timing, and a run resumed
//! at a [`LoaderPosition`] (epoch, next batch) sees exactly the batches an uninterrupted run would.
//!
//! Data-parallel ranks each take a [`Shard`] of every batch: with per-rank batch `B` and `R`
//! ranks, batch `k` of rank `r` holds the positions `(kR + r)B ..` of the epoch's order, so the
//! ranks' batches `k` together are the single process's batch `k` of size `RB`, each example
//! augmented from the same stream.
//!
//! Worker `w` of `N` builds batches `w, w + N, w + 2N, ...` of the epoch into its own bounded
//! queue of `prefetch` batches (as PyTorch's `DataLoader` assigns them); the consumer takes batch
//! `b` from queue `b mod N`, so order needs no reassembly buffer and memory stays bounded at
//! `N * prefetch` batches.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::{DataError, Dataset, ImageTransform, MixOutcome, Mixup, Rng};

/// Stream keys of [`Rng::derive`] (module docs).
const SHUFFLE: u64 = 1;
const SAMPLE: u64 = 2;
const MIX: u64 = 3;

/// How a [`DataLoader`] batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Examples per batch.
    pub batch_size: usize,
    /// Visit the examples in a new seeded order every epoch.
    pub shuffle: bool,
    /// Drop the last, incomplete batch of an epoch (timm's train loader does).
    pub drop_last: bool,
    /// Decoding threads; 0 decodes on the consumer's thread.
    pub workers: usize,
    /// Batches each worker may hold ready (at least 1).
    pub prefetch: usize,
    /// Run seed of every random choice.
    pub seed: u64,
    /// The part of every batch this process takes, in data-parallel training.
    pub shard: Shard,
}

/// One rank's part of the data (module docs): `index` of `count` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank, from 0.
    pub index: usize,
    /// Ranks in all.
    pub count: usize,
}

impl Shard {
    /// The whole data, for a single process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl LoaderConfig {
    /// Training: shuffled, last incomplete batch dropped, one worker per available core,
    /// two batches ahead per worker.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoaderConfig { batch_size, shuffle: true, drop_last: true, workers, prefetch: 2, seed, shard: Shard::WHOLE }
    }

    /// Evaluation: in order, every example, same threads as [`LoaderConfig::train`].
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig { shuffle: false, drop_last: false, ..Self::train(batch_size, 0) }
    }
}

/// Where a run is in its data: the epoch, and the index of the next batch of that epoch to be
/// consumed. Save it with a checkpoint; [`DataLoader::resume`] continues from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LoaderPosition {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Index of the next batch within the epoch.
    pub next_batch: usize,
}

/// One batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[batch, channels, height, width]` f32, normalised (and mixed, with Mixup/CutMix).
    pub images: Vec<f32>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
    /// `[batch]` class labels (the images' own, before mixing).
    pub labels: Vec<usize>,
    /// `[batch, num_classes]` soft targets, rows summing to 1, when the loader mixes (timm then
    /// trains with `SoftTargetCrossEntropy`); `None` otherwise.
    pub soft_targets: Option<Vec<f32>>,
    /// What Mixup/CutMix did to this batch, when the loader mixes.
    pub mix: Option<MixOutcome>,
    /// `[batch]` data-set index of each example.
    pub indices: Vec<usize>,
    /// Epoch and index of this batch.
    pub position: LoaderPosition,
}

impl Batch {
    /// Examples in the batch.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether the batch is empty (never, for batches a loader yields).
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// The part of a loader every task shares: which examples each batch of an epoch holds, the seed
/// streams of the module docs, and the workers. [`DataLoader`] and [`crate::SegLoader`] each
/// pair one with their own [`MakeBatch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Examples in the data set.
    examples: usize,
    pub(crate) config: LoaderConfig,
}

impl Schedule {
    /// Checks `config` against a data set of `examples`.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] for a zero batch size or prefetch, an empty data set, or a
    /// batch size above the number of examples when `drop_last` leaves no batch.
    pub(crate) fn new(examples: usize, config: LoaderConfig) -> Result<Self, DataError> {
        let invalid = |msg: String| Err(DataError::InvalidData(msg));
        if config.batch_size == 0 {
            return invalid("batch_size must be at least 1".into());
        }
        if config.shard.count == 0 || config.shard.index >= config.shard.count {
            return invalid(format!("shard {} of {} does not exist", config.shard.index, config.shard.count));
        }
        if config.prefetch == 0 {
            return invalid("prefetch must be at least 1 batch per worker".into());
        }
        if examples == 0 {
            return invalid("the data set has no examples".into());
        }
        let schedule = Schedule { examples, config };
        // an evaluation shard may be left without a batch when there are more ranks than batches
        if config.drop_last && schedule.batches_per_epoch() == 0 {
            let ranks = config.shard.count;
            return invalid(format!(
                "batch_size {} x {ranks} rank(s) exceeds the {examples} examples and drop_last leaves no batch; lower the batch size",
                config.batch_size
            ));
        }
        Ok(schedule)
    }

    /// This shard's batches per epoch. Training (`drop_last`) gives every shard the same count,
    /// so the ranks step together; evaluation gives the first shards one more where the batches
    /// do not divide evenly.
    pub(crate) fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.examples, self.config.batch_size);
        let Shard { index, count } = self.config.shard;
        if self.config.drop_last { n / b / count } else { n.div_ceil(b) / count + usize::from(index < n.div_ceil(b) % count) }
    }

    /// The data-set indices of epoch `epoch`, in visiting order.
    fn order(&self, epoch: usize) -> Vec<usize> {
        if self.config.shuffle {
            Rng::derive(self.config.seed, &[SHUFFLE, epoch as u64]).permutation(self.examples)
        } else {
            (0..self.examples).collect()
        }
    }

    /// Positions, within the epoch's order, of the examples of this shard's batch `batch`.
    pub(crate) fn batch_positions(&self, batch: usize) -> std::ops::Range<usize> {
        let Shard { index, count } = self.config.shard;
        let start = (batch * count + index) * self.config.batch_size;
        start..(start + self.config.batch_size).min(self.examples)
    }

    /// The augmentation stream of the example at `position` of epoch `epoch`.
    pub(crate) fn sample_rng(&self, epoch: usize, position: usize) -> Rng {
        Rng::derive(self.config.seed, &[SAMPLE, epoch as u64, position as u64])
    }

    /// The batches of `position.epoch` from `position.next_batch` on: what an uninterrupted run
    /// would have yielded next.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] when `next_batch` is beyond the epoch's batches (a position
    /// saved with another data set or batch size).
    pub(crate) fn resume<M: MakeBatch>(
        &self,
        maker: &Arc<M>,
        position: LoaderPosition,
    ) -> Result<EpochBatches<M::Batch>, DataError>
    where
        M::Batch: Send + 'static,
    {
        let batches = self.batches_per_epoch();
        if position.next_batch > batches {
            return Err(DataError::InvalidData(format!(
                "cannot resume at batch {} of epoch {}: an epoch has {batches} batches; was the checkpoint made with another data set or batch size?",
                position.next_batch, position.epoch
            )));
        }
        Ok(self.start(maker, position))
    }

    /// Starts the workers of `position.epoch` at `position.next_batch` (module docs).
    pub(crate) fn start<M: MakeBatch>(&self, maker: &Arc<M>, position: LoaderPosition) -> EpochBatches<M::Batch>
    where
        M::Batch: Send + 'static,
    {
        let LoaderPosition { epoch, next_batch } = position;
        let end = self.batches_per_epoch();
        let order = Arc::new(self.order(epoch));
        let workers = self.config.workers.min(end.saturating_sub(next_batch));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (sender, receiver) = sync_channel(self.config.prefetch);
            let (maker, order) = (maker.clone(), order.clone());
            let batches: Vec<usize> = (next_batch + w..end).step_by(workers).collect();
            let handle = std::thread::Builder::new()
                .name(format!("kiln-data-{w}"))
                .spawn(move || worker(maker.as_ref(), epoch, &order, batches, sender))
                .expect("cannot spawn a data loader thread");
            receivers.push(receiver);
            handles.push(handle);
        }
        EpochBatches {
            maker: maker.clone(),
            order,
            epoch,
            next: next_batch,
            start: next_batch,
            end,
            receivers,
            handles,
        }
    }
}

/// How one task turns the examples of a batch into what its loader yields, on a worker thread.
pub(crate) trait MakeBatch: Send + Sync + 'static {
    /// What the loader yields.
    type Batch;

    /// Decodes and transforms batch `batch` of `epoch`, whose examples are
    /// `order[schedule.batch_positions(batch)]`.
    fn make_batch(&self, epoch: usize, batch: usize, order: &[usize]) -> Result<Self::Batch, DataError>;
}

/// What the classification worker threads share.
struct Shared {
    dataset: Arc<dyn Dataset>,
    transform: Arc<dyn ImageTransform>,
    mixup: Option<(Mixup, Option<usize>)>,
    schedule: Schedule,
}

impl MakeBatch for Shared {
    type Batch = Batch;

    /// Decodes, transforms and (maybe) mixes batch `batch` of `epoch`.
    fn make_batch(&self, epoch: usize, batch: usize, order: &[usize]) -> Result<Batch, DataError> {
        let positions = self.schedule.batch_positions(batch);
        let [channels, height, width] = self.transform.output_shape();
        let image_len = channels * height * width;
        let count = positions.len();
        let mut images = Vec::with_capacity(count * image_len);
        let mut labels = Vec::with_capacity(count);
        for position in positions.clone() {
            let (image, label) = self.dataset.get(order[position])?;
            let mut rng = self.schedule.sample_rng(epoch, position);
            let tensor = self.transform.transform(&image, &mut rng);
            assert_eq!(
                tensor.shape(),
                [channels, height, width],
                "the transform produced a tensor of another shape than its output_shape()"
            );
            images.extend_from_slice(&tensor.data);
            labels.push(label);
        }
        let shape = [count, channels, height, width];
        let (soft_targets, mix) = match &self.mixup {
            Some((mixup, off_epoch)) => {
                let enabled = off_epoch.is_none_or(|off| epoch < off);
                let mut rng = Rng::derive(self.schedule.config.seed, &[MIX, epoch as u64, batch as u64]);
                let (targets, outcome) = mixup.apply(&mut images, shape, &labels, enabled, &mut rng);
                (Some(targets), Some(outcome))
            }
            None => (None, None),
        };
        Ok(Batch {
            images,
            shape,
            labels,
            soft_targets,
            mix,
            indices: order[positions].to_vec(),
            position: LoaderPosition { epoch, next_batch: batch },
        })
    }
}

/// Batches of a [`Dataset`] through an [`ImageTransform`] (and optionally [`Mixup`]), decoded on
/// worker threads. See the module docs for reproducibility and resumption.
///
/// ```no_run
/// use std::sync::Arc;
/// use kiln_data::{DataLoader, FashionMnistSplit, IdxDataset, LoaderConfig, TrainTransformConfig};
///
/// # fn main() -> Result<(), kiln_data::DataError> {
/// let data = IdxDataset::fashion_mnist("datasets/fashion-mnist", FashionMnistSplit::Train)?;
/// let transform = TrainTransformConfig { channels: 1, ..TrainTransformConfig::imagenet([28, 28]) }.build()?;
/// let loader = DataLoader::new(Arc::new(data), Arc::new(transform), LoaderConfig::train(64, 42))?;
/// for batch in loader.epoch(0) {
///     let batch = batch?;
///     assert_eq!(batch.shape, [64, 1, 28, 28]);
/// }
/// # Ok(())
/// # }
/// ```
pub struct DataLoader {
    shared: Arc<Shared>,
}

impl DataLoader {
    /// A loader of `dataset` through `transform`.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] for a zero batch size or prefetch, an empty data set, or a
    /// batch size above the number of examples when `drop_last` leaves no batch.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        transform: Arc<dyn ImageTransform>,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        let schedule = Schedule::new(dataset.len(), config)?;
        let shared = Shared { dataset, transform, mixup: None, schedule };
        Ok(DataLoader { shared: Arc::new(shared) })
    }

    /// Mixes every batch with `mixup` (which then also yields soft targets), until epoch
    /// `off_epoch` (timm's `mixup_off_epoch`) from which batches are no longer mixed but targets
    /// stay smoothed.
    ///
    /// # Errors
    /// [`Mixup::validate`]'s, and [`DataError::InvalidData`] when `mixup.num_classes` differs from
    /// the data set's.
    pub fn with_mixup(self, mixup: Mixup, off_epoch: Option<usize>) -> Result<Self, DataError> {
        mixup.validate()?;
        let classes = self.shared.dataset.num_classes();
        if mixup.num_classes != classes {
            return Err(DataError::InvalidData(format!(
                "mixup targets have {} classes but the data set has {classes}",
                mixup.num_classes
            )));
        }
        let Shared { dataset, transform, schedule, .. } = self.shared.as_ref();
        let shared = Shared {
            dataset: dataset.clone(),
            transform: transform.clone(),
            mixup: Some((mixup, off_epoch)),
            schedule: *schedule,
        };
        Ok(DataLoader { shared: Arc::new(shared) })
    }

    /// The batching settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.schedule.config
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.shared.dataset
    }

    /// Batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.shared.schedule.batches_per_epoch()
    }

    /// `[channels, height, width]` of each image of a batch.
    pub fn image_shape(&self) -> [usize; 3] {
        self.shared.transform.output_shape()
    }

    /// The batches of `epoch`, from the first.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        self.shared.schedule.start(&self.shared, LoaderPosition { epoch, next_batch: 0 })
    }

    /// The batches of `position.epoch` from `position.next_batch` on: what an uninterrupted run
    /// would have yielded next.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] when `next_batch` is beyond the epoch's batches (a position
    /// saved with another data set or batch size).
    pub fn resume(&self, position: LoaderPosition) -> Result<EpochBatches, DataError> {
        self.shared.schedule.resume(&self.shared, position)
    }

    /// Loader-only throughput: runs up to `max_batches` batches of `epoch` (decode, transform,
    /// mix, on the configured workers) and times them, with no consumer work in between.
    ///
    /// # Errors
    /// The first batch error.
    pub fn measure_throughput(&self, epoch: usize, max_batches: usize) -> Result<Throughput, DataError> {
        let started = Instant::now();
        let (mut images, mut batches) = (0, 0);
        for batch in self.epoch(epoch).take(max_batches) {
            images += batch?.len();
            batches += 1;
        }
        Ok(Throughput { images, batches, seconds: started.elapsed().as_secs_f64() })
    }
}

fn worker<M: MakeBatch>(
    maker: &M,
    epoch: usize,
    order: &[usize],
    batches: Vec<usize>,
    sender: SyncSender<Result<M::Batch, DataError>>,
) {
    for batch in batches {
        if sender.send(maker.make_batch(epoch, batch, order)).is_err() {
            return; // the consumer is gone
        }
    }
}

/// The batches of one epoch, in order; an iterator of `Result<B, DataError>` (a batch with an
/// unreadable file is an error naming it; the following batches still come). `B` is [`Batch`]
/// for a [`DataLoader`], [`crate::SegBatch`] for a [`crate::SegLoader`].
pub struct EpochBatches<B = Batch> {
    maker: Arc<dyn MakeBatch<Batch = B>>,
    order: Arc<Vec<usize>>,
    epoch: usize,
    next: usize,
    start: usize,
    end: usize,
    receivers: Vec<Receiver<Result<B, DataError>>>,
    handles: Vec<JoinHandle<()>>,
}

impl<B> EpochBatches<B> {
    /// Where the run is: the next batch this iterator will yield, or the start of the next epoch
    /// once this one is exhausted. Save this with a checkpoint.
    pub fn position(&self) -> LoaderPosition {
        if self.next >= self.end {
            LoaderPosition { epoch: self.epoch + 1, next_batch: 0 }
        } else {
            LoaderPosition { epoch: self.epoch, next_batch: self.next }
        }
    }

    /// Batches left in the epoch.
    pub fn remaining(&self) -> usize {
        self.end - self.next
    }
}

impl<B: 'static> Iterator for EpochBatches<B> {
    type Item = Result<B, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let batch = self.next;
        self.next += 1;
        if self.receivers.is_empty() {
            return Some(self.maker.make_batch(self.epoch, batch, &self.order));
        }
        let w = (batch - self.start) % self.receivers.len();
        match self.receivers[w].recv() {
            Ok(result) => Some(result),
            Err(_) => {
                // The worker hung up before sending every batch: it panicked. Re-raise its panic.
                let handle = self.handles.swap_remove(w);
                match handle.join() {
                    Err(payload) => std::panic::resume_unwind(payload),
                    Ok(()) => panic!("data loader worker {w} stopped early"),
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

impl<B: 'static> ExactSizeIterator for EpochBatches<B> {}

impl<B> Drop for EpochBatches<B> {
    fn drop(&mut self) {
        // Hanging up makes every worker stop at its next send; join so no thread outlives us.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Images per second of the loader alone ([`DataLoader::measure_throughput`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Images loaded.
    pub images: usize,
    /// Batches loaded.
    pub batches: usize,
    /// Wall-clock seconds, from starting the workers to receiving the last batch.
    pub seconds: f64,
}

impl Throughput {
    /// Images per second.
    pub fn images_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.images as f64 / self.seconds } else { f64::INFINITY }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::Toy;
    use crate::{ImageTensor, RgbImage};

    /// Puts the example's level and one draw of its stream into a 1x1x2 tensor.
    struct Probe;

    impl ImageTransform for Probe {
        fn output_shape(&self) -> [usize; 3] {
            [2, 1, 1]
        }
        fn transform(&self, image: &RgbImage, rng: &mut Rng) -> ImageTensor {
            ImageTensor {
                data: vec![image.get_pixel(0, 0).0[0] as f32, rng.random() as f32],
                channels: 2,
                height: 1,
                width: 1,
            }
        }
    }

    fn loader(n: usize, config: LoaderConfig) -> DataLoader {
        let labels = (0..n).map(|i| i % 3).collect();
        DataLoader::new(Arc::new(Toy::new(labels, 3)), Arc::new(Probe), config).unwrap()
    }

    fn config(workers: usize) -> LoaderConfig {
        LoaderConfig { batch_size: 4, shuffle: true, drop_last: true, workers, prefetch: 1, seed: 9, shard: Shard::WHOLE }
    }

    #[test]
    fn batch_counts() {
        assert_eq!(loader(10, config(0)).batches_per_epoch(), 2);
        assert_eq!(loader(10, LoaderConfig { drop_last: false, ..config(0) }).batches_per_epoch(), 3);
        let labels = vec![0; 3];
        let err = DataLoader::new(Arc::new(Toy::new(labels, 1)), Arc::new(Probe), config(0)).err().unwrap();
        assert!(err.to_string().contains("batch_size 4"), "{err}");
    }

    #[test]
    fn shuffles_per_epoch_covering_everything() {
        let l = loader(12, config(0));
        let epoch = |e| l.epoch(e).flat_map(|b| b.unwrap().indices).collect::<Vec<_>>();
        let (a, b) = (epoch(0), epoch(1));
        assert_ne!(a, b);
        assert_ne!(a, (0..12).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>());
        let ordered = loader(12, LoaderConfig { shuffle: false, ..config(0) });
        assert_eq!(ordered.epoch(0).flat_map(|b| b.unwrap().indices).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn position_advances_and_wraps() {
        let l = loader(12, config(2));
        let mut it = l.epoch(3);
        assert_eq!(it.position(), LoaderPosition { epoch: 3, next_batch: 0 });
        it.next();
        assert_eq!(it.position(), LoaderPosition { epoch: 3, next_batch: 1 });
        assert_eq!(it.len(), 2);
        it.by_ref().for_each(drop);
        assert_eq!(it.position(), LoaderPosition { epoch: 4, next_batch: 0 });
        assert!(l.resume(LoaderPosition { epoch: 0, next_batch: 4 }).is_err());
        assert_eq!(l.resume(LoaderPosition { epoch: 0, next_batch: 3 }).unwrap().count(), 0);
    }

    #[test]
    fn early_drop_stops_the_workers() {
        let l = loader(400, LoaderConfig { batch_size: 2, ..config(3) });
        let mut it = l.epoch(0);
        assert!(it.next().unwrap().is_ok());
        drop(it); // must return, not hang on full queues
    }
}
