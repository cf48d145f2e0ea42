//! Kernels for x86_64 CPUs with AVX-VNNI: `vpdpbusd` on 256-bit registers
//! (VEX encoding), found without AVX-512 on Intel's Alder Lake and later
//! cores, the N100-class mini PCs among them, and on AMD Zen 5.
//!
//! [`u8_quads_6x16`]: the `u8 x s8` quad tile of [`super::lanes`] on `ymm`
//! registers. Where AVX2's `vpmaddubsw` needs 7-bit weights (its `i16`
//! pair sums saturate) and three instructions per 32 products, `vpdpbusd`
//! takes any `s8` weight and does the 32 products in one.

use std::arch::x86_64::*;

use super::lanes::{self, DotLanes};
use crate::ops::gemm::{Requantize, MR, NR};

/// Eight `i32` lanes of a `ymm` register.
#[derive(Clone, Copy)]
pub struct Ymm(__m256i);

impl DotLanes for Ymm {
    const WIDTH: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Ymm(_mm256_setzero_si256())
    }
    #[inline(always)]
    unsafe fn load(p: *const i32) -> Self {
        Ymm(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> Self {
        Ymm(_mm256_set1_epi32(v))
    }
    #[inline(always)]
    unsafe fn dot(self, u8s: Self, s8s: Self) -> Self {
        Ymm(_mm256_dpbusd_avx_epi32(self.0, u8s.0, s8s.0))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Ymm(_mm256_add_epi32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i32) {
        _mm256_storeu_si256(p as *mut __m256i, self.0)
    }
    #[inline(always)]
    unsafe fn requantize(self, bias: i32, scale: f32, zero_point: i32, out: *mut u8) {
        let x = _mm256_add_epi32(self.0, _mm256_set1_epi32(bias));
        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(x), _mm256_set1_ps(scale));
        // cvtps rounds half to even in the default MXCSR mode.
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(y), _mm256_set1_epi32(zero_point));
        // i32 -> i16 -> u8, both saturating; packs works per 128-bit half.
        let w = _mm256_packs_epi32(q, q);
        let halves =
            _mm_unpacklo_epi64(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
        _mm_storel_epi64(out as *mut __m128i, _mm_packus_epi16(halves, halves));
    }
}

/// [`lanes::u8_quads_6x16`] on `ymm` registers with `vpdpbusd`.
///
/// # Safety
/// AVX2 and AVX-VNNI must be available; `a` must hold `offsets.len() * MR`
/// words and `x.add(o)` be valid for `NR` reads at every offset `o`.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn u8_quads_6x16(
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    acc: &mut [[i32; NR]; MR],
    finish: Option<&Requantize>,
) {
    debug_assert!(a.len() >= offsets.len() * MR);
    lanes::u8_quads_6x16::<Ymm>(a.as_ptr(), x, offsets, acc, finish)
}

#[cfg(test)]
mod tests {
    use super::super::lanes::check;
    use super::*;
    use crate::ops::kernels::Cpu;

    #[test]
    fn vpdpbusd_ymm_tile_matches_the_reference() {
        if !Cpu::detect().avx_vnni {
            return check::skipped("avx-vnni u8 x s8 (vpdpbusd ymm)", "avxvnni");
        }
        for (channels, k) in [(7, 37), (13, 29), (7, 9), (1, 3)] {
            let case = check::quads(channels, k);
            for b in 0..case.packed.blocks() {
                let mut acc = [[0; NR]; MR];
                // SAFETY: AVX-VNNI checked above; sizes from the packing.
                unsafe {
                    u8_quads_6x16(
                        case.packed.block(b),
                        case.panel.as_ptr(),
                        &case.offsets,
                        &mut acc,
                        None,
                    )
                };
                assert_eq!(
                    &acc[..],
                    &case.want[b * MR..(b + 1) * MR],
                    "k {k}, block {b}"
                );
                let (a, x, o) = (case.packed.block(b), case.panel.as_ptr(), &case.offsets);
                check::requantizes::<1>(&case, b, |acc, finish| {
                    // SAFETY: as above.
                    unsafe { u8_quads_6x16(a, x, o, &mut acc[0], Some(finish)) }
                });
            }
        }
    }
}
