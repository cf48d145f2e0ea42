//! Kernels for aarch64 cores with the dot-product extension (Armv8.2
//! `FEAT_DotProd`: Cortex-A55, A76 in the Raspberry Pi 5, A78AE in the
//! Jetson Orin family).
//!
//! [`s8_4x16_dot`]: 4 output channels x 16 pixels of `s8 x s8` quads in 16
//! accumulators. One `sdot` by element multiplies four pixels' quads (one
//! panel register) by one channel's quad (a lane of the weight register)
//! and adds the four dot products into four `i32` lanes: 16 multiply-adds
//! per instruction, two instructions per cycle on an A76. It reads the same
//! weight layout and quad words (through one word offset per quad) as
//! [`super::neon::s8_4x16_mull`] and requantises in its epilogue the same
//! way.
//!
//! Rust's `sdot` intrinsics are not stable yet, so the instruction itself is
//! one line of inline assembly; everything around it is ordinary intrinsics
//! that the compiler schedules and allocates registers for.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::{requant_store_4x16, Requant4};

/// `acc + dot(x's four quads, w's quad in lane L)`, lane by lane.
#[inline(always)]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    asm!(
        "sdot {acc:v}.4s, {x:v}.16b, {w:v}.4b[{lane}]",
        acc = inout(vreg) acc,
        x = in(vreg) x,
        w = in(vreg) w,
        lane = const L,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// `out[r][j] = requant(sum_q sum_t w[q][r][t] * x[offsets[q] + j][t])`
/// over `offsets.len()` quads of `s8`: weights `[quad][4 rows][4]`, quad
/// words (4 bytes each) at word offsets from `x`: a packed panel or an
/// image of channel quads read in place. Requantised in the epilogue
/// ([`Requant4`]).
///
/// # Safety
/// NEON and the dot product present; `w` holds `16 * offsets.len()` bytes;
/// `x` is valid for 16 words from every offset; every `rq.out[r]` is valid
/// for 16 writes.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn s8_4x16_dot(w: *const i8, x: *const i8, offsets: &[usize], rq: &Requant4) {
    let mut c = rq.bias.map(|b| [vdupq_n_s32(b); 4]);
    for (q, &o) in offsets.iter().enumerate() {
        let wq = vld1q_s8(w.add(16 * q));
        let xq = x.add(4 * o);
        let xs = [
            vld1q_s8(xq),
            vld1q_s8(xq.add(16)),
            vld1q_s8(xq.add(32)),
            vld1q_s8(xq.add(48)),
        ];
        for g in 0..4 {
            c[0][g] = sdot_lane::<0>(c[0][g], xs[g], wq);
            c[1][g] = sdot_lane::<1>(c[1][g], xs[g], wq);
            c[2][g] = sdot_lane::<2>(c[2][g], xs[g], wq);
            c[3][g] = sdot_lane::<3>(c[3][g], xs[g], wq);
        }
    }
    requant_store_4x16(&c, rq);
}
