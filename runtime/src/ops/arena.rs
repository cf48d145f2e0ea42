//! The output tensors of our operators, reused from frame to frame.
//!
//! tract's plan drops each node's output once its last consumer has run,
//! and an operator evaluated on its own would allocate a fresh output on
//! every run: 180 blocks of an int8 DLA-tiny frame were ours. Instead the
//! operators of one model share an [`Arena`]. An operator takes the smallest
//! tensor whose buffer holds its output and that nobody else holds (the plan
//! has dropped it: the arena's reference is the only one), in whatever type
//! and shape it had, or, only while the arena is still growing, makes one.
//! So the first frames size the arena to about what is live at once (int8
//! DLA-tiny: 8 tensors, 17.4 MiB; fp32: 8, 31.2 MiB), and every later frame
//! allocates nothing.
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
    tensors: Arc<Mutex<Vec<Slot>>>,
    padded: Arc<Mutex<Padded>>,
}

/// One tensor of the arena and the bytes its buffer holds (its shape may
/// use fewer).
#[derive(Debug)]
struct Slot {
    tensor: Arc<Tensor>,
    capacity: usize,
}

impl Slot {
    /// Whether the plan has dropped the tensor (the arena's is the only
    /// reference).
    fn free(&self) -> bool {
        Arc::strong_count(&self.tensor) == 1 && Arc::weak_count(&self.tensor) == 0
    }
}

/// The padded input images of the convolutions, one per element type.
#[derive(Debug, Default)]
struct Padded {
    f32: Vec<f32>,
    i16: Vec<i16>,
    /// Quad words, or bytes viewed through them (`bytemuck`): the one
    /// buffer of both byte-image layouts of the quad kernels.
    words: Vec<i32>,
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
        let mut slots = self.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = shape.iter().product::<usize>() * dt.size_of();
        // The smallest free buffer that holds the output.
        let free = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.capacity >= bytes && s.free())
            .min_by_key(|(_, s)| s.capacity)
            .map(|(at, _)| at);
        let at = match free {
            Some(at) => at,
            None => {
                // SAFETY: `fill` writes every element before anyone reads.
                let fresh = unsafe { Tensor::uninitialized_dt(dt, shape)? };
                slots.push(Slot {
                    tensor: Arc::new(fresh),
                    capacity: bytes,
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[at];
        let tensor = Arc::get_mut(&mut slot.tensor).context("arena tensor is shared")?;
        // SAFETY: the buffer holds at least `bytes`, and tract allocates
        // every tensor at vector alignment, so it fits the new type and
        // shape (tract's views read `len` elements, not the buffer); `fill`
        // writes every element.
        unsafe {
            tensor.set_datum_type(dt);
            tensor.set_shape_unchecked(shape);
        }
        fill(tensor.try_as_plain_ram_mut()?.as_slice_mut::<O>()?)?;
        Ok(slot.tensor.clone().into_tvalue())
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

    /// Runs `f` with the padded-image buffer of quad words (or bytes).
    pub fn padded_words<R>(&self, f: impl FnOnce(&mut Vec<i32>) -> R) -> R {
        f(&mut self
            .padded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .words)
    }

    /// Tensors held (in use or free) and their bytes.
    pub fn held(&self) -> (usize, usize) {
        let slots = self.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        (slots.len(), slots.iter().map(|s| s.capacity).sum())
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

    fn address<T: Datum>(v: &TValue) -> *const u8 {
        let view = v.try_as_plain_ram().unwrap();
        view.as_slice::<T>().unwrap().as_ptr() as *const u8
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
        let a_ptr = address::<f32>(&a);
        // Held: a second tensor of the same size is made.
        let b = fill_with(&arena, 2.0, &[3, 2]);
        assert_ne!(address::<f32>(&b), a_ptr);
        assert_eq!(values::<f32>(&a), &[1.0; 6]);
        drop(a);
        // Dropped: reused, with the new shape and values.
        let c = fill_with(&arena, 3.0, &[6]);
        assert_eq!(address::<f32>(&c), a_ptr);
        assert_eq!(c.shape(), &[6]);
        assert_eq!(values::<f32>(&c), &[3.0; 6]);
        // Everything held: new tensors, whatever their size and type.
        let d = fill_with(&arena, 4.0, &[5]);
        let e = arena
            .output(u8::datum_type(), &[6], |out: &mut [u8]| {
                out.fill(9);
                Ok(())
            })
            .unwrap();
        assert_eq!(values::<u8>(&e), &[9; 6]);
        let e_ptr = address::<u8>(&e);
        assert_eq!(arena.held(), (4, 2 * 24 + 20 + 6));
        drop((b, c, d, e));
        // The smallest free buffer that holds an output serves it, in any
        // type: 4 bytes take the 6-byte one, 20 bytes the 20-byte one.
        let small = arena
            .output(u8::datum_type(), &[4], |out: &mut [u8]| {
                out.fill(1);
                Ok(())
            })
            .unwrap();
        assert_eq!(address::<u8>(&small), e_ptr);
        assert_eq!(
            (small.shape(), values::<u8>(&small)),
            (&[4][..], vec![1; 4])
        );
        let five = fill_with(&arena, 6.0, &[5]);
        assert_eq!(values::<f32>(&five), &[6.0; 5]);
        drop((small, five));
        // Steady state: nothing new.
        for _ in 0..3 {
            let _ = fill_with(&arena, 5.0, &[2, 3]);
            let _ = fill_with(&arena, 5.0, &[1]);
        }
        assert_eq!(arena.held(), (4, 2 * 24 + 20 + 6));
    }
}
