//! [`MaxPool2d`]: 2-D max pooling (batch 1, NCHW) over `f32` or `u8`.
//!
//! DLA's trees down-sample with 2x2 stride-2 max pools on wide feature maps.
//! tract 0.23 runs them through its generic patch walker: on DLA-tiny 4.1 to
//! 7.8 ms for four pools that read 7 MB, about a tenth of the speed the memory
//! allows. Here a 2x2/2 pool is a vertical max of two rows followed by a max
//! of neighbouring pairs, both loops that compilers vectorise; other shapes
//! take a plain loop over the window with the padding skipped.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// One 2-D max pool without dilation or index output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2d {
    /// Channels (in = out).
    pub channels: usize,
    /// Input height and width.
    pub in_size: (usize, usize),
    /// Output height and width.
    pub out_size: (usize, usize),
    /// Window height and width.
    pub kernel: (usize, usize),
    /// Strides (y, x).
    pub stride: (usize, usize),
    /// Padding before (top, left); padded cells never win.
    pub pad: (usize, usize),
    /// `f32` or `u8`.
    pub datum_type: DatumType,
    /// The name of the tract node it replaced.
    pub replaces: String,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: super::Arena,
}

impl MaxPool2d {
    /// Pools `input` (`[C, H, W]`) into `out` (`[C, OH, OW]`).
    ///
    /// # Panics
    /// When the slices do not have the pool's sizes.
    pub fn run<T: Pooled>(&self, input: &[T], out: &mut [T]) {
        let (ih, iw) = self.in_size;
        let (oh, ow) = self.out_size;
        assert_eq!(input.len(), self.channels * ih * iw);
        assert_eq!(out.len(), self.channels * oh * ow);
        let shared = super::SharedMut::new(out);
        let shared = &shared;
        super::parallel(self.channels, |c| {
            // SAFETY: each channel's output plane is written by one task.
            let out = unsafe { shared.part(c * oh * ow, oh * ow) };
            self.channel(&input[c * ih * iw..][..ih * iw], out);
        });
    }

    fn channel<T: Pooled>(&self, input: &[T], out: &mut [T]) {
        let (ih, iw) = self.in_size;
        let (oh, ow) = self.out_size;
        let max = |a: T, b: T| if b > a { b } else { a };
        let fits = 2 * oh <= ih && 2 * ow <= iw;
        if self.kernel == (2, 2) && self.stride == (2, 2) && self.pad == (0, 0) && fits {
            for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                let top = &input[2 * oy * iw..][..2 * ow];
                let bottom = &input[(2 * oy + 1) * iw..][..2 * ow];
                T::max_2x2(top, bottom, out_row);
            }
            return;
        }
        let (kh, kw) = self.kernel;
        let (sy, sx) = self.stride;
        let (pt, pl) = self.pad;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<T> = None;
                for ky in 0..kh {
                    let Some(iy) = (oy * sy + ky).checked_sub(pt).filter(|&y| y < ih) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ix) = (ox * sx + kx).checked_sub(pl).filter(|&x| x < iw) else {
                            continue;
                        };
                        let v = input[iy * iw + ix];
                        best = Some(best.map_or(v, |b| max(b, v)));
                    }
                }
                // A window entirely in the padding pools to the first pixel's
                // value; ONNX shapes never produce one (pads < kernel).
                out[oy * ow + ox] = best.unwrap_or(input[0]);
            }
        }
    }
}

/// What a pool runs over: `f32` or `u8`, each with its 2x2 row loop.
pub trait Pooled: Copy + PartialOrd + Send + Sync {
    /// `out[i]` = the largest of `top[2i]`, `top[2i + 1]`, `bottom[2i]`,
    /// `bottom[2i + 1]`.
    fn max_2x2(top: &[Self], bottom: &[Self], out: &mut [Self]) {
        let max = |a: Self, b: Self| if b > a { b } else { a };
        for ((o, t), b) in out
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *o = max(max(t[0], t[1]), max(b[0], b[1]));
        }
    }
}

/// The default loop: the compiler vectorises it for `f32` (an SSE
/// version measured no faster).
impl Pooled for f32 {}

impl Pooled for u8 {
    fn max_2x2(top: &[u8], bottom: &[u8], out: &mut [u8]) {
        assert!(top.len() >= 2 * out.len() && bottom.len() >= 2 * out.len());
        #[cfg(target_arch = "x86_64")]
        let done = max_2x2_u8_sse2(top, bottom, out);
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        for (i, o) in out.iter_mut().enumerate().skip(done) {
            let (t, b) = (&top[2 * i..], &bottom[2 * i..]);
            *o = t[0].max(t[1]).max(b[0]).max(b[1]);
        }
    }
}

/// [`Pooled::max_2x2`] on `u8`, 16 outputs at a time while 16 are left;
/// returns how many it wrote. Compilers leave the byte loop scalar (it
/// needs the even and odd bytes apart): here the vertical maximum's pairs
/// are `u16` lanes whose low and high bytes give the horizontal one.
#[cfg(target_arch = "x86_64")]
fn max_2x2_u8_sse2(top: &[u8], bottom: &[u8], out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let whole = out.len() - out.len() % 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: SSE2 is part of x86_64; 32 bytes of each row from 2i
        // and 16 of `out` from i are inside (the caller checked the rows).
        unsafe {
            let load =
                |row: &[u8], at: usize| _mm_loadu_si128(row.as_ptr().add(at) as *const __m128i);
            let pairs = |at: usize| {
                let v = _mm_max_epu8(load(top, at), load(bottom, at));
                let low = _mm_and_si128(v, _mm_set1_epi16(0xff));
                _mm_max_epi16(low, _mm_srli_epi16::<8>(v))
            };
            let m = _mm_packus_epi16(pairs(2 * i), pairs(2 * i + 16));
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, m);
        }
    }
    whole
}

/// The op's side of [`super::tract_op`].
impl MaxPool2d {
    fn info_lines(&self) -> Vec<String> {
        vec![
            format!(
                "{}x{} stride {:?} pad {:?}, {} channels {:?} -> {:?}, {:?}",
                self.kernel.0,
                self.kernel.1,
                self.stride,
                self.pad,
                self.channels,
                self.in_size,
                self.out_size,
                self.datum_type
            ),
            format!("replaces {}", self.replaces),
        ]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // The input's type, quantisation parameters included.
        let datum_type = inputs[0].datum_type();
        let shape = [1, self.channels, self.out_size.0, self.out_size.1];
        if self.datum_type == f32::datum_type() {
            super::eval_into(
                &self.arena,
                inputs,
                datum_type,
                &shape,
                |x: &[f32], y: &mut [f32]| self.run(x, y),
            )
        } else {
            super::eval_into(
                &self.arena,
                inputs,
                datum_type,
                &shape,
                |x: &[u8], y: &mut [u8]| self.run(x, y),
            )
        }
    }

    fn output_fact(&self, inputs: &[&TypedFact]) -> TypedFact {
        let shape = [1, self.channels, self.out_size.0, self.out_size.1];
        inputs[0].datum_type.fact(shape)
    }
}

tract_op!(MaxPool2d);

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX MaxPool by its definition (padding never wins).
    fn reference(p: &MaxPool2d, input: &[f32]) -> Vec<f32> {
        let (ih, iw) = p.in_size;
        let (oh, ow) = p.out_size;
        let mut out = vec![f32::NEG_INFINITY; p.channels * oh * ow];
        for c in 0..p.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..p.kernel.0 {
                        for kx in 0..p.kernel.1 {
                            let iy = (oy * p.stride.0 + ky) as isize - p.pad.0 as isize;
                            let ix = (ox * p.stride.1 + kx) as isize - p.pad.1 as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                                let v = input[(c * ih + iy as usize) * iw + ix as usize];
                                let o = &mut out[(c * oh + oy) * ow + ox];
                                *o = o.max(v);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn pool(k: usize, s: usize, pad: usize, in_size: (usize, usize)) -> MaxPool2d {
        let o = |n: usize| (n + 2 * pad - k) / s + 1;
        MaxPool2d {
            channels: 3,
            in_size,
            out_size: (o(in_size.0), o(in_size.1)),
            kernel: (k, k),
            stride: (s, s),
            pad: (pad, pad),
            datum_type: f32::datum_type(),
            replaces: "test".into(),
            arena: Default::default(),
        }
    }

    #[test]
    fn matches_onnx_maxpool_with_and_without_the_fast_path() {
        // 2x2/2 on even and odd sizes (fast path, the last odd row and column
        // dropped as ONNX's floor does), 3x3/2 with padding, 3x3/1.
        for p in [
            pool(2, 2, 0, (8, 12)),
            pool(2, 2, 0, (7, 9)),
            pool(3, 2, 1, (9, 10)),
            pool(3, 1, 1, (5, 6)),
            // 37 outputs per row: two vector blocks of 16 on x86, then 5.
            pool(2, 2, 0, (6, 75)),
        ] {
            let n = p.channels * p.in_size.0 * p.in_size.1;
            let input: Vec<f32> = (0..n).map(|i| ((i * 7919) % 113) as f32 - 56.0).collect();
            let mut out = vec![f32::NAN; p.channels * p.out_size.0 * p.out_size.1];
            p.run(&input, &mut out);
            assert_eq!(out, reference(&p, &input), "{p:?}");
            let bytes: Vec<u8> = input.iter().map(|&v| (v + 56.0) as u8).collect();
            let mut out8 = vec![0u8; out.len()];
            p.run(&bytes, &mut out8);
            let want: Vec<u8> = out.iter().map(|&v| (v + 56.0) as u8).collect();
            assert_eq!(out8, want, "{p:?} on u8");
            // Every byte value, 255 and 128 included (no signed compare).
            let bytes: Vec<u8> = (0..n).map(|i| (i * 7919 % 256) as u8).collect();
            p.run(&bytes, &mut out8);
            let floats: Vec<f32> = bytes.iter().map(|&b| f32::from(b)).collect();
            let want: Vec<u8> = reference(&p, &floats).iter().map(|&v| v as u8).collect();
            assert_eq!(out8, want, "{p:?} on all of u8");
        }
    }
}
