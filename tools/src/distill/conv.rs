//! Convolution forward and backward through im2col and dense matrix
//! products (`faer`), for one image in NCHW order (batch 1).
//!
//! A transposed convolution is the adjoint of a plain one, so the same three
//! functions run it: its forward pass is the adjoint convolution's input
//! gradient, and its input gradient is that convolution's forward pass.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// The shape of one convolution: input `[cin, hin, win]` to output
/// `[cout, hout, wout]`, weights `[cout, cin / group, kh, kw]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cin: usize,
    pub cout: usize,
    pub group: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Leading padding (the trailing padding follows from the output size).
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub input: [usize; 2],
    pub output: [usize; 2],
}

impl Geometry {
    /// Rows of one group's im2col matrix: `cin / group * kh * kw`.
    fn k(&self) -> usize {
        self.cin / self.group * self.kernel[0] * self.kernel[1]
    }

    fn positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    fn in_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    /// A 1x1, stride-1, unpadded convolution reads its input as the im2col matrix.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// Scratch floats an im2col matrix of one group needs.
    pub fn scratch(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.k() * self.positions()
        }
    }

    /// The input row read by output row `o` at kernel row `k`, if inside.
    fn source(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        let i =
            (o * self.stride[axis] + k * self.dilation[axis]) as isize - self.pad[axis] as isize;
        (i >= 0 && (i as usize) < self.input[axis]).then_some(i as usize)
    }

    /// The output columns `lo..hi` whose kernel column `k` reads inside the
    /// input, and `off`: output column `o` reads input column `o * stride + off`.
    fn columns(&self, k: usize) -> (usize, usize, isize) {
        let (s, w) = (self.stride[1], self.input[1] as isize);
        let off = (k * self.dilation[1]) as isize - self.pad[1] as isize;
        let out = self.output[1];
        // lo: the first o with o * s + off >= 0; hi: one past the last with o * s + off < w.
        let lo = if off >= 0 {
            0
        } else {
            (-off as usize).div_ceil(s)
        }
        .min(out);
        let hi = if w <= off {
            0
        } else {
            ((w - off) as usize).div_ceil(s)
        }
        .clamp(lo, out);
        (lo, hi, off)
    }
}

/// Writes group `g`'s im2col matrix `[k, positions]` of `x` into `cols`.
fn im2col(geo: &Geometry, x: &[f32], g: usize, cols: &mut [f32]) {
    let cin_g = geo.cin / geo.group;
    let [kh, kw] = geo.kernel;
    let [ho, wo] = geo.output;
    let plane = geo.in_plane();
    for ci in 0..cin_g {
        let src = &x[(g * cin_g + ci) * plane..][..plane];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &mut cols[((ci * kh + ki) * kw + kj) * ho * wo..][..ho * wo];
                let (lo, hi, off) = geo.columns(kj);
                for oy in 0..ho {
                    let dst = &mut row[oy * wo..][..wo];
                    let Some(iy) = geo.source(0, oy, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let line = &src[iy * geo.input[1]..][..geo.input[1]];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let first = (lo as isize * geo.stride[1] as isize + off) as usize;
                    if geo.stride[1] == 1 {
                        dst[lo..hi].copy_from_slice(&line[first..first + (hi - lo)]);
                    } else {
                        let taken = line[first..].iter().step_by(geo.stride[1]);
                        dst[lo..hi].iter_mut().zip(taken).for_each(|(d, v)| *d = *v);
                    }
                }
            }
        }
    }
}

/// Adds group `g`'s im2col-shaped `cols` back into `dx` (the adjoint of [`im2col`]).
fn col2im(geo: &Geometry, cols: &[f32], g: usize, dx: &mut [f32]) {
    let cin_g = geo.cin / geo.group;
    let [kh, kw] = geo.kernel;
    let [ho, wo] = geo.output;
    let plane = geo.in_plane();
    for ci in 0..cin_g {
        let dst = &mut dx[(g * cin_g + ci) * plane..][..plane];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &cols[((ci * kh + ki) * kw + kj) * ho * wo..][..ho * wo];
                let (lo, hi, off) = geo.columns(kj);
                for oy in 0..ho {
                    let Some(iy) = geo.source(0, oy, ki) else {
                        continue;
                    };
                    let line = &mut dst[iy * geo.input[1]..][..geo.input[1]];
                    let first = (lo as isize * geo.stride[1] as isize + off) as usize;
                    let src = &row[oy * wo + lo..oy * wo + hi];
                    if geo.stride[1] == 1 {
                        line[first..first + src.len()]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d += v);
                    } else {
                        let targets = line[first..].iter_mut().step_by(geo.stride[1]);
                        targets.zip(src).for_each(|(d, v)| *d += v);
                    }
                }
            }
        }
    }
}

/// Group `g`'s block of `rows` rows of a row-major `[groups * rows, cols]` matrix.
fn block(v: &[f32], g: usize, rows: usize, cols: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice(&v[g * rows * cols..][..rows * cols], rows, cols)
}

fn block_mut(v: &mut [f32], g: usize, rows: usize, cols: usize) -> MatMut<'_, f32> {
    MatMut::from_row_major_slice_mut(&mut v[g * rows * cols..][..rows * cols], rows, cols)
}

/// Group `g`'s im2col matrix `[k, positions]` of `x`: `x` itself for a
/// pointwise convolution, else written into `cols`.
fn patches<'a>(geo: &Geometry, x: &'a [f32], g: usize, cols: &'a mut [f32]) -> MatRef<'a, f32> {
    let (k, p) = (geo.k(), geo.positions());
    if geo.pointwise() {
        block(x, g, k, p)
    } else {
        im2col(geo, x, g, cols);
        block(cols, 0, k, p)
    }
}

/// `y = conv(x, w) + bias`; `cols` holds at least [`Geometry::scratch`] floats.
pub fn forward(
    geo: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    cols: &mut [f32],
    par: Par,
) {
    let (k, p) = (geo.k(), geo.positions());
    let cout_g = geo.cout / geo.group;
    for g in 0..geo.group {
        let xg = patches(geo, x, g, cols);
        let yg = block_mut(y, g, cout_g, p);
        matmul(yg, Accum::Replace, block(w, g, cout_g, k), xg, 1.0, par);
    }
    if let Some(b) = bias {
        for (plane, b) in y.chunks_exact_mut(p).zip(b) {
            plane.iter_mut().for_each(|v| *v += b);
        }
    }
}

/// `dx += conv^T(dy, w)`: the gradient of the input (no bias).
pub fn backward_input(
    geo: &Geometry,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    cols: &mut [f32],
    par: Par,
) {
    let (k, p) = (geo.k(), geo.positions());
    let cout_g = geo.cout / geo.group;
    for g in 0..geo.group {
        let wg = block(w, g, cout_g, k).transpose();
        let dyg = block(dy, g, cout_g, p);
        if geo.pointwise() {
            matmul(block_mut(dx, g, k, p), Accum::Add, wg, dyg, 1.0, par);
        } else {
            matmul(block_mut(cols, 0, k, p), Accum::Replace, wg, dyg, 1.0, par);
            col2im(geo, &cols[..k * p], g, dx);
        }
    }
}

/// `dw += dy * im2col(x)^T` and `db += sum(dy)`: the gradients of the weights.
pub fn backward_weights(
    geo: &Geometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    cols: &mut [f32],
    par: Par,
) {
    let (k, p) = (geo.k(), geo.positions());
    let cout_g = geo.cout / geo.group;
    for g in 0..geo.group {
        let xg = patches(geo, x, g, cols);
        let dwg = block_mut(dw, g, cout_g, k);
        matmul(
            dwg,
            Accum::Add,
            block(dy, g, cout_g, p),
            xg.transpose(),
            1.0,
            par,
        );
    }
    if let Some(db) = db {
        for (plane, b) in dy.chunks_exact(p).zip(db) {
            *b += plane.iter().sum::<f32>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(stride: usize, pad: usize, group: usize) -> Geometry {
        let (cin, k, h) = (4, 3, 7);
        let out = (h + 2 * pad - k) / stride + 1;
        Geometry {
            cin,
            cout: 6,
            group,
            kernel: [k, k],
            stride: [stride; 2],
            pad: [pad; 2],
            dilation: [1, 1],
            input: [h, h + 1],
            output: [out, (h + 1 + 2 * pad - k) / stride + 1],
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    /// A direct convolution, to check the im2col one against.
    fn direct(geo: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (cin_g, cout_g) = (geo.cin / geo.group, geo.cout / geo.group);
        let [kh, kw] = geo.kernel;
        let mut y = vec![0.0; geo.cout * geo.positions()];
        for co in 0..geo.cout {
            let g = co / cout_g;
            for oy in 0..geo.output[0] {
                for ox in 0..geo.output[1] {
                    let mut s = 0.0;
                    for ci in 0..cin_g {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                if let (Some(iy), Some(ix)) =
                                    (geo.source(0, oy, ki), geo.source(1, ox, kj))
                                {
                                    s += w[((co * cin_g + ci) * kh + ki) * kw + kj]
                                        * x[((g * cin_g + ci) * geo.input[0] + iy) * geo.input[1]
                                            + ix];
                                }
                            }
                        }
                    }
                    y[(co * geo.output[0] + oy) * geo.output[1] + ox] = s;
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_a_direct_convolution() {
        for (stride, pad, group) in [
            (1, 1, 1),
            (2, 1, 1),
            (1, 0, 2),
            (2, 0, 1),
            (2, 2, 1),
            (3, 1, 1),
        ] {
            let g = geo(stride, pad, group);
            let x = values(g.cin * g.in_plane(), 1);
            let w = values(g.cout * g.k(), 2);
            let mut y = vec![0.0; g.cout * g.positions()];
            let mut cols = vec![0.0; g.scratch()];
            forward(&g, &x, &w, None, &mut y, &mut cols, Par::Seq);
            let want = direct(&g, &x, &w);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// `<conv(x), dy> == <x, conv^T(dy)>` and `<conv(x), dy> == <w, dw(x, dy)>`:
    /// both backward functions are the adjoints they claim to be.
    #[test]
    fn backward_passes_are_adjoints_of_the_forward_pass() {
        for (stride, pad, group) in [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 2, 1), (3, 1, 1)] {
            let g = geo(stride, pad, group);
            let x = values(g.cin * g.in_plane(), 3);
            let w = values(g.cout * g.k(), 4);
            let dy = values(g.cout * g.positions(), 5);
            let mut cols = vec![0.0; g.scratch()];
            let mut y = vec![0.0; dy.len()];
            forward(&g, &x, &w, None, &mut y, &mut cols, Par::Seq);
            let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| f64::from(a * b)).sum();
            let mut dx = vec![0.0; x.len()];
            backward_input(&g, &dy, &w, &mut dx, &mut cols, Par::Seq);
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| f64::from(a * b)).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
            let mut dw = vec![0.0; w.len()];
            backward_weights(&g, &x, &dy, &mut dw, None, &mut cols, Par::Seq);
            let rhs: f64 = w.iter().zip(&dw).map(|(a, b)| f64::from(a * b)).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
    }
}
