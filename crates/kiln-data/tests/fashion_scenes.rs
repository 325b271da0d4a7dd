//! fashion-scenes: byte-identical for a seed, labels where the items are, and loadable as an
//! ADE20K-layout data set.

mod common;

use std::path::Path;

use common::{Scratch, shipped};
use kiln_data::{
    FashionScenesConfig, LabelledImages, SegClasses, SegDataset, SegFolder, SegFolderConfig, SegSplit, SegSubset,
    generate_fashion_scenes, load_luma_image,
};

fn small(out: &Path, seed: u64) -> FashionScenesConfig {
    FashionScenesConfig { train: 12, val: 4, seed, ..FashionScenesConfig::new(out, shipped("fashion-mnist")) }
}

/// Every file under `dir`, relative path and bytes, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["images/training", "images/validation", "annotations/training", "annotations/validation"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            out.push((path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.push(("classes.txt".into(), std::fs::read(dir.join("classes.txt")).unwrap()));
    out.sort();
    out
}

#[test]
fn same_seed_same_bytes() {
    let (a, b, c) = (Scratch::new("fs-a"), Scratch::new("fs-b"), Scratch::new("fs-c"));
    let summary = generate_fashion_scenes(&small(a.path(), 7)).unwrap();
    generate_fashion_scenes(&small(b.path(), 7)).unwrap();
    generate_fashion_scenes(&small(c.path(), 8)).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa.len(), 2 * (12 + 4) + 1);
    assert!(fa == fb, "same seed, different files");
    assert!(fa != fc, "the seed changes the scenes");
    assert_eq!((summary.training.images, summary.validation.images), (12, 4));
    assert_eq!(summary.classes.len(), 11);
    let share: f64 = summary.training.pixel_share.iter().sum();
    assert!((share - 1.0).abs() < 1e-9 && summary.training.pixel_share[0] > 0.3, "{:?}", summary.training);
    // A second run into a used directory refuses rather than mixing stale files in.
    assert!(generate_fashion_scenes(&small(a.path(), 7)).unwrap_err().to_string().contains("already holds"));
}

#[test]
fn labels_mark_the_bright_item_pixels_and_load_as_ade20k() {
    let out = Scratch::new("fs-load");
    let config = small(out.path(), 3);
    generate_fashion_scenes(&config).unwrap();
    let classes = SegClasses::read(out.join("classes.txt")).unwrap();
    assert_eq!(classes, FashionScenesConfig::classes());
    assert_eq!((classes.names[0].as_str(), classes.names[10].as_str()), ("background", "Ankle boot"));
    let folder = SegFolderConfig { reduce_zero_label: false, classes, subset: SegSubset::All };
    for (split, count) in [(SegSplit::Training, 12), (SegSplit::Validation, 4)] {
        let data = SegFolder::open(out.path(), split, &folder).unwrap();
        assert_eq!(data.len(), count);
        let mut seen = [false; 11];
        for i in 0..data.len() {
            let (_, mask) = data.get(i).unwrap();
            let gray = load_luma_image(data.path(i)).unwrap();
            assert_eq!((mask.width(), mask.height()), (64, 64));
            for (label, level) in mask.iter().zip(gray.iter()) {
                assert!(*label <= 10);
                seen[*label as usize] = true;
                // Labelled exactly where an item is brighter than the threshold.
                assert_eq!(*label > 0, *level > config.threshold, "label {label} at level {level}");
            }
        }
        assert!(seen[0] && seen[1..].iter().filter(|&&s| s).count() >= 3, "{seen:?}");
    }
}
