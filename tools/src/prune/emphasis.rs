//! Where the refit should be most exact. Plain least squares weighs every
//! position alike, so the classes that cover most of a street scene (road,
//! building, sky) decide each fit, and the thin, rare classes (poles, signs,
//! lights, people) absorb the error: they are where pruning loses its mIoU,
//! and mIoU counts every class alike. Class-balanced emphasis weighs each
//! output pixel by its class's rarity in the unpruned model's predictions on
//! the calibration images (no labels needed), and each layer's position by
//! the mean weight of the output pixels it stands for.

use anyhow::{bail, Context};
use tract_onnx::pb::ModelProto;

use crate::class_balance::class_weights;
use crate::dataset::Dataset;
use crate::graph;
use crate::probe::{progress, slice, InputMaker, Probe};

/// Per-pixel weights of the calibration images, from the unpruned model's labels.
pub struct Emphasis {
    /// Per calibration image: the unpruned model's arg-max labels at output size.
    labels: Vec<Vec<u8>>,
    /// Output (height, width).
    hw: [usize; 2],
    /// Weight per class; the mean over all calibration pixels is 1.
    class_weight: Vec<f64>,
}

impl Emphasis {
    /// Runs the unpruned model over `data` and weighs class `c` by
    /// `frequency(c)^-strength` (0: every pixel alike, 1: inverse frequency),
    /// at most 100 times the commonest class's weight.
    pub fn measure(
        original: &ModelProto,
        data: &Dataset,
        inputs: &mut InputMaker,
        threads: usize,
        strength: f64,
    ) -> anyhow::Result<Emphasis> {
        let output = graph::graph(original)
            .output
            .first()
            .map(|o| o.name.clone())
            .context("the model has no output")?;
        let probe = Probe::new(
            original,
            std::slice::from_ref(&output),
            inputs.size(),
            threads,
        )?;
        let mut labels = Vec::with_capacity(data.len());
        let mut hw = [0, 0];
        let mut counts: Vec<u64> = Vec::new();
        let bar = progress(data.len(), "emphasis");
        for i in 0..data.len() {
            let outs = probe.run(inputs.tensor(data, i)?)?;
            let shape = outs[0].shape().to_vec();
            let [1, classes, h, w] = shape[..] else {
                bail!(
                    "output {output}: expected logits [1, classes, height, width], got {shape:?}"
                );
            };
            if !(1..=255).contains(&classes) {
                bail!("output {output}: {classes} classes; class balancing needs 1 to 255");
            }
            let logits = slice::<f32>(&outs[0])?;
            let plane = h * w;
            let mut map = vec![0u8; plane];
            for (p, label) in map.iter_mut().enumerate() {
                let mut best = 0;
                for c in 1..classes {
                    if logits[c * plane + p] > logits[best * plane + p] {
                        best = c;
                    }
                }
                *label = best as u8;
            }
            counts.resize(classes, 0);
            for &l in &map {
                counts[usize::from(l)] += 1;
            }
            hw = [h, w];
            labels.push(map);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Emphasis {
            class_weight: class_weights(&counts, strength),
            labels,
            hw,
        })
    }

    /// The summed-area table of image `i`'s pixel weights: built once per
    /// image, it pools them to every layer's map size.
    pub fn table(&self, i: usize) -> WeightTable {
        let [h, w] = self.hw;
        // One row and column of zeros first.
        let mut sums = vec![0f64; (h + 1) * (w + 1)];
        for y in 0..h {
            let mut row = 0.0;
            for x in 0..w {
                row += self.class_weight[usize::from(self.labels[i][y * w + x])];
                sums[(y + 1) * (w + 1) + x + 1] = sums[y * (w + 1) + x + 1] + row;
            }
        }
        WeightTable { sums, hw: [h, w] }
    }
}

/// One image's pixel weights as a summed-area table.
pub struct WeightTable {
    sums: Vec<f64>,
    /// Output (height, width).
    hw: [usize; 2],
}

impl WeightTable {
    /// The weight of each position at a layer's map size `[oh, ow]`,
    /// row-major: the mean weight of the output pixels in its block.
    pub fn pooled(&self, [oh, ow]: [usize; 2]) -> Vec<f64> {
        let [h, w] = self.hw;
        let sat = &self.sums;
        let span = |o: usize, n: usize, full: usize| {
            let a = (o * full / n).min(full - 1);
            let b = ((o + 1) * full / n).clamp(a + 1, full);
            (a, b)
        };
        let mut out = Vec::with_capacity(oh * ow);
        for oy in 0..oh {
            let (y0, y1) = span(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = span(ox, ow, w);
                let sum = sat[y1 * (w + 1) + x1] - sat[y0 * (w + 1) + x1] - sat[y1 * (w + 1) + x0]
                    + sat[y0 * (w + 1) + x0];
                out.push(sum / ((y1 - y0) * (x1 - x0)) as f64);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_the_block_each_position_stands_for() {
        // 4x4 output: the left column is class 1, the rest class 0.
        let mut labels = vec![0u8; 16];
        for y in 0..4 {
            labels[y * 4] = 1;
        }
        let e = Emphasis {
            labels: vec![labels],
            hw: [4, 4],
            class_weight: vec![1.0, 5.0],
        };
        assert_eq!(e.table(0).pooled([2, 2]), vec![3.0, 1.0, 3.0, 1.0]);
        assert_eq!(e.table(0).pooled([1, 1]), vec![2.0]);
        let full = e.table(0).pooled([4, 4]);
        assert_eq!(full[0], 5.0);
        assert_eq!(full[1], 1.0);
    }
}
