//! Kernels for x86_64 CPUs with AVX-512: Intel Xeon since Skylake-SP (VNNI
//! since Cascade Lake), Ice Lake and later cores with it enabled, AMD Zen 4
//! and Zen 5.
//!
//! - [`u8_quads_6x16`] (AVX-512 VNNI): the `u8 x s8` quad tile of
//!   [`super::lanes`] on `zmm` registers, 64 products per `vpdpbusd`, any
//!   `s8` weight; [`u8_quads_6x16_panels`] runs it over up to four
//!   neighbouring panels (64 pixels), which the convolutions use.
//! - [`f32_6x16`] (AVX-512F): the float tile of [`super::lanes`] on `zmm`
//!   registers, 16 multiply-adds per FMA; [`f32_rows_x16_panels`] runs it over
//!   up to four neighbouring panels (64 pixels), which the convolutions use.
//!
//! A row of 16 pixels is one `zmm` register, so the one-panel tiles split
//! the reduction into two chains to keep 12 accumulators in flight; the
//! panel tiles keep 6 x `P` (24 for four panels).

use std::arch::x86_64::*;

use super::lanes::{self, DotLanes, FmaLanes};
use crate::ops::gemm::{Requantize, MR, NR};
use crate::ops::gemm_f32::Finish;

/// Sixteen `i32` lanes of a `zmm` register.
#[derive(Clone, Copy)]
pub struct Zmm(__m512i);

impl DotLanes for Zmm {
    const WIDTH: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Zmm(_mm512_setzero_si512())
    }
    #[inline(always)]
    unsafe fn load(p: *const i32) -> Self {
        Zmm(_mm512_loadu_si512(p as *const _))
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> Self {
        Zmm(_mm512_set1_epi32(v))
    }
    #[inline(always)]
    unsafe fn dot(self, u8s: Self, s8s: Self) -> Self {
        Zmm(_mm512_dpbusd_epi32(self.0, u8s.0, s8s.0))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Zmm(_mm512_add_epi32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut i32) {
        _mm512_storeu_si512(p as *mut _, self.0)
    }
    #[inline(always)]
    unsafe fn requantize(self, bias: i32, scale: f32, zero_point: i32, out: *mut u8) {
        let x = _mm512_add_epi32(self.0, _mm512_set1_epi32(bias));
        let y = _mm512_mul_ps(_mm512_cvtepi32_ps(x), _mm512_set1_ps(scale));
        // cvtps rounds half to even in the default MXCSR mode; below zero
        // is clamped first, then vpmovusdb saturates above 255.
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(zero_point));
        let q = _mm512_max_epi32(q, _mm512_setzero_si512());
        _mm_storeu_si128(out as *mut __m128i, _mm512_cvtusepi32_epi8(q));
    }
}

/// Sixteen `f32` lanes of a `zmm` register.
#[derive(Clone, Copy)]
pub struct Zmmf(__m512);

impl FmaLanes for Zmmf {
    const WIDTH: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Zmmf(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Zmmf(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Zmmf(_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        Zmmf(_mm512_fmadd_ps(a.0, b.0, self.0))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Zmmf(_mm512_add_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        Zmmf(_mm512_max_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
}

/// [`lanes::u8_quads_6x16`] on `zmm` registers with `vpdpbusd`.
///
/// # Safety
/// AVX-512F and AVX-512 VNNI must be available; `a` must hold
/// `offsets.len() * MR` words and `x.add(o)` be valid for `NR` reads at
/// every offset `o`.
#[target_feature(enable = "avx512f,avx512vnni")]
pub unsafe fn u8_quads_6x16(
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    acc: &mut [[i32; NR]; MR],
    finish: Option<&Requantize>,
) {
    debug_assert!(a.len() >= offsets.len() * MR);
    lanes::u8_quads_6x16::<Zmm>(a.as_ptr(), x, offsets, acc, finish)
}

/// [`lanes::u8_quads_6x16_panels`] on `zmm` registers: `P` neighbouring
/// panels, `stride` words apart, 6 x `P` accumulators.
///
/// # Safety
/// AVX-512F and AVX-512 VNNI must be available; `a` must hold
/// `offsets.len() * MR` words and `x.add(o + j * stride)` be valid for `NR`
/// reads at every offset `o`, `j < P`.
#[target_feature(enable = "avx512f,avx512vnni")]
pub unsafe fn u8_quads_6x16_panels<const P: usize>(
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    stride: usize,
    acc: &mut [[[i32; NR]; MR]; P],
    finish: Option<&Requantize>,
) {
    debug_assert!(a.len() >= offsets.len() * MR);
    lanes::u8_quads_6x16_panels::<Zmm, P>(a.as_ptr(), x, offsets, stride, acc, finish)
}

/// [`lanes::f32_6x16`] on `zmm` registers.
///
/// # Safety
/// AVX-512F must be available; `a` must hold `offsets.len() * MR` values and
/// `x.add(o)` must be valid for `NR` reads for every offset `o`.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_6x16(
    a: *const f32,
    x: *const f32,
    offsets: &[usize],
    acc: &mut [[f32; NR]; MR],
    add: bool,
) {
    lanes::f32_6x16::<Zmmf>(a, x, offsets, acc, add)
}

/// [`lanes::f32_rows_x16_panels`] on `zmm` registers: the first `R` rows
/// of a block over `P` neighbouring panels, `R` x `P` accumulators.
///
/// # Safety
/// AVX-512F must be available; `a` must hold `offsets.len() * MR` values and
/// `x.add(o)` must be valid for `P * NR` reads for every offset `o`;
/// `finish`, if any, valid (see [`Finish`]).
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_rows_x16_panels<const R: usize, const P: usize>(
    a: *const f32,
    x: *const f32,
    offsets: &[usize],
    acc: &mut [[[f32; NR]; MR]; P],
    add: bool,
    finish: Option<&Finish>,
) {
    lanes::f32_rows_x16_panels::<Zmmf, R, P>(a, x, offsets, acc, add, finish)
}

#[cfg(test)]
mod tests {
    use super::super::lanes::check;
    use super::*;
    use crate::ops::kernels::Cpu;

    #[test]
    fn vpdpbusd_zmm_tile_matches_the_reference() {
        if !Cpu::detect().avx512_vnni {
            return check::skipped("avx512-vnni u8 x s8 (vpdpbusd zmm)", "avx512f + avx512vnni");
        }
        for (channels, k) in [(7, 37), (13, 29), (7, 9), (1, 3)] {
            let case = check::quads(channels, k);
            for b in 0..case.packed.blocks() {
                let mut acc = [[0; NR]; MR];
                // SAFETY: AVX-512 VNNI checked above; sizes from the packing.
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

    #[test]
    fn vpdpbusd_zmm_panel_tiles_match_the_reference() {
        if !Cpu::detect().avx512_vnni {
            return check::skipped(
                "avx512-vnni u8 x s8 (vpdpbusd zmm) panels",
                "avx512f + avx512vnni",
            );
        }
        fn on<const P: usize>(case: &check::Quads) {
            let n = case.packed.quads;
            // P copies of the panel: every panel must give the same sums.
            let panels: Vec<i32> = (0..P).flat_map(|_| case.panel.iter().copied()).collect();
            for b in 0..case.packed.blocks() {
                let mut acc = [[[0; NR]; MR]; P];
                // SAFETY: AVX-512 VNNI checked by the caller; P panels.
                unsafe {
                    u8_quads_6x16_panels::<P>(
                        case.packed.block(b),
                        panels.as_ptr(),
                        &case.offsets,
                        n * NR,
                        &mut acc,
                        None,
                    )
                };
                check::requantizes::<P>(case, b, |acc, finish| {
                    // SAFETY: as above.
                    unsafe {
                        u8_quads_6x16_panels::<P>(
                            case.packed.block(b),
                            panels.as_ptr(),
                            &case.offsets,
                            n * NR,
                            acc,
                            Some(finish),
                        )
                    }
                });
                for (j, tile) in acc.iter().enumerate() {
                    assert_eq!(
                        &tile[..],
                        &case.want[b * MR..(b + 1) * MR],
                        "{P} panels, block {b}, panel {j}"
                    );
                }
            }
        }
        for (channels, k) in [(7, 37), (13, 29), (7, 9), (1, 3)] {
            let case = check::quads(channels, k);
            on::<2>(&case);
            on::<3>(&case);
            on::<4>(&case);
        }
    }

    #[test]
    fn fma_zmm_panel_tiles_match_the_reference() {
        if !Cpu::detect().avx512f {
            return check::skipped("avx512 fma (zmm) panels", "avx512f");
        }
        fn on<const R: usize, const P: usize>(case: &check::Rows, split: usize) {
            for b in 0..case.packed.blocks() {
                let mut acc = [[[f32::NAN; NR]; MR]; P];
                let (a, x, o) = (case.packed.block(b), &case.x, &case.offsets);
                // SAFETY: AVX-512F checked by the caller; the case leaves
                // 4 * NR values past every offset.
                unsafe {
                    let first = &o[..split];
                    let (x, none) = (x.as_ptr(), None);
                    f32_rows_x16_panels::<R, P>(a.as_ptr(), x, first, &mut acc, false, none);
                    let rest = a[split * MR..].as_ptr();
                    f32_rows_x16_panels::<R, P>(rest, x, &o[split..], &mut acc, true, none);
                }
                for (j, tile) in acc.iter().enumerate() {
                    let want = case.want_at(b, j * NR);
                    for (r, (got, want)) in tile.iter().zip(&want).take(R).enumerate() {
                        assert!(
                            check::close_row(got, want),
                            "{R}x{P}, block {b}, panel {j}, row {r}"
                        );
                    }
                }
                check::finishes::<P>(case, b, split, R, |a, o, acc, add, finish| {
                    // SAFETY: as above.
                    unsafe { f32_rows_x16_panels::<R, P>(a, case.x.as_ptr(), o, acc, add, finish) }
                });
            }
        }
        for (channels, k, split) in [(7, 13, 5), (6, 8, 3), (5, 40, 21)] {
            let case = check::rows(channels, k);
            on::<6, 1>(&case, split);
            on::<6, 2>(&case, split);
            on::<6, 3>(&case, split);
            on::<6, 4>(&case, split);
            on::<4, 4>(&case, split);
            on::<4, 2>(&case, split);
        }
    }

    #[test]
    fn fma_zmm_tile_matches_the_reference() {
        if !Cpu::detect().avx512f {
            return check::skipped("avx512 fma (zmm)", "avx512f");
        }
        for (channels, k, split) in [(7, 13, 5), (6, 8, 3), (5, 40, 21)] {
            let case = check::rows(channels, k);
            for b in 0..case.packed.blocks() {
                let mut acc = [[f32::NAN; NR]; MR];
                let (a, x, o) = (case.packed.block(b), &case.x, &case.offsets);
                // SAFETY: AVX-512F checked above; offsets inside x.
                unsafe {
                    f32_6x16(a.as_ptr(), x.as_ptr(), &o[..split], &mut acc, false);
                    f32_6x16(
                        a[split * MR..].as_ptr(),
                        x.as_ptr(),
                        &o[split..],
                        &mut acc,
                        true,
                    );
                }
                assert!(
                    check::close(&acc, &case.want[b * MR..(b + 1) * MR]),
                    "k {k}, block {b}"
                );
            }
        }
    }
}
