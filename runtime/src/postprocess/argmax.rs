//! Class decisions: per-pixel argmax over logits, at the model's resolution or
//! resampled to the frame's.

use crate::backend::Logits;
use std::ops::Range;

/// Writes the best class of every output pixel into `labels` (`height * width`).
///
/// Walks the logits class-major so each pass is a straight, vectorisable scan
/// over one plane; `best` is scratch space of the same length. Ties go to the
/// lower class index (like numpy's argmax); NaN never wins.
pub fn argmax_into(logits: Logits<'_>, best: &mut [f32], labels: &mut [u8]) {
    let n = logits.height * logits.width;
    let (best, labels) = (&mut best[..n], &mut labels[..n]);
    assert!(logits.data.len() >= logits.classes * n && logits.classes >= 1);
    // On aarch64 whole blocks of 16 pixels in one NEON pass, the same ties.
    #[cfg(target_arch = "aarch64")]
    let done = if logits.classes <= 256 {
        // SAFETY: NEON is part of every aarch64 target; sizes asserted above.
        unsafe { crate::ops::kernels::neon::argmax_u8(logits.data, n, logits.classes, labels) }
    } else {
        0
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = 0;
    let (best, labels) = (&mut best[done..], &mut labels[done..]);
    best.copy_from_slice(&logits.plane(0)[done..]);
    labels.fill(0);
    for class in 1..logits.classes {
        let plane = &logits.plane(class)[done..];
        // Selects, not a branch: compilers turn this into vector compares
        // and blends (the branchy form stayed scalar on aarch64).
        for ((b, l), &v) in best.iter_mut().zip(labels.iter_mut()).zip(plane) {
            let better = v > *b;
            *b = if better { v } else { *b };
            *l = if better { class as u8 } else { *l };
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

/// Marks a source column pair whose four corners disagree on the class.
const MIXED: u16 = u16::MAX;

/// Output columns `x0..x1` whose left source column lies in one run of
/// equal decisions: all `class`, or [`MIXED`] (interpolate each pixel).
#[derive(Debug, Clone, Copy)]
struct Run {
    x0: usize,
    x1: usize,
    class: u16,
}

/// Scratch tables for resampling decisions to a frame size; reused across frames.
#[derive(Debug, Default)]
pub struct Resampler {
    xs: Vec<usize>,
    ys: Vec<usize>,
    xtaps: Vec<Tap>,
    ytaps: Vec<Tap>,
    /// Output columns `xspan[sx]..xspan[sx + 1]` have left tap `sx`.
    xspan: Vec<usize>,
    runs: Vec<Run>,
    key: (usize, usize, usize, usize),
}

impl Resampler {
    fn prepare(&mut self, src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) {
        let key = (src_w, src_h, dst_w, dst_h);
        if self.key != key {
            nearest(src_w, dst_w, &mut self.xs);
            nearest(src_h, dst_h, &mut self.ys);
            taps(src_w, dst_w, &mut self.xtaps);
            taps(src_h, dst_h, &mut self.ytaps);
            // Left taps never decrease along a row, so each source column
            // owns one contiguous span of output columns (maybe empty).
            self.xspan.clear();
            let mut x = 0;
            for sx in 0..=src_w {
                while x < dst_w && self.xtaps[x].lo < sx {
                    x += 1;
                }
                self.xspan.push(x);
            }
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
        for (y, &sy) in self.ys.iter().enumerate().take(dst_h) {
            // Enlarging repeats rows: copy the one above instead of gathering.
            if y > 0 && self.ys[y - 1] == sy {
                dst.copy_within((y - 1) * dst_w..y * dst_w, y * dst_w);
                continue;
            }
            let src_row = &src[sy * src_w..(sy + 1) * src_w];
            for (d, &sx) in dst[y * dst_w..(y + 1) * dst_w].iter_mut().zip(&self.xs) {
                *d = src_row[sx];
            }
        }
    }

    /// Interpolates the logits bilinearly at every frame pixel and takes the
    /// argmax there: smooth class boundaries instead of blocky ones.
    ///
    /// `model_labels` is the argmax at the model's resolution. Where the four
    /// source pixels around a frame pixel agree on a class, that class also
    /// wins the interpolated logits (a convex combination keeps every strict
    /// inequality), so only pixels near class boundaries pay for the full
    /// per-class interpolation; the rest of a row is filled run by run.
    /// The result equals the naive computation.
    pub fn bilinear_argmax(
        &mut self,
        logits: Logits<'_>,
        model_labels: &[u8],
        dst: &mut [u8],
        dst_w: usize,
        dst_h: usize,
    ) {
        self.prepare(logits.width, logits.height, dst_w, dst_h);
        self.bilinear_argmax_rows(logits, 0, model_labels, dst, dst_w, 0..dst_h);
    }

    /// The source rows the frame rows from `row` on read: `(lo, hi)` of its
    /// vertical taps, for a `src_w` x `src_h` map resized to `dst_w` x
    /// `dst_h`. With [`Resampler::bilinear_argmax_rows`], a producer of the
    /// logits can hand them over a band of rows at a time.
    pub fn source_rows(
        &mut self,
        (src_w, src_h): (usize, usize),
        (dst_w, dst_h): (usize, usize),
        row: usize,
    ) -> (usize, usize) {
        self.prepare(src_w, src_h, dst_w, dst_h);
        let tap = &self.ytaps[row];
        (tap.lo, tap.hi)
    }

    /// [`Resampler::bilinear_argmax`] for frame rows `rows` only (their labels
    /// in `dst`, `rows.len() * dst_w`), from a band of the logits: `band`
    /// holds source rows `y0..y0 + band.height` of a map `src_h` rows high
    /// and `band_labels` their argmax. Every row in `rows` must read source
    /// rows inside the band ([`Resampler::source_rows`]). The same labels as
    /// those rows of the whole map's.
    #[allow(clippy::too_many_arguments)]
    pub fn bilinear_argmax_band(
        &mut self,
        band: Logits<'_>,
        y0: usize,
        src_h: usize,
        band_labels: &[u8],
        dst: &mut [u8],
        (dst_w, dst_h): (usize, usize),
        rows: Range<usize>,
    ) {
        self.prepare(band.width, src_h, dst_w, dst_h);
        self.bilinear_argmax_rows(band, y0, band_labels, dst, dst_w, rows);
    }

    /// Frame rows `rows` into `dst` from source rows `y0..` (`logits`,
    /// `model_labels`); the tables are prepared.
    fn bilinear_argmax_rows(
        &mut self,
        logits: Logits<'_>,
        y0: usize,
        model_labels: &[u8],
        dst: &mut [u8],
        dst_w: usize,
        rows: Range<usize>,
    ) {
        let sw = logits.width;
        let Resampler {
            xtaps,
            ytaps,
            xspan,
            runs,
            ..
        } = self;
        let mut pair = usize::MAX;
        for (row, ty) in dst.chunks_exact_mut(dst_w).zip(&ytaps[rows]) {
            assert!(
                ty.lo >= y0 && ty.hi < y0 + logits.height,
                "row outside the band"
            );
            let ty = &Tap {
                lo: ty.lo - y0,
                hi: ty.hi - y0,
                w: ty.w,
            };
            if ty.lo != pair {
                pair = ty.lo;
                let top = &model_labels[ty.lo * sw..(ty.lo + 1) * sw];
                let bottom = &model_labels[ty.hi * sw..(ty.hi + 1) * sw];
                find_runs(top, bottom, xspan, runs);
            }
            for run in runs.iter() {
                if run.class != MIXED {
                    row[run.x0..run.x1].fill(run.class as u8);
                    continue;
                }
                for (label, tx) in row[run.x0..run.x1].iter_mut().zip(&xtaps[run.x0..]) {
                    *label = interpolated_argmax(logits, tx, ty);
                }
            }
        }
    }
}

/// Splits a row pair's output columns into runs of one agreed class or of
/// mixed corners; `xspan` maps source columns to output columns.
fn find_runs(top: &[u8], bottom: &[u8], xspan: &[usize], runs: &mut Vec<Run>) {
    let sw = top.len();
    // The class the 2x2 corners right of source column `sx` agree on, or MIXED.
    let agreed = |sx: usize| {
        let hi = (sx + 1).min(sw - 1);
        let a = top[sx];
        if a == top[hi] && a == bottom[sx] && a == bottom[hi] {
            a as u16
        } else {
            MIXED
        }
    };
    runs.clear();
    let mut sx = 0;
    while sx < sw {
        let class = agreed(sx);
        let mut end = sx + 1;
        while end < sw && agreed(end) == class {
            end += 1;
        }
        let (x0, x1) = (xspan[sx], xspan[end]);
        if x0 < x1 {
            runs.push(Run { x0, x1, class });
        }
        sx = end;
    }
}

/// The best class of the logits interpolated between four source pixels.
fn interpolated_argmax(logits: Logits<'_>, tx: &Tap, ty: &Tap) -> u8 {
    let (sw, n) = (logits.width, logits.width * logits.height);
    let (i00, i01) = (ty.lo * sw + tx.lo, ty.lo * sw + tx.hi);
    let (i10, i11) = (ty.hi * sw + tx.lo, ty.hi * sw + tx.hi);
    let mut best = f32::NEG_INFINITY;
    let mut best_class = 0u8;
    for class in 0..logits.classes {
        let plane = &logits.data[class * n..(class + 1) * n];
        let t = plane[i00] + (plane[i01] - plane[i00]) * tx.w;
        let b = plane[i10] + (plane[i11] - plane[i10]) * tx.w;
        let v = t + (b - t) * ty.w;
        if v > best {
            best = v;
            best_class = class as u8;
        }
    }
    best_class
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

        // Ties go to the lower class and NaN never wins, in the vector
        // blocks (16 pixels) and in the tail alike.
        let (c, n) = (4, 37);
        let data: Vec<f32> = (0..c * n)
            .map(|i| match (i / n, i % n) {
                (_, p) if p % 5 == 0 => 1.0,
                (2, p) if p % 3 == 0 => f32::NAN,
                (k, p) => ((p * 3 + k * 7) % 4) as f32,
            })
            .collect();
        let l = logits_from(&data, c, 1, n);
        let (mut best, mut labels) = (vec![0.0; n], vec![9; n]);
        argmax_into(l, &mut best, &mut labels);
        assert_eq!(labels, reference_argmax(l));
        assert_eq!(labels[0], 0, "a tie of every class");
    }

    #[test]
    fn nearest_upsampling_replicates_pixels() {
        let src = [1u8, 2, 3, 4];
        let mut dst = [0u8; 16];
        Resampler::default().nearest_labels(&src, 2, 2, &mut dst, 4, 4);
        assert_eq!(dst, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);

        // Odd factors up and down against the pixel-by-pixel definition.
        let (sw, sh) = (7, 5);
        let src: Vec<u8> = (0..sw * sh).map(|i| (i * 37 % 11) as u8).collect();
        let mut resampler = Resampler::default();
        for (dw, dh) in [(17, 13), (3, 2), (7, 5), (20, 4)] {
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            nearest(sw, dw, &mut xs);
            nearest(sh, dh, &mut ys);
            let want: Vec<u8> = (0..dw * dh)
                .map(|i| src[ys[i / dw] * sw + xs[i % dw]])
                .collect();
            let mut dst = vec![0; dw * dh];
            resampler.nearest_labels(&src, sw, sh, &mut dst, dw, dh);
            assert_eq!(dst, want, "{dw}x{dh}");
        }
    }

    /// Naive reference: interpolate every class at every pixel, then argmax.
    fn reference_bilinear(l: Logits<'_>, dw: usize, dh: usize) -> Vec<u8> {
        let (mut xt, mut yt) = (Vec::new(), Vec::new());
        taps(l.width, dw, &mut xt);
        taps(l.height, dh, &mut yt);
        let mut out = Vec::new();
        for ty in &yt {
            for tx in &xt {
                let value = |c: usize| {
                    let p = l.plane(c);
                    let at = |y: usize, x: usize| p[y * l.width + x];
                    let t = at(ty.lo, tx.lo) + (at(ty.lo, tx.hi) - at(ty.lo, tx.lo)) * tx.w;
                    let b = at(ty.hi, tx.lo) + (at(ty.hi, tx.hi) - at(ty.hi, tx.lo)) * tx.w;
                    t + (b - t) * ty.w
                };
                let mut best = 0;
                for c in 1..l.classes {
                    if value(c) > value(best) {
                        best = c;
                    }
                }
                out.push(best as u8);
            }
        }
        out
    }

    fn fast_bilinear(l: Logits<'_>, dw: usize, dh: usize) -> Vec<u8> {
        let mut best = vec![0.0; l.width * l.height];
        let mut labels = vec![0; l.width * l.height];
        argmax_into(l, &mut best, &mut labels);
        let mut dst = vec![0; dw * dh];
        Resampler::default().bilinear_argmax(l, &labels, &mut dst, dw, dh);
        dst
    }

    #[test]
    fn bilinear_argmax_at_same_size_is_plain_argmax() {
        let (c, h, w) = (3, 4, 6);
        let data: Vec<f32> = (0..c * h * w).map(|i| ((i * 31) % 17) as f32).collect();
        let l = logits_from(&data, c, h, w);
        assert_eq!(fast_bilinear(l, w, h), reference_argmax(l));
    }

    #[test]
    fn bilinear_argmax_equals_the_naive_reference() {
        // Smooth random fields (so regions exist) at several scale factors.
        for (seed, (c, h, w), (dw, dh)) in [
            (1u32, (4, 8, 16), (40, 19)),
            (2, (19, 16, 32), (64, 32)),
            (3, (5, 6, 10), (7, 5)),
            (4, (3, 9, 9), (100, 100)),
            // Shrinking a lot: some source columns own no output column.
            (5, (6, 16, 64), (9, 3)),
            // One source row and column: every tap is clamped.
            (6, (3, 1, 1), (5, 4)),
        ] {
            let data: Vec<f32> = (0..c * h * w)
                .map(|i| {
                    let (k, y, x) = (i / (h * w), (i / w) % h, i % w);
                    let f = (x as f32 * 0.7 + k as f32 * 1.3 + seed as f32).sin()
                        + (y as f32 * 0.5 - k as f32 * 0.9).cos();
                    f * 3.0
                })
                .collect();
            let l = logits_from(&data, c, h, w);
            assert_eq!(
                fast_bilinear(l, dw, dh),
                reference_bilinear(l, dw, dh),
                "case {seed}"
            );
        }
    }

    #[test]
    fn bilinear_argmax_moves_the_boundary_smoothly() {
        // Class 1 wins on the right half of a 2-pixel-wide map; upsampled x4 the
        // boundary lands in the middle, not on a 4-pixel block edge.
        let data = [1.0f32, 0.0, 0.0, 1.0];
        let l = logits_from(&data, 2, 1, 2);
        assert_eq!(fast_bilinear(l, 8, 1), [0, 0, 0, 0, 1, 1, 1, 1]);
    }
}
