//! Armv8.0 Advanced SIMD (NEON) kernels: what every aarch64 CPU runs, and
//! the int8 path of cores without the dot product (Raspberry Pi 4's
//! Cortex-A72, the A53).
//!
//! - [`f32_rows_x16`]: 6 (or 4) output channels x 16 pixels in 24 (16)
//!   `fmla`-by-element accumulators; the pixel rows come straight from the
//!   padded image.
//! - [`s8_4x16_mull`]: 4 output channels x 16 pixels of `s8 x s8` quads.
//!   NEON has no 8-bit multiply-accumulate into 32 bits without the dot
//!   product, so, as XNNPACK's and ONNX Runtime's A72 kernels do, `smull`
//!   multiplies 8 byte pairs into `i16`, `smlal` adds the next quad's 8
//!   products, and `sadalp` folds pairs of `i16` lanes into `i32`
//!   accumulators: 16 multiply-adds per two widening multiplies, the
//!   Cortex-A72's limit of 8 per cycle. Two products per `i16` lane are exact
//!   when no weight is -128 (`2 * 128 * 127 < 2^15`); layers with one take
//!   the single-product form.
//! - [`pack_quads`]: 16 output pixels of 4 reduction indices into 16 quad
//!   words, the panel layout both `s8` kernels read (`zip` of four rows).
//! - [`requant_row`]: `i32` sums to `u8`, bit-identical to the portable
//!   `round_ties_even` arithmetic (`scvtf`, `fmul`, `fcvtns`).

use std::arch::aarch64::*;

use crate::ops::gemm::NR;

/// `acc[r][j] (+)= sum_p a[p * 6 + r] * x[offsets[p] + j]` for the first
/// `R` (4 or 6) of a 6-row block's rows x 16 pixels, over `offsets.len()`
/// reduction indices. The 4-row form serves a last block with at most 4
/// channels (16 channels are 6 + 6 + 4), which would otherwise compute zeros.
///
/// # Safety
/// NEON present; `a` holds `offsets.len() * 6` values; `x.add(o)` is valid
/// for 16 reads for every offset `o`.
#[target_feature(enable = "neon")]
pub unsafe fn f32_rows_x16<const R: usize>(
    a: *const f32,
    x: *const f32,
    offsets: &[usize],
    acc: &mut [[f32; NR]; 6],
    add: bool,
) {
    debug_assert!(R == 4 || R == 6);
    let mut c = [[vdupq_n_f32(0.0); 4]; 6];
    if add {
        for (r, row) in acc.iter().enumerate().take(R) {
            for g in 0..4 {
                c[r][g] = vld1q_f32(row.as_ptr().add(4 * g));
            }
        }
    }
    for (p, &o) in offsets.iter().enumerate() {
        let xp = x.add(o);
        let xs = [
            vld1q_f32(xp),
            vld1q_f32(xp.add(4)),
            vld1q_f32(xp.add(8)),
            vld1q_f32(xp.add(12)),
        ];
        let w = a.add(6 * p);
        let w0123 = vld1q_f32(w);
        for g in 0..4 {
            c[0][g] = vfmaq_laneq_f32::<0>(c[0][g], xs[g], w0123);
            c[1][g] = vfmaq_laneq_f32::<1>(c[1][g], xs[g], w0123);
            c[2][g] = vfmaq_laneq_f32::<2>(c[2][g], xs[g], w0123);
            c[3][g] = vfmaq_laneq_f32::<3>(c[3][g], xs[g], w0123);
        }
        if R == 6 {
            let w45 = vld1_f32(w.add(4));
            for g in 0..4 {
                c[4][g] = vfmaq_lane_f32::<0>(c[4][g], xs[g], w45);
                c[5][g] = vfmaq_lane_f32::<1>(c[5][g], xs[g], w45);
            }
        }
    }
    for (r, row) in acc.iter_mut().enumerate().take(R) {
        for g in 0..4 {
            vst1q_f32(row.as_mut_ptr().add(4 * g), c[r][g]);
        }
    }
}

/// `acc[r][j] = sum_q sum_t w[q][r][t] * x[q][j][t]` over `quads` quads of
/// `s8`: weights `[quad][4 rows][4]`, panel `[quad][16 pixels][4]`. With
/// `PAIRED`, two quads share each `i16` lane (every weight must be above
/// -128); without, one does.
///
/// # Safety
/// NEON present; `w` holds `16 * quads` bytes and `x` `64 * quads`.
#[target_feature(enable = "neon")]
pub unsafe fn s8_4x16_mull<const PAIRED: bool>(
    w: *const i8,
    x: *const i8,
    quads: usize,
    acc: &mut [[i32; NR]; 4],
) {
    // Eight pixels at a time: 4 rows x 4 registers of 2 pixels x 2 lanes.
    for half in 0..2 {
        let x = x.add(32 * half);
        let mut c = [[vdupq_n_s32(0); 4]; 4];
        let mut q = 0;
        if PAIRED {
            while q + 2 <= quads {
                let (w0, w1) = (vld1q_s8(w.add(16 * q)), vld1q_s8(w.add(16 * q + 16)));
                let x0 = [vld1q_s8(x.add(64 * q)), vld1q_s8(x.add(64 * q + 16))];
                let x1 = [vld1q_s8(x.add(64 * q + 64)), vld1q_s8(x.add(64 * q + 80))];
                mull_row::<0>(&mut c[0], w0, w1, x0, x1);
                mull_row::<1>(&mut c[1], w0, w1, x0, x1);
                mull_row::<2>(&mut c[2], w0, w1, x0, x1);
                mull_row::<3>(&mut c[3], w0, w1, x0, x1);
                q += 2;
            }
        }
        while q < quads {
            let w0 = vld1q_s8(w.add(16 * q));
            let x0 = [vld1q_s8(x.add(64 * q)), vld1q_s8(x.add(64 * q + 16))];
            single_row::<0>(&mut c[0], w0, x0);
            single_row::<1>(&mut c[1], w0, x0);
            single_row::<2>(&mut c[2], w0, x0);
            single_row::<3>(&mut c[3], w0, x0);
            q += 1;
        }
        // Each register holds two pixels' two partial sums: add neighbours.
        for (row, c) in acc.iter_mut().zip(&c) {
            let out = row.as_mut_ptr().add(8 * half);
            vst1q_s32(out, vpaddq_s32(c[0], c[1]));
            vst1q_s32(out.add(4), vpaddq_s32(c[2], c[3]));
        }
    }
}

/// One row's products for two quads (`w0`/`x0` and `w1`/`x1`), 8 pixels.
#[inline(always)]
unsafe fn mull_row<const R: i32>(
    c: &mut [int32x4_t; 4],
    w0: int8x16_t,
    w1: int8x16_t,
    x0: [int8x16_t; 2],
    x1: [int8x16_t; 2],
) {
    // Row R's four weights of each quad, in all four words.
    let r0 = vreinterpretq_s8_s32(vdupq_laneq_s32::<R>(vreinterpretq_s32_s8(w0)));
    let r1 = vreinterpretq_s8_s32(vdupq_laneq_s32::<R>(vreinterpretq_s32_s8(w1)));
    for h in 0..2 {
        // Pixels 4h, 4h + 1 (low halves) and 4h + 2, 4h + 3 (high halves).
        let lo = vmlal_s8(
            vmull_s8(vget_low_s8(x0[h]), vget_low_s8(r0)),
            vget_low_s8(x1[h]),
            vget_low_s8(r1),
        );
        let hi = vmlal_high_s8(vmull_high_s8(x0[h], r0), x1[h], r1);
        c[2 * h] = vpadalq_s16(c[2 * h], lo);
        c[2 * h + 1] = vpadalq_s16(c[2 * h + 1], hi);
    }
}

/// One row's products for one quad, 8 pixels.
#[inline(always)]
unsafe fn single_row<const R: i32>(c: &mut [int32x4_t; 4], w0: int8x16_t, x0: [int8x16_t; 2]) {
    let r0 = vreinterpretq_s8_s32(vdupq_laneq_s32::<R>(vreinterpretq_s32_s8(w0)));
    for h in 0..2 {
        let lo = vmull_s8(vget_low_s8(x0[h]), vget_low_s8(r0));
        let hi = vmull_high_s8(x0[h], r0);
        c[2 * h] = vpadalq_s16(c[2 * h], lo);
        c[2 * h + 1] = vpadalq_s16(c[2 * h + 1], hi);
    }
}

/// Gathers 16 pixels (stride 1 or 2) of four reduction indices per quad
/// into quad words: pixel `j`'s word holds the four bytes it multiplies.
/// `offsets` has four entries per quad; `panel` gets 64 bytes per quad.
///
/// # Safety
/// NEON present; `src.add(base + o)` valid for `16 * stride` reads for every
/// offset `o`; `panel` valid for `16 * offsets.len()` writes.
#[target_feature(enable = "neon")]
pub unsafe fn pack_quads(
    src: *const i8,
    offsets: &[usize],
    base: usize,
    stride: usize,
    panel: *mut i8,
) {
    let load = |o: usize| -> int8x16_t {
        let at = src.add(o + base);
        if stride == 1 {
            vld1q_s8(at)
        } else {
            vld2q_s8(at).0
        }
    };
    for (q, quad) in offsets.chunks_exact(4).enumerate() {
        let (r0, r1, r2, r3) = (load(quad[0]), load(quad[1]), load(quad[2]), load(quad[3]));
        let (a, b) = (vzip1q_s8(r0, r1), vzip2q_s8(r0, r1));
        let (c, d) = (vzip1q_s8(r2, r3), vzip2q_s8(r2, r3));
        let (a, b) = (vreinterpretq_s16_s8(a), vreinterpretq_s16_s8(b));
        let (c, d) = (vreinterpretq_s16_s8(c), vreinterpretq_s16_s8(d));
        let dst = panel.add(64 * q);
        vst1q_s8(dst, vreinterpretq_s8_s16(vzip1q_s16(a, c)));
        vst1q_s8(dst.add(16), vreinterpretq_s8_s16(vzip2q_s16(a, c)));
        vst1q_s8(dst.add(32), vreinterpretq_s8_s16(vzip1q_s16(b, d)));
        vst1q_s8(dst.add(48), vreinterpretq_s8_s16(vzip2q_s16(b, d)));
    }
}

/// `out[j] = saturate_u8(round_even((acc[j] + bias) as f32 * scale) + zero_point)`
/// for 16 values.
///
/// # Safety
/// NEON present.
#[target_feature(enable = "neon")]
pub unsafe fn requant_row(
    acc: &[i32; NR],
    bias: i32,
    scale: f32,
    zero_point: i32,
    out: &mut [u8; NR],
) {
    let b = vdupq_n_s32(bias);
    // fcvtns rounds to nearest, ties to even, and saturates to i32.
    let q = |i: usize| {
        let v = vaddq_s32(vld1q_s32(acc.as_ptr().add(4 * i)), b);
        vcvtnq_s32_f32(vmulq_n_f32(vcvtq_f32_s32(v), scale))
    };
    // i32 -> i16 saturating, add the zero point saturating (|zp| <= 255 keeps
    // every clamp to 0..255 the same), then i16 -> u8 saturating.
    let z = vdupq_n_s16(zero_point.clamp(-255, 255) as i16);
    let lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q(0)), q(1)), z);
    let hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q(2)), q(3)), z);
    vst1q_u8(out.as_mut_ptr(), vqmovun_high_s16(vqmovun_s16(lo), hi));
}

/// One output row of a depthwise up-sampler with `S` phases:
/// `out[m * S + r] = bias + w[r][0] * src[r][0][m] + w[r][1] * src[r][1][m] + ...`
/// for `m` in `0..count` (a multiple of 4), taps added in order, each as a
/// multiply then an add (the portable code's rounding, so both give the same
/// bits), and the phases interleaved by `st2`/`st4`.
///
/// # Safety
/// NEON present; `S` is 2 or 4; `taps[r]` holds `(source, weight)` pairs
/// whose sources are valid for `count` reads; `out` for `S * count` writes.
#[target_feature(enable = "neon")]
pub unsafe fn upsample_row<const S: usize>(
    taps: &[&[(*const f32, f32)]; S],
    bias: f32,
    count: usize,
    out: *mut f32,
) {
    debug_assert!(count % 4 == 0 && (S == 2 || S == 4));
    for m in (0..count).step_by(4) {
        let mut acc = [vdupq_n_f32(bias); S];
        for (a, phase) in acc.iter_mut().zip(taps) {
            for &(src, w) in phase.iter() {
                *a = vaddq_f32(*a, vmulq_n_f32(vld1q_f32(src.add(m)), w));
            }
        }
        let dst = out.add(S * m);
        if S == 2 {
            vst2q_f32(dst, float32x4x2_t(acc[0], acc[1]));
        } else {
            vst4q_f32(dst, float32x4x4_t(acc[0], acc[1], acc[2], acc[3]));
        }
    }
}
