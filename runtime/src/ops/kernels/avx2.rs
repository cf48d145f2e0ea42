//! Kernels for every x86_64 CPU with AVX2 outside the convolutions' tiles
//! (those live next to their packing in `gemm.rs` and `gemm_f32.rs`).
//!
//! [`upsample_row_2s`]: a row of DLA's depthwise up-sampler on 8 columns at
//! once, its phases interleaved by `unpack`/`shuffle`/`permute2f128`. The
//! portable loop computes each phase into a scratch row and interleaves
//! them afterwards; here the phases never leave the registers. On DLA-tiny
//! (AMD EPYC, 1 thread) the final x4 up-sampler went from 4.5 to 1.3 ms and
//! all seven up-samplers from 8.3 to 3.0 ms.
//!
//! [`deinterleave`]: the even and odd columns of a row, 8 pairs at once, for
//! the phase layout of a stride-2 float convolution's padded image.
//!
//! [`column_words`]: the words of a row of column quads (4 neighbouring
//! bytes per word), 8 per `vpshufb`, for the int8 stem that reads its
//! input in place on AVX-512 VNNI.
//!
//! [`f32_rows_x16_panels`]: the float tile of [`super::lanes`] on `ymm`
//! registers (6 rows x 16 pixels in 12 accumulators, one panel: 24 would
//! leave no register of the 16 for the pixels), with its fused epilogue.

use std::arch::x86_64::*;

use super::lanes::{self, FmaLanes};
use crate::ops::gemm::{MR, NR};
use crate::ops::gemm_f32::Finish;

/// Eight `f32` lanes of a `ymm` register.
#[derive(Clone, Copy)]
pub struct Ymmf(__m256);

impl FmaLanes for Ymmf {
    const WIDTH: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Ymmf(_mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Ymmf(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Ymmf(_mm256_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        Ymmf(_mm256_fmadd_ps(a.0, b.0, self.0))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Ymmf(_mm256_add_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        Ymmf(_mm256_max_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
}

/// [`lanes::f32_rows_x16_panels`] on `ymm` registers: the first `R` rows
/// of a block over `P` (in practice 1) panels.
///
/// # Safety
/// AVX2 and FMA must be available; `a` must hold `offsets.len() * MR`
/// values and `x.add(o)` must be valid for `P * NR` reads for every offset
/// `o`; `finish`, if any, valid (see [`Finish`]).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn f32_rows_x16_panels<const R: usize, const P: usize>(
    a: *const f32,
    x: *const f32,
    offsets: &[usize],
    acc: &mut [[[f32; NR]; MR]; P],
    add: bool,
    finish: Option<&Finish>,
) {
    lanes::f32_rows_x16_panels::<Ymmf, R, P>(a, x, offsets, acc, add, finish)
}

/// `even[i] = src[2 i]` and `odd[i] = src[2 i + 1]` for the first pairs of
/// `src`, 8 at a time, as far as all three slices reach; returns how many
/// pairs it wrote (a multiple of 8; the caller does the rest).
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
pub unsafe fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    let blocks = (src.len() / 16).min(even.len() / 8).min(odd.len() / 8);
    for i in 0..blocks {
        // SAFETY: 16 reads and 8 + 8 writes inside the slices (`blocks`).
        let a = _mm256_loadu_ps(src.as_ptr().add(16 * i));
        let b = _mm256_loadu_ps(src.as_ptr().add(16 * i + 8));
        // [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit lanes swapped.
        let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
        let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
        _mm256_storeu_ps(even.as_mut_ptr().add(8 * i), e);
        _mm256_storeu_ps(odd.as_mut_ptr().add(8 * i), o);
    }
    8 * blocks
}

/// Words of a row of column quads (the image the int8 stem reads in place
/// on AVX-512 VNNI): `dst[n]` = the 4 bytes `src[stride * n..]` (`^ flip`), low byte
/// first, 8 words per step from two 16-byte loads `4 * stride` apart and one
/// `vpshufb`, while the loads stay inside `src`. `stride` is 1, 2 or 4.
/// Returns how many words it wrote (a multiple of 8; the caller does the
/// rest).
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
pub unsafe fn column_words(src: &[u8], stride: usize, flip: u8, dst: &mut [i32]) -> usize {
    debug_assert!(matches!(stride, 1 | 2 | 4));
    // In each 128-bit lane, word n of 4 takes bytes stride * n + 0..4.
    let pattern: [u8; 32] = std::array::from_fn(|k| (stride * (k % 16 / 4) + k % 4) as u8);
    let pattern = _mm256_loadu_si256(pattern.as_ptr().cast());
    let flip = _mm256_set1_epi8(flip as i8);
    let mut n = 0;
    while n + 8 <= dst.len() && stride * n + 4 * stride + 16 <= src.len() {
        // SAFETY: both 16-byte loads end inside `src`, the 8 words inside
        // `dst` (the loop's condition).
        let at = src.as_ptr().add(stride * n);
        let lo = _mm_loadu_si128(at.cast());
        let hi = _mm_loadu_si128(at.add(4 * stride).cast());
        let bytes = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
        let words = _mm256_xor_si256(_mm256_shuffle_epi8(bytes, pattern), flip);
        _mm256_storeu_si256(dst.as_mut_ptr().add(n).cast(), words);
        n += 8;
    }
    n
}

/// One output row of DLA's depthwise up-sampler (kernel `2S`, stride `S`,
/// padding `S / 2`) for `m` in `0..count` (a multiple of 8); the same sum,
/// in the same order, as [`super::neon::upsample_row_2s`] and the portable
/// loop: `out[m * S + r] = bias + sum over the kernel rows j, in order, of
/// w[j][r][0] * a + w[j][r][1] * b`, where `(a, b)` is `(x[m], x[m - 1])` for
/// the first half of the phases and `(x[m + 1], x[m])` for the second, `x`
/// being `rows[j]`. Each tap is a multiply then an add (no FMA), so every
/// CPU gives the same bits. `R` is 1 or 2: kernel rows that reach this
/// output row.
///
/// # Safety
/// AVX2 present; `S` is 2 or 4; `rows[j].add(-1 ..= count)` valid for
/// reads; `out` valid for `S * count` writes.
#[target_feature(enable = "avx2")]
pub unsafe fn upsample_row_2s<const S: usize, const R: usize>(
    rows: [*const f32; R],
    w: [[[f32; 2]; S]; R],
    bias: f32,
    count: usize,
    out: *mut f32,
) {
    debug_assert!(count.is_multiple_of(8) && (S == 2 || S == 4));
    // Broadcast once per row, by loops: `array::map` with intrinsics in its
    // closure was not inlined into this AVX2 function (1 % of an int8 frame).
    let mut wv = [[[_mm256_setzero_ps(); 2]; S]; R];
    for (row, vectors) in w.iter().zip(wv.iter_mut()) {
        for (pair, v) in row.iter().zip(vectors.iter_mut()) {
            *v = [_mm256_set1_ps(pair[0]), _mm256_set1_ps(pair[1])];
        }
    }
    let w = wv;
    for m in (0..count).step_by(8) {
        let mut acc = [_mm256_set1_ps(bias); S];
        for (row, w) in rows.iter().zip(&w) {
            let at = row.add(m);
            let before = _mm256_loadu_ps(at.sub(1));
            let here = _mm256_loadu_ps(at);
            let after = _mm256_loadu_ps(at.add(1));
            for (r, (a, w)) in acc.iter_mut().zip(w).enumerate() {
                let (x0, x1) = if r < S / 2 {
                    (here, before)
                } else {
                    (after, here)
                };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(x0, w[0]));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(x1, w[1]));
            }
        }
        let dst = out.add(S * m);
        if S == 2 {
            store_interleaved2(dst, acc[0], acc[1]);
        } else {
            store_interleaved4(dst, [acc[0], acc[1], acc[2], acc[3]]);
        }
    }
}

/// `dst[2m + r] = p_r[m]` for the 8 lanes of `p0`, `p1`: 16 values.
#[inline(always)]
unsafe fn store_interleaved2(dst: *mut f32, p0: __m256, p1: __m256) {
    // Within each 128-bit half: lo = m0 m1 (of the half), hi = m2 m3.
    let lo = _mm256_unpacklo_ps(p0, p1);
    let hi = _mm256_unpackhi_ps(p0, p1);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(lo, hi));
    _mm256_storeu_ps(dst.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
}

/// `dst[4m + r] = p[r][m]` for the 8 lanes of the four phases: 32 values.
#[inline(always)]
unsafe fn store_interleaved4(dst: *mut f32, p: [__m256; 4]) {
    // A 4x4 transpose within each 128-bit half: u_k holds column m = k of
    // the low half and m = k + 4 of the high half.
    let t0 = _mm256_unpacklo_ps(p[0], p[1]);
    let t1 = _mm256_unpackhi_ps(p[0], p[1]);
    let t2 = _mm256_unpacklo_ps(p[2], p[3]);
    let t3 = _mm256_unpackhi_ps(p[2], p[3]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(u0, u1));
    _mm256_storeu_ps(dst.add(8), _mm256_permute2f128_ps::<0x20>(u2, u3));
    _mm256_storeu_ps(dst.add(16), _mm256_permute2f128_ps::<0x31>(u0, u1));
    _mm256_storeu_ps(dst.add(24), _mm256_permute2f128_ps::<0x31>(u2, u3));
}

#[cfg(test)]
mod tests {
    use crate::ops::kernels::{lanes::check, Cpu};

    #[test]
    fn deinterleave_splits_even_and_odd_columns() {
        if !Cpu::detect().avx2 {
            return check::skipped("avx2 deinterleave", "avx2");
        }
        let src: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let (mut even, mut odd) = (vec![-1.0; 19], vec![-1.0; 17]);
        // SAFETY: AVX2 checked above.
        let done = unsafe { super::deinterleave(&src, &mut even, &mut odd) };
        assert_eq!(done, 16, "two blocks of 8 pairs fit all three slices");
        for i in 0..done {
            assert_eq!((even[i], odd[i]), (src[2 * i], src[2 * i + 1]));
        }
        assert_eq!(
            (even[done], odd[done]),
            (-1.0, -1.0),
            "nothing past the pairs done"
        );
    }

    #[test]
    fn fma_ymm_tile_sums_and_finishes_like_the_reference() {
        let cpu = Cpu::detect();
        if !(cpu.avx2 && cpu.fma) {
            return check::skipped("avx2 fma (ymm) tile", "avx2 + fma");
        }
        fn on<const R: usize>(case: &check::Rows, split: usize) {
            for b in 0..case.packed.blocks() {
                check::finishes::<1>(case, b, split, R, |a, o, acc, add, finish| {
                    // SAFETY: AVX2 and FMA checked by the caller; the case
                    // leaves 4 * NR values past every offset.
                    unsafe {
                        super::f32_rows_x16_panels::<R, 1>(a, case.x.as_ptr(), o, acc, add, finish)
                    }
                });
            }
        }
        for (channels, k, split) in [(7, 13, 5), (6, 8, 3), (5, 40, 21)] {
            let case = check::rows(channels, k);
            on::<6>(&case, split);
            on::<4>(&case, split);
        }
    }
}
