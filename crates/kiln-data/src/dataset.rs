//! The data set contracts ([`LabelledImages`], shared by both tasks, and [`Dataset`] for
//! classification), and subsets of a classification data set (by class list, images per class,
//! or fraction).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use image::RgbImage;

use crate::{DataError, Rng};

/// What a data set of either task has: a number of images, and the class names their labels
/// index. [`Dataset`] (a label per image) and [`crate::SegDataset`] (a label per pixel) add how
/// an example is read.
pub trait LabelledImages: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;

    /// Whether there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class names, indexed by label (ImageNet WNIDs, Fashion-MNIST's article names, ADE20K's
    /// classes, ...).
    fn classes(&self) -> &[String];

    /// Number of classes: labels are `0..num_classes` (a label map's
    /// [`crate::IGNORE_INDEX`] counts in none).
    fn num_classes(&self) -> usize {
        self.classes().len()
    }
}

/// A classification data set the [`crate::DataLoader`] can read from several threads at once.
///
/// Labels are class indices into [`LabelledImages::classes`]. Images come back as 8-bit RGB:
/// grayscale sources (Fashion-MNIST) have their level replicated, as Pillow's `convert('RGB')`
/// does; a one-channel model converts back to luma in its transform, losslessly.
pub trait Dataset: LabelledImages {
    /// The label of example `index`, without decoding it.
    ///
    /// # Panics
    /// If `index >= len()`.
    fn label(&self, index: usize) -> usize;

    /// Decodes example `index`: its image and label.
    ///
    /// # Errors
    /// The decoding error of a bad file, naming its path.
    ///
    /// # Panics
    /// If `index >= len()`.
    fn get(&self, index: usize) -> Result<(RgbImage, usize), DataError>;
}

/// Which examples of a data set to keep; every field is optional and they combine (class list
/// first, then the per-class count or fraction).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubsetSpec {
    /// Keep only these classes (e.g. the 100 WNIDs of ImageNet-100; [`read_class_list`]).
    /// Labels are renumbered `0..k` in the data set's own class order (sorted by name for an
    /// image folder), so the subset looks like a data set of those classes only.
    pub classes: Option<Vec<String>>,
    /// Keep at most this many examples per class, chosen at random under `seed`.
    pub per_class: Option<usize>,
    /// Keep this fraction of each class (`round(fraction * n)`, at least one), chosen at random
    /// under `seed`.
    pub fraction: Option<f64>,
    /// Seed of the per-class choice; the same seed keeps the same examples.
    pub seed: u64,
}

/// A view of some examples of another data set, with its labels renumbered when classes were
/// dropped. Kept examples stay in the parent's order.
pub struct Subset {
    parent: Arc<dyn Dataset>,
    indices: Vec<usize>,
    classes: Vec<String>,
    /// Parent label to subset label; `None` for dropped classes.
    relabel: Vec<Option<usize>>,
}

impl Subset {
    /// Selects examples of `parent` by `spec`.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] for a class the parent lacks (naming it and a few the parent
    /// has), a repeated class, a zero `per_class`, a fraction outside `(0, 1]`, or a selection
    /// that keeps nothing.
    pub fn new(parent: Arc<dyn Dataset>, spec: &SubsetSpec) -> Result<Self, DataError> {
        let invalid = |msg: String| Err(DataError::InvalidData(msg));
        let parent_classes = parent.classes().to_vec();
        let (classes, relabel) = match &spec.classes {
            None => (parent_classes.clone(), (0..parent_classes.len()).map(Some).collect::<Vec<_>>()),
            Some(wanted) => {
                let position: HashMap<&str, usize> =
                    parent_classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
                let mut keep = vec![false; parent_classes.len()];
                for name in wanted {
                    let Some(&i) = position.get(name.as_str()) else {
                        let known: Vec<&str> = parent_classes.iter().take(5).map(String::as_str).collect();
                        return invalid(format!(
                            "class '{name}' of the class list is not in the data set ({} classes, e.g. {})",
                            parent_classes.len(),
                            known.join(", ")
                        ));
                    };
                    if std::mem::replace(&mut keep[i], true) {
                        return invalid(format!("class '{name}' appears twice in the class list"));
                    }
                }
                let mut next = 0;
                let relabel: Vec<Option<usize>> = keep
                    .iter()
                    .map(|&k| {
                        k.then(|| {
                            next += 1;
                            next - 1
                        })
                    })
                    .collect();
                let classes = parent_classes.iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c.clone()).collect();
                (classes, relabel)
            }
        };
        if spec.per_class == Some(0) {
            return invalid("per_class must be at least 1".into());
        }
        if let Some(f) = spec.fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return invalid(format!("fraction {f} must lie in (0, 1]"));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
        for index in 0..parent.len() {
            if let Some(label) = relabel[parent.label(index)] {
                by_class[label].push(index);
            }
        }
        let mut indices = Vec::new();
        for (label, mut members) in by_class.into_iter().enumerate() {
            let mut keep = members.len();
            if let Some(f) = spec.fraction {
                keep = keep.min(((f * members.len() as f64).round() as usize).max(1));
            }
            if let Some(n) = spec.per_class {
                keep = keep.min(n);
            }
            if keep < members.len() {
                Rng::derive(spec.seed, &[label as u64]).shuffle(&mut members);
                members.truncate(keep);
            }
            indices.extend(members);
        }
        indices.sort_unstable();
        if indices.is_empty() {
            return invalid(format!("the subset {spec:?} keeps no examples"));
        }
        Ok(Subset { parent, indices, classes, relabel })
    }

    /// The parent's index of each kept example, in order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl LabelledImages for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Dataset for Subset {
    fn label(&self, index: usize) -> usize {
        self.relabel[self.parent.label(self.indices[index])].expect("kept examples have kept classes")
    }

    fn get(&self, index: usize) -> Result<(RgbImage, usize), DataError> {
        let (image, _) = self.parent.get(self.indices[index])?;
        Ok((image, self.label(index)))
    }
}

/// Reads a class-list file: one class name per line (e.g. an ImageNet WNID such as
/// `n01440764`); surrounding whitespace, blank lines and lines starting with `#` are ignored.
///
/// # Errors
/// [`DataError::MissingPath`] or [`DataError::Io`] when the file cannot be read;
/// [`DataError::BadListFile`] for a line with more than one word or a repeated class, naming the
/// line; [`DataError::EmptyDataset`] for a file that lists nothing.
pub fn read_class_list(path: impl AsRef<Path>) -> Result<Vec<String>, DataError> {
    let path = path.as_ref();
    let text = crate::load::read_text(path, "class list")?;
    let mut classes: Vec<String> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| DataError::BadListFile { path: path.to_path_buf(), line: number + 1, reason };
        if line.split_whitespace().count() > 1 {
            return Err(bad(format!("'{line}' has several words; write one class name per line")));
        }
        if classes.iter().any(|c| c == line) {
            return Err(bad(format!("class '{line}' is listed twice")));
        }
        classes.push(line.to_string());
    }
    if classes.is_empty() {
        return Err(DataError::EmptyDataset {
            path: path.to_path_buf(),
            reason: "the class list names no class; write one class name per line".into(),
        });
    }
    Ok(classes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A data set of solid-colour 4x4 images: example `i` has label `labels[i]` and level `i`.
    pub(crate) struct Toy {
        pub labels: Vec<usize>,
        pub classes: Vec<String>,
    }

    impl Toy {
        pub(crate) fn new(labels: Vec<usize>, num_classes: usize) -> Self {
            Toy { labels, classes: (0..num_classes).map(|c| format!("class{c}")).collect() }
        }
    }

    impl LabelledImages for Toy {
        fn len(&self) -> usize {
            self.labels.len()
        }
        fn classes(&self) -> &[String] {
            &self.classes
        }
    }

    impl Dataset for Toy {
        fn label(&self, index: usize) -> usize {
            self.labels[index]
        }
        fn get(&self, index: usize) -> Result<(RgbImage, usize), DataError> {
            Ok((RgbImage::from_pixel(4, 4, image::Rgb([index as u8; 3])), self.labels[index]))
        }
    }

    fn toy() -> Arc<dyn Dataset> {
        // 3 classes with 10, 6 and 4 examples, interleaved.
        let labels = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    0
                } else if i % 5 == 0 || i % 3 == 0 {
                    2
                } else {
                    1
                }
            })
            .collect();
        Arc::new(Toy::new(labels, 3))
    }

    fn counts(d: &dyn Dataset) -> Vec<usize> {
        let mut c = vec![0; d.num_classes()];
        (0..d.len()).for_each(|i| c[d.label(i)] += 1);
        c
    }

    #[test]
    fn class_list_keeps_and_renumbers_in_parent_order() {
        let parent = toy();
        let before = counts(parent.as_ref());
        let spec = SubsetSpec { classes: Some(vec!["class2".into(), "class0".into()]), ..Default::default() };
        let s = Subset::new(parent.clone(), &spec).unwrap();
        assert_eq!(s.classes(), ["class0", "class2"]);
        assert_eq!(counts(&s), vec![before[0], before[2]]);
        for i in 0..s.len() {
            let (_, label) = s.get(i).unwrap();
            assert_eq!(label, s.label(i));
            let parent_label = parent.label(s.indices()[i]);
            assert_eq!(s.classes()[label], parent.classes()[parent_label]);
        }
        assert!(s.indices().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn per_class_and_fraction_are_seeded() {
        let parent = toy();
        let spec = SubsetSpec { per_class: Some(3), seed: 1, ..Default::default() };
        let a = Subset::new(parent.clone(), &spec).unwrap();
        assert_eq!(counts(&a), vec![3, 3, 3]);
        assert_eq!(a.indices(), Subset::new(parent.clone(), &spec).unwrap().indices());
        let other_seed = Subset::new(parent.clone(), &SubsetSpec { seed: 2, ..spec.clone() }).unwrap();
        assert_ne!(a.indices(), other_seed.indices());
        let half = Subset::new(parent.clone(), &SubsetSpec { fraction: Some(0.5), ..Default::default() }).unwrap();
        let full = counts(parent.as_ref());
        assert_eq!(counts(&half), full.iter().map(|&n| ((n as f64 * 0.5).round() as usize).max(1)).collect::<Vec<_>>());
        let tiny = Subset::new(parent, &SubsetSpec { fraction: Some(0.01), ..Default::default() }).unwrap();
        assert_eq!(counts(&tiny), vec![1, 1, 1]);
    }

    #[test]
    fn bad_specs_are_named() {
        let parent = toy();
        for (spec, needle) in [
            (SubsetSpec { classes: Some(vec!["n999".into()]), ..Default::default() }, "'n999'"),
            (SubsetSpec { classes: Some(vec!["class1".into(), "class1".into()]), ..Default::default() }, "twice"),
            (SubsetSpec { per_class: Some(0), ..Default::default() }, "per_class"),
            (SubsetSpec { fraction: Some(1.5), ..Default::default() }, "fraction"),
        ] {
            let msg = Subset::new(parent.clone(), &spec).err().expect("rejected").to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
