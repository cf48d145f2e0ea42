//! [`F32Conv`]: a tract operator that runs one float 2-D convolution (with
//! its bias and, when the model has one right after, its ReLU) in one pass
//! over the output, on the micro-kernel of [`super::gemm_f32`].
//!
//! Why: tract 0.23 runs the convolutions of DLA-tiny's first three layers
//! (7x7 over 3 channels, then 3x3 over 16, at full resolution) with a
//! direct loop at about 8 GMAC/s, over a third of the fp32 model's time, and
//! the others as an im2col matrix it writes and reads back, with the padding
//! as a separate copy and the ReLU as a separate pass. Ours copies the input
//! once into a zero-padded image and multiplies straight out of it: the rows
//! the micro-kernel reads are runs of that image, so there is no im2col
//! matrix, not even a packed panel. For a horizontal stride `s` the copy
//! splits every row into `s` phases (columns `s i + q` go to phase `q`), so
//! the pixels a stride-2 output row reads are contiguous too. The padded
//! image is per thread and reused, and only its borders are cleared:
//! steady-state frames allocate nothing here but the output tensor tract
//! asks for.

use std::cell::RefCell;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::gemm_f32::{Finish, PackedF32, MR, NR};
use super::kernels::F32Kernel;
use super::layout::Layout;
use super::Geometry;
use super::SharedMut;

/// What an [`F32Conv`] computes with, shared by its clones.
#[derive(Debug)]
struct Prepared {
    /// The micro-kernel of this CPU.
    kernel: F32Kernel,
    weights: PackedF32,
    bias: Vec<f32>,
    /// Offset in the padded image of reduction index `p`, relative to
    /// output pixel `(oy, ox0)`'s start `oy * stride_y * row + ox0`.
    offsets: Vec<usize>,
    /// Layout of the padded image.
    layout: Layout,
    /// One past the last element any micro-kernel read touches: the largest
    /// offset plus the last panel's start plus NR, which is the last input
    /// pixel under the last output pixel plus at most NR (a row's phase
    /// holds at least `ow` pixels).
    reach: usize,
}

/// One float convolution on our micro-kernel (see the module doc).
#[derive(Debug, Clone)]
pub struct F32Conv {
    /// The convolution's shape.
    pub geometry: Geometry,
    /// Whether a ReLU is applied to the output (fused from the next node).
    pub relu: bool,
    /// The name of the tract node it replaced (for profiles).
    pub replaces: String,
    prepared: Arc<Prepared>,
    output: TypedFact,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: super::Arena,
}

impl PartialEq for F32Conv {
    fn eq(&self, other: &Self) -> bool {
        self.geometry == other.geometry
            && self.relu == other.relu
            && Arc::ptr_eq(&self.prepared, &other.prepared)
    }
}
impl Eq for F32Conv {}

impl F32Conv {
    /// Packs `weights` (`[out][in][kh][kw]` row-major) and `bias` (one per
    /// output channel) of a convolution shaped `geometry`; `output` is the
    /// fact of the `f32` output it produces.
    pub fn new(
        geometry: Geometry,
        weights: &[f32],
        bias: &[f32],
        replaces: &str,
        output: TypedFact,
    ) -> F32Conv {
        let g = geometry;
        let k = g.k();
        debug_assert_eq!(weights.len(), k * g.out_channels);
        debug_assert_eq!(bias.len(), g.out_channels);
        let layout = Layout::new(&g, K_CHUNK);
        let offsets: Vec<usize> = (0..k).map(|i| layout.offset(&g, i)).collect();
        let (oh, ow) = g.out_size;
        let reach = offsets.iter().max().copied().unwrap_or(0)
            + (oh - 1) * g.stride.0 * layout.row
            + ow.div_ceil(NR) * NR;
        F32Conv {
            geometry: g,
            relu: false,
            replaces: replaces.to_string(),
            prepared: Arc::new(Prepared {
                kernel: F32Kernel::detect(),
                weights: PackedF32::new(weights, g.out_channels, k),
                bias: bias.to_vec(),
                offsets,
                layout,
                reach,
            }),
            output,
            arena: super::Arena::default(),
        }
    }

    /// The micro-kernel this convolution runs on.
    pub fn kernel(&self) -> F32Kernel {
        self.prepared.kernel
    }

    /// This convolution on another kernel (to compare kernels), or `None`
    /// when this CPU does not run it.
    pub fn on_kernel(&self, kernel: F32Kernel) -> Option<F32Conv> {
        if !kernel.runs_on(super::kernels::Cpu::detect()) {
            return None;
        }
        let p = &*self.prepared;
        Some(F32Conv {
            prepared: Arc::new(Prepared {
                kernel,
                weights: p.weights.clone(),
                bias: p.bias.clone(),
                offsets: p.offsets.clone(),
                layout: p.layout,
                reach: p.reach,
            }),
            ..self.clone()
        })
    }

    /// The same convolution followed by a ReLU.
    pub fn with_relu(&self) -> F32Conv {
        F32Conv {
            relu: true,
            ..self.clone()
        }
    }

    /// Runs the convolution on one `[1, C, H, W]` (or `[C, H, W]`) input
    /// into `out` (`[C_out, OH, OW]` row-major).
    ///
    /// # Panics
    /// When `input` or `out` do not have the geometry's sizes.
    pub fn run(&self, input: &[f32], out: &mut [f32]) {
        let g = &self.geometry;
        let (oh, ow) = g.out_size;
        assert_eq!(input.len(), g.in_channels * g.in_size.0 * g.in_size.1);
        assert_eq!(out.len(), g.out_channels * oh * ow);
        let (layout, reach) = (&self.prepared.layout, self.prepared.reach);
        // Without padding or horizontal stride, the input may already be
        // laid out as the padded image: read it in place when the layout
        // needs no slack and the last panel does not run past its end.
        if layout.is_input(g) && reach <= input.len() {
            self.rows(input, out);
            return;
        }
        self.arena.padded_f32(|padded| {
            self.pad(input, padded);
            // The buffer has NR of slack past the image.
            assert!(reach <= padded.len(), "padded image too short");
            self.rows(padded, out);
        });
    }

    /// Computes every output row from the padded image `x`.
    fn rows(&self, x: &[f32], out: &mut [f32]) {
        let (oh, _) = self.geometry.out_size;
        let out = SharedMut::new(out);
        let out = &out;
        let tasks = (super::threads() * 4).min(oh);
        super::parallel(tasks, |t| {
            ACC.with(|acc| {
                let mut acc = acc.borrow_mut();
                for oy in t * oh / tasks..(t + 1) * oh / tasks {
                    // SAFETY: each row goes to one task; every read ends
                    // before `reach <= x.len()` (checked by `run`).
                    unsafe { self.row(x, oy, &mut acc, out) };
                }
            })
        });
    }

    /// Copies `input` into the zero-padded image (in phases for strides
    /// above 1), clearing only what the input does not cover.
    fn pad(&self, input: &[f32], padded: &mut Vec<f32>) {
        let g = &self.geometry;
        let (h, w) = g.in_size;
        let (top, left, _, _) = g.padding;
        let layout = self.prepared.layout;
        let len = layout.len(g.in_channels);
        if padded.len() < len {
            padded.resize(len, 0.0);
        }
        padded[len - NR..len].fill(0.0);
        let plane = layout.plane;
        let shared = SharedMut::new(&mut padded[..]);
        let shared = &shared;
        let tasks = super::threads().min(g.in_channels);
        super::parallel(tasks, |t| {
            for c in t * g.in_channels / tasks..(t + 1) * g.in_channels / tasks {
                // SAFETY: channel planes are disjoint and inside `padded`.
                let dst = unsafe { shared.part(c * plane, plane) };
                dst[..top * layout.row].fill(0.0);
                dst[(top + h) * layout.row..].fill(0.0);
                for y in 0..h {
                    let src = &input[(c * h + y) * w..][..w];
                    let row = &mut dst[(y + top) * layout.row..][..layout.row];
                    if layout.phases == 1 {
                        row[..left].fill(0.0);
                        row[left..left + w].copy_from_slice(src);
                        row[left + w..].fill(0.0);
                    } else if layout.phases == 2 {
                        row.fill(0.0);
                        // Even input columns go to one phase, odd to the
                        // other: two contiguous runs, which compilers write
                        // with vector shuffles.
                        let (even, odd) = (layout.column(left), layout.column(left + 1));
                        let (lo, hi) = row.split_at_mut(even.max(odd));
                        let (to_even, to_odd) = if even < odd {
                            (&mut lo[even..], &mut hi[..])
                        } else {
                            (&mut hi[..], &mut lo[odd..])
                        };
                        let done = deinterleave(src, to_even, to_odd);
                        let (src, to_even, to_odd) =
                            (&src[2 * done..], &mut to_even[done..], &mut to_odd[done..]);
                        for ((pair, e), o) in src.chunks(2).zip(to_even).zip(to_odd.iter_mut()) {
                            *e = pair[0];
                            if let Some(&v) = pair.get(1) {
                                *o = v;
                            }
                        }
                        if w % 2 == 1 {
                            row[layout.column(left + w - 1)] = src[w - 1];
                        }
                    } else {
                        row.fill(0.0);
                        for (x, &v) in src.iter().enumerate() {
                            row[layout.column(x + left)] = v;
                        }
                    }
                }
            }
        });
    }

    /// Computes output row `oy` for every output channel.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile, and every
    /// pixel row the micro-kernel reads must be inside `padded` (see `run`).
    unsafe fn row(
        &self,
        padded: &[f32],
        oy: usize,
        acc: &mut Vec<[[f32; NR]; MR]>,
        out: &SharedMut<f32>,
    ) {
        let g = &self.geometry;
        let p = &*self.prepared;
        let (oh, ow) = g.out_size;
        let k = p.offsets.len();
        let blocks = p.weights.blocks();
        let panels = p.kernel.panels();
        acc.resize(blocks * panels, [[0.0; NR]; MR]);
        for ox0 in (0..ow).step_by(panels * NR) {
            let n = (ow - ox0).div_ceil(NR).min(panels);
            let x = &padded[oy * g.stride.0 * p.layout.row + ox0..];
            // The reduction in chunks whose pixel rows stay in L1 while every
            // block of output channels reads them; the last chunk finishes
            // the tile into the output.
            let width = (ow - ox0).min(n * NR);
            for k0 in (0..k).step_by(K_CHUNK) {
                let k1 = k.min(k0 + K_CHUNK);
                for (b, acc) in acc.chunks_exact_mut(panels).enumerate() {
                    let rows = g.out_channels - b * MR;
                    let finish = (k1 == k).then(|| Finish {
                        out: out.ptr(
                            (b * MR * oh + oy) * ow + ox0,
                            (rows.min(MR) - 1) * oh * ow + width,
                        ),
                        row_stride: oh * ow,
                        bias: p.bias[b * MR..].as_ptr(),
                        rows: rows.min(MR),
                        width,
                        relu: self.relu,
                    });
                    super::gemm_f32::micro_kernel_panels_unchecked(
                        p.kernel,
                        rows,
                        &p.weights.block(b)[k0 * MR..k1 * MR],
                        x,
                        &p.offsets[k0..k1],
                        &mut acc[..n],
                        k0 > 0,
                        finish.as_ref(),
                    );
                }
            }
        }
    }
}

/// Writes the first pairs of `src` to `even` and `odd` with a vector
/// kernel where the CPU has one; returns how many pairs it wrote.
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::Cpu::detect().avx2 {
        // SAFETY: AVX2 present.
        return unsafe { super::kernels::avx2::deinterleave(src, even, odd) };
    }
    let _ = (src, even, odd);
    0
}

thread_local! {
    /// One micro-kernel result per block of output channels.
    static ACC: RefCell<Vec<[[f32; NR]; MR]>> = const { RefCell::new(Vec::new()) };
}

/// Reduction indices per chunk: 256 pixel rows of 16 `f32` are 16 KiB, half
/// of L1, read once per block of 6 output channels. The 4-panel AVX-512
/// tile reads 64 KiB of rows per chunk but, as its neighbouring taps
/// overlap, far fewer distinct bytes: on a Xeon (Sapphire Rapids class)
/// chunks of 32, 64, 128, 512 and 2048 ran its convolutions no faster
/// than 256 (criterion, `benches/ops.rs`).
const K_CHUNK: usize = 256;

/// The op's side of [`super::tract_op`].
impl F32Conv {
    fn info_lines(&self) -> Vec<String> {
        let kernel = self.prepared.kernel;
        let relu = if self.relu { ", ReLU" } else { "" };
        vec![
            format!("{}{relu}; {kernel} kernel", self.geometry.describe()),
            format!("replaces {}", self.replaces),
        ]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        super::eval_filled(
            "F32Conv",
            &self.arena,
            &self.output,
            inputs,
            |x: &[f32], y: &mut [f32]| self.run(x, y),
        )
    }

    fn output_fact(&self, _inputs: &[&TypedFact]) -> TypedFact {
        self.output.clone()
    }
}

tract_op!(F32Conv);

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    /// ONNX Conv by its definition, one output value at a time (in f64).
    fn reference(g: &Geometry, w: &[f32], bias: &[f32], input: &[f32], relu: bool) -> Vec<f32> {
        let (h, wd) = g.in_size;
        let (oh, ow) = g.out_size;
        let (kh, kw) = g.kernel;
        let (t, l, _, _) = g.padding;
        let mut out = vec![0f32; g.out_channels * oh * ow];
        for co in 0..g.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = f64::from(bias[co]);
                    for ci in 0..g.in_channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy =
                                    (oy * g.stride.0 + ky * g.dilation.0) as isize - t as isize;
                                let ix =
                                    (ox * g.stride.1 + kx * g.dilation.1) as isize - l as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                acc += f64::from(input[(ci * h + iy as usize) * wd + ix as usize])
                                    * f64::from(w[((co * g.in_channels + ci) * kh + ky) * kw + kx]);
                            }
                        }
                    }
                    let v = acc as f32;
                    out[(co * oh + oy) * ow + ox] = if relu { v.max(0.0) } else { v };
                }
            }
        }
        out
    }

    fn check(g: Geometry, threads: usize, relu: bool) {
        let mut seed = 0x2545f491u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 2001) as f32 / 1000.0 - 1.0
        };
        let w: Vec<f32> = (0..g.out_channels * g.k()).map(|_| next()).collect();
        let bias: Vec<f32> = (0..g.out_channels).map(|_| next()).collect();
        let input: Vec<f32> = (0..g.in_channels * g.in_size.0 * g.in_size.1)
            .map(|_| next())
            .collect();
        let mut op = F32Conv::new(
            g,
            &w,
            &bias,
            "test",
            f32::fact([1, g.out_channels, g.out_size.0, g.out_size.1]),
        );
        if relu {
            op = op.with_relu();
        }
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let want = reference(&g, &w, &bias, &input, relu);
        let mut ran = Vec::new();
        for kernel in F32Kernel::ALL {
            let Some(op) = op.on_kernel(kernel) else {
                continue;
            };
            let mut out = vec![f32::NAN; want.len()];
            multithread_tract_scope(executor.clone(), || op.run(&input, &mut out));
            let worst = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(
                    0f32,
                    |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
                );
            assert!(worst < 1e-4, "{kernel}, {g:?}: worst difference {worst}");
            ran.push(kernel);
        }
        // Every CPU runs the reference and its own fastest kernel.
        assert!(ran.contains(&F32Kernel::Portable) && ran.contains(&op.kernel()));
    }

    #[test]
    fn matches_onnx_conv_on_every_path() {
        // 3x3 stride 1, stride 2 (phases), 1x1 without padding (in place), 7x7 with odd k, widths that are not a multiple of 16,
        // channel counts that are not a multiple of 6, dilation, 2 threads.
        check(Geometry::square(5, 6, (9, 32), 3, 1, 1), 1, false);
        check(Geometry::square(4, 8, (10, 64), 3, 2, 1), 1, true);
        check(Geometry::square(16, 19, (6, 16), 1, 1, 0), 1, false);
        check(Geometry::square(3, 4, (12, 21), 7, 1, 3), 1, true);
        check(Geometry::square(3, 5, (7, 13), 3, 2, 0), 2, false);
        check(Geometry::square(8, 13, (11, 40), 3, 1, 1), 2, true);
        // 83 pixels: a full 64-pixel tile of panels, then a partial one.
        check(Geometry::square(6, 9, (5, 83), 3, 1, 1), 2, true);
        // 1x1 read in place: 80 pixels (a tile of panels and one more), and
        // 130 channels.
        check(Geometry::square(5, 7, (3, 80), 1, 1, 0), 1, false);
        check(Geometry::square(130, 7, (2, 32), 1, 1, 0), 2, true);
        // A reduction of 360 (two chunks, the last one finishing the tile).
        check(Geometry::square(40, 7, (5, 20), 3, 1, 1), 1, true);
        let mut dilated = Geometry::square(4, 7, (12, 20), 3, 1, 2);
        dilated.dilation = (2, 2);
        dilated.out_size = (12, 20);
        check(dilated, 1, false);
    }
}
