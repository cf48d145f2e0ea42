//! [`Int8Conv`]: a tract operator that runs one quantized 2-D convolution
//! (ONNX QLinearConv: `u8` activations, `s8` weights, `i32` bias, per-channel
//! scales) as one pass: pack a panel of output pixels, multiply it with every
//! output channel in the micro-kernel, requantise in registers, store `u8`.
//!
//! Two kernels: `u8 x s8` quads (`vpmaddubsw`, AVX2) when every pair of
//! neighbouring weights keeps `255 * (|w0| + |w1|) <= 32767` (7-bit weights
//! always do), else exact `i16` pairs (`vpmaddwd`, or portable Rust).
//!
//! Nothing the size of an im2col matrix is ever materialised: per frame the
//! input is copied once into a padded image (`i16` with the zero point
//! subtracted, or `u8` bordered by the zero point, which the `u8` kernel's
//! bias already accounts for), and each panel of [`NR`] pixels is
//! gathered from it into a few KiB that stay in L1/L2 while all output
//! channels consume it. Scratch buffers are per thread and reused, so
//! steady-state frames allocate nothing here but the output tensor tract asks
//! for.

use std::cell::RefCell;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::gemm::{micro_kernel, pair_word, PackedQuads, PackedWeights, Requant, MR, NR};
use super::SharedMut;

/// Shape of one convolution, all in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub in_size: (usize, usize),
    /// Output channels.
    pub out_channels: usize,
    /// Output height and width.
    pub out_size: (usize, usize),
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Strides (y, x).
    pub stride: (usize, usize),
    /// Dilations (y, x).
    pub dilation: (usize, usize),
    /// Zero padding: top, left, bottom, right.
    pub padding: (usize, usize, usize, usize),
}

impl Geometry {
    /// A square `k` x `k` convolution with equal strides and padding on every
    /// side, no dilation: the shapes DLA uses (and tests and benches build).
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        in_size: (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Geometry {
        let out = |n: usize| (n + 2 * pad - k) / stride + 1;
        Geometry {
            in_channels,
            in_size,
            out_channels,
            out_size: (out(in_size.0), out(in_size.1)),
            kernel: (k, k),
            stride: (stride, stride),
            dilation: (1, 1),
            padding: (pad, pad, pad, pad),
        }
    }

    /// Height and width of the padded input image.
    pub(crate) fn padded(&self) -> (usize, usize) {
        let (t, l, b, r) = self.padding;
        (self.in_size.0 + t + b, self.in_size.1 + l + r)
    }

    /// Length of one reduction (one output value's inputs).
    pub fn k(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1
    }

    /// Multiply-accumulates per frame.
    pub fn macs(&self) -> usize {
        self.k() * self.out_channels * self.out_size.0 * self.out_size.1
    }

    /// One line for profiles: window, stride, channels, output size, MMAC.
    pub fn describe(&self) -> String {
        format!(
            "{}x{} stride {:?} {} -> {} channels, {}x{} out, {:.1} MMAC",
            self.kernel.0,
            self.kernel.1,
            self.stride,
            self.in_channels,
            self.out_channels,
            self.out_size.0,
            self.out_size.1,
            self.macs() as f64 / 1e6
        )
    }
}

/// What an [`Int8Conv`] computes with, shared by its clones.
#[derive(Debug)]
struct Prepared {
    weights: PackedWeights,
    requant: Requant,
    /// Input zero point, subtracted while padding.
    x_zero_point: i32,
    /// Offset in the padded image of reduction index k (relative to the
    /// panel's first pixel), one per pair half: `2 * pairs` entries.
    offsets: Vec<usize>,
    /// The faster `u8 x s8` form, when the weights allow it (7-bit weights,
    /// zero weight zero points) and the CPU has AVX2: weights in quads, the
    /// input zero point folded into the bias, offsets for `4 * quads`.
    quads: Option<(PackedQuads, Requant, Vec<usize>)>,
}

/// One quantized convolution on our integer kernel (see the module doc).
#[derive(Debug, Clone)]
pub struct Int8Conv {
    /// The convolution's shape.
    pub geometry: Geometry,
    /// The name of the tract node it replaced (for profiles).
    pub replaces: String,
    prepared: Arc<Prepared>,
    output: TypedFact,
}

impl PartialEq for Int8Conv {
    fn eq(&self, other: &Self) -> bool {
        self.geometry == other.geometry && Arc::ptr_eq(&self.prepared, &other.prepared)
    }
}
impl Eq for Int8Conv {}

/// Everything [`Int8Conv::new`] needs from a QLinearConv.
#[derive(Debug)]
pub struct QuantizedConv<'a> {
    /// The convolution's shape.
    pub geometry: Geometry,
    /// Weights, `[out][in][kh][kw]` row-major.
    pub weights: &'a [i8],
    /// Weight zero point per output channel (symmetric weights: zeros).
    pub w_zero_point: &'a [i32],
    /// Weight scale per output channel.
    pub w_scale: &'a [f32],
    /// Bias per output channel, in `x_scale * w_scale` units.
    pub bias: &'a [i32],
    /// Input zero point and scale.
    pub x: (i32, f32),
    /// Output zero point and scale.
    pub y: (i32, f32),
}

impl Int8Conv {
    /// Packs the weights and requantisation of `conv`; `output` is the fact of
    /// the `u8` output it produces.
    pub fn new(conv: &QuantizedConv, replaces: &str, output: TypedFact) -> Int8Conv {
        let g = conv.geometry;
        let k = g.k();
        // Weights minus their zero point, exactly representable in i16; the
        // kernel then needs no zero-point corrections at all.
        let centred: Vec<i16> = conv
            .weights
            .chunks(k)
            .zip(conv.w_zero_point)
            .flat_map(|(row, &z)| row.iter().map(move |&w| (i32::from(w) - z) as i16))
            .collect();
        let weights = PackedWeights::from_i16(&centred, g.out_channels, k);
        let requant = Requant {
            bias: conv.bias.to_vec(),
            scale: conv
                .w_scale
                .iter()
                .map(|&ws| conv.x.1 * ws / conv.y.1)
                .collect(),
            zero_point: conv.y.0,
        };
        let (hp, wp) = g.padded();
        let (kh, kw) = g.kernel;
        let mut offsets: Vec<usize> = (0..k)
            .map(|i| {
                let (c, rest) = (i / (kh * kw), i % (kh * kw));
                let (ky, kx) = (rest / kw, rest % kw);
                c * hp * wp + ky * g.dilation.0 * wp + kx * g.dilation.1
            })
            .collect();
        // An odd k's last pair reads any valid value: its weight is zero.
        if k % 2 == 1 {
            offsets.push(offsets[k - 1]);
        }
        let quads = (super::gemm::avx2() && conv.w_zero_point.iter().all(|&z| z == 0))
            .then(|| PackedQuads::new(conv.weights, g.out_channels, k))
            .flatten()
            .map(|packed| {
                // sum (x - zx) w = sum x w - zx sum w: the zero point moves
                // into the bias, and padding holds zx so it cancels there.
                let bias = conv
                    .weights
                    .chunks(k)
                    .zip(conv.bias)
                    .map(|(row, &b)| b - conv.x.0 * row.iter().map(|&w| i32::from(w)).sum::<i32>())
                    .collect();
                let mut quad_offsets = offsets[..k].to_vec();
                quad_offsets.resize(4 * packed.quads, offsets[k - 1]);
                (
                    packed,
                    Requant {
                        bias,
                        ..requant.clone()
                    },
                    quad_offsets,
                )
            });
        Int8Conv {
            geometry: g,
            replaces: replaces.to_string(),
            prepared: Arc::new(Prepared {
                weights,
                requant,
                x_zero_point: conv.x.0,
                offsets,
                quads,
            }),
            output,
        }
    }

    /// Runs the convolution on one `[1, C, H, W]` (or `[C, H, W]`) `u8` input
    /// into `out` (`[C_out, OH, OW]` row-major).
    pub fn run(&self, input: &[u8], out: &mut [u8]) {
        let g = &self.geometry;
        let (oh, ow) = g.out_size;
        assert_eq!(input.len(), g.in_channels * g.in_size.0 * g.in_size.1);
        assert_eq!(out.len(), g.out_channels * oh * ow);
        if let Some(quads) = &self.prepared.quads {
            return self.run_u8(quads, input, out);
        }
        PADDED.with(|padded| {
            let mut padded = padded.borrow_mut();
            self.pad(input, &mut padded);
            let padded = &padded[..];
            // SAFETY: `by_rows` gives each row to one task.
            by_rows(oh, out, |oy, scratch, out| unsafe {
                self.row(padded, oy, scratch, out)
            });
        });
    }

    /// [`Int8Conv::run`] on the `u8 x s8` kernel: a `u8` padded image (borders
    /// hold the input zero point) and quad panels.
    fn run_u8(&self, quads: &(PackedQuads, Requant, Vec<usize>), input: &[u8], out: &mut [u8]) {
        let g = &self.geometry;
        let (oh, _) = g.out_size;
        PADDED8.with(|padded| {
            let mut padded = padded.borrow_mut();
            let (h, w) = g.in_size;
            let (hp, wp) = g.padded();
            let (top, left, _, _) = g.padding;
            padded.clear();
            let zero_point = self.prepared.x_zero_point.clamp(0, 255) as u8;
            padded.resize(
                g.in_channels * hp * wp + 4 * NR * g.stride.1.max(1),
                zero_point,
            );
            for c in 0..g.in_channels {
                for y in 0..h {
                    let src = &input[(c * h + y) * w..][..w];
                    padded[(c * hp + y + top) * wp + left..][..w].copy_from_slice(src);
                }
            }
            let padded = &padded[..];
            // SAFETY: `by_rows` gives each row to one task.
            by_rows(oh, out, |oy, scratch, out| unsafe {
                self.row_u8(quads, padded, oy, scratch, out)
            });
        });
    }

    /// [`Int8Conv::row`] on the `u8 x s8` kernel.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile; AVX2 present
    /// (quads exist only then).
    #[cfg(target_arch = "x86_64")]
    unsafe fn row_u8(
        &self,
        (weights, requant, offsets): &(PackedQuads, Requant, Vec<usize>),
        padded: &[u8],
        oy: usize,
        scratch: &mut Scratch,
        out: &SharedMut<u8>,
    ) {
        let g = &self.geometry;
        let (_, ow) = g.out_size;
        let (_, wp) = g.padded();
        let (sy, sx) = g.stride;
        let n = weights.quads;
        scratch.panel.resize(n * NR, 0);
        let mut acc = [[0i32; NR]; MR];
        for ox0 in (0..ow).step_by(NR) {
            let width = NR.min(ow - ox0);
            let base = oy * sy * wp + ox0 * sx;
            if width == NR && (sx == 1 || sx == 2) {
                pack_quads_avx2(padded, offsets, base, sx, &mut scratch.panel);
            } else {
                for (quad, words) in offsets
                    .chunks_exact(4)
                    .zip(scratch.panel.chunks_exact_mut(NR))
                {
                    for (j, word) in words.iter_mut().enumerate() {
                        let at = |t: usize| {
                            if j < width {
                                padded[quad[t] + base + j * sx]
                            } else {
                                0
                            }
                        };
                        *word = i32::from_le_bytes([at(0), at(1), at(2), at(3)]);
                    }
                }
            }
            for b in 0..g.out_channels.div_ceil(MR) {
                super::gemm::micro_kernel_u8(weights.block(b), &scratch.panel, n, &mut acc, false);
                self.store(requant, b, &acc, oy, ox0, width, out);
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn row_u8(
        &self,
        _: &(PackedQuads, Requant, Vec<usize>),
        _: &[u8],
        _: usize,
        _: &mut Scratch,
        _: &SharedMut<u8>,
    ) {
        unreachable!("the u8 x s8 form is only prepared on x86_64 with AVX2")
    }

    /// Copies `input` minus its zero point into the zero-padded `i16` image.
    fn pad(&self, input: &[u8], padded: &mut Vec<i16>) {
        let g = &self.geometry;
        let (h, w) = g.in_size;
        let (hp, wp) = g.padded();
        let (top, left, _, _) = g.padding;
        // Slack past the end: the stride-2 gather loads one vector past its
        // last needed element.
        let len = g.in_channels * hp * wp + 2 * NR * g.stride.1.max(1);
        padded.clear();
        padded.resize(len, 0);
        let z = self.prepared.x_zero_point;
        let plane = hp * wp;
        let shared = SharedMut::new(&mut padded[..]);
        let shared = &shared;
        let tasks = super::threads().min(g.in_channels);
        super::parallel(tasks, |t| {
            for c in t * g.in_channels / tasks..(t + 1) * g.in_channels / tasks {
                // SAFETY: channel planes are disjoint and inside `padded`.
                let dst = unsafe { shared.part(c * plane, plane) };
                for y in 0..h {
                    let src = &input[(c * h + y) * w..][..w];
                    let row = &mut dst[(y + top) * wp + left..][..w];
                    for (d, &s) in row.iter_mut().zip(src) {
                        *d = (i32::from(s) - z) as i16;
                    }
                }
            }
        });
    }

    /// Computes output row `oy` for every output channel.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile.
    unsafe fn row(&self, padded: &[i16], oy: usize, scratch: &mut Scratch, out: &SharedMut<u8>) {
        let g = &self.geometry;
        let p = &*self.prepared;
        let (_, ow) = g.out_size;
        let pairs = p.weights.pairs;
        let blocks = p.weights.blocks();
        scratch.panel.resize(pairs * NR, 0);
        scratch.acc.resize(blocks, [[0; NR]; MR]);
        for ox0 in (0..ow).step_by(NR) {
            let width = NR.min(ow - ox0);
            self.pack_panel(padded, oy, ox0, width, &mut scratch.panel);
            // The reduction in chunks whose panel part stays in L1 while every
            // block of output channels consumes it.
            for k0 in (0..pairs).step_by(K_CHUNK) {
                let kn = K_CHUNK.min(pairs - k0);
                let b_part = &scratch.panel[k0 * NR..(k0 + kn) * NR];
                for (b, acc) in scratch.acc.iter_mut().enumerate() {
                    let a_part = &p.weights.block(b)[k0 * MR..(k0 + kn) * MR];
                    micro_kernel(a_part, b_part, kn, acc, k0 > 0);
                }
            }
            for (b, acc) in scratch.acc.iter().enumerate() {
                self.store(&p.requant, b, acc, oy, ox0, width, out);
            }
        }
    }

    /// Requantises block `b`'s micro-kernel result and stores its `width`
    /// valid pixels at `(oy, ox0)` of every channel it holds.
    ///
    /// # Safety
    /// No other thread may write row `oy` of `out` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        &self,
        requant: &Requant,
        b: usize,
        acc: &[[i32; NR]; MR],
        oy: usize,
        ox0: usize,
        width: usize,
        out: &SharedMut<u8>,
    ) {
        let g = &self.geometry;
        let (oh, ow) = g.out_size;
        for (r, acc_row) in acc.iter().enumerate() {
            let c = b * MR + r;
            if c >= g.out_channels {
                break;
            }
            let at = (c * oh + oy) * ow + ox0;
            if width == NR {
                requant.row(c, acc_row, out.part(at, NR));
            } else {
                let mut tail = [0u8; NR];
                requant.row(c, acc_row, &mut tail);
                out.part(at, width).copy_from_slice(&tail[..width]);
            }
        }
    }

    /// Gathers the im2col columns of pixels `ox0..ox0 + width` of row `oy`
    /// into pair words (columns past `width` are zero).
    fn pack_panel(&self, padded: &[i16], oy: usize, ox0: usize, width: usize, panel: &mut [i32]) {
        let g = &self.geometry;
        let (_, wp) = g.padded();
        let (sy, sx) = g.stride;
        let base = oy * sy * wp + ox0 * sx;
        let offsets = &self.prepared.offsets;
        #[cfg(target_arch = "x86_64")]
        {
            if super::gemm::avx2() && width == NR && (sx == 1 || sx == 2) {
                // SAFETY: AVX2 present; every read stays inside `padded` (the
                // last needed element of each gather is inside the image and
                // the buffer has 2*NR*sx elements of slack past its end).
                unsafe {
                    if sx == 1 {
                        pack_stride1_avx2(padded, offsets, base, panel)
                    } else {
                        pack_stride2_avx2(padded, offsets, base, panel)
                    }
                };
                return;
            }
        }
        for (pair, words) in offsets.chunks_exact(2).zip(panel.chunks_exact_mut(NR)) {
            let (lo, hi) = (pair[0] + base, pair[1] + base);
            for (j, word) in words.iter_mut().enumerate() {
                *word = if j < width {
                    pair_word(padded[lo + j * sx], padded[hi + j * sx])
                } else {
                    0
                };
            }
        }
    }
}

/// Runs `row(oy, scratch, out)` for every output row `0..rows`, in a few
/// bands per thread (so an uneven core finishes level), each task with its
/// thread's reused scratch.
fn by_rows(rows: usize, out: &mut [u8], row: impl Fn(usize, &mut Scratch, &SharedMut<u8>) + Sync) {
    let out = SharedMut::new(out);
    let out = &out;
    let tasks = (super::threads() * 4).min(rows);
    super::parallel(tasks, |t| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for oy in t * rows / tasks..(t + 1) * rows / tasks {
                row(oy, &mut scratch, out);
            }
        })
    });
}

thread_local! {
    /// The padded u8 input image of a convolution on the u8 x s8 kernel.
    static PADDED8: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The zero-padded i16 input image of the convolution running on this thread.
    static PADDED: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    /// One packed panel and its accumulators.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { panel: Vec::new(), acc: Vec::new() }) };
}

/// Reduction pairs per chunk: 512 pairs of a 16-pixel panel are 32 KiB.
/// DLA-tiny's largest reduction (576 pairs) ran no faster in 128-pair chunks
/// (L2 keeps up there); the chunks bound the working set for wider models
/// (DLA-34's 512-channel 3x3 convolutions have 2304 pairs, 147 KiB).
const K_CHUNK: usize = 512;

/// Per-thread buffers of [`Int8Conv::row`], reused from frame to frame.
struct Scratch {
    /// One packed panel of pair words.
    panel: Vec<i32>,
    /// One micro-kernel result per block of output channels.
    acc: Vec<[[i32; NR]; MR]>,
}

/// Gathers 16 pixels (stride 1 or 2) of four reduction indices per quad into
/// quad words: pixel j's word holds the four input bytes it multiplies.
///
/// # Safety
/// AVX2; `padded[base + offset .. + 16 * stride]` in bounds for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_quads_avx2(
    padded: &[u8],
    offsets: &[usize],
    base: usize,
    stride: usize,
    panel: &mut [i32],
) {
    use std::arch::x86_64::*;
    let src = padded.as_ptr();
    let evens = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    let load = |o: usize| {
        let at = src.add(o + base);
        if stride == 1 {
            _mm_loadu_si128(at as *const __m128i)
        } else {
            let lo = _mm_shuffle_epi8(_mm_loadu_si128(at as *const __m128i), evens);
            let hi = _mm_shuffle_epi8(_mm_loadu_si128(at.add(16) as *const __m128i), evens);
            _mm_unpacklo_epi64(lo, hi)
        }
    };
    for (quad, words) in offsets.chunks_exact(4).zip(panel.chunks_exact_mut(NR)) {
        debug_assert!(quad.iter().max().unwrap() + base + 16 * stride <= padded.len());
        let (r0, r1, r2, r3) = (load(quad[0]), load(quad[1]), load(quad[2]), load(quad[3]));
        let (a, b) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
        let (c, d) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
        let dst = words.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(dst, _mm_unpacklo_epi16(a, c));
        _mm_storeu_si128(dst.add(1), _mm_unpackhi_epi16(a, c));
        _mm_storeu_si128(dst.add(2), _mm_unpacklo_epi16(b, d));
        _mm_storeu_si128(dst.add(3), _mm_unpackhi_epi16(b, d));
    }
}

/// # Safety
/// AVX2; `padded[base + offset .. + NR]` in bounds for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_stride1_avx2(padded: &[i16], offsets: &[usize], base: usize, panel: &mut [i32]) {
    use std::arch::x86_64::*;
    let src = padded.as_ptr();
    for (pair, words) in offsets.chunks_exact(2).zip(panel.chunks_exact_mut(NR)) {
        debug_assert!(pair[0].max(pair[1]) + base + NR <= padded.len());
        let lo = _mm256_loadu_si256(src.add(pair[0] + base) as *const __m256i);
        let hi = _mm256_loadu_si256(src.add(pair[1] + base) as *const __m256i);
        store_pairs(lo, hi, words);
    }
}

/// # Safety
/// AVX2; `padded[base + offset .. + 2 * NR]` in bounds for every offset.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_stride2_avx2(padded: &[i16], offsets: &[usize], base: usize, panel: &mut [i32]) {
    use std::arch::x86_64::*;
    let src = padded.as_ptr();
    // Even i16 of each 128-bit lane into its low 8 bytes.
    let evens = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1,
        -1, -1, -1, -1, -1, -1,
    );
    let gather = |at: *const i16| {
        let a = _mm256_shuffle_epi8(_mm256_loadu_si256(at as *const __m256i), evens);
        let b = _mm256_shuffle_epi8(_mm256_loadu_si256(at.add(16) as *const __m256i), evens);
        let a = _mm256_permute4x64_epi64::<0b00_00_10_00>(a);
        let b = _mm256_permute4x64_epi64::<0b00_00_10_00>(b);
        _mm256_inserti128_si256::<1>(a, _mm256_castsi256_si128(b))
    };
    for (pair, words) in offsets.chunks_exact(2).zip(panel.chunks_exact_mut(NR)) {
        debug_assert!(pair[0].max(pair[1]) + base + 2 * NR <= padded.len());
        let lo = gather(src.add(pair[0] + base));
        let hi = gather(src.add(pair[1] + base));
        store_pairs(lo, hi, words);
    }
}

/// Interleaves 16 `lo` and 16 `hi` i16 into 16 pair words, in pixel order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_pairs(
    lo: std::arch::x86_64::__m256i,
    hi: std::arch::x86_64::__m256i,
    words: &mut [i32],
) {
    use std::arch::x86_64::*;
    debug_assert!(words.len() >= NR);
    // unpack works per 128-bit lane: lo half = pixels 0-3 | 8-11, hi half = 4-7 | 12-15.
    let l = _mm256_unpacklo_epi16(lo, hi);
    let h = _mm256_unpackhi_epi16(lo, hi);
    let first = _mm256_permute2x128_si256::<0x20>(l, h);
    let second = _mm256_permute2x128_si256::<0x31>(l, h);
    _mm256_storeu_si256(words.as_mut_ptr() as *mut __m256i, first);
    _mm256_storeu_si256(words.as_mut_ptr().add(8) as *mut __m256i, second);
}

/// The op's side of [`super::tract_op`].
impl Int8Conv {
    fn info_lines(&self) -> Vec<String> {
        let kernel = if self.prepared.quads.is_some() {
            "avx2 u8 x s8"
        } else if super::gemm::avx2() {
            "avx2 i16"
        } else {
            "portable i16"
        };
        vec![
            format!("{}; {kernel} kernel", self.geometry.describe()),
            format!("replaces {}", self.replaces),
        ]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        super::eval_filled(
            "Int8Conv",
            &self.output,
            inputs,
            |x: &[u8], y: &mut [u8]| self.run(x, y),
        )
    }

    fn output_fact(&self, _inputs: &[&TypedFact]) -> TypedFact {
        self.output.clone()
    }
}

tract_op!(Int8Conv);

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    /// QLinearConv by its ONNX definition, one output value at a time.
    fn reference(c: &QuantizedConv, input: &[u8]) -> Vec<u8> {
        let g = c.geometry;
        let (h, w) = g.in_size;
        let (oh, ow) = g.out_size;
        let (kh, kw) = g.kernel;
        let (t, l, _, _) = g.padding;
        let mut out = vec![0u8; g.out_channels * oh * ow];
        for co in 0..g.out_channels {
            let m = c.x.1 * c.w_scale[co] / c.y.1;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = c.bias[co];
                    for ci in 0..g.in_channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy =
                                    (oy * g.stride.0 + ky * g.dilation.0) as isize - t as isize;
                                let ix =
                                    (ox * g.stride.1 + kx * g.dilation.1) as isize - l as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let x = i32::from(input[(ci * h + iy as usize) * w + ix as usize])
                                    - c.x.0;
                                let wv = i32::from(
                                    c.weights[((co * g.in_channels + ci) * kh + ky) * kw + kx],
                                ) - c.w_zero_point[co];
                                acc += x * wv;
                            }
                        }
                    }
                    let y = (acc as f32 * m).round_ties_even() as i32 + c.y.0;
                    out[(co * oh + oy) * ow + ox] = y.clamp(0, 255) as u8;
                }
            }
        }
        out
    }

    fn check(g: Geometry, threads: usize) {
        check_with(g, threads, false)
    }

    /// With `seven_bit`, weights in [-64, 63] and zero weight zero points:
    /// the u8 x s8 kernel's form (taken on AVX2 CPUs).
    fn check_with(g: Geometry, threads: usize, seven_bit: bool) {
        let k = g.k();
        // Deterministic pseudo-random data over the full ranges.
        let mut seed = 0x9e3779b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let weights: Vec<i8> = (0..g.out_channels * k)
            .map(|_| {
                if seven_bit {
                    (next() as i8) >> 1
                } else {
                    next() as i8
                }
            })
            .collect();
        let input: Vec<u8> = (0..g.in_channels * g.in_size.0 * g.in_size.1)
            .map(|_| next() as u8)
            .collect();
        let w_zero_point: Vec<i32> = (0..g.out_channels)
            .map(|c| {
                if c % 3 == 0 || seven_bit {
                    0
                } else {
                    (c as i32 % 7) - 3
                }
            })
            .collect();
        let w_scale: Vec<f32> = (0..g.out_channels)
            .map(|c| 0.001 + c as f32 * 1e-4)
            .collect();
        let bias: Vec<i32> = (0..g.out_channels).map(|c| (c as i32 - 3) * 997).collect();
        let conv = QuantizedConv {
            geometry: g,
            weights: &weights,
            w_zero_point: &w_zero_point,
            w_scale: &w_scale,
            bias: &bias,
            x: (117, 0.02),
            y: (9, 0.5),
        };
        let op = Int8Conv::new(
            &conv,
            "test",
            u8::fact([1, g.out_channels, g.out_size.0, g.out_size.1]),
        );
        assert_eq!(
            op.prepared.quads.is_some(),
            seven_bit && super::super::gemm::avx2(),
            "kernel choice"
        );
        let mut out = vec![0u8; g.out_channels * g.out_size.0 * g.out_size.1];
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        multithread_tract_scope(executor, || op.run(&input, &mut out));
        let want = reference(&conv, &input);
        let differ = out.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{g:?}: {differ} of {} values differ", out.len());
    }

    #[test]
    fn matches_qlinearconv_on_every_packing_path() {
        // 3x3 stride 1 (vector gather), stride 2 (vector even-gather), 1x1, 7x7
        // with odd k, widths that are not a multiple of 16 (scalar gather),
        // output channels that are not a multiple of 4, no padding.
        check(Geometry::square(5, 6, (9, 32), 3, 1, 1), 1);
        check(Geometry::square(4, 8, (10, 64), 3, 2, 1), 1);
        check(Geometry::square(16, 19, (6, 16), 1, 1, 0), 1);
        check(Geometry::square(3, 4, (12, 21), 7, 1, 3), 1);
        check(Geometry::square(3, 5, (7, 13), 3, 2, 0), 1);
        check(Geometry::square(8, 4, (11, 40), 3, 1, 1), 2);
    }

    #[test]
    fn seven_bit_weights_take_the_u8_kernel_and_match_qlinearconv() {
        check_with(Geometry::square(5, 6, (9, 32), 3, 1, 1), 1, true);
        check_with(Geometry::square(4, 8, (10, 64), 3, 2, 1), 1, true);
        check_with(Geometry::square(16, 19, (6, 16), 1, 1, 0), 1, true);
        check_with(Geometry::square(3, 4, (12, 21), 7, 1, 3), 1, true);
        check_with(Geometry::square(3, 5, (7, 13), 3, 2, 0), 2, true);
        check_with(Geometry::square(128, 8, (4, 16), 3, 1, 1), 1, true);
    }
}
