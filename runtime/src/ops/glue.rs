//! The glue between the convolutions: [`DequantizeU8`] (ONNX
//! DequantizeLinear of `u8`), [`AddRelu`] (the residual `Add`, with the
//! ReLU after it fused) and [`FlatConcat`] (DLA's aggregation Concats in
//! an fp32 model). tract's versions computed the same values but allocated
//! their outputs on every frame (100 blocks of an int8 DLA-tiny frame, 24
//! of an fp32 one); ours write into the model's [`super::Arena`] like the
//! rest of our operators.
//!
//! In an int8 model most DequantizeLinear nodes feed only an Add or a
//! quantized Concat. Those are folded into their consumer ([`Operand::U8`]):
//! it reads the `u8` tensor and dequantizes a block at a time on the stack,
//! so the `f32` copy (four times the bytes) is never written and read back.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::{parallel, Arena, SharedMut};

/// Elements per parallel task of these memory-bound loops.
const CHUNK: usize = 1 << 16;

/// Values dequantized at once on the stack by a folded [`Operand::U8`].
pub(super) const BLOCK: usize = 256;

/// Runs `f(start, len)` over `0..len` in chunks of [`CHUNK`], in parallel,
/// each chunk compiled for AVX2 where the CPU has it ([`wide`]; give `f`
/// `#[inline(always)]` so that it is compiled there).
pub(super) fn by_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let len = out.len();
    let out = SharedMut::new(out);
    let out = &out;
    parallel(len.div_ceil(CHUNK), |t| {
        let start = t * CHUNK;
        // SAFETY: each task writes its own chunk.
        let part = unsafe { out.part(start, CHUNK.min(len - start)) };
        wide(
            #[inline(always)]
            || f(start, part),
        );
    });
}

/// Runs `f` (an `#[inline(always)]` closure) inlined into a function
/// compiled for AVX2 where the CPU has it, else as it is. The glue's loops are plain Rust that LLVM
/// vectorises; for x86-64's baseline it can only use SSE2, 4 floats and
/// 4 bytes widened at a time, and these loops ran at that width. The same
/// code compiled for AVX2 handles 8 at once with the same arithmetic, so
/// the same bits (Rust never fuses a multiply and an add on its own).
#[inline(always)]
pub(super) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if super::gemm::avx2() {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2(f) };
    }
    f()
}

/// ONNX DequantizeLinear of one `u8`: the one formula every dequantizing
/// path uses, so a folded DequantizeLinear gives the bits the node gave.
#[inline(always)]
fn dequantize(x: u8, zero_point: i32, scale: f32) -> f32 {
    (i32::from(x) - zero_point) as f32 * scale
}

/// How a glue op reads one of its inputs: an `f32` tensor as it is, or a
/// `u8` tensor it dequantizes itself (a DequantizeLinear folded into it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Operand {
    /// The input is `f32`.
    #[default]
    F32,
    /// The input is `u8`, read as `(x - zero_point) * scale`.
    U8 {
        /// Scale of the folded DequantizeLinear.
        scale: f32,
        /// Zero point of the folded DequantizeLinear.
        zero_point: i32,
    },
}

impl Operand {
    /// What `bench --profile` prints for an input.
    pub(super) fn describe(self) -> String {
        match self {
            Operand::F32 => "f32".to_string(),
            Operand::U8 { scale, zero_point } => {
                format!("u8 (scale {scale}, zero point {zero_point})")
            }
        }
    }

    /// The values of one tensor as this operand reads them.
    pub(super) fn values<'a>(self, tensor: &'a PlainView<'_>) -> TractResult<Values<'a>> {
        Ok(match self {
            Operand::F32 => Values::F32(tensor.as_slice::<f32>()?),
            Operand::U8 { scale, zero_point } => Values::U8 {
                values: tensor.as_slice::<u8>()?,
                scale,
                zero_point,
            },
        })
    }
}

/// One input of a glue op, `f32` or `u8` to dequantize ([`Operand`]).
#[derive(Clone, Copy)]
pub(super) enum Values<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// `u8` values and their quantisation.
    U8 {
        values: &'a [u8],
        scale: f32,
        zero_point: i32,
    },
}

impl<'a> Values<'a> {
    /// How many values there are.
    pub(super) fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::U8 { values, .. } => values.len(),
        }
    }

    /// Values `start..start + block.len()` in `f32`: borrowed as they are,
    /// or dequantized into `block`.
    #[inline(always)]
    pub(super) fn read<'b>(&self, start: usize, block: &'b mut [f32]) -> &'b [f32]
    where
        'a: 'b,
    {
        match *self {
            Values::F32(v) => &v[start..start + block.len()],
            Values::U8 {
                values,
                scale,
                zero_point,
            } => {
                for (o, &x) in block.iter_mut().zip(&values[start..]) {
                    *o = dequantize(x, zero_point, scale);
                }
                block
            }
        }
    }
}

/// `y = (x - zero_point) * scale`, `u8` to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct DequantizeU8 {
    /// Scale of the quantized input.
    pub scale: f32,
    /// Zero point of the quantized input.
    pub zero_point: i32,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: Arena,
}

impl Eq for DequantizeU8 {}

impl DequantizeU8 {
    /// Dequantizes `input` into `out` (same length).
    pub fn run(&self, input: &[u8], out: &mut [f32]) {
        assert_eq!(input.len(), out.len());
        let (zero_point, scale) = (self.zero_point, self.scale);
        by_chunks(
            out,
            #[inline(always)]
            |start, out| {
                for (o, &x) in out.iter_mut().zip(&input[start..]) {
                    *o = dequantize(x, zero_point, scale);
                }
            },
        );
    }
}

/// The op's side of [`super::tract_op`].
impl DequantizeU8 {
    fn info_lines(&self) -> Vec<String> {
        vec![format!(
            "scale {} zero point {}",
            self.scale, self.zero_point
        )]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape: TVec<usize> = inputs[0].shape().into();
        super::eval_into(
            &self.arena,
            inputs,
            f32::datum_type(),
            &shape,
            |x: &[u8], y: &mut [f32]| self.run(x, y),
        )
    }

    fn output_fact(&self, inputs: &[&TypedFact]) -> TypedFact {
        f32::fact(inputs[0].shape.clone())
    }
}

tract_op!(DequantizeU8);

/// `y = a + b` of two tensors of one shape, then `max(y, 0)` when a ReLU
/// followed; `f32` out, each input `f32` or `u8` to dequantize.
#[derive(Debug, Clone, PartialEq)]
pub struct AddRelu {
    /// Whether the ReLU after the Add is fused.
    pub relu: bool,
    /// How `a` and `b` are read.
    pub operands: [Operand; 2],
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: Arena,
}

impl Eq for AddRelu {}

impl AddRelu {
    /// Adds `a` and `b` into `out` (all one length).
    pub fn run(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        self.run_values(Values::F32(a), Values::F32(b), out)
    }

    /// Adds `a` and `b` (each `f32` or `u8` dequantized a block at a time)
    /// into `out`.
    pub(super) fn run_values(&self, a: Values, b: Values, out: &mut [f32]) {
        assert!(a.len() == out.len() && b.len() == out.len());
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };
        by_chunks(
            out,
            #[inline(always)]
            |start, out| {
                let (mut block_a, mut block_b) = ([0f32; BLOCK], [0f32; BLOCK]);
                for (i, out) in out.chunks_mut(BLOCK).enumerate() {
                    let at = start + i * BLOCK;
                    let a = a.read(at, &mut block_a[..out.len()]);
                    let b = b.read(at, &mut block_b[..out.len()]);
                    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                        *o = (a + b).max(floor);
                    }
                }
            },
        );
    }
}

/// The op's side of [`super::tract_op`].
impl AddRelu {
    fn info_lines(&self) -> Vec<String> {
        let [a, b] = self.operands.map(Operand::describe);
        let op = if self.relu { "add, relu" } else { "add" };
        vec![format!("{op} of {a} and {b}")]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(
            a.shape() == b.shape(),
            "shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        let shape: TVec<usize> = a.shape().into();
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let [operand_a, operand_b] = self.operands;
        let (a, b) = (operand_a.values(&a)?, operand_b.values(&b)?);
        let out = self
            .arena
            .output(f32::datum_type(), &shape, |out: &mut [f32]| {
                self.run_values(a, b, out);
                Ok(())
            })?;
        Ok(tvec!(out))
    }

    fn output_fact(&self, inputs: &[&TypedFact]) -> TypedFact {
        f32::fact(inputs[0].shape.clone())
    }
}

tract_op!(AddRelu);

/// A Concat that is a flat copy (every axis before the concatenation axis
/// has size 1, as with a batch of 1 in NCHW): each input is copied into its
/// slot of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatConcat {
    /// The output shape (`f32`, as the inputs).
    pub shape: TVec<usize>,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: Arena,
}

/// The op's side of [`super::tract_op`].
impl FlatConcat {
    fn info_lines(&self) -> Vec<String> {
        vec![format!("f32 {:?}", self.shape)]
    }

    fn eval_inputs(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let total: usize = inputs.iter().map(|i| i.len()).sum();
        let out = self
            .arena
            .output(f32::datum_type(), &self.shape, |out: &mut [f32]| {
                ensure!(
                    total == out.len(),
                    "inputs hold {total} values, output {}",
                    out.len()
                );
                let mut at = 0;
                for input in &inputs {
                    let src = input.try_as_plain_ram()?;
                    let src = src.as_slice::<f32>()?;
                    out[at..at + src.len()].copy_from_slice(src);
                    at += src.len();
                }
                Ok(())
            })?;
        Ok(tvec!(out))
    }

    fn output_fact(&self, _inputs: &[&TypedFact]) -> TypedFact {
        f32::fact(self.shape.clone())
    }
}

tract_op!(FlatConcat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glue_computes_what_onnx_defines() {
        // Sizes past one chunk, so the parallel split is crossed. On an
        // AVX2 CPU the ops run their loops compiled for AVX2 (`wide`); the
        // expected values here are computed by baseline code: same bits.
        let n = CHUNK + 37;
        let x: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
        let dq = DequantizeU8 {
            scale: 0.5,
            zero_point: 100,
            arena: Arena::default(),
        };
        let mut y = vec![0f32; n];
        dq.run(&x, &mut y);
        assert!(y
            .iter()
            .zip(&x)
            .all(|(&y, &x)| y == (f32::from(x) - 100.0) * 0.5));
        let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 30.0).collect();
        for relu in [false, true] {
            let add = AddRelu {
                relu,
                operands: [Operand::F32; 2],
                arena: Arena::default(),
            };
            let mut out = vec![f32::NAN; n];
            add.run(&y, &b, &mut out);
            for i in 0..n {
                let sum = y[i] + b[i];
                assert_eq!(
                    out[i],
                    if relu { sum.max(0.0) } else { sum },
                    "relu {relu}, {i}"
                );
            }
        }
    }

    /// The folded form must give the bits of DequantizeU8 then AddRelu.
    fn dequantized(x: &[u8], scale: f32, zero_point: i32) -> Vec<f32> {
        let dq = DequantizeU8 {
            scale,
            zero_point,
            arena: Arena::default(),
        };
        let mut y = vec![0f32; x.len()];
        dq.run(x, &mut y);
        y
    }

    #[test]
    fn an_add_reading_u8_equals_dequantize_then_add() {
        // Past one chunk and not a whole number of blocks.
        let n = CHUNK + BLOCK + 37;
        let a: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
        let b: Vec<u8> = (0..n).map(|i| (i * 13 % 251) as u8).collect();
        let f: Vec<f32> = (0..n).map(|i| (i % 9) as f32 * 0.37 - 1.5).collect();
        let (sa, za, sb, zb) = (0.0371f32, 3, 0.0529f32, 0);
        let (fa, fb) = (dequantized(&a, sa, za), dequantized(&b, sb, zb));
        let u8a = Values::U8 {
            values: &a,
            scale: sa,
            zero_point: za,
        };
        let u8b = Values::U8 {
            values: &b,
            scale: sb,
            zero_point: zb,
        };
        for relu in [false, true] {
            let add = AddRelu {
                relu,
                operands: [Operand::F32; 2],
                arena: Arena::default(),
            };
            let mut want = vec![0f32; n];
            let mut got = vec![f32::NAN; n];
            add.run(&fa, &fb, &mut want);
            add.run_values(u8a, u8b, &mut got);
            assert_eq!(got, want, "u8 + u8, relu {relu}");
            add.run(&fa, &f, &mut want);
            add.run_values(u8a, Values::F32(&f), &mut got);
            assert_eq!(got, want, "u8 + f32, relu {relu}");
            add.run(&f, &fb, &mut want);
            add.run_values(Values::F32(&f), u8b, &mut got);
            assert_eq!(got, want, "f32 + u8, relu {relu}");
        }
    }

    #[test]
    fn flat_concat_places_each_input_in_its_slot() {
        let op = FlatConcat {
            shape: tvec![1, 3, 2],
            arena: Arena::default(),
        };
        let a = tensor3(&[[[1f32, 2.0]]]).into_tvalue();
        let b = tensor3(&[[[3f32, 4.0], [5.0, 6.0]]]).into_tvalue();
        let out = op.eval_inputs(tvec![a, b]).unwrap();
        assert_eq!(out[0].shape(), &[1, 3, 2]);
        let values = out[0].try_as_plain_ram().unwrap();
        let values = values.as_slice::<f32>().unwrap();
        assert_eq!(values, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
