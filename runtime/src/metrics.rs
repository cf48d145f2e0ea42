//! Segmentation quality: confusion matrix, IoU, mIoU, pixel accuracy, and
//! the agreement of two models on the same inputs.
//!
//! Used by `dla-tools eval`, `quantize` and `prune` (and anything else that
//! must say how good a model is), so every tool computes these numbers the
//! same way as the training script (`models/train.py`): mIoU averages the
//! classes present in the ground truth; ignored pixels count nowhere.

use serde::Serialize;

use crate::error::{Error, Result};

/// Counts of (true class, predicted class) pairs over labelled pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major: `counts[truth * classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds one labelled image. Pixels whose truth is `ignore` or not a class
    /// are skipped; a predicted value outside the classes is an error (it
    /// means the model and the class table disagree).
    pub fn add(&mut self, truth: &[u8], predicted: &[u8], ignore: u8) -> Result<()> {
        if truth.len() != predicted.len() {
            return Err(Error::Frame(format!(
                "label map has {} pixels but the prediction has {}",
                truth.len(),
                predicted.len()
            )));
        }
        let n = self.classes;
        for (&t, &p) in truth.iter().zip(predicted) {
            if t == ignore || usize::from(t) >= n {
                continue;
            }
            if usize::from(p) >= n {
                return Err(Error::Frame(format!(
                    "predicted class {p} is outside the {n} classes"
                )));
            }
            self.counts[usize::from(t) * n + usize::from(p)] += 1;
        }
        Ok(())
    }

    /// Adds another matrix of the same size.
    pub fn merge(&mut self, other: &ConfusionMatrix) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// How often class `truth` was predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// Row-major counts, `[truth][predicted]`.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.classes.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }

    /// Labelled pixels counted so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn truth_count(&self, c: usize) -> u64 {
        self.counts[c * self.classes..(c + 1) * self.classes]
            .iter()
            .sum()
    }

    fn predicted_count(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.count(t, c)).sum()
    }

    /// Intersection over union of class `c`; `None` when the ground truth has
    /// no pixel of it (the class does not take part in the mean).
    pub fn iou(&self, c: usize) -> Option<f64> {
        let truth = self.truth_count(c);
        if truth == 0 {
            return None;
        }
        let tp = self.count(c, c);
        let union = truth + self.predicted_count(c) - tp;
        Some(tp as f64 / union as f64)
    }

    /// Mean IoU over the classes present in the ground truth; `None` if no
    /// pixel was labelled.
    pub fn mean_iou(&self) -> Option<f64> {
        let ious: Vec<f64> = (0..self.classes).filter_map(|c| self.iou(c)).collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }

    /// Fraction of labelled pixels predicted right; `None` if none was labelled.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        let total = self.total();
        let right: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        (total > 0).then(|| right as f64 / total as f64)
    }
}

/// How closely one model follows another on the same inputs: label agreement
/// after the argmax and the error of the raw logits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Agreement {
    /// Pixels compared.
    pub pixels: u64,
    /// Pixels where both models chose the same class.
    pub same: u64,
    /// Logit values compared.
    pub values: u64,
    /// Largest absolute logit difference.
    pub max_abs_diff: f32,
    /// Sum of absolute logit differences (for the mean).
    #[serde(skip)]
    sum_abs_diff: f64,
    /// Sum of squared reference logits and of squared differences (for SQNR).
    #[serde(skip)]
    sum_sq_ref: f64,
    #[serde(skip)]
    sum_sq_diff: f64,
}

impl Agreement {
    /// Adds one image's label maps (same size).
    pub fn add_labels(&mut self, a: &[u8], b: &[u8]) -> Result<()> {
        if a.len() != b.len() {
            return Err(Error::Frame(format!(
                "label maps differ in size: {} vs {} pixels",
                a.len(),
                b.len()
            )));
        }
        self.pixels += a.len() as u64;
        self.same += a.iter().zip(b).filter(|(x, y)| x == y).count() as u64;
        Ok(())
    }

    /// Adds one image's logits; `reference` is the model the other is judged against.
    pub fn add_logits(&mut self, reference: &[f32], other: &[f32]) -> Result<()> {
        if reference.len() != other.len() {
            return Err(Error::Frame(format!(
                "logits differ in size: {} vs {} values",
                reference.len(),
                other.len()
            )));
        }
        for (&r, &o) in reference.iter().zip(other) {
            let d = (r - o).abs();
            self.max_abs_diff = self.max_abs_diff.max(d);
            self.sum_abs_diff += f64::from(d);
            self.sum_sq_diff += f64::from(d) * f64::from(d);
            self.sum_sq_ref += f64::from(r) * f64::from(r);
        }
        self.values += reference.len() as u64;
        Ok(())
    }

    /// Fraction of pixels with the same label (1.0 when nothing was compared).
    pub fn ratio(&self) -> f64 {
        if self.pixels == 0 {
            1.0
        } else {
            self.same as f64 / self.pixels as f64
        }
    }

    /// Mean absolute logit difference.
    pub fn mean_abs_diff(&self) -> f64 {
        if self.values == 0 {
            0.0
        } else {
            self.sum_abs_diff / self.values as f64
        }
    }

    /// Signal-to-quantisation-noise ratio of the logits in dB (infinite when identical).
    pub fn sqnr_db(&self) -> f64 {
        sqnr_db(self.sum_sq_ref, self.sum_sq_diff)
    }
}

/// `10 log10(signal / noise)` from sums of squares; infinite for zero noise.
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_and_accuracy_follow_their_definitions() {
        let mut m = ConfusionMatrix::new(3);
        // truth:     0 0 1 1 2 255
        // predicted: 0 1 1 1 1 0
        m.add(&[0, 0, 1, 1, 2, 255], &[0, 1, 1, 1, 1, 0], 255)
            .unwrap();
        assert_eq!(m.total(), 5);
        assert_eq!(m.iou(0), Some(0.5)); // tp 1, union 2
        assert_eq!(m.iou(1), Some(0.5)); // tp 2, union 4
        assert_eq!(m.iou(2), Some(0.0));
        assert!((m.mean_iou().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.pixel_accuracy(), Some(0.6));
    }

    #[test]
    fn classes_absent_from_the_truth_do_not_count_in_the_mean() {
        let mut m = ConfusionMatrix::new(4);
        m.add(&[0, 0, 1], &[0, 3, 1], 255).unwrap();
        assert_eq!(m.iou(3), None);
        assert_eq!(m.iou(2), None);
        assert!((m.mean_iou().unwrap() - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        let empty = ConfusionMatrix::new(4);
        assert_eq!(empty.mean_iou(), None);
        assert_eq!(empty.pixel_accuracy(), None);
    }

    #[test]
    fn mismatched_sizes_and_out_of_range_predictions_are_errors() {
        let mut m = ConfusionMatrix::new(2);
        assert!(m.add(&[0, 1], &[0], 255).is_err());
        assert!(m.add(&[0], &[7], 255).is_err());
        let mut a = Agreement::default();
        assert!(a.add_labels(&[1], &[1, 2]).is_err());
        assert!(a.add_logits(&[1.0], &[]).is_err());
    }

    #[test]
    fn agreement_counts_pixels_and_logit_error() {
        let mut a = Agreement::default();
        a.add_labels(&[1, 2, 3, 4], &[1, 2, 0, 4]).unwrap();
        a.add_logits(&[1.0, -2.0], &[1.5, -2.0]).unwrap();
        assert_eq!(a.ratio(), 0.75);
        assert_eq!(a.max_abs_diff, 0.5);
        assert_eq!(a.mean_abs_diff(), 0.25);
        assert!((a.sqnr_db() - 10.0 * (5.0f64 / 0.25).log10()).abs() < 1e-9);
        let mut merged = ConfusionMatrix::new(2);
        let mut other = ConfusionMatrix::new(2);
        other.add(&[1], &[1], 255).unwrap();
        merged.merge(&other);
        merged.merge(&other);
        assert_eq!(merged.count(1, 1), 2);
    }
}
