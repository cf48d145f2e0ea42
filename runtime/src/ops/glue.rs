//! The glue between the convolutions: [`DequantizeU8`] (ONNX
//! DequantizeLinear of `u8`), [`AddRelu`] (the residual `Add`, with the
//! ReLU after it fused) and [`FlatConcat`] (DLA's aggregation Concats in
//! an fp32 model). tract's versions computed the same values but allocated
//! their outputs on every frame (100 blocks of an int8 DLA-tiny frame, 24
//! of an fp32 one); ours write into the model's [`super::Arena`] like the
//! rest of our operators.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::{parallel, Arena, SharedMut};

/// Elements per parallel task of these memory-bound loops.
const CHUNK: usize = 1 << 16;

/// Runs `f(start, len)` over `0..len` in chunks of [`CHUNK`], in parallel.
fn by_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let len = out.len();
    let out = SharedMut::new(out);
    let out = &out;
    parallel(len.div_ceil(CHUNK), |t| {
        let start = t * CHUNK;
        // SAFETY: each task writes its own chunk.
        f(start, unsafe { out.part(start, CHUNK.min(len - start)) });
    });
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
        by_chunks(out, |start, out| {
            for (o, &x) in out.iter_mut().zip(&input[start..]) {
                *o = (i32::from(x) - zero_point) as f32 * scale;
            }
        });
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

/// `y = a + b` of two `f32` tensors of one shape, then `max(y, 0)` when a
/// ReLU followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRelu {
    /// Whether the ReLU after the Add is fused.
    pub relu: bool,
    /// Where its output tensor comes from (shared with the model's other ops).
    pub arena: Arena,
}

impl AddRelu {
    /// Adds `a` and `b` into `out` (all one length).
    pub fn run(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(a.len() == out.len() && b.len() == out.len());
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };
        by_chunks(out, |start, out| {
            for ((o, &a), &b) in out.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                *o = (a + b).max(floor);
            }
        });
    }
}

/// The op's side of [`super::tract_op`].
impl AddRelu {
    fn info_lines(&self) -> Vec<String> {
        vec![if self.relu { "add, relu" } else { "add" }.to_string()]
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
        let (a, b) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
        let out = self
            .arena
            .output(f32::datum_type(), &shape, |out: &mut [f32]| {
                self.run(a, b, out);
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
        // Sizes past one chunk, so the parallel split is crossed.
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
