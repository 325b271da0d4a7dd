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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use image::{Luma, Rgb, RgbImage};

    use super::*;
    use crate::{LabelMap, LabelledImages, SegTransformConfig};

    /// `n` examples of 12x10 (every third 10x12): image level and mask labels from the index.
    struct Scenes(usize);

    impl LabelledImages for Scenes {
        fn len(&self) -> usize {
            self.0
        }
        fn classes(&self) -> &[String] {
            &[]
        }
    }

    impl SegDataset for Scenes {
        fn path(&self, _: usize) -> &Path {
            Path::new("scene.png")
        }
        fn get(&self, index: usize) -> Result<(RgbImage, LabelMap), DataError> {
            let (w, h) = if index % 3 == 2 { (10, 12) } else { (12, 10) };
            let image = RgbImage::from_fn(w, h, |x, y| Rgb([(index * 20 + x as usize) as u8, y as u8 * 9, 7]));
            let mask = LabelMap::from_fn(w, h, |x, _| Luma([((index + x as usize / 4) % 5) as u8]));
            Ok((image, mask))
        }
    }

    fn train_loader(workers: usize) -> SegLoader {
        let config = SegTransformConfig { crop_size: [8, 8], scale: [24, 12], ..SegTransformConfig::ade20k() };
        let loader = LoaderConfig { batch_size: 3, workers, prefetch: 1, ..LoaderConfig::train(3, 5) };
        SegLoader::new(Arc::new(Scenes(10)), Arc::new(config.build_train().unwrap()), loader).unwrap()
    }

    fn collect(batches: EpochBatches<SegBatch>) -> Vec<SegBatch> {
        batches.map(Result::unwrap).collect()
    }

    #[test]
    fn same_batches_for_any_worker_count_and_after_resume() {
        let serial = collect(train_loader(0).epoch(1));
        assert_eq!(serial.len(), 3);
        assert_eq!(serial[0].shape, [3, 3, 8, 8]);
        assert_eq!(serial[0].mask_shape, [3, 8, 8]);
        assert_eq!(serial[0].masks.len(), 3 * 64);
        assert!(serial.iter().flat_map(|b| &b.masks).all(|&l| l < 5 || l == 255));
        for workers in [1, 2] {
            assert_eq!(collect(train_loader(workers).epoch(1)), serial, "{workers} workers");
        }
        let resumed = collect(train_loader(2).resume(LoaderPosition { epoch: 1, next_batch: 1 }).unwrap());
        assert_eq!(resumed, serial[1..]);
        assert_ne!(collect(train_loader(0).epoch(2)), serial, "epochs differ");
    }

    #[test]
    fn evaluation_keeps_original_masks_and_needs_one_size_per_batch() {
        let eval = SegTransformConfig { scale: [24, 12], ..SegTransformConfig::ade20k() }.build_eval().unwrap();
        let eval = Arc::new(eval);
        let one =
            SegLoader::new(Arc::new(Scenes(4)), eval.clone(), LoaderConfig { workers: 2, ..LoaderConfig::eval(1) });
        let batches = collect(one.unwrap().epoch(0));
        assert_eq!(batches.len(), 4);
        assert_eq!((batches[0].shape, batches[0].mask_shape), ([1, 3, 12, 14], [1, 10, 12]));
        assert_eq!((batches[2].shape, batches[2].mask_shape), ([1, 3, 14, 12], [1, 12, 10]));
        let (_, original) = Scenes(4).get(2).unwrap();
        assert_eq!(batches[2].masks, original.iter().map(|&l| l as i64).collect::<Vec<_>>());
        let mixed =
            SegLoader::new(Arc::new(Scenes(4)), eval, LoaderConfig { workers: 0, ..LoaderConfig::eval(3) }).unwrap();
        let err = mixed.epoch(0).next().unwrap().unwrap_err().to_string();
        assert!(err.contains("batch size 1"), "{err}");
    }
}
