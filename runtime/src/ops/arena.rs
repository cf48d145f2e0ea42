//! The output tensors of our operators, reused from frame to frame.
//!
//! tract's plan drops each node's output once its last consumer has run,
//! and an operator evaluated on its own would allocate a fresh output on
//! every run: 180 blocks of an int8 DLA-tiny frame were ours. Instead the
//! operators of one model share an [`Arena`]. An operator takes a tensor of
//! its output's element size and count that nobody else holds (the plan has
//! dropped it: the arena's reference is the only one) or, only while the
//! arena is still growing, makes one. So the first frames size the arena to
//! the most tensors ever live at once, as malloc would, and every later
//! frame allocates nothing.
//!
//! The arena also holds the one padded copy of a convolution's input that
//! the model's convolutions take turns to use (grown to the largest), so
//! it does not matter which thread runs the plan: a thread-local copy would
//! grow again on every thread the plan ever ran on.

use std::sync::{Mutex, PoisonError};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// Tensors shared by the operators of one model (clones share them).
#[derive(Debug, Clone, Default)]
pub struct Arena {
    tensors: Arc<Mutex<Vec<Arc<Tensor>>>>,
    padded: Arc<Mutex<Padded>>,
}

/// The padded input images of the convolutions, one per element type.
#[derive(Debug, Default)]
struct Padded {
    f32: Vec<f32>,
    i16: Vec<i16>,
    u8: Vec<u8>,
}

impl Arena {
    /// A tensor of type `dt` and `shape`, filled by `fill` (which must write
    /// every element: a reused tensor holds an earlier frame's values, a new
    /// one is uninitialised), as a value the plan can hand on.
    pub fn output<O: Datum>(
        &self,
        dt: DatumType,
        shape: &[usize],
        fill: impl FnOnce(&mut [O]) -> TractResult<()>,
    ) -> TractResult<TValue> {
        let mut tensors = self.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        let len: usize = shape.iter().product();
        let size = dt.size_of();
        let free = tensors.iter_mut().position(|t| {
            t.len() == len && t.datum_type().size_of() == size && Arc::get_mut(t).is_some()
        });
        let at = match free {
            Some(at) => at,
            None => {
                // SAFETY: `fill` writes every element before anyone reads.
                let fresh = unsafe { Tensor::uninitialized_dt(dt, shape)? };
                tensors.push(Arc::new(fresh));
                tensors.len() - 1
            }
        };
        let tensor = Arc::get_mut(&mut tensors[at]).context("arena tensor is shared")?;
        // SAFETY: same element size and count, and tract allocates every
        // tensor at vector alignment, so the buffer fits the new type and
        // shape; `fill` writes every element.
        unsafe {
            tensor.set_datum_type(dt);
            tensor.set_shape_unchecked(shape);
        }
        fill(tensor.try_as_plain_ram_mut()?.as_slice_mut::<O>()?)?;
        Ok(tensors[at].clone().into_tvalue())
    }

    /// Runs `f` with the `f32` padded-image buffer (to resize and fill).
    pub fn padded_f32<R>(&self, f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
        f(&mut self
            .padded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .f32)
    }

    /// Runs `f` with the `i16` padded-image buffer.
    pub fn padded_i16<R>(&self, f: impl FnOnce(&mut Vec<i16>) -> R) -> R {
        f(&mut self
            .padded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .i16)
    }

    /// Runs `f` with the `u8` padded-image buffer.
    pub fn padded_u8<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self
            .padded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .u8)
    }

    /// Tensors held (in use or free) and their bytes.
    pub fn held(&self) -> (usize, usize) {
        let tensors = self.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = tensors
            .iter()
            .map(|t| t.len() * t.datum_type().size_of())
            .sum();
        (tensors.len(), bytes)
    }
}

/// The arena is not part of what an operator computes: ops compare and
/// hash as if it were absent.
impl PartialEq for Arena {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Arena {}

impl std::hash::Hash for Arena {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<T: Datum + Clone>(v: &TValue) -> Vec<T> {
        v.try_as_plain_ram()
            .unwrap()
            .as_slice::<T>()
            .unwrap()
            .to_vec()
    }

    fn address(v: &TValue) -> *const f32 {
        v.try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .as_ptr()
    }

    fn fill_with(arena: &Arena, value: f32, shape: &[usize]) -> TValue {
        arena
            .output(f32::datum_type(), shape, |out: &mut [f32]| {
                out.fill(value);
                Ok(())
            })
            .unwrap()
    }

    #[test]
    fn a_dropped_output_is_reused_and_a_held_one_is_not() {
        let arena = Arena::default();
        let a = fill_with(&arena, 1.0, &[2, 3]);
        let a_ptr = address(&a);
        // Held: a second tensor of the same size is made.
        let b = fill_with(&arena, 2.0, &[3, 2]);
        assert_ne!(address(&b), a_ptr);
        assert_eq!(values::<f32>(&a), &[1.0; 6]);
        drop(a);
        // Dropped: reused, with the new shape and values.
        let c = fill_with(&arena, 3.0, &[6]);
        assert_eq!(address(&c), a_ptr);
        assert_eq!(c.shape(), &[6]);
        assert_eq!(values::<f32>(&c), &[3.0; 6]);
        // Another element count gets its own tensor; so does another element size.
        let d = fill_with(&arena, 4.0, &[5]);
        let e = arena
            .output(u8::datum_type(), &[6], |out: &mut [u8]| {
                out.fill(9);
                Ok(())
            })
            .unwrap();
        assert_eq!(values::<u8>(&e), &[9; 6]);
        assert_eq!(arena.held().0, 4);
        drop((b, c, d, e));
        // Steady state: nothing new.
        for _ in 0..3 {
            let _ = fill_with(&arena, 5.0, &[2, 3]);
        }
        assert_eq!(arena.held(), (4, 2 * 6 * 4 + 5 * 4 + 6));
    }
}
