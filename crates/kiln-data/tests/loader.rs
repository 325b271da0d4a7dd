//! The data loader end to end: an image folder through timm's train transform and Mixup, on
//! worker threads; reproducibility for any worker count, exact resumption, errors, Fashion-MNIST.

mod common;

use std::sync::Arc;

use common::{Scratch, picture, save, shipped};
use kiln_data::{
    Batch, DataLoader, Dataset, EvalTransform, FashionMnistSplit, IdxDataset, ImageFolder, ImageTransform, LabelledImages,
    LoaderConfig, LoaderPosition, MixKind, Shard, Mixup, Subset, SubsetSpec, TrainTransformConfig,
};

/// `train/<class>/...` with 3 classes of 5, 4 and 5 images of assorted sizes.
fn folder(s: &Scratch) -> Arc<dyn Dataset> {
    for (c, count) in [5, 4, 5].into_iter().enumerate() {
        for i in 0..count {
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            save(
                &picture(20 + 3 * i, 16 + 2 * c as u32, (c * 16 + i as usize) as u8),
                &s.join(&format!("train/c{c}/{i}.{ext}")),
            );
        }
    }
    Arc::new(ImageFolder::open(s.join("train")).unwrap())
}

fn train_transform() -> Arc<dyn ImageTransform> {
    let mut cfg = TrainTransformConfig::imagenet([12, 10]);
    cfg.auto_augment = Some("rand-m9-mstd0.5-inc1".into());
    cfg.re_prob = 0.5;
    Arc::new(cfg.build().unwrap())
}

fn train_loader(data: Arc<dyn Dataset>, workers: usize) -> DataLoader {
    let config = LoaderConfig { workers, prefetch: 2, ..LoaderConfig::train(4, 1234) };
    let mixup = Mixup { cutmix_alpha: 1.0, mixup_alpha: 0.8, label_smoothing: 0.1, ..Mixup::new(3) };
    DataLoader::new(data, train_transform(), config).unwrap().with_mixup(mixup, None).unwrap()
}

fn collect(batches: impl Iterator<Item = Result<Batch, kiln_data::DataError>>) -> Vec<Batch> {
    batches.map(|b| b.unwrap()).collect()
}

#[test]
fn train_batches_have_the_promised_shapes() {
    let s = Scratch::new("loader-shapes");
    let data = folder(&s);
    let loader = train_loader(data.clone(), 2);
    assert_eq!((loader.batches_per_epoch(), loader.image_shape()), (3, [3, 12, 10]));
    let batches = collect(loader.epoch(0));
    assert_eq!(batches.len(), 3); // 14 examples, drop_last
    let mut seen: Vec<usize> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        assert_eq!(batch.shape, [4, 3, 12, 10]);
        assert_eq!(batch.images.len(), 4 * 3 * 12 * 10);
        assert!(batch.images.iter().all(|v| v.is_finite()));
        assert_eq!(batch.position, LoaderPosition { epoch: 0, next_batch: b });
        for (&index, &label) in batch.indices.iter().zip(&batch.labels) {
            assert_eq!(label, data.label(index));
        }
        let targets = batch.soft_targets.as_ref().expect("mixup gives soft targets");
        assert_eq!(targets.len(), 4 * 3);
        for row in targets.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
        assert!(batch.mix.is_some());
        seen.extend(&batch.indices);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 12);
}

#[test]
fn same_batches_for_any_number_of_workers() {
    let s = Scratch::new("loader-workers");
    let data = folder(&s);
    let inline = collect(train_loader(data.clone(), 0).epoch(2));
    for workers in [1, 2, 3, 5] {
        assert_eq!(collect(train_loader(data.clone(), workers).epoch(2)), inline, "{workers} workers");
    }
    // A new epoch is a new order and new augmentations.
    let next = collect(train_loader(data, 2).epoch(3));
    assert_ne!(next[0].indices, inline[0].indices);
    assert_ne!(next[0].images, inline[0].images);
}

#[test]
fn resumed_run_sees_exactly_the_uninterrupted_batches() {
    let s = Scratch::new("loader-resume");
    let data = folder(&s);
    let loader = train_loader(data.clone(), 2);
    let uninterrupted: Vec<Batch> = (0..2).flat_map(|e| collect(loader.epoch(e))).collect();
    // Stop after batch 1 of epoch 0, "checkpoint" the position, restart with a fresh loader.
    let mut first = loader.epoch(0);
    first.next().unwrap().unwrap();
    let saved = first.position();
    drop(first);
    assert_eq!(saved, LoaderPosition { epoch: 0, next_batch: 1 });
    let restarted = train_loader(data, 3);
    let mut resumed = collect(restarted.resume(saved).unwrap());
    resumed.extend(collect(restarted.epoch(1)));
    assert_eq!(resumed, uninterrupted[1..]);
}

#[test]
fn eval_loader_is_ordered_complete_and_unmixed() {
    let s = Scratch::new("loader-eval");
    let data = folder(&s);
    let eval = EvalTransform::imagenet([8, 8], 0.875);
    let loader =
        DataLoader::new(data.clone(), Arc::new(eval.clone()), LoaderConfig { workers: 2, ..LoaderConfig::eval(4) })
            .unwrap();
    let batches = collect(loader.epoch(0));
    assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), vec![4, 4, 4, 2]);
    assert_eq!(batches.iter().flat_map(|b| b.indices.clone()).collect::<Vec<_>>(), (0..14).collect::<Vec<_>>());
    assert!(batches.iter().all(|b| b.soft_targets.is_none() && b.mix.is_none()));
    // Exactly the eval transform of each image.
    let (image, _) = data.get(5).unwrap();
    assert_eq!(&batches[1].images[3 * 64..6 * 64], eval.apply(&image).data.as_slice());
}

#[test]
fn a_bad_file_fails_its_batch_naming_it_and_the_rest_still_come() {
    let s = Scratch::new("loader-bad");
    let data = folder(&s);
    let bad = s.write("train/c1/zz_broken.png", b"\x89PNG\r\n\x1a\n not really");
    let data_with_bad = Arc::new(ImageFolder::open(s.join("train")).unwrap());
    assert_eq!(data_with_bad.len(), data.len() + 1);
    let config = LoaderConfig { workers: 2, ..LoaderConfig::eval(3) };
    let loader = DataLoader::new(data_with_bad, train_transform(), config).unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 5);
    let errors: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&bad.display().to_string()), "{}", errors[0]);
}

#[test]
fn mixup_off_epoch_stops_mixing_but_keeps_smoothing() {
    let s = Scratch::new("loader-mixoff");
    let data = folder(&s);
    let config = LoaderConfig { workers: 1, ..LoaderConfig::train(4, 3) };
    let loader = DataLoader::new(data, train_transform(), config).unwrap().with_mixup(Mixup::new(3), Some(1)).unwrap();
    assert!(collect(loader.epoch(0)).iter().all(|b| b.mix.unwrap().kind == MixKind::Mixup));
    for batch in collect(loader.epoch(1)) {
        assert_eq!(batch.mix.unwrap().kind, MixKind::None);
        let targets = batch.soft_targets.unwrap();
        assert!(targets.chunks(3).zip(&batch.labels).all(|(row, &l)| (row[l] - (0.9 + 0.1 / 3.0)).abs() < 1e-6));
    }
}

#[test]
fn mixup_classes_must_match_the_data() {
    let s = Scratch::new("loader-mixclasses");
    let loader = DataLoader::new(folder(&s), train_transform(), LoaderConfig::train(4, 0)).unwrap();
    let err = loader.with_mixup(Mixup::new(1000), None).err().unwrap();
    assert!(err.to_string().contains("1000") && err.to_string().contains('3'), "{err}");
}

#[test]
fn fashion_mnist_luma_and_rgb_through_the_loader() {
    let test: Arc<dyn Dataset> =
        Arc::new(IdxDataset::fashion_mnist(shipped("fashion-mnist"), FashionMnistSplit::Test).unwrap());
    let few: Arc<dyn Dataset> =
        Arc::new(Subset::new(test, &SubsetSpec { per_class: Some(3), seed: 0, ..Default::default() }).unwrap());
    assert_eq!(few.len(), 30);
    for channels in [1, 3] {
        let cfg = TrainTransformConfig {
            channels,
            mean: [0.2860; 3],
            std: [0.3530; 3],
            scale: [0.5, 1.0],
            ..TrainTransformConfig::imagenet([28, 28])
        };
        let config = LoaderConfig { batch_size: 8, workers: 2, ..LoaderConfig::train(8, 7) };
        let loader = DataLoader::new(few.clone(), Arc::new(cfg.build().unwrap()), config).unwrap();
        let batches = collect(loader.epoch(0));
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.shape == [8, channels, 28, 28]));
        if channels == 3 {
            // Gray input expanded to RGB: the three planes are equal.
            let plane = 28 * 28;
            let image = &batches[0].images[..3 * plane];
            assert_eq!(&image[..plane], &image[plane..2 * plane]);
            assert_eq!(&image[..plane], &image[2 * plane..]);
        }
    }
}

#[test]
fn throughput_is_measured_without_timing_assertions() {
    let s = Scratch::new("loader-throughput");
    let loader = train_loader(folder(&s), 2);
    let t = loader.measure_throughput(0, 2).unwrap();
    assert_eq!((t.batches, t.images), (2, 8));
    assert!(t.seconds >= 0.0 && t.images_per_second() > 0.0);
}

/// Data-parallel shards: the two ranks' batches `k` (batch 2 each) are, example for example and
/// pixel for pixel, the single process's batch `k` of 4; evaluation shards take whole batches
/// round-robin and cover every example once.
#[test]
fn shards_split_every_batch_as_a_single_process_sees_it() {
    let s = Scratch::new("loader-shards");
    let data = folder(&s);
    let transform = train_transform();
    let train = |batch_size: usize, shard: Shard| {
        let config = LoaderConfig { workers: 1, shard, ..LoaderConfig::train(batch_size, 77) };
        collect(DataLoader::new(data.clone(), transform.clone(), config).unwrap().epoch(1))
    };
    let whole = train(4, Shard::WHOLE);
    let ranks = [train(2, Shard { index: 0, count: 2 }), train(2, Shard { index: 1, count: 2 })];
    assert_eq!(whole.len(), 3);
    assert!(ranks.iter().all(|r| r.len() == whole.len()));
    for (k, batch) in whole.iter().enumerate() {
        let (a, b) = (&ranks[0][k], &ranks[1][k]);
        assert_eq!([a.indices.clone(), b.indices.clone()].concat(), batch.indices, "batch {k}");
        assert_eq!([a.images.clone(), b.images.clone()].concat(), batch.images, "batch {k}");
        assert_eq!(a.position, LoaderPosition { epoch: 1, next_batch: k });
    }

    let eval = EvalTransform::imagenet([12, 10], 0.875);
    let eval = |shard: Shard| {
        let config = LoaderConfig { workers: 0, shard, ..LoaderConfig::eval(4) };
        collect(DataLoader::new(data.clone(), Arc::new(eval.clone()), config).unwrap().epoch(0))
    };
    let shards: Vec<Vec<Batch>> = (0..3).map(|index| eval(Shard { index, count: 3 })).collect();
    // 14 examples in batches of 4: 4 batches, so the first shard takes two
    assert_eq!(shards.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 1]);
    let mut seen: Vec<usize> = shards.iter().flatten().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..14).collect::<Vec<_>>());
    // more ranks than evaluation batches: the last ranks evaluate nothing
    let idle = eval(Shard { index: 5, count: 6 });
    assert!(idle.is_empty());
    assert!(DataLoader::new(data.clone(), transform.clone(), LoaderConfig { shard: Shard { index: 2, count: 2 }, ..LoaderConfig::train(2, 0) }).is_err());
}
