//! The ADE20K-layout data set on trees the tests write: pairing, reduce-zero-label, subsets, and
//! every kind of bad mask reported with its path.

mod common;

use std::path::Path;

use common::{Scratch, save};
use image::{GrayImage, Luma, Rgb, RgbImage};
use kiln_data::{
    DataError, IGNORE_INDEX, LabelledImages, SegClasses, SegDataset, SegFolder, SegFolderConfig, SegSplit, SegSubset,
    read_stem_list,
};

/// Writes `images/<split>/<stem>.<ext>` (4x3, level = first mask label) and its mask.
fn write_pair(root: &Path, split: &str, stem: &str, ext: &str, mask: &GrayImage) {
    let image = RgbImage::from_pixel(mask.width(), mask.height(), Rgb([mask.get_pixel(0, 0).0[0]; 3]));
    save(&image, &root.join(format!("images/{split}/{stem}.{ext}")));
    std::fs::create_dir_all(root.join(format!("annotations/{split}"))).unwrap();
    mask.save(root.join(format!("annotations/{split}/{stem}.png"))).unwrap();
}

fn mask_of(labels: &[u8]) -> GrayImage {
    GrayImage::from_fn(4, 3, |x, y| Luma([labels[((y * 4 + x) as usize) % labels.len()]]))
}

fn config(classes: usize, reduce_zero_label: bool) -> SegFolderConfig {
    let names = (0..classes).map(|c| format!("class {c}")).collect();
    SegFolderConfig { reduce_zero_label, classes: SegClasses::with_generated_palette(names), subset: SegSubset::All }
}

/// Three training pairs out of order on disk (one PNG image), one validation pair.
fn tree(test: &str) -> Scratch {
    let scratch = Scratch::new(test);
    write_pair(scratch.path(), "training", "b", "jpg", &mask_of(&[1, 2]));
    write_pair(scratch.path(), "training", "a", "png", &mask_of(&[0, 1, 150, 255]));
    write_pair(scratch.path(), "training", "c", "jpg", &mask_of(&[3]));
    write_pair(scratch.path(), "validation", "v", "jpg", &mask_of(&[5]));
    scratch
}

fn stems(data: &SegFolder) -> Vec<String> {
    (0..data.len()).map(|i| data.path(i).file_stem().unwrap().to_string_lossy().into_owned()).collect()
}

fn message(result: Result<impl std::fmt::Debug, DataError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn pairs_sorted_images_with_their_masks() {
    let scratch = tree("seg-pairs");
    let data = SegFolder::open(scratch.path(), SegSplit::Training, &config(150, true)).unwrap();
    assert_eq!(stems(&data), ["a", "b", "c"]);
    for (image, mask) in data.samples() {
        assert_eq!(mask.file_stem(), image.file_stem());
        assert!(mask.starts_with(scratch.join("annotations/training")));
    }
    let val = SegFolder::open(scratch.path(), SegSplit::Validation, &config(150, true)).unwrap();
    assert_eq!(stems(&val), ["v"]);
    let (image, mask) = val.get(0).unwrap();
    assert_eq!((image.dimensions(), mask.dimensions()), ((4, 3), (4, 3)));
    assert!(mask.pixels().all(|p| p.0[0] == 4), "5 reduced to 4");
}

#[test]
fn reduce_zero_label_as_mmseg() {
    let scratch = tree("seg-reduce");
    let reduced = SegFolder::open(scratch.path(), SegSplit::Training, &config(150, true)).unwrap();
    // a's mask cycles 0, 1, 150, 255 along each row.
    let (_, mask) = reduced.get(0).unwrap();
    assert_eq!(&mask.as_raw()[..4], &[IGNORE_INDEX, 0, 149, IGNORE_INDEX]);
    let kept = SegFolder::open(scratch.path(), SegSplit::Training, &config(151, false)).unwrap();
    assert_eq!(&kept.get(0).unwrap().1.as_raw()[..4], &[0, 1, 150, 255]);
    // Without the reduction, 150 is outside 150 classes; 255 stays fine either way.
    let err = message(SegFolder::open(scratch.path(), SegSplit::Training, &config(150, false)).unwrap().get(0));
    assert!(err.contains("a.png") && err.contains("label 150") && err.contains("reduce_zero_label"), "{err}");
}

#[test]
fn subsets_by_count_seed_and_list() {
    let scratch = tree("seg-subsets");
    let open = |subset| {
        let config = SegFolderConfig { subset, ..config(150, true) };
        SegFolder::open(scratch.path(), SegSplit::Training, &config).map(|d| stems(&d))
    };
    assert_eq!(open(SegSubset::First(2)).unwrap(), ["a", "b"]);
    assert_eq!(open(SegSubset::First(10)).unwrap(), ["a", "b", "c"]);
    let random = |seed| open(SegSubset::Random { count: 2, seed }).unwrap();
    assert_eq!(random(1), random(1));
    assert!((0..20).map(random).any(|s| s != random(1)), "the seed chooses");
    assert!(random(3).windows(2).all(|w| w[0] < w[1]), "kept images stay in order");
    let list = scratch.write("list.txt", b"# chosen\nc\n\na.png\n");
    assert_eq!(read_stem_list(&list).unwrap(), ["c", "a"]);
    assert_eq!(open(SegSubset::ListFile(list)).unwrap(), ["a", "c"]);
    let err = message(open(SegSubset::Stems(vec!["zzz".into()])));
    assert!(err.contains("'zzz'"), "{err}");
    assert!(open(SegSubset::First(0)).is_err());
}

#[test]
fn missing_mask_is_named() {
    let scratch = tree("seg-missing");
    std::fs::remove_file(scratch.join("annotations/training/b.png")).unwrap();
    let err = message(SegFolder::open(scratch.path(), SegSplit::Training, &config(150, true)));
    assert!(err.contains("b.png") && err.contains("does not exist") && err.contains("b.jpg"), "{err}");
}

#[test]
fn bad_masks_fail_get_naming_the_mask() {
    let scratch = tree("seg-bad");
    let root = scratch.path();
    // Size differs from the image.
    GrayImage::from_pixel(5, 3, Luma([1])).save(root.join("annotations/training/b.png")).unwrap();
    // Colour mask.
    RgbImage::from_pixel(4, 3, Rgb([1, 2, 3])).save(root.join("annotations/training/c.png")).unwrap();
    let data = SegFolder::open(root, SegSplit::Training, &config(150, true)).unwrap();
    assert!(data.get(0).is_ok());
    let size = message(data.get(1));
    assert!(size.contains("b.png") && size.contains("5x3") && size.contains("4x3"), "{size}");
    let colour = message(data.get(2));
    assert!(colour.contains("c.png") && colour.contains("single-channel"), "{colour}");
    // Labels above the classes (after reduction: 3 -> 2 is outside 2 classes).
    let few = SegFolder::open(root, SegSplit::Validation, &config(4, true)).unwrap();
    let err = message(few.get(0));
    assert!(err.contains("v.png") && err.contains("label 4") && err.contains("0..4"), "{err}");
}

#[test]
fn classes_files_with_and_without_palette() {
    let scratch = Scratch::new("seg-classes");
    let with = scratch.write("with.txt", b"# comment\nbackground 0 0 0\nAnkle boot 10 20 30\n");
    let classes = SegClasses::read(&with).unwrap();
    assert_eq!(classes.names, ["background", "Ankle boot"]);
    assert_eq!(classes.palette, [[0, 0, 0], [10, 20, 30]]);
    assert_eq!(SegClasses::read(scratch.write("again.txt", classes.to_file_text().as_bytes())).unwrap(), classes);
    let without = SegClasses::read(scratch.write("without.txt", b"sky\nroad\nsea\n")).unwrap();
    assert_eq!(without.palette, SegClasses::generated_palette(3));
    assert_eq!(without.palette[..3], [[0, 0, 0], [128, 0, 0], [0, 128, 0]]);
    let mixed = message(SegClasses::read(scratch.write("mixed.txt", b"sky 1 2 3\nroad\n")));
    assert!(mixed.contains("line 2"), "{mixed}");
    let twice = message(SegClasses::read(scratch.write("twice.txt", b"sky\nsky\n")));
    assert!(twice.contains("twice"), "{twice}");
    let ade = SegClasses::ade20k();
    assert_eq!((ade.len(), ade.names[0].as_str(), ade.names[149].as_str()), (150, "wall", "flag"));
    assert_eq!((ade.names[7].as_str(), ade.palette[0], ade.palette[149]), ("bed", [120, 120, 120], [92, 0, 255]));
    assert!(ade.names.contains(&"chest of drawers".to_string()));
}
