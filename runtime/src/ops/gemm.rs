//! The integer matrix product under our int8 convolution: `u8 - zero point`
//! activations times `s8` weights, summed exactly in `i32`.
//!
//! Both operands are widened to `i16` and multiplied in pairs along the
//! reduction axis (`vpmaddwd` on AVX2: 16 multiply-adds per instruction, twice
//! fp32's 8 per FMA). Why not `u8 x s8` with `vpmaddubsw`? Its pairwise `i16`
//! sum saturates (255 * 127 * 2 > 32767), which changes results on real
//! activations, and on the AMD cores we measure it retires no more products
//! per cycle than `vpmaddwd`. Why not tract's own int8 kernel? On x86_64 CPUs
//! without AVX-512 VNNI it is the one that mixes legacy-SSE and AVX
//! instructions and runs ~50x slower than tract's fp32 (docs/PERFORMANCE.md).
//!
//! Layouts (a "pair word" is two `i16` in one `i32`: low half = even index):
//! - weights, packed once per model: per block of [`MR`] output channels, per
//!   reduction pair `p`, `MR` pair words (`w[c][2p]`, `w[c][2p+1]`);
//! - activations, packed per panel of [`NR`] output pixels: per pair `p`,
//!   `NR` pair words (`x[2p][j]`, `x[2p+1][j]`).

use super::kernels::Int8Kernel;

/// Output channels per micro-kernel call.
pub const MR: usize = 6;
/// Output pixels per micro-kernel call (two AVX2 vectors of `i32`).
pub const NR: usize = 16;

/// Two `i16` in one word, `lo` in the low half (the order `vpmaddwd` pairs them).
#[inline]
pub fn pair_word(lo: i16, hi: i16) -> i32 {
    (u32::from(lo as u16) | (u32::from(hi as u16) << 16)) as i32
}

/// `s8` weights in micro-kernel order, with per-channel requantisation.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    /// Output channels (rows of the product).
    pub channels: usize,
    /// Reduction pairs: `ceil(k / 2)`.
    pub pairs: usize,
    /// `blocks * pairs * MR` pair words; rows past `channels` are zero.
    words: Vec<i32>,
}

impl PackedWeights {
    /// Packs row-major `weights[channel][k]` (`channels * k` values; `i16`
    /// so weights minus a zero point fit).
    pub fn from_i16(weights: &[i16], channels: usize, k: usize) -> PackedWeights {
        debug_assert_eq!(weights.len(), channels * k);
        let pairs = k.div_ceil(2);
        let blocks = channels.div_ceil(MR);
        let mut words = vec![0i32; blocks * pairs * MR];
        let at = |c: usize, i: usize| -> i16 {
            if c < channels && i < k {
                weights[c * k + i]
            } else {
                0
            }
        };
        for b in 0..blocks {
            for p in 0..pairs {
                for r in 0..MR {
                    let c = b * MR + r;
                    words[(b * pairs + p) * MR + r] = pair_word(at(c, 2 * p), at(c, 2 * p + 1));
                }
            }
        }
        PackedWeights {
            channels,
            pairs,
            words,
        }
    }

    /// Number of `MR`-channel blocks.
    pub fn blocks(&self) -> usize {
        self.channels.div_ceil(MR)
    }

    /// The pair words of block `b`.
    pub fn block(&self, b: usize) -> &[i32] {
        let len = self.pairs * MR;
        &self.words[b * len..(b + 1) * len]
    }
}

/// `acc[r][j] (+)= sum_p a[p][r] . b[p][j]` over `pairs` pair words (a dot
/// product of two `i16` pairs each), with the best kernel this CPU has;
/// `add` keeps what `acc` holds (for a reduction split into chunks).
#[inline]
pub fn micro_kernel(a: &[i32], b: &[i32], pairs: usize, acc: &mut [[i32; NR]; MR], add: bool) {
    assert!(a.len() >= pairs * MR && b.len() >= pairs * NR);
    #[cfg(target_arch = "x86_64")]
    {
        if avx2() {
            // SAFETY: AVX2 is present (checked above) and the slices hold at
            // least `pairs` rows of each operand (asserted above).
            unsafe { micro_kernel_avx2(a.as_ptr(), b.as_ptr(), pairs, acc, add) };
            return;
        }
    }
    micro_kernel_portable(a, b, pairs, acc, add)
}

/// Plain Rust, written so compilers vectorise it (NEON on aarch64).
pub fn micro_kernel_portable(
    a: &[i32],
    b: &[i32],
    pairs: usize,
    acc: &mut [[i32; NR]; MR],
    add: bool,
) {
    let mut sum = if add { *acc } else { [[0i32; NR]; MR] };
    for p in 0..pairs {
        let bp: &[i32; NR] = b[p * NR..p * NR + NR].try_into().expect("NR words");
        let lo = bp.map(|v| i32::from(v as i16));
        let hi = bp.map(|v| v >> 16);
        for (r, row) in sum.iter_mut().enumerate() {
            let w = a[p * MR + r];
            let (w0, w1) = (i32::from(w as i16), w >> 16);
            for j in 0..NR {
                row[j] += w0 * lo[j] + w1 * hi[j];
            }
        }
    }
    *acc = sum;
}

/// Whether this CPU runs the AVX2 kernels (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2() -> bool {
    super::kernels::Cpu::detect().avx2
}

/// Whether this CPU runs the AVX2 kernels.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn avx2() -> bool {
    false
}

/// The AVX2 micro-kernel: 8 accumulators of 8 `i32` (4 channels x 16 pixels).
///
/// # Safety
/// AVX2 must be available; `a` must hold `pairs * MR` words and `b`
/// `pairs * NR` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn micro_kernel_avx2(
    a: *const i32,
    b: *const i32,
    pairs: usize,
    acc: &mut [[i32; NR]; MR],
    add: bool,
) {
    use std::arch::x86_64::*;
    let mut c = [_mm256_setzero_si256(); 2 * MR];
    if add {
        for r in 0..MR {
            c[2 * r] = _mm256_loadu_si256(acc[r].as_ptr() as *const __m256i);
            c[2 * r + 1] = _mm256_loadu_si256(acc[r].as_ptr().add(8) as *const __m256i);
        }
    }
    for p in 0..pairs {
        let b0 = _mm256_loadu_si256(b.add(p * NR) as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(p * NR + 8) as *const __m256i);
        for r in 0..MR {
            let w = _mm256_set1_epi32(*a.add(p * MR + r));
            c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(w, b0));
            c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(w, b1));
        }
    }
    for r in 0..MR {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, c[2 * r]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut __m256i, c[2 * r + 1]);
    }
}

/// Whether `vpmaddubsw` sums every pair of neighbouring weights of
/// row-major `weights[channel][k]` exactly against any `u8` activations:
/// `255 * (|w0| + |w1|) <= 32767` (7-bit weights always do).
pub fn fits_u8_pairs(weights: &[i8], k: usize) -> bool {
    weights.chunks(k).all(|row| {
        row.chunks(2)
            .all(|p| p.iter().map(|&w| i32::from(w).abs()).sum::<i32>() * 255 <= 32767)
    })
}

/// `s8` weights in quads of the reduction, for the quad kernels (blocks of
/// [`Int8Kernel::rows`]: 4 for [`micro_kernel_u8`] and the NEON `s8`
/// kernels, [`MR`] for the VNNI ones): per block of `rows` channels, per quad `q`, `rows` words of
/// four bytes `w[c][4q..4q + 4]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedQuads {
    /// Output channels.
    pub channels: usize,
    /// Reduction quads: `ceil(k / 4)`.
    pub quads: usize,
    /// Channels per block.
    pub rows: usize,
    words: Vec<i32>,
}

impl PackedQuads {
    /// Packs row-major `weights[channel][k]` in blocks of `rows` channels;
    /// channels past the last and reduction indices past `k` are zero.
    pub fn new(weights: &[i8], channels: usize, k: usize, rows: usize) -> PackedQuads {
        let quads = k.div_ceil(4);
        let blocks = channels.div_ceil(rows);
        let mut words = vec![0i32; blocks * quads * rows];
        for b in 0..blocks {
            for q in 0..quads {
                for r in 0..rows {
                    let c = b * rows + r;
                    let mut bytes = [0u8; 4];
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        if c < channels && 4 * q + i < k {
                            *byte = weights[c * k + 4 * q + i] as u8;
                        }
                    }
                    words[(b * quads + q) * rows + r] = i32::from_le_bytes(bytes);
                }
            }
        }
        PackedQuads {
            channels,
            quads,
            rows,
            words,
        }
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.channels.div_ceil(self.rows)
    }

    /// The quad words of block `b`.
    pub fn block(&self, b: usize) -> &[i32] {
        let len = self.quads * self.rows;
        &self.words[b * len..(b + 1) * len]
    }
}

/// `acc[r][j] = sum_q sum_i a[q][r].byte(i) * x[offsets[q] + j].byte(i)`
/// for the rows of a [`PackedQuads`] block ([`Int8Kernel::rows`] of `acc`)
/// and 16 pixels whose quad words `q` start at `x + offsets[q]` (a packed
/// panel, or an image of channel quads read in place), on an x86 `u8 x s8`
/// kernel ([`Int8Kernel::u8_quads`]) chosen by [`Int8Kernel::choose`]. With
/// `finish`, the sums are requantised into the output instead of left in
/// `acc`. The NEON quad kernels requantise in their epilogue instead
/// ([`s8_quads_requantised`]).
///
/// # Safety
/// `a` valid for `offsets.len() * kernel.rows()` reads, `x.add(o)` for
/// [`NR`] reads at every offset `o`; `finish`, if any, with `rows` at most
/// the kernel's, `width` at most [`NR`], its output rows valid for `width`
/// writes, `bias` and `scale` for `rows` reads.
///
/// # Panics
/// When `kernel` is not an x86 quad kernel or `a` is short.
#[inline]
pub unsafe fn quads_kernel_into(
    kernel: Int8Kernel,
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    acc: &mut [[i32; NR]; MR],
    finish: Option<&Requantize>,
) {
    assert!(a.len() >= offsets.len() * kernel.rows());
    #[cfg(target_arch = "x86_64")]
    {
        use super::kernels::{avx512, avx_vnni};
        // SAFETY: each kernel is chosen only where the CPU has its features
        // (and, for vpmaddubsw, weights that fit); the caller's bounds.
        match kernel {
            Int8Kernel::Avx2U8 => {
                let rows = acc.first_chunk_mut::<4>().expect("MR >= 4");
                return micro_kernel_u8(a, x, offsets, rows, false, finish);
            }
            Int8Kernel::AvxVnni => return avx_vnni::u8_quads_6x16(a, x, offsets, acc, finish),
            Int8Kernel::Avx512Vnni => return avx512::u8_quads_6x16(a, x, offsets, acc, finish),
            _ => {}
        }
    }
    let _ = (x, acc, finish); // only the x86 kernels read and write them
    panic!("{kernel} is not the u8 quad kernel on this CPU")
}

/// [`quads_kernel_into`] over `acc.len()` neighbouring panels, `stride`
/// words apart: panel `j` reads quad `q` at `x + offsets[q] + j * stride`
/// (packed panels one after another: `offsets[q] = q * NR`, `stride` a
/// panel's words; an image read in place: `stride = NR`, the next 16
/// pixels) and sums into `acc[j]` (or, with `finish`, into the output from
/// pixel `j * NR` on). A kernel with a wide tile ([`Int8Kernel::panels`])
/// runs them in one pass; the others run one panel after another.
///
/// # Safety
/// As [`quads_kernel_into`] for every panel, with `width` at most
/// `acc.len() * NR`.
///
/// # Panics
/// As [`quads_kernel_into`], or when `acc` holds more than
/// [`super::kernels::MAX_PANELS`].
#[inline]
pub unsafe fn quads_kernel_panels(
    kernel: Int8Kernel,
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    stride: usize,
    acc: &mut [[[i32; NR]; MR]],
    finish: Option<&Requantize>,
) {
    assert!(acc.len() <= super::kernels::MAX_PANELS);
    #[cfg(target_arch = "x86_64")]
    if kernel == Int8Kernel::Avx512Vnni {
        use super::kernels::avx512::u8_quads_6x16_panels as tile;
        assert!(a.len() >= offsets.len() * MR);
        let (o, f) = (offsets, finish);
        // SAFETY: chosen only where the CPU has AVX-512 VNNI; the caller's
        // bounds; each arm's slice has the length it is converted to.
        match acc.len() {
            4 => return tile::<4>(a, x, o, stride, acc.try_into().unwrap(), f),
            3 => return tile::<3>(a, x, o, stride, acc.try_into().unwrap(), f),
            2 => return tile::<2>(a, x, o, stride, acc.try_into().unwrap(), f),
            _ => {}
        }
    }
    for (j, acc) in acc.iter_mut().enumerate() {
        let finish = finish.map(|f| f.skip(j * NR));
        quads_kernel_into(kernel, a, x.add(j * stride), offsets, acc, finish.as_ref());
    }
}

/// `out[r] = requant(sum_q sum_i a[q][r].byte(i) * x[offsets[q] + j].byte(i))`
/// for the 4 rows of a [`PackedQuads`] block and 16 pixels of quad words
/// at one word offset per quad (a packed panel, or an image of channel
/// quads read in place), both `s8`, on a NEON quad kernel chosen by
/// [`Int8Kernel::choose`].
///
/// # Safety
/// `x.add(o)` must be valid for [`NR`] reads at every offset `o`, and every
/// `rq.out[r]` for [`NR`] writes.
///
/// # Panics
/// When `kernel` is not a NEON quad kernel or `a` is short.
#[cfg(target_arch = "aarch64")]
#[inline]
pub unsafe fn s8_quads_requantised(
    kernel: Int8Kernel,
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    rq: &super::kernels::neon::Requant4,
) {
    use super::kernels::{neon, neon_dot};
    assert!(a.len() >= offsets.len() * 4);
    let (a, x) = (a.as_ptr() as *const i8, x as *const i8);
    // Each kernel is chosen only where the CPU has its features; 4 words of
    // weights per quad asserted above, the reads are the caller's promise.
    match kernel {
        Int8Kernel::NeonDot => neon_dot::s8_4x16_dot(a, x, offsets, rq),
        Int8Kernel::NeonMull => neon::s8_4x16_mull::<true>(a, x, offsets, rq),
        Int8Kernel::NeonMullSingle => neon::s8_4x16_mull::<false>(a, x, offsets, rq),
        _ => panic!("{kernel} is not a NEON quad kernel"),
    }
}

/// `acc[r][j] (+)= sum_q sum_i a[q][r].byte(i) (s8) * x[offsets[q] + j].byte(i) (u8)`
/// over `offsets.len()` quad words, for `R` rows (a [`PackedQuads`] block of `R`).
/// AVX2 only (`vpmaddubsw`, then `vpmaddwd` by ones): 3 instructions per 32
/// products where the `i16` kernel needs 4. With 4 rows everything stays
/// in AVX2's 16 registers (6 rows spilled, and ran 14 % slower per
/// product), and no row is wasted on a layer of 16, 32 or 64 channels (6
/// rows compute 18, 36 and 66). With `finish`, the sums are requantised
/// into the output instead of stored to `acc` (see [`Requantize`]).
///
/// # Safety
/// AVX2 must be available; `a` must hold `offsets.len() * R` words and
/// `x.add(o)` be valid for [`NR`] reads at every offset `o`; every
/// neighbouring pair of weights must satisfy [`fits_u8_pairs`] (or the sum
/// saturates); `finish`, if any, valid as [`quads_kernel_into`] requires.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn micro_kernel_u8<const R: usize>(
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    acc: &mut [[i32; NR]; R],
    add: bool,
    finish: Option<&Requantize>,
) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= offsets.len() * R);
    let a = a.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut c0 = [_mm256_setzero_si256(); R];
    let mut c1 = [_mm256_setzero_si256(); R];
    if add {
        for r in 0..R {
            c0[r] = _mm256_loadu_si256(acc[r].as_ptr() as *const __m256i);
            c1[r] = _mm256_loadu_si256(acc[r].as_ptr().add(8) as *const __m256i);
        }
    }
    for (q, &o) in offsets.iter().enumerate() {
        let b0 = _mm256_loadu_si256(x.add(o) as *const __m256i);
        let b1 = _mm256_loadu_si256(x.add(o + 8) as *const __m256i);
        for r in 0..R {
            let w = _mm256_set1_epi32(*a.add(q * R + r));
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(b0, w), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(b1, w), ones);
            c0[r] = _mm256_add_epi32(c0[r], p0);
            c1[r] = _mm256_add_epi32(c1[r], p1);
        }
    }
    if let Some(f) = finish {
        for r in 0..R.min(f.rows) {
            let (bias, scale) = (*f.bias.add(r), *f.scale.add(r));
            let bytes = requant_pair_avx2(c0[r], c1[r], bias, scale, f.zero_point);
            let out = f.out.add(r * f.row_stride);
            if f.width >= NR {
                _mm_storeu_si128(out as *mut __m128i, bytes);
            } else {
                let mut tail = [0u8; NR];
                _mm_storeu_si128(tail.as_mut_ptr() as *mut __m128i, bytes);
                std::ptr::copy_nonoverlapping(tail.as_ptr(), out, f.width);
            }
        }
        return;
    }
    for r in 0..R {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, c0[r]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut __m256i, c1[r]);
    }
}

/// Per-channel requantisation of a micro-kernel result to `u8`:
/// `out = saturate(round_even((acc + bias) * scale) + zero_point)`, the
/// arithmetic of ONNX QLinearConv with `scale = x_scale * w_scale / y_scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    /// `i32` bias per output channel (in accumulator units).
    pub bias: Vec<i32>,
    /// Multiplier per output channel.
    pub scale: Vec<f32>,
    /// Output zero point.
    pub zero_point: i32,
}

impl Requant {
    /// Writes row `channel`'s first `width` results from `acc_row` into `out`.
    #[inline]
    pub fn row(&self, channel: usize, acc_row: &[i32; NR], out: &mut [u8]) {
        let (bias, scale) = (self.bias[channel], self.scale[channel]);
        requantize_row(acc_row, bias, scale, self.zero_point, out);
    }
}

/// [`requantize`] over the first `out.len()` sums of `acc_row`, 16 at once
/// where the CPU has vectors for it.
#[inline]
fn requantize_row(acc_row: &[i32; NR], bias: i32, scale: f32, zero_point: i32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2() && out.len() == NR {
            // SAFETY: AVX2 present; `out` has NR bytes.
            unsafe { requant_row_avx2(acc_row, bias, scale, zero_point, out) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Ok(out) = <&mut [u8; NR]>::try_from(&mut *out) {
            // SAFETY: NEON is part of every aarch64 target Rust supports
            // with std; the zero point of a u8 output is in 0..=255.
            unsafe { super::kernels::neon::requant_row(acc_row, bias, scale, zero_point, out) };
            return;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc_row) {
        *o = requantize(a, bias, scale, zero_point);
    }
}

/// One sum requantised: `clamp(round_half_even((x + bias) * scale) +
/// zero_point, 0, 255)`, the formula every path (vector or not) follows.
#[inline(always)]
pub fn requantize(x: i32, bias: i32, scale: f32, zero_point: i32) -> u8 {
    let v = ((x + bias) as f32 * scale).round_ties_even() as i32 + zero_point;
    v.clamp(0, 255) as u8
}

/// Where a quad tile's sums go when it finishes them: requantised per row
/// (see [`requantize`]) straight into the output tensor's rows, so they
/// never pass through memory as `i32` and no second pass reads them back,
/// which costs most in layers with short reductions.
#[derive(Debug, Clone, Copy)]
pub struct Requantize {
    /// Row 0's first pixel in the output.
    pub out: *mut u8,
    /// Elements from one output row (channel) to the next.
    pub row_stride: usize,
    /// One bias per row (accumulator units), `rows` of them.
    pub bias: *const i32,
    /// One multiplier per row, `rows` of them.
    pub scale: *const f32,
    /// Output zero point.
    pub zero_point: i32,
    /// Rows to write: at most the tile's.
    pub rows: usize,
    /// Pixels to write per row, from `out` on: at most the tile's.
    pub width: usize,
}

impl Requantize {
    /// The same rows from pixel `from` on (a panel further right).
    fn skip(&self, from: usize) -> Requantize {
        Requantize {
            out: self.out.wrapping_add(from),
            width: self.width.saturating_sub(from),
            ..*self
        }
    }
}

/// # Safety
/// AVX2 must be available and `out` must hold `NR` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requant_row_avx2(
    acc: &[i32; NR],
    bias: i32,
    scale: f32,
    zero_point: i32,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let v0 = _mm256_loadu_si256(acc.as_ptr() as *const __m256i);
    let v1 = _mm256_loadu_si256(acc.as_ptr().add(8) as *const __m256i);
    let bytes = requant_pair_avx2(v0, v1, bias, scale, zero_point);
    _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, bytes);
}

/// [`requantize`] on 16 sums in two `ymm` registers: the 16 bytes.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn requant_pair_avx2(
    v0: std::arch::x86_64::__m256i,
    v1: std::arch::x86_64::__m256i,
    bias: i32,
    scale: f32,
    zero_point: i32,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    let b = _mm256_set1_epi32(bias);
    let s = _mm256_set1_ps(scale);
    let z = _mm256_set1_epi32(zero_point);
    let q = |v: __m256i| {
        // cvtps rounds to nearest even in the default MXCSR mode.
        _mm256_add_epi32(
            _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(v, b)), s)),
            z,
        )
    };
    // i32 -> i16 (saturating) -> u8 (saturating), then undo the per-lane order.
    let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(q(v0), q(v1)));
    let u = _mm256_permute4x64_epi64::<0b10_00_10_00>(_mm256_packus_epi16(w, w));
    _mm256_castsi256_si128(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(w: &[i8], x: &[i16], channels: usize, k: usize) -> Vec<[i32; NR]> {
        (0..channels)
            .map(|c| {
                let mut row = [0i32; NR];
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..k)
                        .map(|i| i32::from(w[c * k + i]) * i32::from(x[i * NR + j]))
                        .sum();
                }
                row
            })
            .collect()
    }

    fn pack_panel(x: &[i16], k: usize) -> Vec<i32> {
        let pairs = k.div_ceil(2);
        let at = |i: usize, j: usize| if i < k { x[i * NR + j] } else { 0 };
        (0..pairs)
            .flat_map(|p| (0..NR).map(move |j| (p, j)))
            .map(|(p, j)| pair_word(at(2 * p, j), at(2 * p + 1, j)))
            .collect()
    }

    #[test]
    fn kernels_sum_exactly_at_the_extremes() {
        // Odd k, a partial channel block, and the largest magnitudes
        // (255 - 0 against -128 and 127), where u8 x s8 pairs would saturate.
        let (channels, k) = (6, 37);
        let w: Vec<i8> = (0..channels * k)
            .map(|i| {
                if i % 3 == 0 {
                    -128
                } else {
                    127 - (i % 5) as i8
                }
            })
            .collect();
        let x: Vec<i16> = (0..k * NR)
            .map(|i| {
                if i % 2 == 0 {
                    255
                } else {
                    -255 + (i % 7) as i16
                }
            })
            .collect();
        let wide: Vec<i16> = w.iter().map(|&v| i16::from(v)).collect();
        let packed = PackedWeights::from_i16(&wide, channels, k);
        let panel = pack_panel(&x, k);
        let want = reference(&w, &x, channels, k);
        for b in 0..packed.blocks() {
            let mut fast = [[0; NR]; MR];
            let mut slow = [[0; NR]; MR];
            micro_kernel(packed.block(b), &panel, packed.pairs, &mut fast, false);
            micro_kernel_portable(packed.block(b), &panel, packed.pairs, &mut slow, false);
            // The same sum in two chunks of the reduction.
            let mut split = [[0; NR]; MR];
            let half = packed.pairs / 2;
            micro_kernel(packed.block(b), &panel, half, &mut split, false);
            let (a, p) = (&packed.block(b)[half * MR..], &panel[half * NR..]);
            micro_kernel(a, p, packed.pairs - half, &mut split, true);
            assert_eq!(split, fast);
            for r in 0..MR {
                let c = b * MR + r;
                if c < channels {
                    assert_eq!(fast[r], want[c], "channel {c}");
                    assert_eq!(slow[r], want[c], "channel {c} (portable)");
                } else {
                    assert_eq!(fast[r], [0; NR], "padding row {c}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn u8_kernel_sums_exactly_within_its_bound() {
        if !avx2() {
            println!("SKIPPED: this CPU has no AVX2");
            return;
        }
        u8_kernel_sums_exactly::<4>();
        u8_kernel_sums_exactly::<6>();
        // 8-bit extremes are refused.
        assert!(!fits_u8_pairs(&[127, 127], 2));
    }

    /// [`micro_kernel_u8`] with `R` rows against a plain sum.
    #[cfg(target_arch = "x86_64")]
    fn u8_kernel_sums_exactly<const R: usize>() {
        let (channels, k) = (7, 37);
        // 7-bit weights at their extremes, activations over all of u8.
        let w: Vec<i8> = (0..channels * k)
            .map(|i| if i % 3 == 0 { -64 } else { 63 - (i % 9) as i8 })
            .collect();
        let x: Vec<u8> = (0..k * NR)
            .map(|i| {
                if i % 2 == 0 {
                    255
                } else {
                    (i * 37 % 256) as u8
                }
            })
            .collect();
        assert!(fits_u8_pairs(&w, k), "7-bit weights fit");
        let packed = PackedQuads::new(&w, channels, k, R);
        let quads = packed.quads;
        let panel: Vec<i32> = (0..quads * NR)
            .map(|i| {
                let (q, j) = (i / NR, i % NR);
                let byte = |t: usize| {
                    if 4 * q + t < k {
                        x[(4 * q + t) * NR + j]
                    } else {
                        0
                    }
                };
                i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
            })
            .collect();
        for b in 0..channels.div_ceil(R) {
            let mut acc = [[0; NR]; R];
            let offsets: Vec<usize> = (0..quads).map(|q| q * NR).collect();
            // SAFETY: AVX2 checked; sizes from the packing; weights fit.
            let (a, p) = (packed.block(b), panel.as_ptr());
            unsafe { micro_kernel_u8(a, p, &offsets, &mut acc, false, None) };
            for (r, row) in acc.iter().enumerate() {
                let c = b * R + r;
                if c >= channels {
                    continue;
                }
                for (j, &got) in row.iter().enumerate() {
                    let want: i32 = (0..k)
                        .map(|i| i32::from(w[c * k + i]) * i32::from(x[i * NR + j]))
                        .sum();
                    assert_eq!(got, want, "{R} rows: channel {c} pixel {j}");
                }
            }
        }
    }

    #[test]
    fn requantisation_rounds_half_to_even_and_saturates() {
        let q = Requant {
            bias: vec![1],
            scale: vec![0.5],
            zero_point: 3,
        };
        let mut acc = [0i32; NR];
        // (a + 1) * 0.5: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, then + 3; big values saturate.
        acc[..6].copy_from_slice(&[0, 2, 4, -1000, 1000, -7]);
        let mut fast = [0u8; NR];
        q.row(0, &acc, &mut fast);
        let mut slow = [0u8; 6];
        q.row(0, &acc, &mut slow);
        assert_eq!(&fast[..6], &[3, 5, 5, 0, 255, 0]);
        assert_eq!(&slow, &fast[..6]);
        assert_eq!(fast[6], 3);
    }
}
