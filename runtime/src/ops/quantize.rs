//! [`QuantizeU8`]: `f32 -> u8` quantisation (ONNX QuantizeLinear) in
//! vector code. tract 0.23 runs it one value at a time, which made the 19
//! QuantizeLinear nodes of int8 DLA-tiny cost more than a tenth of the frame.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::glue::{by_chunks, Operand, Values, BLOCK};
use super::{DepthwiseUpsample, SharedMut};

/// `y = saturate(round_half_even(x * inverse_scale) + zero_point)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeU8 {
    /// `1 / scale` of the ONNX node (tract stores it that way too).
    pub inverse_scale: f32,
    /// Output zero point.
    pub zero_point: u8,
    /// The fact of the `u8` output (dtype as tract typed it).
    pub output_type: DatumType,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: super::Arena,
}

impl Eq for QuantizeU8 {}

impl QuantizeU8 {
    /// Quantises `input` into `out` (same length).
    pub fn run(&self, input: &[f32], out: &mut [u8]) {
        assert_eq!(input.len(), out.len());
        #[cfg(target_arch = "x86_64")]
        let done = if super::gemm::avx2() {
            // SAFETY: AVX2 present; lengths checked above.
            unsafe { self.run_avx2(input, out) }
        } else {
            0
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 target; lengths checked
        // above; a u8 zero point is in 0..=255.
        let done = unsafe {
            super::kernels::neon::quantize_u8(
                input,
                out,
                self.inverse_scale,
                i32::from(self.zero_point),
            )
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let done = 0;
        let z = i32::from(self.zero_point);
        for (o, &x) in out[done..].iter_mut().zip(&input[done..]) {
            *o = ((x * self.inverse_scale).round_ties_even() as i32 + z).clamp(0, 255) as u8;
        }
    }

    /// Quantises whole blocks of 32 values; returns how many it did.
    ///
    /// # Safety
    /// AVX2 must be available; `out.len() >= input.len()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, input: &[f32], out: &mut [u8]) -> usize {
        use std::arch::x86_64::*;
        let s = _mm256_set1_ps(self.inverse_scale);
        let z = _mm256_set1_epi32(i32::from(self.zero_point));
        // packs/packus work per 128-bit lane: this puts the dwords back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let blocks = input.len() / 32;
        for b in 0..blocks {
            let src = input.as_ptr().add(b * 32);
            // cvtps rounds half to even in the default MXCSR mode.
            let q = |i: usize| {
                _mm256_add_epi32(
                    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src.add(i * 8)), s)),
                    z,
                )
            };
            let ab = _mm256_packs_epi32(q(0), q(1));
            let cd = _mm256_packs_epi32(q(2), q(3));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(b * 32) as *mut __m256i, bytes);
        }
        blocks * 32
    }
}

/// The op's side of [`super::tract_op`].
impl QuantizeU8 {
    fn info_lines(&self) -> Vec<String> {
        vec![format!(
            "scale 1/{} zero point {}",
            self.inverse_scale, self.zero_point
        )]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape: TVec<usize> = inputs[0].shape().into();
        super::eval_into(
            &self.arena,
            inputs,
            self.output_type,
            &shape,
            |x: &[f32], y: &mut [u8]| by_chunks(y, |start, y| self.run(&x[start..][..y.len()], y)),
        )
    }

    fn output_fact(&self, inputs: &[&TypedFact]) -> TypedFact {
        self.output_type.fact(inputs[0].shape.clone())
    }
}

tract_op!(QuantizeU8);

/// A Concat whose only consumer quantises it, as one op: each input is
/// quantised straight into its slot of the `u8` output. The `f32` result of
/// the concatenation (4 MiB at DLA's IDA nodes) is never written or read.
/// An input that was a DequantizeLinear of `u8` is read as `u8`
/// ([`Operand::U8`]), so its `f32` copy is never written either. So is one
/// that was a learned up-sampler's output: the up-sampler runs inside,
/// a band of rows at a time, quantized as it goes. Only for concatenations
/// that are flat copies (every axis before the concatenation axis has size
/// 1, as with a batch of 1 in NCHW).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeConcat {
    /// The quantisation that followed the Concat.
    pub quantize: QuantizeU8,
    /// How each input is read, in order.
    pub operands: TVec<Operand>,
    /// Per input: the up-sampler that input goes through first, if any.
    pub upsamplers: TVec<Option<DepthwiseUpsample>>,
    /// The output shape.
    pub shape: TVec<usize>,
}

impl Eq for QuantizeConcat {}

impl QuantizeConcat {
    /// How many values input `i` (`len` values as read) fills in the output.
    fn slot_len(&self, i: usize, len: usize) -> usize {
        match &self.upsamplers[i] {
            Some(up) => up.channels * up.out_size.0 * up.out_size.1,
            None => len,
        }
    }

    /// Up-samples an `f32` input and quantises it into its slot `out`, a
    /// band of rows of a channel at a time.
    fn place_upsampled(&self, up: &DepthwiseUpsample, input: &[f32], out: &mut [u8]) {
        let (oh, ow) = up.out_size;
        let out = SharedMut::new(out);
        up.run_bands(input, |c, first, values| {
            // SAFETY: every (channel, band) is stored once, by one task.
            let out = unsafe { out.part((c * oh + first) * ow, values.len()) };
            self.quantize.run(values, out);
        });
    }

    /// Quantises one input into its slot `out`, in parallel chunks.
    fn place(&self, input: Values, out: &mut [u8]) {
        by_chunks(
            out,
            #[inline(always)]
            |start, out| {
                // `read` borrows f32 values as they are and dequantizes u8 ones.
                let mut block = [0f32; BLOCK];
                for (i, out) in out.chunks_mut(BLOCK).enumerate() {
                    let values = input.read(start + i * BLOCK, &mut block[..out.len()]);
                    self.quantize.run(values, out);
                }
            },
        );
    }
}

/// The op's side of [`super::tract_op`].
impl QuantizeConcat {
    fn info_lines(&self) -> Vec<String> {
        let mut lines = self.quantize.info_lines();
        let inputs: Vec<String> = (self.operands.iter().zip(&self.upsamplers))
            .map(|(operand, up)| match up {
                Some(up) => format!("{} up-sampled x{}", operand.describe(), up.stride.1),
                None => operand.describe(),
            })
            .collect();
        lines.push(format!("inputs {}", inputs.join(", ")));
        lines
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == self.operands.len() && inputs.len() == self.upsamplers.len(),
            "{} inputs, {} expected",
            inputs.len(),
            self.operands.len()
        );
        let total: usize = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| self.slot_len(i, input.len()))
            .sum();
        let (dt, shape) = (self.quantize.output_type, &self.shape);
        // Each input is written into its slot; together they fill the output.
        let out = self.quantize.arena.output(dt, shape, |out: &mut [u8]| {
            ensure!(
                total == out.len(),
                "inputs hold {total} values, output {}",
                out.len()
            );
            let mut at = 0;
            for (i, (input, operand)) in inputs.iter().zip(&self.operands).enumerate() {
                let plain = input.try_as_plain_ram()?;
                let values = operand.values(&plain)?;
                let slot = &mut out[at..at + self.slot_len(i, values.len())];
                match (&self.upsamplers[i], values) {
                    (Some(up), Values::F32(input)) => self.place_upsampled(up, input, slot),
                    (Some(_), _) => bail!("input {i} of an up-sampler must be f32"),
                    (None, values) => self.place(values, slot),
                }
                at += slot.len();
            }
            Ok(())
        })?;
        Ok(tvec!(out))
    }

    fn output_fact(&self, _inputs: &[&TypedFact]) -> TypedFact {
        self.quantize.output_type.fact(self.shape.clone())
    }
}

tract_op!(QuantizeConcat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_onnx_definition_on_every_path() {
        let q = QuantizeU8 {
            inverse_scale: 2.0,
            zero_point: 10,
            output_type: u8::datum_type(),
            arena: Default::default(),
        };
        // 70 values: two vector blocks and a scalar tail; ties, negatives, saturation.
        let input: Vec<f32> = (0..70).map(|i| (i as f32 - 20.0) * 0.75 + 0.25).collect();
        let mut out = vec![0u8; input.len()];
        q.run(&input, &mut out);
        for (x, y) in input.iter().zip(&out) {
            let want = ((x * 2.0).round_ties_even() as i32 + 10).clamp(0, 255) as u8;
            assert_eq!(*y, want, "x = {x}");
        }
        assert_eq!(out[0], 0, "saturates low");
        let big = [1e6f32; 40];
        let mut out = [0u8; 40];
        q.run(&big, &mut out);
        assert!(out.iter().all(|&v| v == 255), "saturates high");
    }

    #[test]
    fn a_concat_reading_u8_equals_dequantize_then_quantize() {
        use crate::ops::DequantizeU8;
        let quantize = QuantizeU8 {
            inverse_scale: 1.0 / 0.0497,
            zero_point: 5,
            output_type: u8::datum_type(),
            arena: Default::default(),
        };
        // A u8 input past one parallel chunk and not a whole number of
        // blocks, then an f32 one.
        let n = (1 << 16) + 300;
        let x: Vec<u8> = (0..n).map(|i| (i * 11 % 256) as u8).collect();
        let f: Vec<f32> = (0..77).map(|i| i as f32 * 0.21 - 3.0).collect();
        let (scale, zero_point) = (0.0373f32, 7);
        let dq = DequantizeU8 {
            scale,
            zero_point,
            arena: Default::default(),
        };
        let mut dequantized = vec![0f32; n];
        dq.run(&x, &mut dequantized);
        let mut want = vec![0u8; n + f.len()];
        quantize.run(&dequantized, &mut want[..n]);
        quantize.run(&f, &mut want[n..]);

        let concat = QuantizeConcat {
            quantize,
            operands: tvec![Operand::U8 { scale, zero_point }, Operand::F32],
            upsamplers: tvec![None, None],
            shape: tvec![1, n + f.len()],
        };
        let inputs = tvec![tensor1(&x).into_tvalue(), tensor1(&f).into_tvalue()];
        let out = concat.eval_inputs(inputs).unwrap();
        let got = out[0].try_as_plain_ram().unwrap();
        assert_eq!(got.as_slice::<u8>().unwrap(), &want[..]);
    }

    #[test]
    fn a_concat_running_an_up_sampler_equals_up_sample_then_quantize() {
        // DLA's x2 shape (kernel 4, stride 2, pad 1) on 3 channels, with
        // more output rows than one band and a partial last band.
        let (channels, ih, iw) = (3, 7, 9);
        let (oh, ow) = (2 * ih, 2 * iw);
        let weights: Vec<f32> = (0..channels * 16)
            .map(|i| (i % 7) as f32 * 0.13 - 0.4)
            .collect();
        let bias = vec![0.1, -0.2, 0.3];
        let up = DepthwiseUpsample::new(
            channels,
            (ih, iw),
            (oh, ow),
            (4, 4),
            (2, 2),
            (1, 1),
            weights,
            bias,
            "test",
        );
        let x: Vec<f32> = (0..channels * ih * iw)
            .map(|i| (i % 11) as f32 * 0.3 - 1.2)
            .collect();
        let quantize = QuantizeU8 {
            inverse_scale: 1.0 / 0.021,
            zero_point: 9,
            output_type: u8::datum_type(),
            arena: Default::default(),
        };
        let mut upsampled = vec![0f32; channels * oh * ow];
        up.run(&x, &mut upsampled);
        let f = [0.5f32, -0.25, 2.0];
        let mut want = vec![0u8; f.len() + upsampled.len()];
        quantize.run(&f, &mut want[..f.len()]);
        quantize.run(&upsampled, &mut want[f.len()..]);

        let concat = QuantizeConcat {
            quantize,
            operands: tvec![Operand::F32, Operand::F32],
            upsamplers: tvec![None, Some(up)],
            shape: tvec![1, want.len()],
        };
        let inputs = tvec![tensor1(&f).into_tvalue(), tensor1(&x).into_tvalue()];
        let out = concat.eval_inputs(inputs).unwrap();
        let got = out[0].try_as_plain_ram().unwrap();
        assert_eq!(got.as_slice::<u8>().unwrap(), &want[..]);
    }
}
