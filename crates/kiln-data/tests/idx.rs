//! idx files (gzipped or raw) and Fashion-MNIST: reading, the errors, and the shipped data.

mod common;

use common::{Scratch, gzip, idx_bytes, shipped};
use kiln_data::{
    DataError, Dataset, FASHION_MNIST_CLASSES, FashionMnistSplit, IdxDataset, LabelledImages, read_idx_images,
    read_idx_labels,
};

/// Three 2x3 images with pixel values `10 * image + position`, and their labels.
fn tiny() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3).flat_map(|i| (0..6).map(move |p| 10 * i + p)).collect();
    (idx_bytes(&[3, 2, 3], &pixels), idx_bytes(&[3], &[4, 0, 9]))
}

fn classes() -> Vec<String> {
    FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect()
}

fn assert_names(err: &DataError, path: &std::path::Path) {
    assert!(err.to_string().contains(&path.display().to_string()), "message does not name {}: {err}", path.display());
}

#[test]
fn reads_raw_and_gzipped_alike() {
    let s = Scratch::new("idx-read");
    let (images, labels) = tiny();
    let raw = s.write("images-idx3-ubyte", &images);
    let gz = s.write("images.gz", &gzip(&images));
    for path in [&raw, &gz] {
        let read = read_idx_images(path).unwrap();
        assert_eq!((read.count, read.rows, read.columns), (3, 2, 3));
        assert_eq!(read.image(2).into_raw(), vec![20, 21, 22, 23, 24, 25]);
        assert_eq!(read.image(1).dimensions(), (3, 2)); // width = columns, height = rows
    }
    let labels = s.write("labels.gz", &gzip(&labels));
    assert_eq!(read_idx_labels(&labels).unwrap(), vec![4, 0, 9]);
}

#[test]
fn dataset_labels_and_gray_replicated_to_rgb() {
    let s = Scratch::new("idx-dataset");
    let (images, labels) = tiny();
    let data = IdxDataset::open(s.write("i", &images), s.write("l", &labels), classes()).unwrap();
    assert_eq!((data.len(), data.num_classes()), (3, 10));
    assert_eq!((0..3).map(|i| data.label(i)).collect::<Vec<_>>(), vec![4, 0, 9]);
    let (rgb, label) = data.get(1).unwrap();
    assert_eq!(label, 0);
    assert_eq!(&rgb.as_raw()[..6], &[10, 10, 10, 11, 11, 11]);
}

#[test]
fn missing_file_is_named() {
    let s = Scratch::new("idx-missing");
    let path = s.join("nope-idx3-ubyte.gz");
    let err = read_idx_images(&path).unwrap_err();
    assert!(matches!(err, DataError::MissingPath { .. }), "{err:?}");
    assert_names(&err, &path);
    // Fashion-MNIST looks for the .gz when the raw file is absent, and names it.
    let err = IdxDataset::fashion_mnist(s.path(), FashionMnistSplit::Test).unwrap_err();
    assert_names(&err, &s.join("t10k-images-idx3-ubyte.gz"));
}

#[test]
fn truncated_data_says_how_much_is_missing() {
    let s = Scratch::new("idx-truncated");
    let (images, _) = tiny();
    let cut = s.write("cut", &images[..images.len() - 5]);
    let err = read_idx_images(&cut).unwrap_err();
    assert!(matches!(err, DataError::TruncatedIdx { expected: 18, actual: 13, .. }), "{err:?}");
    assert_names(&err, &cut);
    // A truncated gzip stream is reported as such.
    let gz = gzip(&images);
    let cut_gz = s.write("cut.gz", &gz[..gz.len() / 2]);
    let err = read_idx_images(&cut_gz).unwrap_err();
    assert!(matches!(err, DataError::BadIdx { .. } | DataError::TruncatedIdx { .. }), "{err:?}");
    assert_names(&err, &cut_gz);
    // A file that ends inside its header.
    let short = s.write("short", &images[..9]);
    assert!(read_idx_images(&short).unwrap_err().to_string().contains("header"));
}

#[test]
fn wrong_magic_type_and_dimensions() {
    let s = Scratch::new("idx-magic");
    let (images, labels) = tiny();
    let mut png_like = images.clone();
    png_like[..4].copy_from_slice(&[0x89, b'P', b'N', b'G']);
    let err = read_idx_images(s.write("png", &png_like)).unwrap_err();
    assert!(matches!(err, DataError::BadIdx { .. }) && err.to_string().contains("magic number 0x89504e47"), "{err}");
    let mut floats = images.clone();
    floats[2] = 0x0D;
    assert!(read_idx_images(s.write("f", &floats)).unwrap_err().to_string().contains("0x0d"));
    // Labels given as images (and the reverse) are caught by the dimension count.
    let err = read_idx_images(s.write("labels", &labels)).unwrap_err();
    assert!(err.to_string().contains("swapped"), "{err}");
    assert!(read_idx_labels(s.write("images", &images)).unwrap_err().to_string().contains("swapped"));
    // Bytes after the announced data.
    let mut long = images.clone();
    long.push(0);
    assert!(read_idx_images(s.write("long", &long)).unwrap_err().to_string().contains("1 bytes follow"));
}

#[test]
fn count_mismatch_names_both_files() {
    let s = Scratch::new("idx-count");
    let (images, _) = tiny();
    let (i, l) = (s.write("images", &images), s.write("labels", &idx_bytes(&[2], &[1, 2])));
    let err = IdxDataset::open(&i, &l, classes()).unwrap_err();
    assert!(matches!(err, DataError::CountMismatch { image_count: 3, label_count: 2, .. }), "{err:?}");
    assert_names(&err, &i);
    assert_names(&err, &l);
}

#[test]
fn label_beyond_the_classes() {
    let s = Scratch::new("idx-label");
    let (images, _) = tiny();
    let l = s.write("labels", &idx_bytes(&[3], &[1, 10, 2]));
    let err = IdxDataset::open(s.write("images", &images), &l, classes()).unwrap_err();
    assert!(err.to_string().contains("label 10 of example 1"), "{err}");
    assert_names(&err, &l);
}

#[test]
fn shipped_fashion_mnist_test_set() {
    let dir = shipped("fashion-mnist");
    let header = read_idx_labels(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(header.len(), 10_000);
    let test = IdxDataset::fashion_mnist(&dir, FashionMnistSplit::Test).unwrap();
    let images = test.images();
    assert_eq!((images.count, images.rows, images.columns), (10_000, 28, 28));
    assert_eq!(test.classes()[9], "Ankle boot");
    // The test split is balanced: 1,000 examples per class.
    let mut per_class = [0; 10];
    test.labels().iter().for_each(|&l| per_class[l as usize] += 1);
    assert_eq!(per_class, [1000; 10]);
    // Real pictures: dark background corners, some bright pixels.
    let first = images.image(0);
    assert_eq!(first.get_pixel(0, 0).0[0], 0);
    assert!(first.as_raw().iter().any(|&v| v > 200));
}
