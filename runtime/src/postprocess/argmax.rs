//! Class decisions: per-pixel argmax over logits, at the model's resolution or
//! resampled to the frame's.

use crate::backend::Logits;

/// Writes the best class of every output pixel into `labels` (`height * width`).
///
/// Walks the logits class-major so each pass is a straight, vectorisable scan
/// over one plane; `best` is scratch space of the same length. Ties go to the
/// lower class index (like numpy's argmax); NaN never wins.
pub fn argmax_into(logits: Logits<'_>, best: &mut [f32], labels: &mut [u8]) {
    let n = logits.height * logits.width;
    let (best, labels) = (&mut best[..n], &mut labels[..n]);
    best.copy_from_slice(logits.plane(0));
    labels.fill(0);
    for class in 1..logits.classes {
        let plane = logits.plane(class);
        for ((b, l), &v) in best.iter_mut().zip(labels.iter_mut()).zip(plane) {
            if v > *b {
                *b = v;
                *l = class as u8;
            }
        }
    }
}

/// Source index and weight of one output coordinate for bilinear sampling.
#[derive(Debug, Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    w: f32,
}

/// Half-pixel-centre taps (same convention as ONNX Resize / PyTorch
/// `align_corners=False`) mapping `dst` samples onto `src`.
fn taps(src: usize, dst: usize, out: &mut Vec<Tap>) {
    out.clear();
    let scale = src as f32 / dst as f32;
    for i in 0..dst {
        let s = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f32);
        let lo = s.floor() as usize;
        out.push(Tap {
            lo,
            hi: (lo + 1).min(src - 1),
            w: s - lo as f32,
        });
    }
}

/// Nearest-neighbour source index of every `dst` sample on `src`.
fn nearest(src: usize, dst: usize, out: &mut Vec<usize>) {
    out.clear();
    // Sample i covers [i, i+1) * src/dst; take the source pixel under its centre.
    out.extend((0..dst).map(|i| {
        let centre = (i as f64 + 0.5) * src as f64 / dst as f64;
        (centre.floor() as usize).min(src - 1)
    }));
}

/// Scratch tables for resampling decisions to a frame size; reused across frames.
#[derive(Debug, Default)]
pub struct Resampler {
    xs: Vec<usize>,
    ys: Vec<usize>,
    xtaps: Vec<Tap>,
    ytaps: Vec<Tap>,
    best: Vec<f32>,
    key: (usize, usize, usize, usize),
}

impl Resampler {
    fn prepare(&mut self, src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) {
        let key = (src_w, src_h, dst_w, dst_h);
        if self.key != key || self.xs.len() != dst_w {
            nearest(src_w, dst_w, &mut self.xs);
            nearest(src_h, dst_h, &mut self.ys);
            taps(src_w, dst_w, &mut self.xtaps);
            taps(src_h, dst_h, &mut self.ytaps);
            self.key = key;
        }
    }

    /// Enlarges (or shrinks) a label map by nearest neighbour.
    pub fn nearest_labels(
        &mut self,
        src: &[u8],
        src_w: usize,
        src_h: usize,
        dst: &mut [u8],
        dst_w: usize,
        dst_h: usize,
    ) {
        self.prepare(src_w, src_h, dst_w, dst_h);
        for (row, &sy) in dst.chunks_exact_mut(dst_w).zip(&self.ys) {
            let src_row = &src[sy * src_w..(sy + 1) * src_w];
            for (d, &sx) in row.iter_mut().zip(&self.xs) {
                *d = src_row[sx];
            }
        }
    }

    /// Interpolates the logits bilinearly at every frame pixel and takes the
    /// argmax there: smooth class boundaries instead of blocky ones.
    pub fn bilinear_argmax(
        &mut self,
        logits: Logits<'_>,
        dst: &mut [u8],
        dst_w: usize,
        dst_h: usize,
    ) {
        let (sw, sh) = (logits.width, logits.height);
        self.prepare(sw, sh, dst_w, dst_h);
        self.best.resize(dst_w, 0.0);
        for (y, row) in dst.chunks_exact_mut(dst_w).enumerate() {
            let ty = self.ytaps[y];
            row.fill(0);
            for class in 0..logits.classes {
                let plane = logits.plane(class);
                let top = &plane[ty.lo * sw..(ty.lo + 1) * sw];
                let bottom = &plane[ty.hi * sw..(ty.hi + 1) * sw];
                for (x, (label, best)) in row.iter_mut().zip(self.best.iter_mut()).enumerate() {
                    let tx = self.xtaps[x];
                    let t = top[tx.lo] + (top[tx.hi] - top[tx.lo]) * tx.w;
                    let b = bottom[tx.lo] + (bottom[tx.hi] - bottom[tx.lo]) * tx.w;
                    let v = t + (b - t) * ty.w;
                    if class == 0 || v > *best {
                        *best = v;
                        *label = class as u8;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits_from(data: &[f32], classes: usize, h: usize, w: usize) -> Logits<'_> {
        Logits {
            data,
            classes,
            height: h,
            width: w,
        }
    }

    /// Naive reference argmax, pixel-major.
    fn reference_argmax(l: Logits<'_>) -> Vec<u8> {
        let n = l.height * l.width;
        (0..n)
            .map(|i| {
                let mut best = 0;
                for c in 1..l.classes {
                    if l.data[c * n + i] > l.data[best * n + i] {
                        best = c;
                    }
                }
                best as u8
            })
            .collect()
    }

    #[test]
    fn argmax_matches_the_naive_reference() {
        let (c, h, w) = (5, 7, 9);
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7919) % 101) as f32 * 0.37)
            .collect();
        let l = logits_from(&data, c, h, w);
        let mut best = vec![0.0; h * w];
        let mut labels = vec![0; h * w];
        argmax_into(l, &mut best, &mut labels);
        assert_eq!(labels, reference_argmax(l));
    }

    #[test]
    fn nearest_upsampling_replicates_pixels() {
        let src = [1u8, 2, 3, 4];
        let mut dst = [0u8; 16];
        Resampler::default().nearest_labels(&src, 2, 2, &mut dst, 4, 4);
        assert_eq!(dst, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    }

    #[test]
    fn bilinear_argmax_at_same_size_is_plain_argmax() {
        let (c, h, w) = (3, 4, 6);
        let data: Vec<f32> = (0..c * h * w).map(|i| ((i * 31) % 17) as f32).collect();
        let l = logits_from(&data, c, h, w);
        let mut dst = vec![0; h * w];
        Resampler::default().bilinear_argmax(l, &mut dst, w, h);
        assert_eq!(dst, reference_argmax(l));
    }

    #[test]
    fn bilinear_argmax_moves_the_boundary_smoothly() {
        // Class 1 wins on the right half of a 2-pixel-wide map; upsampled x4 the
        // boundary lands in the middle, not on a 4-pixel block edge.
        let data = [1.0f32, 0.0, 0.0, 1.0];
        let l = logits_from(&data, 2, 1, 2);
        let mut dst = vec![0; 8];
        Resampler::default().bilinear_argmax(l, &mut dst, 8, 1);
        assert_eq!(dst, [0, 0, 0, 0, 1, 1, 1, 1]);
    }
}
