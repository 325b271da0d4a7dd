//! Semantic-segmentation metrics as mmsegmentation's `IoUMetric` computes them: per-class areas
//! summed over the whole evaluation set (not averaged per image), ignored pixels left out of
//! every count, and classes absent from both prediction and ground truth left out of the means.

use serde::Serialize;

/// Pixel counts `counts[truth][predicted]` over an evaluation set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegConfusion {
    num_classes: usize,
    counts: Vec<u64>,
}

/// mIoU, aAcc and mAcc with their per-class parts; fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegMetrics {
    /// Mean over classes of `intersection / union`, over the classes with a non-empty union.
    #[serde(rename = "mIoU")]
    pub miou: f64,
    /// Correct pixels over labelled pixels.
    #[serde(rename = "aAcc")]
    pub aacc: f64,
    /// Mean over classes of `correct / labelled`, over the classes present in the ground truth.
    #[serde(rename = "mAcc")]
    pub macc: f64,
    /// IoU of each class; `None` when the class is in neither prediction nor ground truth.
    pub iou: Vec<Option<f64>>,
    /// Accuracy of each class; `None` when the class is absent from the ground truth.
    pub acc: Vec<Option<f64>>,
}

impl SegConfusion {
    /// No pixels counted yet.
    pub fn new(num_classes: usize) -> Self {
        Self { num_classes, counts: vec![0; num_classes * num_classes] }
    }

    /// Classes counted.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Counts one prediction against its ground truth, pixel by pixel; pixels labelled
    /// `ignore_index` are skipped.
    ///
    /// # Panics
    /// If the lengths differ, or a label or prediction is neither `ignore_index` nor a class.
    pub fn add(&mut self, predicted: &[usize], truth: &[i64], ignore_index: i64) {
        assert_eq!(predicted.len(), truth.len(), "prediction and ground truth cover the same pixels");
        let n = self.num_classes;
        for (&p, &t) in predicted.iter().zip(truth) {
            if t == ignore_index {
                continue;
            }
            let t = usize::try_from(t).ok().filter(|&t| t < n).unwrap_or_else(|| panic!("label {t} outside 0..{n}"));
            assert!(p < n, "prediction {p} outside 0..{n}");
            self.counts[t * n + p] += 1;
        }
    }

    /// `counts[truth][predicted]`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.num_classes + predicted]
    }

    /// Adds the counts of the other data-parallel ranks (`collective`), so every rank holds the
    /// counts of the whole evaluation set; counts stay exact (below 2^53 pixels).
    pub fn sum_over_ranks(&mut self, collective: &dyn crate::distributed::Collective) {
        let mut wide: Vec<f64> = self.counts.iter().map(|&c| c as f64).collect();
        collective.sum_f64(&mut wide);
        self.counts = wide.into_iter().map(|c| c as u64).collect();
    }

    /// The rows, `[truth][predicted]`.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.num_classes.max(1)).map(<[u64]>::to_vec).collect()
    }

    /// mIoU, aAcc, mAcc and the per-class values.
    pub fn metrics(&self) -> SegMetrics {
        let n = self.num_classes;
        let intersection: Vec<u64> = (0..n).map(|c| self.count(c, c)).collect();
        let labelled: Vec<u64> = (0..n).map(|c| (0..n).map(|p| self.count(c, p)).sum()).collect();
        let predicted: Vec<u64> = (0..n).map(|c| (0..n).map(|t| self.count(t, c)).sum()).collect();
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let iou: Vec<Option<f64>> =
            (0..n).map(|c| ratio(intersection[c], labelled[c] + predicted[c] - intersection[c])).collect();
        let acc: Vec<Option<f64>> = (0..n).map(|c| ratio(intersection[c], labelled[c])).collect();
        SegMetrics {
            miou: mean_present(&iou),
            aacc: ratio(intersection.iter().sum(), labelled.iter().sum()).unwrap_or(0.0),
            macc: mean_present(&acc),
            iou,
            acc,
        }
    }
}

/// numpy's `nanmean`, with 0 for no values at all.
fn mean_present(values: &[Option<f64>]) -> f64 {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.is_empty() { 0.0 } else { present.iter().sum::<f64>() / present.len() as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn metrics_of_a_hand_counted_confusion_matrix() {
        // truth 0 0 0 1 1 2 2 2 ignore ignore
        // pred  0 0 1 1 1 2 0 2 1      2
        let mut confusion = SegConfusion::new(4);
        confusion.add(&[0, 0, 1, 1, 1, 2, 0, 2, 1, 2], &[0, 0, 0, 1, 1, 2, 2, 2, 255, 255], 255);
        // class 0: intersection 2, labelled 3, predicted 3 -> IoU 2/4, acc 2/3
        // class 1: intersection 2, labelled 2, predicted 3 -> IoU 2/3, acc 1
        // class 2: intersection 2, labelled 3, predicted 2 -> IoU 2/3, acc 2/3
        // class 3: absent from both -> left out of the means
        let m = confusion.metrics();
        assert_eq!(m.iou[3], None);
        assert_eq!(m.acc[3], None);
        close(m.iou[0].unwrap(), 0.5);
        close(m.iou[1].unwrap(), 2.0 / 3.0);
        close(m.iou[2].unwrap(), 2.0 / 3.0);
        close(m.miou, (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0);
        close(m.aacc, 6.0 / 8.0);
        close(m.macc, (2.0 / 3.0 + 1.0 + 2.0 / 3.0) / 3.0);
        assert_eq!(confusion.count(2, 0), 1);
        assert_eq!(confusion.rows().iter().flatten().sum::<u64>(), 8, "ignored pixels are not counted");
    }

    #[test]
    fn areas_add_up_over_images_rather_than_averaging_per_image() {
        // image A: class 0 perfect (IoU 1); image B: class 0 predicted once where truth is 1
        let mut confusion = SegConfusion::new(2);
        confusion.add(&[0, 0, 0, 0], &[0, 0, 0, 0], 255);
        confusion.add(&[0, 1], &[1, 1], 255);
        let m = confusion.metrics();
        // class 0: intersection 4, union 5; class 1: intersection 1, union 2
        close(m.iou[0].unwrap(), 0.8);
        close(m.iou[1].unwrap(), 0.5);
        close(m.miou, 0.65);
        close(m.aacc, 5.0 / 6.0);
        close(m.macc, (1.0 + 0.5) / 2.0);
    }

    #[test]
    fn a_class_only_predicted_counts_with_iou_zero_but_not_in_macc() {
        let mut confusion = SegConfusion::new(2);
        confusion.add(&[1, 0], &[0, 0], 255);
        let m = confusion.metrics();
        assert_eq!(m.iou, vec![Some(0.5), Some(0.0)]);
        assert_eq!(m.acc, vec![Some(0.5), None]);
        close(m.miou, 0.25);
        close(m.macc, 0.5);
    }

    #[test]
    #[should_panic(expected = "label 3 outside 0..2")]
    fn a_label_outside_the_classes_is_a_bug_not_a_miscount() {
        SegConfusion::new(2).add(&[0], &[3], 255);
    }
}
