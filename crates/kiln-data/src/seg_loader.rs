//! Segmentation batches on worker threads: the [`crate::DataLoader`]'s schedule, seed streams,
//! resumption and workers (shared, not copied), with images and masks in place of labels.

use std::sync::Arc;

use crate::loader::{MakeBatch, Schedule};
use crate::{DataError, EpochBatches, LoaderConfig, LoaderPosition, SegDataset, SegTransform};

/// One segmentation batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct SegBatch {
    /// `[batch, channels, height, width]` f32, normalised.
    pub images: Vec<f32>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
    /// `[batch, mask_height, mask_width]` class indices, 255 ignored. After a training transform
    /// the masks have the images' size; after an evaluation transform, their original size.
    pub masks: Vec<i64>,
    /// `[batch, mask_height, mask_width]`.
    pub mask_shape: [usize; 3],
    /// `[batch]` data-set index of each example.
    pub indices: Vec<usize>,
    /// Epoch and index of this batch.
    pub position: LoaderPosition,
}

impl SegBatch {
    /// Examples in the batch.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether the batch is empty (never, for batches a loader yields).
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

struct SegShared {
    dataset: Arc<dyn SegDataset>,
    transform: Arc<dyn SegTransform>,
    schedule: Schedule,
}

impl MakeBatch for SegShared {
    type Batch = SegBatch;

    fn make_batch(&self, epoch: usize, batch: usize, order: &[usize]) -> Result<SegBatch, DataError> {
        let positions = self.schedule.batch_positions(batch);
        let (mut images, mut masks) = (Vec::new(), Vec::new());
        let mut shapes: Option<([usize; 3], [usize; 2])> = None;
        for position in positions.clone() {
            let index = order[position];
            let (image, mask) = self.dataset.get(index)?;
            let example = self.transform.transform(&image, &mask, &mut self.schedule.sample_rng(epoch, position));
            let shape = (example.image.shape(), [example.mask.height() as usize, example.mask.width() as usize]);
            match shapes {
                None => shapes = Some(shape),
                Some(first) if first != shape => {
                    return Err(DataError::InvalidData(format!(
                        "{} gives a {:?} image and {:?} mask but the batch's first example {:?} and {:?}; examples of one batch must share a size: evaluate with batch size 1 (or a fixed eval size on same-size images)",
                        self.dataset.path(index).display(),
                        shape.0,
                        shape.1,
                        first.0,
                        first.1
                    )));
                }
                Some(_) => {}
            }
            images.extend_from_slice(&example.image.data);
            masks.extend(example.mask.as_raw().iter().map(|&l| l as i64));
        }
        let ([c, h, w], [mh, mw]) = shapes.expect("batches are never empty");
        let count = positions.len();
        Ok(SegBatch {
            images,
            shape: [count, c, h, w],
            masks,
            mask_shape: [count, mh, mw],
            indices: order[positions].to_vec(),
            position: LoaderPosition { epoch, next_batch: batch },
        })
    }
}

/// Batches of a [`SegDataset`] through a [`SegTransform`], decoded on worker threads with the
/// same reproducibility and resumption as [`crate::DataLoader`] (its module docs): example `i` of
/// epoch `e` is augmented from `Rng::derive(seed, [SAMPLE, e, i])` whatever the worker count.
pub struct SegLoader {
    shared: Arc<SegShared>,
}

impl SegLoader {
    /// A loader of `dataset` through `transform`.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] for a zero batch size or prefetch, an empty data set, or a
    /// batch size above the number of examples when `drop_last` leaves no batch.
    pub fn new(
        dataset: Arc<dyn SegDataset>,
        transform: Arc<dyn SegTransform>,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        let schedule = Schedule::new(dataset.len(), config)?;
        Ok(SegLoader { shared: Arc::new(SegShared { dataset, transform, schedule }) })
    }

    /// The batching settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.schedule.config
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<dyn SegDataset> {
        &self.shared.dataset
    }

    /// Batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.shared.schedule.batches_per_epoch()
    }

    /// The batches of `epoch`, from the first.
    pub fn epoch(&self, epoch: usize) -> EpochBatches<SegBatch> {
        self.shared.schedule.start(&self.shared, LoaderPosition { epoch, next_batch: 0 })
    }

    /// The batches of `position.epoch` from `position.next_batch` on.
    ///
    /// # Errors
    /// As [`crate::DataLoader::resume`].
    pub fn resume(&self, position: LoaderPosition) -> Result<EpochBatches<SegBatch>, DataError> {
        self.shared.schedule.resume(&self.shared, position)
    }
}
