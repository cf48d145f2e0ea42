//! The 6x16 tiles of the x86 kernels whose instructions this machine may
//! lack (AVX-VNNI, AVX-512), written once over a vector type.
//!
//! QEMU does not emulate AVX-512 or VNNI, and most machines we test on lack
//! one or both, so a hand-written kernel for them could not be run in CI at
//! all. Written over [`DotLanes`] / [`FmaLanes`] instead, the same loop runs
//! on real registers where the CPU has them ([`super::avx_vnni`],
//! [`super::avx512`]) and on [`Emulated`] lanes in the tests on any machine:
//! its indexing, tail handling and folding are checked everywhere, and only
//! the one-instruction lane methods need the CPU itself (their tests print a
//! SKIPPED line elsewhere).
//!
//! Both tiles read the layouts of the AVX2 kernels unchanged ([`PackedQuads`]
//! with [`MR`] rows and 16-pixel panels of quad words; [`PackedF32`] with
//! indirect pixel rows), so every ISA packs alike and only the inner loop
//! differs. Both keep 12 accumulators in flight: on 8-lane vectors a row of
//! 16 pixels is two registers; on 16-lane vectors it is one, so the
//! reduction runs as two interleaved chains (even and odd steps) that are
//! added at the end, hiding the instruction latency.
//!
//! [`PackedQuads`]: crate::ops::gemm::PackedQuads
//! [`PackedF32`]: crate::ops::gemm_f32::PackedF32

use crate::ops::gemm::{Requantize, MR, NR};
use crate::ops::gemm_f32::Finish;

/// Vectors of `i32` lanes with the `u8 x s8` dot product of `vpdpbusd`.
pub trait DotLanes: Copy {
    /// `i32` lanes per vector: 8 or 16.
    const WIDTH: usize;
    /// All lanes zero.
    ///
    /// # Safety
    /// The CPU must have the vector type's features (all lane methods).
    unsafe fn zero() -> Self;
    /// `WIDTH` words from `p` (unaligned).
    ///
    /// # Safety
    /// `p` valid for `WIDTH` reads.
    unsafe fn load(p: *const i32) -> Self;
    /// `v` in every lane.
    ///
    /// # Safety
    /// As [`DotLanes::zero`].
    unsafe fn splat(v: i32) -> Self;
    /// Lane by lane: `self + sum of the four products u8s.byte(i) * s8s.byte(i)`,
    /// exact in `i32` (no intermediate saturation).
    ///
    /// # Safety
    /// As [`DotLanes::zero`].
    unsafe fn dot(self, u8s: Self, s8s: Self) -> Self;
    /// Lane by lane `self + other` (wrapping).
    ///
    /// # Safety
    /// As [`DotLanes::zero`].
    unsafe fn add(self, other: Self) -> Self;
    /// Writes the lanes to `p` (unaligned).
    ///
    /// # Safety
    /// `p` valid for `WIDTH` writes.
    unsafe fn store(self, p: *mut i32);
    /// Writes `WIDTH` bytes to `out`: lane by lane `clamp(round_half_even((x
    /// + bias) * scale) + zero_point, 0, 255)`, as [`super::super::gemm::requantize`].
    ///
    /// # Safety
    /// As [`DotLanes::zero`]; `out` valid for `WIDTH` writes.
    unsafe fn requantize(self, bias: i32, scale: f32, zero_point: i32, out: *mut u8);
}

/// Vectors of `f32` lanes with a fused multiply-add.
pub trait FmaLanes: Copy {
    /// `f32` lanes per vector: 8 or 16.
    const WIDTH: usize;
    /// All lanes zero.
    ///
    /// # Safety
    /// The CPU must have the vector type's features (all lane methods).
    unsafe fn zero() -> Self;
    /// `WIDTH` values from `p` (unaligned).
    ///
    /// # Safety
    /// `p` valid for `WIDTH` reads.
    unsafe fn load(p: *const f32) -> Self;
    /// `v` in every lane.
    ///
    /// # Safety
    /// As [`FmaLanes::zero`].
    unsafe fn splat(v: f32) -> Self;
    /// Lane by lane `self + a * b`, rounded once.
    ///
    /// # Safety
    /// As [`FmaLanes::zero`].
    unsafe fn fma(self, a: Self, b: Self) -> Self;
    /// Lane by lane `self + other`.
    ///
    /// # Safety
    /// As [`FmaLanes::zero`].
    unsafe fn add(self, other: Self) -> Self;
    /// Lane by lane the larger of `self` and `other` (for a ReLU).
    ///
    /// # Safety
    /// As [`FmaLanes::zero`].
    unsafe fn max(self, other: Self) -> Self;
    /// Writes the lanes to `p` (unaligned).
    ///
    /// # Safety
    /// `p` valid for `WIDTH` writes.
    unsafe fn store(self, p: *mut f32);
}

/// Accumulators of both tiles: 6 rows x 2 (halves of 16 pixels, or chains).
const ACC: usize = 2 * MR;

/// Accumulators of the panel tiles: 24 of a 32-register file, leaving room
/// for the pixel loads.
const PANEL_ACC: usize = super::MAX_PANELS * MR;

/// `acc[r][j] = sum_q sum_i a[q][r].byte(i) (s8) * x[offsets[q] + j].byte(i) (u8)`
/// for the [`MR`] rows of a quad block and 16 pixels whose quad words
/// `q` start at `x + offsets[q]` (a packed panel: `q * NR`; an image of
/// channel quads read in place: where the window meets it): the tile of the AVX2 `vpmaddubsw` kernel without its
/// 7-bit weight limit, since `vpdpbusd` adds each lane's four products
/// straight into `i32`.
///
/// # Safety
/// `L`'s features present; `a` valid for `offsets.len() * MR` reads and
/// `x.add(o)` for `NR` reads at every offset `o`.
#[inline(always)]
pub unsafe fn u8_quads_6x16<L: DotLanes>(
    a: *const i32,
    x: *const i32,
    offsets: &[usize],
    acc: &mut [[i32; NR]; MR],
    finish: Option<&Requantize>,
) {
    let quads = offsets.len();
    let per_row = NR / L::WIDTH;
    let chains = ACC / (MR * per_row);
    let mut c = [L::zero(); ACC];
    let step = |c: &mut [L; ACC], q: usize, chain: usize| {
        let at = x.add(*offsets.get_unchecked(q));
        let first = L::load(at);
        let x = [
            first,
            if per_row == 2 {
                L::load(at.add(L::WIDTH))
            } else {
                first
            },
        ];
        for r in 0..MR {
            let w = L::splat(*a.add(q * MR + r));
            for (h, &x) in x.iter().enumerate().take(per_row) {
                let i = (chain * MR + r) * per_row + h;
                c[i] = c[i].dot(x, w);
            }
        }
    };
    let whole = quads - quads % chains;
    for q in (0..whole).step_by(chains) {
        for chain in 0..chains {
            step(&mut c, q + chain, chain);
        }
    }
    for q in whole..quads {
        step(&mut c, q, 0);
    }
    for r in 0..MR {
        for h in 0..per_row {
            for chain in 1..chains {
                c[r * per_row + h] = c[r * per_row + h].add(c[(chain * MR + r) * per_row + h]);
            }
        }
    }
    if let Some(finish) = finish {
        return requantize_rows(&c, per_row, finish);
    }
    for (r, row) in acc.iter_mut().enumerate() {
        for h in 0..per_row {
            c[r * per_row + h].store(row.as_mut_ptr().add(h * L::WIDTH));
        }
    }
}

/// [`u8_quads_6x16`] over `P` neighbouring 16-pixel panels, `stride` words
/// apart (packed panels: one panel's words; in place: 16 pixels): panel `j`
/// reads quad `q` at `x + offsets[q] + j * stride` and sums into `acc[j]`.
///
/// Why: on 16-lane registers the one-panel tile loads one panel vector and
/// six weight quads per six `vpdpbusd`, so loads bound it; four panels share
/// each weight broadcast across four registers (24 accumulators, 4 + 6
/// loads per 24 products). `P * 16 / WIDTH` may be at most 4.
///
/// # Safety
/// `L`'s features present; `a` valid for `offsets.len() * MR` reads and
/// `x.add(o + j * stride)` for `NR` reads at every offset `o`, `j < P`.
#[inline(always)]
pub unsafe fn u8_quads_6x16_panels<L: DotLanes, const P: usize>(
    a: *const i32,
    x: *const i32,
    offsets: &[usize],
    stride: usize,
    acc: &mut [[[i32; NR]; MR]; P],
    finish: Option<&Requantize>,
) {
    let vectors = P * NR / L::WIDTH;
    debug_assert!(vectors * MR <= PANEL_ACC);
    let per_panel = NR / L::WIDTH;
    let mut c = [L::zero(); PANEL_ACC];
    let at = |r: usize, v: usize| r * vectors + v;
    for (q, &o) in offsets.iter().enumerate() {
        let quad = x.add(o);
        let mut x = [L::zero(); PANEL_ACC / MR];
        for (i, x) in x.iter_mut().enumerate().take(vectors) {
            let (j, h) = (i / per_panel, i % per_panel);
            *x = L::load(quad.add(j * stride + h * L::WIDTH));
        }
        for r in 0..MR {
            let w = L::splat(*a.add(q * MR + r));
            for (i, &x) in x.iter().enumerate().take(vectors) {
                c[at(r, i)] = c[at(r, i)].dot(x, w);
            }
        }
    }
    if let Some(finish) = finish {
        return requantize_rows(&c, vectors, finish);
    }
    for (j, panel) in acc.iter_mut().enumerate() {
        for (r, row) in panel.iter_mut().enumerate() {
            for h in 0..per_panel {
                c[at(r, j * per_panel + h)].store(row.as_mut_ptr().add(h * L::WIDTH));
            }
        }
    }
}

/// The requantising epilogue of the quad tiles: row `r`'s `vectors` sums
/// in `c[r * vectors..]` into its output row, the last vector of a row
/// through a scratch copy when it is partial.
///
/// # Safety
/// `L`'s features present; `finish` valid (see [`Requantize`]).
#[inline(always)]
unsafe fn requantize_rows<L: DotLanes>(c: &[L], vectors: usize, finish: &Requantize) {
    for r in 0..MR.min(finish.rows) {
        let (bias, scale) = (*finish.bias.add(r), *finish.scale.add(r));
        let out = finish.out.add(r * finish.row_stride);
        for v in 0..vectors {
            let from = v * L::WIDTH;
            if from + L::WIDTH <= finish.width {
                c[r * vectors + v].requantize(bias, scale, finish.zero_point, out.add(from));
            } else if from < finish.width {
                let mut tail = [0u8; NR];
                c[r * vectors + v].requantize(bias, scale, finish.zero_point, tail.as_mut_ptr());
                std::ptr::copy_nonoverlapping(tail.as_ptr(), out.add(from), finish.width - from);
            }
        }
    }
}

/// `acc[r][j] (+)= sum_p a[p][r] * x[offsets[p] + j]` for the [`MR`] rows of
/// a [`crate::ops::gemm_f32::PackedF32`] block and 16 pixels per reduction
/// index read at `x + offsets[p]`; `add` keeps what `acc` holds.
///
/// # Safety
/// `L`'s features present; `a` valid for `offsets.len() * MR` reads and
/// `x.add(o)` for `NR` reads at every offset `o`.
#[inline(always)]
pub unsafe fn f32_6x16<L: FmaLanes>(
    a: *const f32,
    x: *const f32,
    offsets: &[usize],
    acc: &mut [[f32; NR]; MR],
    add: bool,
) {
    let per_row = NR / L::WIDTH;
    let chains = ACC / (MR * per_row);
    let mut c = [L::zero(); ACC];
    if add {
        for (r, row) in acc.iter().enumerate() {
            for h in 0..per_row {
                c[r * per_row + h] = L::load(row.as_ptr().add(h * L::WIDTH));
            }
        }
    }
    let step = |c: &mut [L; ACC], p: usize, chain: usize| {
        let at = x.add(offsets[p]);
        let first = L::load(at);
        let v = [
            first,
            if per_row == 2 {
                L::load(at.add(L::WIDTH))
            } else {
                first
            },
        ];
        for r in 0..MR {
            let w = L::splat(*a.add(p * MR + r));
            for (h, &v) in v.iter().enumerate().take(per_row) {
                let i = (chain * MR + r) * per_row + h;
                c[i] = c[i].fma(w, v);
            }
        }
    };
    let k = offsets.len();
    let whole = k - k % chains;
    for p in (0..whole).step_by(chains) {
        for chain in 0..chains {
            step(&mut c, p + chain, chain);
        }
    }
    for p in whole..k {
        step(&mut c, p, 0);
    }
    for (r, row) in acc.iter_mut().enumerate() {
        for h in 0..per_row {
            let mut sum = c[r * per_row + h];
            for chain in 1..chains {
                sum = sum.add(c[(chain * MR + r) * per_row + h]);
            }
            sum.store(row.as_mut_ptr().add(h * L::WIDTH));
        }
    }
}

/// [`f32_6x16`] over `P` neighbouring 16-pixel panels at once, for the
/// first `R` (4 or 6) rows of a block: panel `j` reads its pixels at
/// `x + offsets[p] + 16 j` and sums into `acc[j]` (rows past `R` are left
/// alone).
///
/// Why: on 16-lane registers the one-panel tile loads a 64-byte pixel row
/// (almost always split across two cache lines) and six weights for six
/// multiply-adds, so loads, not multiply-adds, bound it. Four panels share
/// each weight broadcast across four registers: 24 accumulators, 4 pixel
/// loads and 6 broadcasts per 24 multiply-adds. `R = 4` serves the last
/// block of a 16- or 64-channel layer (16 = 6 + 6 + 4), which would
/// otherwise multiply two rows of zeros. `P * 16 / WIDTH` may be at most 4.
///
/// # Safety
/// `L`'s features present; `a` valid for `offsets.len() * MR` reads and
/// `x.add(o)` for `P * NR` reads at every offset `o`.
#[inline(always)]
pub unsafe fn f32_rows_x16_panels<L: FmaLanes, const R: usize, const P: usize>(
    a: *const f32,
    x: *const f32,
    offsets: &[usize],
    acc: &mut [[[f32; NR]; MR]; P],
    add: bool,
    finish: Option<&Finish>,
) {
    let vectors = P * NR / L::WIDTH;
    debug_assert!(R <= MR && vectors * MR <= PANEL_ACC);
    let per_panel = NR / L::WIDTH;
    let mut c = [L::zero(); PANEL_ACC];
    let at = |r: usize, v: usize| r * vectors + v;
    if add {
        for (j, panel) in acc.iter().enumerate() {
            for (r, row) in panel.iter().enumerate().take(R) {
                for h in 0..per_panel {
                    c[at(r, j * per_panel + h)] = L::load(row.as_ptr().add(h * L::WIDTH));
                }
            }
        }
    }
    for (p, &o) in offsets.iter().enumerate() {
        let row = x.add(o);
        let mut v = [L::zero(); PANEL_ACC / MR];
        for (i, v) in v.iter_mut().enumerate().take(vectors) {
            *v = L::load(row.add(i * L::WIDTH));
        }
        for r in 0..R {
            let w = L::splat(*a.add(p * MR + r));
            for (i, &v) in v.iter().enumerate().take(vectors) {
                c[at(r, i)] = c[at(r, i)].fma(w, v);
            }
        }
    }
    if let Some(finish) = finish {
        return finish_rows::<L, R>(&c, vectors, finish);
    }
    for (j, panel) in acc.iter_mut().enumerate() {
        for (r, row) in panel.iter_mut().enumerate().take(R) {
            for h in 0..per_panel {
                c[at(r, j * per_panel + h)].store(row.as_mut_ptr().add(h * L::WIDTH));
            }
        }
    }
}

/// The epilogue of [`f32_rows_x16_panels`]: row `r`'s `vectors` sums in
/// `c[r * vectors..]` plus its bias (then the ReLU) into the output, the
/// last vector of a row through a scratch copy when it is partial.
///
/// # Safety
/// `L`'s features present; `finish` valid (see [`Finish`]) with `rows <= R`.
#[inline(always)]
unsafe fn finish_rows<L: FmaLanes, const R: usize>(
    c: &[L; PANEL_ACC],
    vectors: usize,
    finish: &Finish,
) {
    let zero = L::zero();
    for r in 0..R.min(finish.rows) {
        let bias = L::splat(*finish.bias.add(r));
        let out = finish.out.add(r * finish.row_stride);
        for v in 0..vectors {
            let mut y = c[r * vectors + v].add(bias);
            if finish.relu {
                y = y.max(zero);
            }
            let from = v * L::WIDTH;
            if from + L::WIDTH <= finish.width {
                y.store(out.add(from));
            } else if from < finish.width {
                let mut tail = [0f32; NR];
                y.store(tail.as_mut_ptr());
                std::ptr::copy_nonoverlapping(tail.as_ptr(), out.add(from), finish.width - from);
            }
        }
    }
}

/// Lanes in plain Rust with the instructions' exact semantics, so the
/// tiles above run (slowly) on any CPU in the tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Emulated<T, const W: usize>(pub [T; W]);

impl<const W: usize> DotLanes for Emulated<i32, W> {
    const WIDTH: usize = W;
    unsafe fn zero() -> Self {
        Emulated([0; W])
    }
    unsafe fn load(p: *const i32) -> Self {
        Emulated(std::ptr::read_unaligned(p as *const [i32; W]))
    }
    unsafe fn splat(v: i32) -> Self {
        Emulated([v; W])
    }
    unsafe fn dot(self, u8s: Self, s8s: Self) -> Self {
        let mut out = self.0;
        for (lane, o) in out.iter_mut().enumerate() {
            let (x, w) = (u8s.0[lane].to_le_bytes(), s8s.0[lane].to_le_bytes());
            let sum: i32 = (0..4)
                .map(|i| i32::from(x[i]) * i32::from(w[i] as i8))
                .sum();
            *o = o.wrapping_add(sum);
        }
        Emulated(out)
    }
    unsafe fn add(self, other: Self) -> Self {
        Emulated(std::array::from_fn(|i| self.0[i].wrapping_add(other.0[i])))
    }
    unsafe fn store(self, p: *mut i32) {
        std::ptr::write_unaligned(p as *mut [i32; W], self.0)
    }
    unsafe fn requantize(self, bias: i32, scale: f32, zero_point: i32, out: *mut u8) {
        for (i, &x) in self.0.iter().enumerate() {
            *out.add(i) = crate::ops::gemm::requantize(x, bias, scale, zero_point);
        }
    }
}

impl<const W: usize> FmaLanes for Emulated<f32, W> {
    const WIDTH: usize = W;
    unsafe fn zero() -> Self {
        Emulated([0.0; W])
    }
    unsafe fn load(p: *const f32) -> Self {
        Emulated(std::ptr::read_unaligned(p as *const [f32; W]))
    }
    unsafe fn splat(v: f32) -> Self {
        Emulated([v; W])
    }
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        Emulated(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], self.0[i])))
    }
    unsafe fn add(self, other: Self) -> Self {
        Emulated(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
    unsafe fn max(self, other: Self) -> Self {
        Emulated(std::array::from_fn(|i| self.0[i].max(other.0[i])))
    }
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; W], self.0)
    }
}

/// Test data and references shared by the tests of every lane type: the
/// real-register tests in [`super::avx_vnni`] and [`super::avx512`] compare
/// against the same sums.
#[cfg(test)]
pub(crate) mod check {
    use crate::ops::gemm::{requantize, PackedQuads, Requantize, MR, NR};
    use crate::ops::gemm_f32::{Finish, PackedF32};

    /// A quad block test case: full 8-bit weights (-128 included) against
    /// activations over all of `u8`, with `k` not a multiple of 4.
    pub struct Quads {
        pub packed: PackedQuads,
        pub panel: Vec<i32>,
        /// Where quad `q` starts in `panel`: `q * NR`.
        pub offsets: Vec<usize>,
        pub want: Vec<[i32; NR]>,
    }

    impl Quads {
        /// The panel's quads scattered: in reverse order, 5 words apart,
        /// with the offsets that find them (as a tile reading an image in
        /// place sees them).
        pub fn scattered(&self) -> (Vec<i32>, Vec<usize>) {
            let n = self.packed.quads;
            let at = |q: usize| (n - 1 - q) * (NR + 5) + 3;
            let mut x = vec![-1; n * (NR + 5) + 3];
            for (q, words) in self.panel.chunks_exact(NR).enumerate() {
                x[at(q)..][..NR].copy_from_slice(words);
            }
            (x, (0..n).map(at).collect())
        }
    }

    /// A quad tile's requantising epilogue ([`Requantize`]) checked on
    /// block `b` of `case`: `run` sums `P` copies of the case's panel and
    /// requantises them into an output wider than the tile, for every row
    /// count, widths that end inside a vector, at one and at the tile's
    /// end; the biases and scales send some values below 0 and some above
    /// 255. Nothing outside those rows and pixels may be written.
    pub fn requantizes<const P: usize>(
        case: &Quads,
        b: usize,
        run: impl Fn(&mut [[[i32; NR]; MR]; P], &Requantize),
    ) {
        let stride = P * NR + 5;
        let bias = [-3000, 100, 0, 5000, -7, 42];
        let scale = [0.01, 0.002, 0.5, 0.0005, 0.03, 0.001];
        let zero_point = 17;
        for rows in 1..=MR {
            for width in [P * NR, P * NR - 3, 1, 9] {
                let mut acc = [[[0; NR]; MR]; P];
                let mut out = vec![0xaa_u8; MR * stride];
                let finish = Requantize {
                    out: out.as_mut_ptr(),
                    row_stride: stride,
                    bias: bias.as_ptr(),
                    scale: scale.as_ptr(),
                    zero_point,
                    rows,
                    width,
                };
                run(&mut acc, &finish);
                for r in 0..MR {
                    for (x, &got) in out[r * stride..][..stride].iter().enumerate() {
                        let at =
                            format!("block {b}, {rows} rows, width {width}: row {r} pixel {x}");
                        if r >= rows || x >= width {
                            assert_eq!(got, 0xaa, "{at} written");
                        } else {
                            let sum = case.want[b * MR + r][x % NR];
                            let want = requantize(sum, bias[r], scale[r], zero_point);
                            assert_eq!(got, want, "{at}");
                        }
                    }
                }
            }
        }
    }

    /// `channels` x `k` weights; `k` picks the quad count (odd and even
    /// counts exercise both chains and the tail).
    pub fn quads(channels: usize, k: usize) -> Quads {
        let w: Vec<i8> = (0..channels * k)
            .map(|i| match i % 5 {
                0 => -128,
                1 => 127,
                _ => (i * 37 % 256) as u8 as i8,
            })
            .collect();
        let x: Vec<u8> = (0..k * NR)
            .map(|i| {
                if i % 3 == 0 {
                    255
                } else {
                    (i * 53 % 256) as u8
                }
            })
            .collect();
        let packed = PackedQuads::new(&w, channels, k, MR);
        let panel = (0..packed.quads * NR)
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
        let want = (0..packed.blocks() * MR)
            .map(|c| {
                std::array::from_fn(|j| {
                    if c >= channels {
                        return 0;
                    }
                    (0..k)
                        .map(|i| i32::from(w[c * k + i]) * i32::from(x[i * NR + j]))
                        .sum()
                })
            })
            .collect();
        Quads {
            offsets: (0..packed.quads).map(|q| q * NR).collect(),
            packed,
            panel,
            want,
        }
    }

    /// An f32 block test case with scattered, overlapping pixel rows.
    pub struct Rows {
        pub packed: PackedF32,
        pub x: Vec<f32>,
        pub offsets: Vec<usize>,
        pub want: Vec<[f32; NR]>,
        weights: Vec<f32>,
        channels: usize,
    }

    impl Rows {
        /// The tile of block `b` for the 16 pixels `shift..shift + 16` of
        /// every row (`want` is the tile at shift 0).
        pub fn want_at(&self, b: usize, shift: usize) -> Vec<[f32; NR]> {
            let k = self.offsets.len();
            (b * MR..(b + 1) * MR)
                .map(|c| {
                    std::array::from_fn(|j| {
                        if c >= self.channels {
                            return 0.0;
                        }
                        (0..k)
                            .map(|p| self.weights[c * k + p] * self.x[self.offsets[p] + shift + j])
                            .sum()
                    })
                })
                .collect()
        }
    }

    /// A panel tile's fused epilogue ([`Finish`]) checked on block `b` of
    /// `case`: `run` sums the first `split` reduction indices into `acc`,
    /// then the rest into an output whose rows are wider than the tile,
    /// for every row count up to `tile_rows`, widths that end inside a
    /// vector, at one and at the tile's end, with and without ReLU. Nothing
    /// outside those rows and pixels may be written.
    pub fn finishes<const P: usize>(
        case: &Rows,
        b: usize,
        split: usize,
        tile_rows: usize,
        run: impl Fn(*const f32, &[usize], &mut [[[f32; NR]; MR]; P], bool, Option<&Finish>),
    ) {
        let a = case.packed.block(b);
        let stride = P * NR + 7;
        let bias = [0.5, -1.0, 0.25, 2.0, -0.75, 0.125];
        let want: Vec<Vec<[f32; NR]>> = (0..P).map(|j| case.want_at(b, j * NR)).collect();
        for rows in 1..=tile_rows {
            for width in [P * NR, P * NR - 5, 1, 19.min(P * NR)] {
                for relu in [false, true] {
                    let mut acc = [[[f32::NAN; NR]; MR]; P];
                    let mut out = vec![f32::NAN; tile_rows * stride];
                    let finish = Finish {
                        out: out.as_mut_ptr(),
                        row_stride: stride,
                        bias: bias.as_ptr(),
                        rows,
                        width,
                        relu,
                    };
                    run(a.as_ptr(), &case.offsets[..split], &mut acc, false, None);
                    let rest = a[split * MR..].as_ptr();
                    run(rest, &case.offsets[split..], &mut acc, true, Some(&finish));
                    for r in 0..tile_rows {
                        for (x, &got) in out[r * stride..][..stride].iter().enumerate() {
                            let at = format!("block {b}, {rows} rows, width {width}, relu {relu}: row {r} pixel {x}");
                            if r >= rows || x >= width {
                                assert!(got.is_nan(), "{at} written");
                                continue;
                            }
                            let sum = want[x / NR][r][x % NR] + bias[r];
                            let sum = if relu { sum.max(0.0) } else { sum };
                            assert!(
                                (got - sum).abs() <= 1e-4 * sum.abs().max(1.0),
                                "{at}: {got} != {sum}"
                            );
                        }
                    }
                }
            }
        }
    }

    pub fn rows(channels: usize, k: usize) -> Rows {
        let w: Vec<f32> = (0..channels * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        // Room for four panels past the farthest offset.
        let x: Vec<f32> = (0..16 * k + 4 * NR)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let offsets: Vec<usize> = (0..k).map(|p| (p * 11) % (15 * k) + p % 3).collect();
        let packed = PackedF32::new(&w, channels, k);
        let want = (0..packed.blocks() * MR)
            .map(|c| {
                std::array::from_fn(|j| {
                    if c >= channels {
                        return 0.0;
                    }
                    (0..k).map(|p| w[c * k + p] * x[offsets[p] + j]).sum()
                })
            })
            .collect();
        Rows {
            packed,
            x,
            offsets,
            want,
            weights: w,
            channels,
        }
    }

    /// Whether two f32 tiles agree to summation-order rounding.
    pub fn close(got: &[[f32; NR]; MR], want: &[[f32; NR]]) -> bool {
        got.iter().zip(want).all(|(g, w)| close_row(g, w))
    }

    /// Whether two rows of a tile agree to summation-order rounding.
    pub fn close_row(got: &[f32; NR], want: &[f32; NR]) -> bool {
        got.iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= 1e-4 * w.abs().max(1.0))
    }

    /// Tells the test log a kernel was not run, even under output capture.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn skipped(kernel: &str, feature: &str) {
        use std::io::Write;
        let cpu = crate::ops::kernels::Cpu::detect().describe();
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {kernel}: this CPU ({cpu}) lacks {feature}; its tile ran on emulated lanes only"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the quad tile on `L` for every block of a test case.
    fn quads_on<L: DotLanes>(case: &check::Quads) -> Vec<[i32; NR]> {
        let mut got = Vec::new();
        let (x, offsets) = case.scattered();
        for b in 0..case.packed.blocks() {
            let mut acc = [[7; NR]; MR];
            let a = case.packed.block(b);
            // SAFETY: emulated lanes need no CPU feature; every offset has
            // NR words after it.
            unsafe { u8_quads_6x16::<L>(a.as_ptr(), x.as_ptr(), &offsets, &mut acc, None) };
            got.extend(acc);
        }
        got
    }

    /// Runs the quad panel tile on `L` with `P` copies of a test case's
    /// panel, each shifted by one pixel (its last column wraps around).
    fn quad_panels_on<L: DotLanes, const P: usize>(case: &check::Quads) {
        let n = case.packed.quads;
        let shifted = |j: usize| -> Vec<i32> {
            case.panel
                .chunks_exact(NR)
                .flat_map(|q| (0..NR).map(move |i| q[(i + j) % NR]))
                .collect()
        };
        let panels: Vec<i32> = (0..P).flat_map(shifted).collect();
        for b in 0..case.packed.blocks() {
            let mut acc = [[[7; NR]; MR]; P];
            let a = case.packed.block(b);
            // SAFETY: emulated lanes; P panels of n quads each.
            unsafe {
                u8_quads_6x16_panels::<L, P>(
                    a.as_ptr(),
                    panels.as_ptr(),
                    &case.offsets,
                    n * NR,
                    &mut acc,
                    None,
                )
            };
            for (j, tile) in acc.iter().enumerate() {
                for (r, row) in tile.iter().enumerate() {
                    let want = case.want[b * MR + r];
                    let want: Vec<i32> = (0..NR).map(|i| want[(i + j) % NR]).collect();
                    assert_eq!(
                        &row[..],
                        &want[..],
                        "{P} panels, block {b}, panel {j}, row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn quad_panel_tile_sums_exactly_on_every_panel() {
        for (channels, k) in [(7, 37), (13, 29), (7, 9), (1, 3)] {
            let case = check::quads(channels, k);
            quad_panels_on::<Emulated<i32, 16>, 1>(&case);
            quad_panels_on::<Emulated<i32, 16>, 3>(&case);
            quad_panels_on::<Emulated<i32, 16>, 4>(&case);
            quad_panels_on::<Emulated<i32, 8>, 2>(&case);
        }
    }

    #[test]
    fn quad_tiles_requantise_rows_into_the_output() {
        fn one<L: DotLanes>(case: &check::Quads) {
            for b in 0..case.packed.blocks() {
                let (a, x, o) = (case.packed.block(b), &case.panel, &case.offsets);
                check::requantizes::<1>(case, b, |acc, finish| {
                    // SAFETY: emulated lanes; sizes from the packing.
                    unsafe {
                        u8_quads_6x16::<L>(a.as_ptr(), x.as_ptr(), o, &mut acc[0], Some(finish))
                    }
                });
            }
        }
        fn panels<L: DotLanes, const P: usize>(case: &check::Quads) {
            let n = case.packed.quads;
            let copies: Vec<i32> = (0..P).flat_map(|_| case.panel.iter().copied()).collect();
            for b in 0..case.packed.blocks() {
                let a = case.packed.block(b);
                check::requantizes::<P>(case, b, |acc, finish| {
                    // SAFETY: emulated lanes; P panels of n quads each.
                    unsafe {
                        u8_quads_6x16_panels::<L, P>(
                            a.as_ptr(),
                            copies.as_ptr(),
                            &case.offsets,
                            n * NR,
                            acc,
                            Some(finish),
                        )
                    }
                });
            }
        }
        for (channels, k) in [(7, 37), (13, 9)] {
            let case = check::quads(channels, k);
            one::<Emulated<i32, 8>>(&case);
            one::<Emulated<i32, 16>>(&case);
            panels::<Emulated<i32, 16>, 4>(&case);
            panels::<Emulated<i32, 16>, 2>(&case);
        }
    }

    #[test]
    fn quad_tile_sums_exactly_on_8_and_16_lanes() {
        // k = 37: 10 quads (even), k = 29: 8, k = 13: 4, k = 9: 3 (odd: the
        // tail on a 16-lane chain), k = 3: 1 quad; 7 and 13 channels give
        // partial blocks.
        for (channels, k) in [(7, 37), (13, 29), (6, 13), (7, 9), (1, 3)] {
            let case = check::quads(channels, k);
            assert_eq!(
                quads_on::<Emulated<i32, 8>>(&case),
                case.want,
                "8 lanes, k {k}"
            );
            assert_eq!(
                quads_on::<Emulated<i32, 16>>(&case),
                case.want,
                "16 lanes, k {k}"
            );
        }
    }

    fn rows_on<L: FmaLanes>(case: &check::Rows, split: usize) -> Vec<[f32; NR]> {
        let mut got = Vec::new();
        for b in 0..case.packed.blocks() {
            let mut acc = [[f32::NAN; NR]; MR];
            let (a, x, o) = (case.packed.block(b), &case.x, &case.offsets);
            // SAFETY: emulated lanes; offsets stay inside x by construction.
            unsafe {
                f32_6x16::<L>(a.as_ptr(), x.as_ptr(), &o[..split], &mut acc, false);
                let rest = a[split * MR..].as_ptr();
                f32_6x16::<L>(rest, x.as_ptr(), &o[split..], &mut acc, true);
            }
            got.push(acc);
        }
        got.into_iter().flatten().collect()
    }

    /// Runs the panel tile on `L` over the first `R` rows and `P`
    /// neighbouring panels of a test case whose pixel rows are `P * NR` wide.
    fn panels_on<L: FmaLanes, const R: usize, const P: usize>(case: &check::Rows, split: usize) {
        for b in 0..case.packed.blocks() {
            let mut acc = [[[f32::NAN; NR]; MR]; P];
            let (a, x, o) = (case.packed.block(b), &case.x, &case.offsets);
            // SAFETY: emulated lanes; offsets leave P * NR values in x.
            unsafe {
                let first = &o[..split];
                let (x, none) = (x.as_ptr(), None);
                f32_rows_x16_panels::<L, R, P>(a.as_ptr(), x, first, &mut acc, false, none);
                let rest = a[split * MR..].as_ptr();
                f32_rows_x16_panels::<L, R, P>(rest, x, &o[split..], &mut acc, true, none);
            }
            for (j, tile) in acc.iter().enumerate() {
                let want = case.want_at(b, j * NR);
                for (r, (got, want)) in tile.iter().zip(&want).enumerate() {
                    if r < R {
                        assert!(
                            check::close_row(got, want),
                            "{R}x{P} panels, block {b}, panel {j}, row {r}"
                        );
                    } else {
                        assert!(
                            got.iter().all(|v| v.is_nan()),
                            "row {r} past {R} was written"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn panel_tile_matches_a_plain_sum_on_every_panel() {
        for (channels, k, split) in [(7, 13, 5), (6, 8, 3), (12, 1, 0), (5, 40, 21)] {
            let case = check::rows(channels, k);
            panels_on::<Emulated<f32, 16>, 6, 1>(&case, split);
            panels_on::<Emulated<f32, 16>, 6, 2>(&case, split);
            panels_on::<Emulated<f32, 16>, 6, 3>(&case, split);
            panels_on::<Emulated<f32, 16>, 6, 4>(&case, split);
            panels_on::<Emulated<f32, 16>, 4, 4>(&case, split);
            panels_on::<Emulated<f32, 16>, 4, 1>(&case, split);
            panels_on::<Emulated<f32, 8>, 6, 2>(&case, split);
        }
    }

    #[test]
    fn panel_tile_finishes_rows_into_the_output() {
        fn on<L: FmaLanes, const R: usize, const P: usize>(case: &check::Rows, split: usize) {
            for b in 0..case.packed.blocks() {
                check::finishes::<P>(case, b, split, R, |a, o, acc, add, finish| {
                    // SAFETY: emulated lanes; offsets leave P * NR values in x.
                    unsafe {
                        f32_rows_x16_panels::<L, R, P>(a, case.x.as_ptr(), o, acc, add, finish)
                    }
                });
            }
        }
        for (channels, k, split) in [(7, 13, 5), (12, 1, 0)] {
            let case = check::rows(channels, k);
            on::<Emulated<f32, 16>, 6, 4>(&case, split);
            on::<Emulated<f32, 16>, 4, 3>(&case, split);
            on::<Emulated<f32, 16>, 6, 1>(&case, split);
            on::<Emulated<f32, 8>, 6, 1>(&case, split);
            on::<Emulated<f32, 8>, 4, 1>(&case, split);
        }
    }

    #[test]
    fn f32_tile_matches_a_plain_sum_on_8_and_16_lanes() {
        for (channels, k, split) in [(7, 13, 5), (6, 8, 3), (12, 1, 0), (5, 40, 21)] {
            let case = check::rows(channels, k);
            for got in [
                rows_on::<Emulated<f32, 8>>(&case, split),
                rows_on::<Emulated<f32, 16>>(&case, split),
            ] {
                for (b, tile) in got.chunks(MR).enumerate() {
                    let tile: &[[f32; NR]; MR] = tile.try_into().unwrap();
                    let want = &case.want[b * MR..(b + 1) * MR];
                    assert!(check::close(tile, want), "k {k}, block {b}");
                }
            }
        }
    }
}
