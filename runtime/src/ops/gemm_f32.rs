//! The `f32` matrix product under our float convolution ([`super::F32Conv`]):
//! a block of [`MR`] output channels times [`NR`] output pixels, summed over
//! the reduction with fused multiply-adds.
//!
//! The pixel operand is *indirect*: row `p` of it (the [`NR`] pixels' values
//! of reduction index `p`) is read at `base + offsets[p]`. For a stride-1
//! convolution those rows are contiguous runs of the zero-padded input image
//! itself, so nothing is packed at all (no im2col matrix, not even a panel);
//! other strides gather a panel first and pass `offsets = [0, NR, 2 NR, ..]`.
//!
//! Layout of the weights, packed once per model: per block of [`MR`] output
//! channels, per reduction index `p`, `MR` values (`w[c][p]`).

use super::kernels::F32Kernel;

/// Output channels per micro-kernel call.
pub const MR: usize = 6;
/// Output pixels per micro-kernel call (two AVX vectors of `f32`).
pub const NR: usize = 16;

/// `f32` weights in micro-kernel order.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedF32 {
    /// Output channels (rows of the product).
    pub channels: usize,
    /// Reduction length.
    pub k: usize,
    /// `blocks * k * MR` values; rows past `channels` are zero.
    values: Vec<f32>,
}

impl PackedF32 {
    /// Packs row-major `weights[channel][k]` (`channels * k` values).
    pub fn new(weights: &[f32], channels: usize, k: usize) -> PackedF32 {
        debug_assert_eq!(weights.len(), channels * k);
        let blocks = channels.div_ceil(MR);
        let mut values = vec![0f32; blocks * k * MR];
        for b in 0..blocks {
            for p in 0..k {
                for r in 0..MR {
                    let c = b * MR + r;
                    if c < channels {
                        values[(b * k + p) * MR + r] = weights[c * k + p];
                    }
                }
            }
        }
        PackedF32 {
            channels,
            k,
            values,
        }
    }

    /// Number of `MR`-channel blocks.
    pub fn blocks(&self) -> usize {
        self.channels.div_ceil(MR)
    }

    /// The values of block `b`.
    pub fn block(&self, b: usize) -> &[f32] {
        let len = self.k * MR;
        &self.values[b * len..(b + 1) * len]
    }
}

/// Where a tile's last reduction chunk goes when the tile finishes it: each
/// row's bias added (then a ReLU) and written straight into the output
/// tensor. The sums never pass through memory and no second pass reads
/// them back, which costs most in layers with short reductions (a 1x1
/// convolution over 32 channels multiplies only 32 times per output).
#[derive(Debug, Clone, Copy)]
pub struct Finish {
    /// Row 0's first pixel in the output.
    pub out: *mut f32,
    /// Elements from one output row (channel) to the next.
    pub row_stride: usize,
    /// One bias per row, `rows` of them.
    pub bias: *const f32,
    /// Rows to write: at most the tile's.
    pub rows: usize,
    /// Pixels to write per row, from `out` on: at most the tile's.
    pub width: usize,
    /// Whether negative sums become 0.
    pub relu: bool,
}

impl Finish {
    /// The same rows from pixel `from` on (a panel further right).
    fn skip(&self, from: usize) -> Finish {
        Finish {
            out: self.out.wrapping_add(from),
            width: self.width.saturating_sub(from),
            ..*self
        }
    }

    /// Writes a 16-pixel tile the kernel left in memory (kernels without
    /// the fused epilogue).
    ///
    /// # Safety
    /// `out` valid for `width.min(NR)` writes at each of the `rows` rows,
    /// `bias` for `rows` reads.
    unsafe fn write(&self, acc: &[[f32; NR]; MR]) {
        for (r, sums) in acc.iter().enumerate().take(self.rows) {
            let bias = *self.bias.add(r);
            let out = std::slice::from_raw_parts_mut(
                self.out.add(r * self.row_stride),
                self.width.min(NR),
            );
            for (y, &sum) in out.iter_mut().zip(sums) {
                *y = if self.relu {
                    (sum + bias).max(0.0)
                } else {
                    sum + bias
                };
            }
        }
    }
}

/// `acc[r][j] (+)= sum_p a[p][r] * x[offsets[p] + j]` over `offsets.len()`
/// reduction indices, with the best kernel this CPU has; `add` keeps what
/// `acc` holds (for a reduction split into chunks).
///
/// # Panics
/// When `a` holds fewer than `offsets.len() * MR` values or some row
/// `x[offsets[p]..offsets[p] + NR]` is out of bounds.
#[inline]
pub fn micro_kernel(a: &[f32], x: &[f32], offsets: &[usize], acc: &mut [[f32; NR]; MR], add: bool) {
    assert!(a.len() >= offsets.len() * MR);
    assert!(offsets.iter().all(|&o| o + NR <= x.len()));
    // SAFETY: both bounds asserted above; the detected kernel runs here.
    unsafe { micro_kernel_unchecked(F32Kernel::detect(), MR, a, x, offsets, acc, add) }
}

/// [`micro_kernel`] on `kernel` without its bounds checks (an `O(k)` scan
/// per call), for callers that proved them once per layer. Only the first
/// `rows` rows of `acc` are needed (a kernel may leave the others alone).
///
/// # Safety
/// `kernel` must run on this CPU ([`F32Kernel::runs_on`]); `a` must hold
/// `offsets.len() * MR` values and `x[o..o + NR]` must be in bounds for
/// every offset `o`.
#[inline]
pub unsafe fn micro_kernel_unchecked(
    kernel: F32Kernel,
    rows: usize,
    a: &[f32],
    x: &[f32],
    offsets: &[usize],
    acc: &mut [[f32; NR]; MR],
    add: bool,
) {
    debug_assert!(a.len() >= offsets.len() * MR);
    debug_assert!(offsets.iter().all(|&o| o + NR <= x.len()));
    let _ = rows; // only the NEON kernels have a narrower tile
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract (AVX2 + FMA present, bounds).
        F32Kernel::Avx2Fma => super::kernels::avx2::f32_rows_x16_panels::<6, 1>(
            a.as_ptr(),
            x.as_ptr(),
            offsets,
            std::array::from_mut(acc),
            add,
            None,
        ),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract (AVX-512F present, bounds).
        F32Kernel::Avx512Fma => {
            super::kernels::avx512::f32_6x16(a.as_ptr(), x.as_ptr(), offsets, acc, add)
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller's contract (NEON present, bounds).
        F32Kernel::NeonFmla if rows <= 4 => {
            super::kernels::neon::f32_rows_x16::<4>(a.as_ptr(), x.as_ptr(), offsets, acc, add)
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        F32Kernel::NeonFmla => {
            super::kernels::neon::f32_rows_x16::<6>(a.as_ptr(), x.as_ptr(), offsets, acc, add)
        }
        _ => micro_kernel_portable(a, x, offsets, acc, add),
    }
}

/// [`micro_kernel_unchecked`] over `acc.len()` neighbouring panels: panel
/// `j` reads its pixels at `x[o + j * NR..]` and sums into `acc[j]`. A
/// kernel with a wide tile ([`F32Kernel::panels`]) runs them in one pass;
/// the others run one panel after another. With `finish`, the sums go to
/// the output instead of `acc` (see [`Finish`]).
///
/// # Safety
/// As [`micro_kernel_unchecked`], with `x[o..o + acc.len() * NR]` in bounds
/// for every offset `o`; `acc.len()` at most [`super::kernels::MAX_PANELS`];
/// `finish`, if any, with `rows` at most `rows`, `width` at most
/// `acc.len() * NR`, its output rows valid for `width` writes and its bias
/// for `rows` reads.
#[allow(clippy::too_many_arguments)] // the tile, its operands and its sink
#[inline]
pub unsafe fn micro_kernel_panels_unchecked(
    kernel: F32Kernel,
    rows: usize,
    a: &[f32],
    x: &[f32],
    offsets: &[usize],
    acc: &mut [[[f32; NR]; MR]],
    add: bool,
    finish: Option<&Finish>,
) {
    debug_assert!(acc.len() <= super::kernels::MAX_PANELS);
    debug_assert!(offsets.iter().all(|&o| o + acc.len() * NR <= x.len()));
    debug_assert!(finish.is_none_or(|f| f.rows <= rows && f.width <= acc.len() * NR));
    #[cfg(target_arch = "x86_64")]
    if kernel == F32Kernel::Avx512Fma {
        use super::kernels::avx512::f32_rows_x16_panels as tile;
        let (a, x, f) = (a.as_ptr(), x.as_ptr(), finish);
        // SAFETY: the caller's contract (AVX-512F present, bounds); each
        // arm's slice has the length it is converted to. A block with at
        // most 4 channels left runs the 4-row tile.
        match (rows <= 4, acc.len()) {
            (false, 4) => return tile::<6, 4>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (false, 3) => return tile::<6, 3>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (false, 2) => return tile::<6, 2>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (false, 1) => return tile::<6, 1>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (true, 4) => return tile::<4, 4>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (true, 3) => return tile::<4, 3>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (true, 2) => return tile::<4, 2>(a, x, offsets, acc.try_into().unwrap(), add, f),
            (true, 1) => return tile::<4, 1>(a, x, offsets, acc.try_into().unwrap(), add, f),
            _ => {}
        }
    }
    for (j, acc) in acc.iter_mut().enumerate() {
        let finish = finish.map(|f| f.skip(j * NR));
        #[cfg(target_arch = "x86_64")]
        if kernel == F32Kernel::Avx2Fma {
            use super::kernels::avx2::f32_rows_x16_panels as tile;
            let (a, x, f) = (a.as_ptr(), x.as_ptr().add(j * NR), finish.as_ref());
            let acc = std::array::from_mut(acc);
            // SAFETY: the caller's contract (AVX2 and FMA present, bounds).
            if rows <= 4 {
                tile::<4, 1>(a, x, offsets, acc, add, f);
            } else {
                tile::<6, 1>(a, x, offsets, acc, add, f);
            }
            continue;
        }
        micro_kernel_unchecked(kernel, rows, a, &x[j * NR..], offsets, acc, add);
        if let Some(finish) = finish {
            finish.write(acc);
        }
    }
}

/// Plain Rust, written so compilers vectorise it (NEON on aarch64).
pub fn micro_kernel_portable(
    a: &[f32],
    x: &[f32],
    offsets: &[usize],
    acc: &mut [[f32; NR]; MR],
    add: bool,
) {
    let mut sum = if add { *acc } else { [[0f32; NR]; MR] };
    for (p, &o) in offsets.iter().enumerate() {
        let row: &[f32; NR] = x[o..o + NR].try_into().expect("NR values");
        for (r, out) in sum.iter_mut().enumerate() {
            let w = a[p * MR + r];
            for j in 0..NR {
                out[j] = w.mul_add(row[j], out[j]);
            }
        }
    }
    *acc = sum;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_a_plain_sum_with_indirect_rows() {
        // k = 13 with rows scattered (and overlapping) over x; 7 channels: a
        // partial second block.
        let (channels, k) = (7, 13);
        let w: Vec<f32> = (0..channels * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let x: Vec<f32> = (0..200)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let offsets: Vec<usize> = (0..k).map(|p| (p * 11) % 150 + p % 3).collect();
        let packed = PackedF32::new(&w, channels, k);
        for b in 0..packed.blocks() {
            let mut fast = [[0.0; NR]; MR];
            let mut slow = [[0.0; NR]; MR];
            micro_kernel(packed.block(b), &x, &offsets, &mut fast, false);
            micro_kernel_portable(packed.block(b), &x, &offsets, &mut slow, false);
            // The same sum in two chunks of the reduction.
            let mut split = [[0.0; NR]; MR];
            micro_kernel(packed.block(b), &x, &offsets[..5], &mut split, false);
            micro_kernel(
                &packed.block(b)[5 * MR..],
                &x,
                &offsets[5..],
                &mut split,
                true,
            );
            for (s, f) in split.iter().flatten().zip(fast.iter().flatten()) {
                assert!((s - f).abs() < 1e-5);
            }
            for r in 0..MR {
                let c = b * MR + r;
                for j in 0..NR {
                    let want: f32 = if c < channels {
                        (0..k).map(|p| w[c * k + p] * x[offsets[p] + j]).sum()
                    } else {
                        0.0
                    };
                    assert!((fast[r][j] - want).abs() < 1e-4, "channel {c} pixel {j}");
                    assert!((slow[r][j] - want).abs() < 1e-4, "channel {c} pixel {j}");
                }
            }
        }
    }
}
