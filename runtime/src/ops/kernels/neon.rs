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
//! - [`Requant4`]: both `s8` kernels requantise in their epilogue, straight
//!   from registers into the `u8` output rows, bit-identical to the portable
//!   `round_ties_even` arithmetic (`scvtf`, `fmul`, `fcvtns`); [`requant_row`]
//!   is the same for one row of sums in memory, [`quantize_u8`] for
//!   QuantizeLinear.
//! - [`pack_quads`]: 16 output pixels of 4 reduction indices into 16 quad
//!   words, the panel layout both `s8` kernels read (`zip` of four rows),
//!   for layers that gather; [`interleave_quads`] (`st4`) builds the image
//!   of channel quads they read in place instead.
//! - [`upsample_row_2s`]: a row of DLA's depthwise up-sampler, phases
//!   interleaved by `st2`/`st4`.

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
        for (c, row) in c.iter_mut().zip(acc.iter()).take(R) {
            for (g, v) in c.iter_mut().enumerate() {
                *v = vld1q_f32(row.as_ptr().add(4 * g));
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
    for (c, row) in c.iter().zip(acc.iter_mut()).take(R) {
        for (g, &v) in c.iter().enumerate() {
            vst1q_f32(row.as_mut_ptr().add(4 * g), v);
        }
    }
}

/// The requantisation of one block of 4 output channels, applied in the
/// `s8` kernels' epilogue:
/// `out = saturate_u8(round_even((acc + bias) as f32 * scale) + zero_point)`,
/// the portable arithmetic bit for bit (`scvtf`,
/// `fmul`, `fcvtns`; the accumulators start at the bias). Rows past the
/// layer's channels have any values and write to a scratch row.
#[derive(Debug, Clone, Copy)]
pub struct Requant4 {
    /// `i32` bias per row.
    pub bias: [i32; 4],
    /// Multiplier per row.
    pub scale: [f32; 4],
    /// Output zero point, 0..=255.
    pub zero_point: i32,
    /// Where each row's 16 `u8` results go.
    pub out: [*mut u8; 4],
}

/// Requantises `N` registers (4 values each) of one row and stores them.
#[inline(always)]
unsafe fn requant_store<const N: usize>(
    v: [int32x4_t; N],
    scale: f32,
    zero_point: int16x8_t,
    dst: *mut u8,
) {
    // fcvtns rounds to nearest, ties to even, and saturates to i32.
    let q = |v: int32x4_t| vcvtnq_s32_f32(vmulq_n_f32(vcvtq_f32_s32(v), scale));
    // i32 -> i16 saturating, the zero point added saturating (|zp| <= 255
    // keeps every clamp to 0..255 the same), then i16 -> u8 saturating.
    let lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q(v[0])), q(v[1])), zero_point);
    if N == 2 {
        vst1_u8(dst, vqmovun_s16(lo));
    } else {
        let hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q(v[2])), q(v[3])), zero_point);
        vst1q_u8(dst, vqmovun_high_s16(vqmovun_s16(lo), hi));
    }
}

/// The zero point as the `i16` lanes [`requant_store`] adds.
#[inline(always)]
pub(super) unsafe fn zero_point_lanes(zero_point: i32) -> int16x8_t {
    vdupq_n_s16(zero_point.clamp(-255, 255) as i16)
}

/// Requantises and stores 4 rows x 16 pixels of `i32` sums.
#[inline(always)]
pub(super) unsafe fn requant_store_4x16(c: &[[int32x4_t; 4]; 4], rq: &Requant4) {
    let z = zero_point_lanes(rq.zero_point);
    for (r, c) in c.iter().enumerate() {
        requant_store::<4>(*c, rq.scale[r], z, rq.out[r]);
    }
}

/// `out[r][j] = requant(sum_q sum_t w[q][r][t] * x[offsets[q] + j][t])`
/// over `offsets.len()` quads of `s8`: weights `[quad][4 rows][4]`, quad
/// words (4 bytes each) at word offsets from `x`: a packed panel or an
/// image of channel quads read in place. With `PAIRED`, two quads share
/// each `i16` lane (every weight must be above -128); without, one does.
///
/// # Safety
/// NEON present; `w` holds `16 * offsets.len()` bytes; `x` is valid for 16
/// words from every offset; every `rq.out[r]` is valid for 16 writes.
#[target_feature(enable = "neon")]
pub unsafe fn s8_4x16_mull<const PAIRED: bool>(
    w: *const i8,
    x: *const i8,
    offsets: &[usize],
    rq: &Requant4,
) {
    let z = zero_point_lanes(rq.zero_point);
    let quads = offsets.len();
    // Eight pixels at a time: 4 rows x 4 registers of 2 pixels x 2 lanes.
    for half in 0..2 {
        let x = x.add(32 * half);
        let at = |q: usize| x.add(4 * *offsets.get_unchecked(q));
        // Each pixel's first lane starts at the bias, its second at zero.
        let mut c = rq
            .bias
            .map(|b| [vreinterpretq_s32_s64(vdupq_n_s64(i64::from(b as u32))); 4]);
        let mut q = 0;
        if PAIRED {
            while q + 2 <= quads {
                let (w0, w1) = (vld1q_s8(w.add(16 * q)), vld1q_s8(w.add(16 * q + 16)));
                let (p0, p1) = (at(q), at(q + 1));
                let x0 = [vld1q_s8(p0), vld1q_s8(p0.add(16))];
                let x1 = [vld1q_s8(p1), vld1q_s8(p1.add(16))];
                mull_row::<0>(&mut c[0], w0, w1, x0, x1);
                mull_row::<1>(&mut c[1], w0, w1, x0, x1);
                mull_row::<2>(&mut c[2], w0, w1, x0, x1);
                mull_row::<3>(&mut c[3], w0, w1, x0, x1);
                q += 2;
            }
        }
        while q < quads {
            let w0 = vld1q_s8(w.add(16 * q));
            let p0 = at(q);
            let x0 = [vld1q_s8(p0), vld1q_s8(p0.add(16))];
            single_row::<0>(&mut c[0], w0, x0);
            single_row::<1>(&mut c[1], w0, x0);
            single_row::<2>(&mut c[2], w0, x0);
            single_row::<3>(&mut c[3], w0, x0);
            q += 1;
        }
        // Each register holds two pixels' two partial sums: add neighbours.
        for (r, c) in c.iter().enumerate() {
            let sums = [vpaddq_s32(c[0], c[1]), vpaddq_s32(c[2], c[3])];
            requant_store::<2>(sums, rq.scale[r], z, rq.out[r].add(8 * half));
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

/// Interleaves four rows of bytes (each `^ flip`) into quad words with
/// `st4`, 16 pixels at a time while 16 are left: `dst[x]` holds
/// `rows[0][x]` to `rows[3][x]`, low byte first (the image of channel
/// quads the `s8` kernels read in place). Returns how many pixels it wrote.
///
/// # Safety
/// NEON present; every row holds at least `dst.len()` bytes.
#[target_feature(enable = "neon")]
pub unsafe fn interleave_quads(rows: [&[u8]; 4], flip: u8, dst: &mut [i32]) -> usize {
    let flip = vdupq_n_u8(flip);
    let whole = dst.len() - dst.len() % 16;
    for x in (0..whole).step_by(16) {
        let load = |r: &[u8]| veorq_u8(vld1q_u8(r.as_ptr().add(x)), flip);
        let quads = uint8x16x4_t(load(rows[0]), load(rows[1]), load(rows[2]), load(rows[3]));
        vst4q_u8(dst.as_mut_ptr().add(x) as *mut u8, quads);
    }
    whole
}

/// [`interleave_quads`] into the two phases of a stride-2 layout, 32 pixels
/// at a time while 32 are left (`ld2` splits each row's even and odd
/// bytes): pixel `x`'s word goes to `evens[x / 2]` or `odds[x / 2]`.
/// Returns how many pixels it wrote.
///
/// # Safety
/// NEON present; every row holds at least `evens.len() + odds.len()` bytes,
/// and `evens` at least as many words as `odds`.
#[target_feature(enable = "neon")]
pub unsafe fn interleave_quads_phased(
    rows: [&[u8]; 4],
    flip: u8,
    evens: &mut [i32],
    odds: &mut [i32],
) -> usize {
    let flip = vdupq_n_u8(flip);
    let w = evens.len() + odds.len();
    let whole = w - w % 32;
    for x in (0..whole).step_by(32) {
        let load = |r: &[u8]| {
            let v = vld2q_u8(r.as_ptr().add(x));
            (veorq_u8(v.0, flip), veorq_u8(v.1, flip))
        };
        let [(e0, o0), (e1, o1), (e2, o2), (e3, o3)] = rows.map(load);
        vst4q_u8(
            evens.as_mut_ptr().add(x / 2) as *mut u8,
            uint8x16x4_t(e0, e1, e2, e3),
        );
        vst4q_u8(
            odds.as_mut_ptr().add(x / 2) as *mut u8,
            uint8x16x4_t(o0, o1, o2, o3),
        );
    }
    whole
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

/// One output row of DLA's depthwise up-sampler (kernel `2S`, stride `S`,
/// padding `S / 2`) for `m` in `0..count` (a multiple of 4):
/// `out[m * S + r] = bias + sum over the kernel rows j, in order, of
/// w[j][r][0] * a + w[j][r][1] * b`, where `(a, b)` is `(x[m], x[m - 1])` for
/// the first half of the phases and `(x[m + 1], x[m])` for the second, `x`
/// being `rows[j]`. Each tap is a multiply then an add, in the portable
/// loop's order, so both give the same bits. The three shifted vectors of a
/// kernel row serve all `S` phases; the phases are interleaved by
/// `st2`/`st4`. `R` is 1 or 2: kernel rows that reach this output row.
///
/// # Safety
/// NEON present; `S` is 2 or 4; `rows[j].add(m - 1 ..= m + 1)` valid for
/// every `m` read (`count + 1` past and one before); `out` valid for
/// `S * count` writes.
#[target_feature(enable = "neon")]
pub unsafe fn upsample_row_2s<const S: usize, const R: usize>(
    rows: [*const f32; R],
    w: [[[f32; 2]; S]; R],
    bias: f32,
    count: usize,
    out: *mut f32,
) {
    debug_assert!(count.is_multiple_of(4) && (S == 2 || S == 4));
    for m in (0..count).step_by(4) {
        let mut acc = [vdupq_n_f32(bias); S];
        for (row, w) in rows.iter().zip(&w) {
            let at = row.add(m);
            let (before, here, after) = (vld1q_f32(at.sub(1)), vld1q_f32(at), vld1q_f32(at.add(1)));
            for (r, (a, w)) in acc.iter_mut().zip(w).enumerate() {
                let (x0, x1) = if r < S / 2 {
                    (here, before)
                } else {
                    (after, here)
                };
                *a = vaddq_f32(*a, vmulq_n_f32(x0, w[0]));
                *a = vaddq_f32(*a, vmulq_n_f32(x1, w[1]));
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

/// `out[i] = saturate_u8(round_even(input[i] * inverse_scale) + zero_point)`
/// (ONNX QuantizeLinear to `u8`, bit for bit) over whole blocks of 16
/// values; returns how many it did.
///
/// # Safety
/// NEON present; `out.len() >= input.len()`; `zero_point` in 0..=255.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_u8(
    input: &[f32],
    out: &mut [u8],
    inverse_scale: f32,
    zero_point: i32,
) -> usize {
    let z = zero_point_lanes(zero_point);
    let blocks = input.len() / 16;
    for b in 0..blocks {
        let src = input.as_ptr().add(16 * b);
        let q = |i: usize| vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(src.add(4 * i)), inverse_scale));
        let lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q(0)), q(1)), z);
        let hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(q(2)), q(3)), z);
        vst1q_u8(
            out.as_mut_ptr().add(16 * b),
            vqmovun_high_s16(vqmovun_s16(lo), hi),
        );
    }
    16 * blocks
}

/// `labels[i] = argmax_c data[c * n + i]` over `classes` class-major planes
/// of `n` pixels, for whole blocks of 16 pixels; returns how many pixels it
/// did. As the portable argmax: a class wins only when strictly greater, so
/// ties go to the lower class and NaN never wins. The best scores and their
/// classes stay in registers across all classes: one pass over the logits.
///
/// # Safety
/// NEON present; `data` holds `classes * n` values; `labels` holds `n`;
/// `1 <= classes <= 256`.
#[target_feature(enable = "neon")]
pub unsafe fn argmax_u8(data: &[f32], n: usize, classes: usize, labels: &mut [u8]) -> usize {
    debug_assert!(data.len() >= classes * n && labels.len() >= n && (1..=256).contains(&classes));
    let blocks = n / 16;
    for b in 0..blocks {
        let at = data.as_ptr().add(16 * b);
        let load = |c: usize, g: usize| vld1q_f32(at.add(c * n + 4 * g));
        let mut best = [load(0, 0), load(0, 1), load(0, 2), load(0, 3)];
        let mut class = [vdupq_n_u32(0); 4];
        for c in 1..classes {
            let id = vdupq_n_u32(c as u32);
            for g in 0..4 {
                let v = load(c, g);
                let better = vcgtq_f32(v, best[g]);
                best[g] = vbslq_f32(better, v, best[g]);
                class[g] = vbslq_u32(better, id, class[g]);
            }
        }
        let lo = vcombine_u16(vmovn_u32(class[0]), vmovn_u32(class[1]));
        let hi = vcombine_u16(vmovn_u32(class[2]), vmovn_u32(class[3]));
        vst1q_u8(
            labels.as_mut_ptr().add(16 * b),
            vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)),
        );
    }
    16 * blocks
}
