//! Image folders in the ImageNet layout, flat splits with labels files, class lists and subsets,
//! on small trees the tests write.

mod common;

use std::sync::Arc;

use common::{Scratch, picture, save};
use kiln_data::{DataError, Dataset, ImageFolder, LabelledImages, Subset, SubsetSpec, read_class_list};

const WNIDS: [&str; 3] = ["n01440764", "n01443537", "n02102040"];

/// `train/<wnid>/...`: 3, 2 and 4 images, in assorted formats and extension cases, one nested,
/// plus files and folders that are not images or classes.
fn train_tree(s: &Scratch) -> std::path::PathBuf {
    let root = s.join("train");
    let files: [(&str, &[&str]); 3] = [
        (WNIDS[2], &["b.png", "a.JPEG", "sub/c.jpg", "d.bmp"]),
        (WNIDS[0], &["x_1.JPEG", "x_0.png", "x_2.jpeg"]),
        (WNIDS[1], &["only.PNG", "two.webp"]),
    ];
    for (c, (wnid, names)) in files.iter().enumerate() {
        for (i, name) in names.iter().enumerate() {
            if name.ends_with(".webp") {
                // The `image` crate encodes lossless WebP only; write a PNG under a WebP name
                // (formats are recognised by content).
                let mut bytes = Vec::new();
                picture(10, 8, 1).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
                s.write(&format!("train/{wnid}/{name}"), &bytes);
            } else {
                save(&picture(10 + i as u32, 8 + c as u32, (c * 10 + i) as u8), &root.join(wnid).join(name));
            }
        }
    }
    s.write("train/n01440764/notes.txt", b"not an image");
    s.write("train/.ipynb_checkpoints/stale.png", b"hidden folders are not classes");
    s.write("train/README", b"a file, not a class");
    root
}

#[test]
fn classes_sorted_images_recursive_and_filtered() {
    let s = Scratch::new("folder-train");
    let root = train_tree(&s);
    let data = ImageFolder::open(&root).unwrap();
    assert_eq!(data.classes(), WNIDS);
    assert_eq!(data.len(), 9);
    let names: Vec<String> = data
        .samples()
        .iter()
        .map(|(p, l)| format!("{l}:{}", p.strip_prefix(&root).unwrap().to_string_lossy()))
        .collect();
    assert_eq!(
        names,
        [
            "0:n01440764/x_0.png",
            "0:n01440764/x_1.JPEG",
            "0:n01440764/x_2.jpeg",
            "1:n01443537/only.PNG",
            "1:n01443537/two.webp",
            "2:n02102040/a.JPEG",
            "2:n02102040/b.png",
            "2:n02102040/d.bmp",
            "2:n02102040/sub/c.jpg",
        ]
    );
    for i in 0..data.len() {
        let (image, label) = data.get(i).unwrap();
        assert_eq!(label, data.label(i));
        assert!(image.width() >= 10 && image.height() >= 8);
    }
}

#[test]
fn validation_folder_uses_the_training_classes() {
    let s = Scratch::new("folder-val");
    let train = ImageFolder::open(train_tree(&s)).unwrap();
    // The validation split lacks the first class: labels must not shift.
    save(&picture(9, 9, 3), &s.join("val").join(WNIDS[2]).join("v.png"));
    let val = ImageFolder::open_with_classes(s.join("val"), train.classes()).unwrap();
    assert_eq!((val.len(), val.label(0), val.num_classes()), (1, 2, 3));
    // A class the training split does not have is an error naming the folder.
    save(&picture(9, 9, 3), &s.join("val/n99999999/w.png"));
    let err = ImageFolder::open_with_classes(s.join("val"), train.classes()).unwrap_err();
    assert!(err.to_string().contains("n99999999") && err.to_string().contains("same classes"), "{err}");
}

#[test]
fn flat_validation_with_kaggle_csv_or_plain_labels() {
    let s = Scratch::new("folder-flat");
    let classes: Vec<String> = WNIDS.iter().map(|w| w.to_string()).collect();
    for i in 1..=4 {
        save(&picture(8, 8, i), &s.join(&format!("val/ILSVRC2012_val_0000000{i}.JPEG")));
    }
    // Kaggle's LOC_val_solution.csv: no extension, class first in the prediction string, an
    // extra row for an image that is not in this copy.
    let csv = s.write(
        "LOC_val_solution.csv",
        b"ImageId,PredictionString\n\
          ILSVRC2012_val_00000003,n02102040 1 2 3 4 n02102040 5 6 7 8\n\
          ILSVRC2012_val_00000001,n01443537 1 2 3 4\n\
          ILSVRC2012_val_00000002,n01440764 0 0 5 5\n\
          ILSVRC2012_val_00000004,n01443537 1 1 2 2\n\
          ILSVRC2012_val_00000009,n01440764 1 1 2 2\n",
    );
    let plain = s.write(
        "val_labels.txt",
        b"# file class\nILSVRC2012_val_00000001.JPEG n01443537\nILSVRC2012_val_00000002.JPEG\tn01440764\n\n\
          ILSVRC2012_val_00000003.JPEG,n02102040\nILSVRC2012_val_00000004 n01443537\n",
    );
    for labels in [&csv, &plain] {
        let val = ImageFolder::open_flat(s.join("val"), labels, &classes).unwrap();
        assert_eq!(val.len(), 4);
        assert_eq!((0..4).map(|i| val.label(i)).collect::<Vec<_>>(), vec![1, 0, 2, 1], "{}", labels.display());
    }
}

#[test]
fn labels_file_errors_name_the_line() {
    let s = Scratch::new("folder-flat-errors");
    let classes: Vec<String> = WNIDS.iter().map(|w| w.to_string()).collect();
    save(&picture(8, 8, 1), &s.join("val/a.png"));
    save(&picture(8, 8, 2), &s.join("val/b.png"));
    let unknown = s.write("unknown.txt", b"a.png n01440764\nb.png n12345678\n");
    let err = ImageFolder::open_flat(s.join("val"), &unknown, &classes).unwrap_err();
    assert!(matches!(err, DataError::BadListFile { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("n12345678") && err.to_string().contains(&unknown.display().to_string()));
    let garbled = s.write("garbled.txt", b"a.png n01440764 extra\n");
    assert!(matches!(
        ImageFolder::open_flat(s.join("val"), &garbled, &classes),
        Err(DataError::BadListFile { line: 1, .. })
    ));
    let partial = s.write("partial.txt", b"a.png n01440764\n");
    let err = ImageFolder::open_flat(s.join("val"), &partial, &classes).unwrap_err();
    assert!(err.to_string().contains("b.png") && err.to_string().contains("no entry"), "{err}");
    let missing = s.join("missing.csv");
    let err = ImageFolder::open_flat(s.join("val"), &missing, &classes).unwrap_err();
    assert!(matches!(err, DataError::MissingPath { what: "labels file", .. }), "{err:?}");
}

#[test]
fn missing_and_empty_folders() {
    let s = Scratch::new("folder-empty");
    let err = ImageFolder::open(s.join("nowhere")).unwrap_err();
    assert!(matches!(err, DataError::MissingPath { what: "image folder", .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere"));
    std::fs::create_dir_all(s.join("flat")).unwrap();
    save(&picture(4, 4, 0), &s.join("flat/loose.png"));
    let err = ImageFolder::open(s.join("flat")).unwrap_err();
    assert!(err.to_string().contains("no class folders"), "{err}");
    s.write("classes/n01440764/readme.txt", b"no images here");
    let err = ImageFolder::open(s.join("classes")).unwrap_err();
    assert!(matches!(err, DataError::EmptyDataset { .. }), "{err:?}");
    assert!(err.to_string().contains("n01440764"), "{err}");
}

#[test]
fn a_bad_file_is_reported_with_its_path_when_read() {
    let s = Scratch::new("folder-bad");
    save(&picture(6, 6, 0), &s.join("train/n01/good.png"));
    let bad = s.write("train/n01/broken.JPEG", b"\xff\xd8\xff\xe0 truncated jpeg");
    let data = ImageFolder::open(s.join("train")).unwrap(); // listing does not decode
    let index = data.samples().iter().position(|(p, _)| p == &bad).unwrap();
    let err = data.get(index).unwrap_err();
    assert!(err.to_string().contains(&bad.display().to_string()), "{err}");
    assert!(data.get(1 - index).is_ok());
}

#[test]
fn class_list_subset_like_imagenet_100() {
    let s = Scratch::new("folder-subset");
    let data: Arc<dyn Dataset> = Arc::new(ImageFolder::open(train_tree(&s)).unwrap());
    let list = s.write("imagenet100.txt", format!("# two of three\n{}\n\n  {}  \n", WNIDS[2], WNIDS[0]).as_bytes());
    let classes = read_class_list(&list).unwrap();
    assert_eq!(classes, [WNIDS[2], WNIDS[0]]);
    let subset = Subset::new(data.clone(), &SubsetSpec { classes: Some(classes), ..Default::default() }).unwrap();
    assert_eq!(subset.classes(), [WNIDS[0], WNIDS[2]]); // sorted, as a folder of those classes would be
    assert_eq!(subset.len(), 7);
    let labels: Vec<usize> = (0..subset.len()).map(|i| subset.get(i).unwrap().1).collect();
    assert_eq!(labels, [0, 0, 0, 1, 1, 1, 1]);
    // N per class, then a seeded fraction.
    let two = Subset::new(data.clone(), &SubsetSpec { per_class: Some(2), seed: 5, ..Default::default() }).unwrap();
    assert_eq!(two.len(), 6);
    let third = Subset::new(data, &SubsetSpec { fraction: Some(0.34), seed: 5, ..Default::default() }).unwrap();
    assert_eq!(third.len(), 1 + 1 + 1); // round(0.34 * [3, 2, 4]) = [1, 1, 1]
    // Class-list errors name the file and line.
    let dup = s.write("dup.txt", format!("{0}\n{0}\n", WNIDS[0]).as_bytes());
    assert!(matches!(read_class_list(&dup), Err(DataError::BadListFile { line: 2, .. })));
    let words = s.write("words.txt", b"n01440764 tench\n");
    let err = read_class_list(&words).unwrap_err();
    assert!(err.to_string().contains("one class name per line") && err.to_string().contains("words.txt"), "{err}");
    let empty = s.write("empty.txt", b"# nothing\n");
    assert!(matches!(read_class_list(&empty), Err(DataError::EmptyDataset { .. })));
}
