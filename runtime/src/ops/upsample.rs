//! [`DepthwiseUpsample`]: DLA's learned up-samplers (depthwise ONNX
//! ConvTranspose, kernel `2s` and stride `s`) as a gather in vector code.
//!
//! tract 0.23 runs them as a generic deconvolution: a matrix product per
//! channel, then a scatter-add of every kernel tap, then a broadcast bias.
//! On DLA-tiny that was 18-22 ms of the frame for 0.5 % of its arithmetic.
//! Here each output pixel gathers the few input pixels that reach it: output
//! column `m * s + r` (phase `r`) reads input column `m + base(r) - t` with
//! the weight `w[ky][kx0(r) + t * s]`, so for a fixed phase and tap the work is
//! a contiguous scale-and-add over `m`, which compilers vectorise.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// One depthwise transposed 2-D convolution over `f32` (batch 1, NCHW).
#[derive(Debug, Clone)]
pub struct DepthwiseUpsample {
    /// Channels (in = out, one group each).
    pub channels: usize,
    /// Input height and width.
    pub in_size: (usize, usize),
    /// Output height and width.
    pub out_size: (usize, usize),
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Strides (y, x).
    pub stride: (usize, usize),
    /// Padding before (top, left); ONNX `pads` begin values.
    pub pad: (usize, usize),
    /// `[channel][ky][kx]` weights.
    weights: Arc<Vec<f32>>,
    /// Bias per channel.
    bias: Arc<Vec<f32>>,
    /// The name of the tract node it replaced.
    pub replaces: String,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: super::Arena,
}

impl PartialEq for DepthwiseUpsample {
    fn eq(&self, other: &Self) -> bool {
        (
            self.channels,
            self.in_size,
            self.out_size,
            self.kernel,
            self.stride,
            self.pad,
        ) == (
            other.channels,
            other.in_size,
            other.out_size,
            other.kernel,
            other.stride,
            other.pad,
        ) && Arc::ptr_eq(&self.weights, &other.weights)
            && Arc::ptr_eq(&self.bias, &other.bias)
    }
}
impl Eq for DepthwiseUpsample {}

impl DepthwiseUpsample {
    /// A depthwise up-sampler with `weights` `[channels][kh][kw]` and `bias`
    /// `[channels]`; `out_size` as ONNX computes it (with its adjustments).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channels: usize,
        in_size: (usize, usize),
        out_size: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
        weights: Vec<f32>,
        bias: Vec<f32>,
        replaces: &str,
    ) -> DepthwiseUpsample {
        assert_eq!(weights.len(), channels * kernel.0 * kernel.1);
        assert_eq!(bias.len(), channels);
        DepthwiseUpsample {
            channels,
            in_size,
            out_size,
            kernel,
            stride,
            pad,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
            replaces: replaces.to_string(),
            arena: super::Arena::default(),
        }
    }

    /// Zero columns on each side of a padded input row: more than any tap
    /// can reach past the edge.
    fn margin(&self) -> usize {
        let (sx, pl, ow, iw) = (self.stride.1, self.pad.1, self.out_size.1, self.in_size.1);
        let mut margin = self.kernel.1.div_ceil(sx) + 1;
        for r in 0..sx.min(ow) {
            let (count, base) = ((ow - r).div_ceil(sx), (r + pl) / sx);
            margin = margin.max((count + base).saturating_sub(iw) + 1);
        }
        margin
    }

    /// Runs on `input` (`[C, H, W]`) into `out` (`[C, OH, OW]`).
    pub fn run(&self, input: &[f32], out: &mut [f32]) {
        self.run_on(input, 0..self.out_size.0, out, true)
    }

    /// Output rows `rows` of every channel (`[C, rows.len(), OW]` in `out`),
    /// the same bits as those rows of [`DepthwiseUpsample::run`]: a band of
    /// the output for a consumer that never needs all of it at once.
    pub fn run_rows(&self, input: &[f32], rows: Range<usize>, out: &mut [f32]) {
        assert!(rows.end <= self.out_size.0, "rows past the output");
        self.run_on(input, rows, out, true)
    }

    /// Runs on `input` and hands every band of [`BAND_ROWS`] output rows of
    /// every channel to `store(channel, first_row, values)` (`values` holds
    /// whole rows), from the pool's threads: for a consumer that quantizes
    /// the output ([`super::QuantizeConcat`]) without the whole `f32` tensor
    /// in memory. The same bits as [`DepthwiseUpsample::run`].
    pub fn run_bands(&self, input: &[f32], store: impl Fn(usize, usize, &[f32]) + Sync) {
        let (ih, iw) = self.in_size;
        let (oh, ow) = self.out_size;
        assert_eq!(input.len(), self.channels * ih * iw);
        super::parallel(self.channels, |c| {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                // Out of the scratch while `channel` borrows the rest of it;
                // put back after, so it is allocated once per thread.
                let mut band = std::mem::take(&mut s.band);
                band.resize(BAND_ROWS * ow, 0.0);
                let input = &input[c * ih * iw..][..ih * iw];
                for first in (0..oh).step_by(BAND_ROWS) {
                    let rows = first..(first + BAND_ROWS).min(oh);
                    let values = &mut band[..rows.len() * ow];
                    self.channel(c, input, rows, values, &mut s, true);
                    store(c, first, values);
                }
                s.band = band;
            })
        });
    }

    /// [`DepthwiseUpsample::run_rows`], with `vector` false on the portable
    /// loop alone (the vector rows give the same bits; tests compare them).
    fn run_on(&self, input: &[f32], rows: Range<usize>, out: &mut [f32], vector: bool) {
        let (ih, iw) = self.in_size;
        let ow = self.out_size.1;
        let band = rows.len() * ow;
        assert_eq!(input.len(), self.channels * ih * iw);
        assert_eq!(out.len(), self.channels * band);
        let shared = super::SharedMut::new(out);
        let shared = &shared;
        let plane = |c: usize| {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                // SAFETY: each channel's output rows are written by one task.
                let out = unsafe { shared.part(c * band, band) };
                let input = &input[c * ih * iw..][..ih * iw];
                self.channel(c, input, rows.clone(), out, &mut s, vector);
            })
        };
        super::parallel(self.channels, plane);
    }

    /// Output rows `rows` of channel `c` into `out` (`rows.len()` rows).
    fn channel(
        &self,
        c: usize,
        input: &[f32],
        rows: Range<usize>,
        out: &mut [f32],
        scratch: &mut Scratch,
        vector: bool,
    ) {
        let (ih, iw) = self.in_size;
        let ow = self.out_size.1;
        let (kh, kw) = self.kernel;
        let (sy, sx) = self.stride;
        let (pt, pl) = self.pad;
        let margin = self.margin();
        let padded_w = iw + 2 * margin;
        // The input rows these output rows read (a superset), each with
        // `margin` zeros on each side; the other rows of `scratch.rows` are
        // never read.
        let first = (rows.start + pt).saturating_sub(kh - 1) / sy;
        let last = ((rows.end + pt).saturating_sub(1) / sy).min(ih.saturating_sub(1));
        if scratch.rows.len() < ih * padded_w {
            scratch.rows.resize(ih * padded_w, 0.0);
        }
        for y in first..=last {
            let row = &mut scratch.rows[y * padded_w..][..padded_w];
            row[..margin].fill(0.0);
            row[margin..margin + iw].copy_from_slice(&input[y * iw..][..iw]);
            row[margin + iw..].fill(0.0);
        }
        let weights = &self.weights[c * kh * kw..][..kh * kw];
        let bias = self.bias[c];
        let count_max = ow.div_ceil(sx);
        scratch.phase.resize(sx * count_max, 0.0);
        let rows_kernel = if vector && self.is_2s() {
            RowKernel::detect()
        } else {
            None
        };
        for (oy, out_row) in rows.zip(out.chunks_exact_mut(ow)) {
            let q = oy + pt;
            if let Some(kernel) = rows_kernel {
                self.row_2s(
                    kernel,
                    q,
                    &scratch.rows,
                    padded_w,
                    margin,
                    weights,
                    bias,
                    out_row,
                );
                continue;
            }
            // Phase r of the row: output columns r, r + s, r + 2s...
            for r in 0..sx.min(ow) {
                let count = (ow - r).div_ceil(sx);
                let phase = &mut scratch.phase[r * count_max..][..count];
                phase.fill(bias);
                let (kx0, base) = ((r + pl) % sx, (r + pl) / sx);
                for ky in (q % sy..kh).step_by(sy) {
                    if q < ky || (q - ky) / sy >= ih {
                        continue;
                    }
                    let iy = (q - ky) / sy;
                    let row = &scratch.rows[iy * padded_w..][..padded_w];
                    for (t, kx) in (kx0..kw).step_by(sx).enumerate() {
                        let w = weights[ky * kw + kx];
                        // Input column m + base - t, shifted by the margin.
                        let start = margin + base - t;
                        let src = &row[start..start + count];
                        for (p, &x) in phase.iter_mut().zip(src) {
                            *p += w * x;
                        }
                    }
                }
            }
            let phases = &scratch.phase[..sx * count_max];
            if ow.is_multiple_of(sx) && (sx == 2 || sx == 4) {
                let (p, count) = (phases, count_max);
                if sx == 2 {
                    interleave2(out_row, &p[..count], &p[count..2 * count]);
                } else {
                    let (p0, p1) = (&p[..count], &p[count..2 * count]);
                    interleave4(out_row, [p0, p1, &p[2 * count..3 * count], &p[3 * count..]]);
                }
            } else {
                for (ox, v) in out_row.iter_mut().enumerate() {
                    *v = phases[(ox % sx) * count_max + ox / sx];
                }
            }
        }
    }
}

impl DepthwiseUpsample {
    /// Whether this is DLA's up-sampler shape, kernel `2s`, stride `s`,
    /// padding `s / 2`, for `s` 2 or 4 with `ow % s == 0`: the one the
    /// vector [`RowKernel`]s compute.
    fn is_2s(&self) -> bool {
        let (sy, sx) = self.stride;
        (sx == 2 || sx == 4)
            && self.kernel == (2 * sy, 2 * sx)
            && self.pad == (sy / 2, sx / 2)
            && self.out_size.1.is_multiple_of(sx)
    }

    /// Output row `q - pad` of one channel on a vector row kernel (`is_2s`
    /// shapes): the same taps in the same order as the portable loop.
    #[allow(clippy::too_many_arguments)]
    fn row_2s(
        &self,
        kernel: RowKernel,
        q: usize,
        rows: &[f32],
        padded_w: usize,
        margin: usize,
        weights: &[f32],
        bias: f32,
        out_row: &mut [f32],
    ) {
        let (ih, _) = self.in_size;
        let (kh, kw) = self.kernel;
        let (sy, sx) = self.stride;
        let count = out_row.len() / sx;
        // The kernel rows that reach this output row, in the portable order,
        // each with its (t0, t1) weights per phase; see upsample_row_2s.
        let mut srcs = [std::ptr::null::<f32>(); 2];
        let mut w = [[[0f32; 2]; 4]; 2];
        let mut n = 0;
        for ky in (q % sy..kh).step_by(sy) {
            if q < ky || (q - ky) / sy >= ih {
                continue;
            }
            let row = &rows[(q - ky) / sy * padded_w..][..padded_w];
            // Columns m - 1 ..= m + 1 of every m < count, inside the margin.
            assert!(margin >= 1 && margin + count < padded_w);
            srcs[n] = row[margin..].as_ptr();
            for (r, pair) in w[n].iter_mut().enumerate().take(sx) {
                let kx0 = (r + sx / 2) % sx;
                *pair = [weights[ky * kw + kx0], weights[ky * kw + kx0 + sx]];
            }
            n += 1;
        }
        let whole = count / kernel.columns() * kernel.columns();
        // SAFETY: the kernel's CPU feature was detected; reads inside the
        // rows (asserted), `out_row` holds `sx * count` values.
        unsafe { kernel.run(sx, n, srcs, w, bias, whole, out_row.as_mut_ptr()) };
        for m in whole..count {
            for r in 0..sx {
                let mut v = bias;
                for (src, w) in srcs.iter().zip(&w).take(n) {
                    // SAFETY: m - 1 ..= m + 1 inside the row (asserted).
                    let (x0, x1) = unsafe {
                        if r < sx / 2 {
                            (*src.add(m), *src.add(m).sub(1))
                        } else {
                            (*src.add(m + 1), *src.add(m))
                        }
                    };
                    v += w[r][0] * x0;
                    v += w[r][1] * x1;
                }
                out_row[m * sx + r] = v;
            }
        }
        if n == 0 {
            out_row.fill(bias);
        }
    }
}

/// The vector code that computes whole rows of DLA's up-sampler shape
/// (`is_2s`), bit for bit as the portable loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKernel {
    /// [`super::kernels::avx2::upsample_row_2s`], 8 columns at a time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// [`super::kernels::neon::upsample_row_2s`], 4 columns at a time.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl RowKernel {
    /// The row kernel this CPU runs (within `DLA_ISA`), if any.
    fn detect() -> Option<RowKernel> {
        #[cfg(target_arch = "x86_64")]
        if super::kernels::Cpu::detect().avx2 {
            return Some(RowKernel::Avx2);
        }
        #[cfg(target_arch = "aarch64")]
        if super::kernels::Cpu::detect().neon {
            return Some(RowKernel::Neon);
        }
        None
    }

    /// Input columns per step; a row's remainder goes to the scalar tail.
    fn columns(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            RowKernel::Avx2 => 8,
            #[cfg(target_arch = "aarch64")]
            RowKernel::Neon => 4,
        }
    }

    /// `upsample_row_2s::<sx, n>` of this kernel over `count` columns.
    ///
    /// # Safety
    /// As the kernels' `upsample_row_2s`; `sx` is 2 or 4, `n` at most 2.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        self,
        sx: usize,
        n: usize,
        srcs: [*const f32; 2],
        w: [[[f32; 2]; 4]; 2],
        bias: f32,
        count: usize,
        out: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        use super::kernels::avx2::upsample_row_2s;
        #[cfg(target_arch = "aarch64")]
        use super::kernels::neon::upsample_row_2s;
        let [w0, w1] = w;
        let two = |w: [[f32; 2]; 4]| [w[0], w[1]];
        match (self, sx, n) {
            (_, _, 0) => {}
            (_, 2, 1) => upsample_row_2s::<2, 1>([srcs[0]], [two(w0)], bias, count, out),
            (_, 2, _) => upsample_row_2s::<2, 2>(srcs, [two(w0), two(w1)], bias, count, out),
            (_, _, 1) => upsample_row_2s::<4, 1>([srcs[0]], [w0], bias, count, out),
            _ => upsample_row_2s::<4, 2>(srcs, w, bias, count, out),
        }
    }
}

/// `out[2m + r] = p_r[m]`: zipped slices, so no bounds checks and the
/// compiler emits vector shuffles.
fn interleave2(out: &mut [f32], p0: &[f32], p1: &[f32]) {
    for ((o, &a), &b) in out.chunks_exact_mut(2).zip(p0).zip(p1) {
        o[0] = a;
        o[1] = b;
    }
}

/// `out[4m + r] = p[r][m]`.
fn interleave4(out: &mut [f32], p: [&[f32]; 4]) {
    let rows = p[0].iter().zip(p[1]).zip(p[2].iter().zip(p[3]));
    for (o, ((&a, &b), (&c, &d))) in out.chunks_exact_mut(4).zip(rows) {
        o.copy_from_slice(&[a, b, c, d]);
    }
}

/// Output rows per band of [`DepthwiseUpsample::run_bands`]: a few KiB of
/// `f32` per thread, in L1 when its consumer reads them.
pub const BAND_ROWS: usize = 8;

#[derive(Default)]
struct Scratch {
    rows: Vec<f32>,
    phase: Vec<f32>,
    /// One band of output rows of [`DepthwiseUpsample::run_bands`].
    band: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The op's side of [`super::tract_op`].
impl DepthwiseUpsample {
    fn info_lines(&self) -> Vec<String> {
        vec![
            format!(
                "{} channels {}x{} -> {}x{}, kernel {:?} stride {:?}",
                self.channels,
                self.in_size.0,
                self.in_size.1,
                self.out_size.0,
                self.out_size.1,
                self.kernel,
                self.stride
            ),
            format!("replaces {}", self.replaces),
        ]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape = [1, self.channels, self.out_size.0, self.out_size.1];
        super::eval_into(
            &self.arena,
            inputs,
            f32::datum_type(),
            &shape,
            |x: &[f32], y: &mut [f32]| self.run(x, y),
        )
    }

    fn output_fact(&self, _inputs: &[&TypedFact]) -> TypedFact {
        f32::fact([1, self.channels, self.out_size.0, self.out_size.1])
    }
}

tract_op!(DepthwiseUpsample);

#[cfg(test)]
mod tests {
    use super::*;

    /// ConvTranspose by its definition: every input pixel scatters its kernel.
    fn scatter(op: &DepthwiseUpsample, input: &[f32]) -> Vec<f32> {
        let (ih, iw) = op.in_size;
        let (oh, ow) = op.out_size;
        let (kh, kw) = op.kernel;
        let mut out = vec![0.0; op.channels * oh * ow];
        for c in 0..op.channels {
            for v in &mut out[c * oh * ow..][..oh * ow] {
                *v = op.bias[c];
            }
            for iy in 0..ih {
                for ix in 0..iw {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let oy = (iy * op.stride.0 + ky) as isize - op.pad.0 as isize;
                            let ox = (ix * op.stride.1 + kx) as isize - op.pad.1 as isize;
                            if oy >= 0 && ox >= 0 && (oy as usize) < oh && (ox as usize) < ow {
                                out[(c * oh + oy as usize) * ow + ox as usize] += op.weights
                                    [(c * kh + ky) * kw + kx]
                                    * input[(c * ih + iy) * iw + ix];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn gathers_what_conv_transpose_scatters() {
        // DLA's shapes (k = 2s, pad s/2) and odd ones (k = 3, stride 2, pad 0, adjusted size),
        // on widths below, at and past a vector row kernel's 4 or 8 columns.
        let shapes = [(4, 2, 1, 0), (8, 4, 2, 0), (3, 2, 0, 1), (2, 2, 0, 0)];
        for (&(k, s, pad, extra), iw) in shapes.iter().flat_map(|s| [7, 8, 21].map(|w| (s, w))) {
            let (channels, ih) = (3, 5);
            let oh = (ih - 1) * s + k - 2 * pad + extra;
            let ow = (iw - 1) * s + k - 2 * pad + extra;
            let weights: Vec<f32> = (0..channels * k * k)
                .map(|i| (i % 11) as f32 * 0.1 - 0.4)
                .collect();
            let op = DepthwiseUpsample::new(
                channels,
                (ih, iw),
                (oh, ow),
                (k, k),
                (s, s),
                (pad, pad),
                weights,
                vec![0.5, -1.0, 2.0],
                "test",
            );
            let input: Vec<f32> = (0..channels * ih * iw)
                .map(|i| (i % 13) as f32 - 6.0)
                .collect();
            let mut out = vec![f32::NAN; channels * oh * ow];
            op.run(&input, &mut out);
            let mut portable = vec![f32::NAN; channels * oh * ow];
            op.run_on(&input, 0..oh, &mut portable, false);
            // Bit for bit: int8 models must label the same on every CPU.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&out),
                bits(&portable),
                "k {k} s {s} pad {pad} width {iw}"
            );
            // Bands of rows (a first row, a middle, the last) are those rows.
            for rows in [0..1, 2..oh - 1, oh - 1..oh] {
                let mut band = vec![f32::NAN; channels * rows.len() * ow];
                op.run_rows(&input, rows.clone(), &mut band);
                let plane = |c: usize| &out[(c * oh + rows.start) * ow..(c * oh + rows.end) * ow];
                let whole: Vec<f32> = (0..channels).flat_map(|c| plane(c).to_vec()).collect();
                assert_eq!(bits(&band), bits(&whole), "k {k} s {s} rows {rows:?}");
            }
            let want = scatter(&op, &input);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "k {k} s {s} pad {pad}: [{i}] {a} vs {b}"
                );
            }
        }
    }
}
