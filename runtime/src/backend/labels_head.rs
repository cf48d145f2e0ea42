//! The labels-only end of a DLA network on tract: its last node, the learned
//! x4 up-sampler (our [`DepthwiseUpsample`]), run a band of rows at a time
//! straight into the argmax (and the bilinear resize to the frame, when the
//! frame is another size). `segment` and `stream` then never hold the
//! full-resolution logits (10 MiB of `f32` for DLA-tiny at 256x512) nor read
//! them back in a second pass.
//!
//! Every band is computed with the same arithmetic as the whole map
//! ([`DepthwiseUpsample::run_rows`], [`argmax_into`],
//! [`Resampler::bilinear_argmax_band`]), so the labels are those of the
//! host's argmax of the full logits, bit for bit; tests compare them.

use std::ops::Range;

use tract_onnx::tract_core::ops::Op;

use super::Logits;
use crate::ops::DepthwiseUpsample;
use crate::postprocess::{argmax_into, Resampler};

/// Rows of the up-sampler's output computed at once: 16 rows of DLA-tiny's
/// 19 classes x 512 columns are 608 KiB, inside a core's L2.
const BAND_ROWS: usize = 16;

/// The final up-sampler of a network and the buffers of its bands.
#[derive(Debug)]
pub struct LabelsHead {
    up: DepthwiseUpsample,
    /// The node's name in the optimised graph.
    name: String,
    /// One band of logits, `[classes][rows][width]`.
    band: Vec<f32>,
    /// Argmax scratch (best score per pixel of a band).
    best: Vec<f32>,
    /// The band's argmax, for the bilinear resize's runs of one class.
    band_labels: Vec<u8>,
    resampler: Resampler,
}

impl LabelsHead {
    /// A head running `up` (the network's last node, `name`) on its input.
    pub fn new(up: DepthwiseUpsample, name: &str) -> LabelsHead {
        LabelsHead {
            up,
            name: name.to_string(),
            band: Vec::new(),
            best: Vec::new(),
            band_labels: Vec::new(),
            resampler: Resampler::default(),
        }
    }

    /// The node's name in the optimised graph.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The up-sampler's own description (shapes), as tract's nodes give it.
    pub fn info(&self) -> Vec<String> {
        Op::info(&self.up).unwrap_or_default()
    }

    /// The shape of the head's input, `[1, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        let (h, w) = self.up.in_size;
        [1, self.up.channels, h, w]
    }

    /// The full logits (`[C, OH, OW]` in `out`) from the head's input.
    pub fn logits(&self, features: &[f32], out: &mut [f32]) {
        self.up.run(features, out);
    }

    /// The label map at `size` = (width, height): the argmax of the logits
    /// at their own size, else of the logits resized bilinearly (half-pixel
    /// centres, as [`Resampler::bilinear_argmax`]).
    pub fn labels(&mut self, features: &[f32], labels: &mut [u8], size: (usize, usize)) {
        let (oh, ow) = self.up.out_size;
        assert_eq!(labels.len(), size.0 * size.1, "labels for {size:?}");
        if size == (ow, oh) {
            for y0 in (0..oh).step_by(BAND_ROWS) {
                let rows = y0..(y0 + BAND_ROWS).min(oh);
                let at = rows.start * ow..rows.end * ow;
                self.band(features, rows);
                labels[at].copy_from_slice(&self.band_labels);
            }
        } else {
            self.resized(features, labels, size);
        }
    }

    /// Frame rows a band at a time: each band starts at the first source
    /// row the next frame row reads and serves every frame row inside it.
    fn resized(&mut self, features: &[f32], labels: &mut [u8], (width, height): (usize, usize)) {
        let (oh, ow) = self.up.out_size;
        let (src, dst) = ((ow, oh), (width, height));
        let mut row = 0;
        while row < height {
            let (y0, _) = self.resampler.source_rows(src, dst, row);
            let y1 = (y0 + BAND_ROWS).min(oh);
            let mut end = row;
            while end < height && self.resampler.source_rows(src, dst, end).1 < y1 {
                end += 1;
            }
            self.band(features, y0..y1);
            let logits = Logits {
                data: &self.band,
                classes: self.up.channels,
                height: y1 - y0,
                width: ow,
            };
            self.resampler.bilinear_argmax_band(
                logits,
                y0,
                oh,
                &self.band_labels,
                &mut labels[row * width..end * width],
                dst,
                row..end,
            );
            row = end;
        }
    }

    /// Computes output rows `rows` of the logits into `band` and their
    /// argmax into `band_labels`.
    fn band(&mut self, features: &[f32], rows: Range<usize>) {
        let width = self.up.out_size.1;
        let pixels = rows.len() * width;
        let classes = self.up.channels;
        self.band.resize(classes * pixels, 0.0);
        self.best.resize(pixels, 0.0);
        self.band_labels.resize(pixels, 0);
        self.up.run_rows(features, rows.clone(), &mut self.band);
        let logits = Logits {
            data: &self.band,
            classes,
            height: rows.len(),
            width,
        };
        argmax_into(logits, &mut self.best, &mut self.band_labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postprocess::{Postprocessor, Upsampling};

    /// An x4 up-sampler (DLA's shape) over `classes` smooth random planes.
    fn head_and_features(classes: usize, (h, w): (usize, usize)) -> (LabelsHead, Vec<f32>) {
        let weights = (0..classes * 64)
            .map(|i| ((i * 37) % 19) as f32 * 0.05 - 0.3)
            .collect();
        let bias = (0..classes).map(|c| c as f32 * 0.01).collect();
        let up = DepthwiseUpsample::new(
            classes,
            (h, w),
            (4 * h, 4 * w),
            (8, 8),
            (4, 4),
            (2, 2),
            weights,
            bias,
            "test",
        );
        let features = (0..classes * h * w)
            .map(|i| {
                let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
                ((x as f32 * 0.9 + c as f32 * 1.7).sin() + (y as f32 * 0.6 - c as f32).cos()) * 2.0
            })
            .collect();
        (LabelsHead::new(up, "test"), features)
    }

    #[test]
    fn labels_equal_the_argmax_of_the_whole_logits() {
        let (classes, (h, w)) = (5, (11, 13));
        let (mut head, features) = head_and_features(classes, (h, w));
        let (oh, ow) = (4 * h, 4 * w);
        let mut logits = vec![0.0; classes * oh * ow];
        head.logits(&features, &mut logits);
        let logits = Logits {
            data: &logits,
            classes,
            height: oh,
            width: ow,
        };
        let mut post = Postprocessor::new(Upsampling::Bilinear);
        // The output's own size (3 bands, the last short), larger, smaller,
        // odd ratios, one row.
        for size in [
            (ow, oh),
            (2 * ow, 2 * oh),
            (ow / 3, oh / 2),
            (77, 101),
            (ow, 1),
        ] {
            let want = post.run(logits, size.0, size.1).to_vec();
            let mut got = vec![u8::MAX; size.0 * size.1];
            head.labels(&features, &mut got, size);
            assert_eq!(got, want, "{size:?}");
            assert!(got.iter().any(|&l| l != got[0]), "{size:?}: one class only");
        }
    }
}
