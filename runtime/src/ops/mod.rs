//! Our own tract operators, swapped into a model before tract optimises it,
//! where tract 0.23's own are slow on the models we ship (measured in
//! docs/PERFORMANCE.md):
//!
//! - [`Int8Conv`] for quantized 2-D convolutions (QLinearConv). Stock tract
//!   builds a full im2col matrix, requantises in separate passes, and on
//!   x86_64 without AVX-512 VNNI its only int8 kernel is ~50x slower than its
//!   fp32 one. Ours packs panels, multiplies exactly, and requantises in
//!   registers (see [`gemm`] and [`kernels`]): `vpdpbusd` quads on AVX-512
//!   VNNI and AVX-VNNI; on AVX2 `u8 x s8` quads with `vpmaddubsw` when the
//!   layer's weights cannot saturate it (7-bit weights, `dla-tools quantize
//!   --weight-bits 7`), `i16` pairs with `vpmaddwd` otherwise; NEON on
//!   aarch64; plain vectorisable Rust on other CPUs.
//! - [`F32Conv`] for float 2-D convolutions, with the ReLU after them
//!   fused: tract runs the full-resolution ones with a slow direct loop and
//!   the others through an im2col matrix, a separate padding copy and a
//!   separate ReLU pass; ours multiplies straight out of a padded copy of
//!   the input (see [`f32_conv`]).
//! - [`MaxPool2d`] for 2-D max pools (DLA's 2x2 down-samplers), `f32` or
//!   `u8`: tract's generic patch walker ran them at a tenth of memory speed.
//! - [`QuantizeU8`] for QuantizeLinear (tract's is scalar).
//! - [`DepthwiseUpsample`] for DLA's depthwise ConvTranspose up-samplers, in
//!   fp32 and int8 models alike.
//! - [`DequantizeU8`], [`AddRelu`] and [`FlatConcat`] for the glue between
//!   them (DequantizeLinear, the residual Add with its ReLU, fp32's Concats):
//!   tract's computed the same but allocated their outputs every frame.
//!
//! Every op of one model writes its output into the model's [`Arena`], so
//! a plan made only of our ops (the shipped models) allocates nothing per
//! frame. Everything else stays tract's. `DLA_OPS=tract` turns the swap off
//! (to compare, or on a CPU where tract's are faster).

/// The tract trait impls every op of ours shares, written once. The op
/// brings three inherent methods: `info_lines` (what `bench --profile`
/// shows for the node), `eval_inputs` (the computation) and `output_fact`
/// (its one output's type and shape, from the input facts). The op's tract
/// name is its type's name.
macro_rules! tract_op {
    ($op:ident) => {
        impl Op for $op {
            fn name(&self) -> StaticName {
                stringify!($op).into()
            }

            fn info(&self) -> TractResult<Vec<String>> {
                Ok(self.info_lines())
            }

            op_as_typed_op!();
        }

        impl EvalOp for $op {
            op_out_of_plan!();

            fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
                self.eval_inputs(inputs)
            }
        }

        impl TypedOp for $op {
            fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
                Ok(tvec!(self.output_fact(inputs)))
            }

            as_op!();
        }
    };
}

pub mod arena;
mod awake;
pub mod f32_conv;
pub mod gemm;
pub mod gemm_f32;
pub mod glue;
pub mod int8_conv;
pub mod kernels;
mod layout;
pub mod maxpool;
pub mod quantize;
pub mod upsample;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{
    Conv, Deconv, KernelFormat, MaxPool, PaddingSpec, PoolSpec,
};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

pub use arena::Arena;
pub(crate) use awake::with_workers_awake;
pub use f32_conv::F32Conv;
pub use glue::{AddRelu, DequantizeU8, FlatConcat, Operand};
pub use int8_conv::{Geometry, Int8Conv, QuantizedConv};
pub use maxpool::MaxPool2d;
pub use quantize::{QuantizeConcat, QuantizeU8};
pub use upsample::DepthwiseUpsample;

/// Runs `f(0..tasks)` on the thread pool of the tract backend running the
/// model (its executor is current while a plan runs), or inline when it has
/// one thread. Through rayon's parallel iterator, whose jobs live on the
/// stack: nothing is allocated per call.
pub(crate) fn parallel(tasks: usize, f: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    use tract_linalg::multithread::{current_tract_executor, Executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) if tasks > 1 => {
            pool.install(|| (0..tasks).into_par_iter().for_each(f))
        }
        _ => (0..tasks).for_each(f),
    }
}

/// Evaluates a one-input operator into a tensor of `arena` shaped and
/// typed as `output` (concrete), which `run` must fill completely: it holds
/// an earlier frame's values or none.
fn eval_filled<I: Datum, O: Datum>(
    name: &str,
    arena: &Arena,
    output: &TypedFact,
    inputs: TVec<TValue>,
    run: impl FnOnce(&[I], &mut [O]),
) -> TractResult<TVec<TValue>> {
    let shape = output
        .shape
        .as_concrete()
        .with_context(|| format!("{name} needs a concrete output shape"))?;
    eval_into(arena, inputs, output.datum_type, shape, run)
}

/// [`eval_filled`] for an output `datum_type` and `shape` given directly.
fn eval_into<I: Datum, O: Datum>(
    arena: &Arena,
    inputs: TVec<TValue>,
    datum_type: DatumType,
    shape: &[usize],
    run: impl FnOnce(&[I], &mut [O]),
) -> TractResult<TVec<TValue>> {
    let input = args_1!(inputs);
    let input = input.try_as_plain_ram()?;
    let input = input.as_slice::<I>()?;
    let out = arena.output(datum_type, shape, |out: &mut [O]| {
        run(input, out);
        Ok(())
    })?;
    Ok(tvec!(out))
}

/// Memory that several [`parallel`] tasks write at once, each task its own
/// disjoint part (rows or channel planes of an output or a scratch image).
pub(crate) struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the memory is reached only through `part`, whose callers promise
// that no two tasks hold overlapping parts.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Shares `data` for the duration of the borrow it came from.
    pub(crate) fn new(data: &mut [T]) -> SharedMut<T> {
        SharedMut {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }

    /// Elements `start..start + len`.
    ///
    /// # Safety
    /// The slice given to [`SharedMut::new`] must still be borrowed, and no
    /// other task may use any of these elements while the part lives.
    #[allow(clippy::mut_from_ref)] // disjointness is the caller's promise
    pub(crate) unsafe fn part(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "part out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }

    /// A pointer to element `start`, for a kernel that writes elements
    /// `start..start + span` (some of them: strided rows).
    ///
    /// # Safety
    /// As [`SharedMut::part`] for every element the kernel writes.
    pub(crate) unsafe fn ptr(&self, start: usize, span: usize) -> *mut T {
        assert!(start + span <= self.len, "span out of bounds");
        self.ptr.add(start)
    }
}

/// The number of threads [`parallel`] runs on now.
pub(crate) fn threads() -> usize {
    use tract_linalg::multithread::{current_tract_executor, Executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// Whether our operators replace tract's (`DLA_OPS=tract` says no).
pub fn enabled() -> bool {
    std::env::var("DLA_OPS").map_or(true, |v| v != "tract")
}

/// How many nodes [`use_our_ops`] replaced, per operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swapped {
    /// Quantized convolutions now [`Int8Conv`].
    pub int8_convs: usize,
    /// Float convolutions now [`F32Conv`].
    pub f32_convs: usize,
    /// ReLUs fused into the [`F32Conv`] before them.
    pub fused_relus: usize,
    /// QuantizeLinear nodes now [`QuantizeU8`].
    pub quantizers: usize,
    /// Depthwise ConvTranspose nodes now [`DepthwiseUpsample`].
    pub upsamplers: usize,
    /// MaxPool nodes now [`MaxPool2d`].
    pub max_pools: usize,
    /// Concat + QuantizeLinear pairs now one [`QuantizeConcat`].
    pub quantized_concats: usize,
    /// DequantizeLinear nodes (of `u8`) now [`DequantizeU8`].
    pub dequantizers: usize,
    /// Add nodes (and the ReLU after them) now [`AddRelu`].
    pub adds: usize,
    /// Inputs of an [`AddRelu`] or a [`QuantizeConcat`] that were a
    /// [`DequantizeU8`], now read as `u8` ([`Operand::U8`]); not nodes, so
    /// not in [`Swapped::total`].
    pub folded_dequantizers: usize,
    /// [`DepthwiseUpsample`] nodes now run inside the [`QuantizeConcat`]
    /// they fed (also counted in `upsamplers`).
    pub folded_upsamplers: usize,
    /// Other flat float Concats now [`FlatConcat`].
    pub concats: usize,
}

impl Swapped {
    /// All replaced nodes.
    pub fn total(&self) -> usize {
        self.int8_convs
            + self.f32_convs
            + self.fused_relus
            + self.quantizers
            + self.upsamplers
            + self.max_pools
            + self.quantized_concats
            + self.dequantizers
            + self.adds
            + self.concats
    }
}

/// Replaces every node of `model` one of our operators supports and returns
/// how many it replaced. Nodes it cannot take (grouped or 3-D convolutions,
/// non-constant weights, symbolic shapes...) stay tract's, with the reason at
/// debug log level. Run it on the typed model before `into_optimized()`.
pub fn use_our_ops(model: &mut TypedModel) -> TractResult<Swapped> {
    let mut swapped = Swapped::default();
    for id in model.eval_order()? {
        let patch = {
            let node = model.node(id);
            let replacement: TractResult<Option<(Box<dyn TypedOp>, &mut usize)>> =
                if let Some(conv) = node.op_as::<Conv>().filter(|c| c.q_params.is_some()) {
                    int8_conv(model, node, conv)
                        .map(|op| op.map(|op| (Box::new(op) as _, &mut swapped.int8_convs)))
                } else if let Some(conv) = node.op_as::<Conv>() {
                    f32_conv(model, node, conv)
                        .map(|op| op.map(|op| (Box::new(op) as _, &mut swapped.f32_convs)))
                } else if let Some(pool) = node.op_as::<MaxPool>() {
                    max_pool(model, node, pool)
                        .map(|op| op.map(|op| (Box::new(op) as _, &mut swapped.max_pools)))
                } else if let Some(deconv) = node.op_as::<Deconv>() {
                    depthwise_upsample(model, node, deconv)
                        .map(|op| op.map(|op| (Box::new(op) as _, &mut swapped.upsamplers)))
                } else if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
                    dequantize_u8(model, node, dq)
                        .map(|op| op.map(|op| (Box::new(op) as _, &mut swapped.dequantizers)))
                } else if let Some(q) = node
                    .op_as::<ElementWiseOp>()
                    .and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>())
                {
                    quantize_u8(model, node, q)
                        .map(|op| op.map(|op| (Box::new(op) as _, &mut swapped.quantizers)))
                } else {
                    Ok(None)
                };
            match replacement {
                Ok(Some((op, count))) => {
                    *count += 1;
                    TypedModelPatch::replace_single_op(model, node, &[node.inputs[0]], op)?
                }
                Ok(None) => continue,
                Err(why) => {
                    log::debug!("{}: stays tract's: {why:#}", node.name);
                    continue;
                }
            }
        };
        patch.apply(model)?;
    }
    // Then F32Conv -> ReLU pairs.
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<F32Conv>() else {
            continue;
        };
        let Some(relu) = only_successor(model, node)?.filter(|n| is_relu(model, n)) else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, node.inputs[0])?;
        let out = patch.wire_node(&node.name, conv.with_relu(), &[input])?;
        patch.shunt_outside(model, relu.id.into(), out[0])?;
        patch.apply(model)?;
        swapped.fused_relus += 1;
    }
    // Then same-shape float Adds, with the ReLU after them.
    for id in model.eval_order()? {
        let node = model.node(id);
        if !is_plain_add(model, node)? {
            continue;
        }
        let relu = only_successor(model, node)?.filter(|n| is_relu(model, n));
        let mut patch = TypedModelPatch::default();
        let taps = [
            patch.tap_model(model, node.inputs[0])?,
            patch.tap_model(model, node.inputs[1])?,
        ];
        let op = AddRelu {
            relu: relu.is_some(),
            operands: [Operand::F32; 2],
            arena: Arena::default(),
        };
        let out = patch.wire_node(&node.name, op, &taps)?;
        let last = relu.unwrap_or(node);
        patch.shunt_outside(model, last.id.into(), out[0])?;
        patch.apply(model)?;
        swapped.adds += 1;
    }
    // Then Concat -> QuantizeU8 pairs (the quantizers are ours by now).
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(q) = node.op_as::<QuantizeU8>() else {
            continue;
        };
        let concat = model.node(node.inputs[0].node);
        let only_consumer = concat.outputs[0].successors.len() == 1
            && !model.output_outlets()?.contains(&concat.id.into());
        let (Some(shape), true) = (flat_float_concat(model, concat)?, only_consumer) else {
            log::debug!("{}: stays a Concat then a QuantizeLinear", concat.name);
            continue;
        };
        let fused = QuantizeConcat {
            quantize: q.clone(),
            operands: concat.inputs.iter().map(|_| Operand::F32).collect(),
            upsamplers: concat.inputs.iter().map(|_| None).collect(),
            shape,
        };
        let mut patch = TypedModelPatch::default();
        let taps = concat
            .inputs
            .iter()
            .map(|&i| patch.tap_model(model, i))
            .collect::<TractResult<TVec<_>>>()?;
        let out = patch.wire_node(format!("{}.quantized", concat.name), fused, &taps)?;
        patch.shunt_outside(model, node.id.into(), out[0])?;
        patch.apply(model)?;
        swapped.quantized_concats += 1;
    }
    // Then the float Concats left.
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(shape) = flat_float_concat(model, node)? else {
            continue;
        };
        let op = FlatConcat {
            shape,
            arena: Arena::default(),
        };
        let inputs = node.inputs.clone();
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
        swapped.concats += 1;
    }
    swapped.folded_dequantizers = fold_dequantizers(model)?;
    swapped.folded_upsamplers = fold_upsamplers(model)?;
    share_one_arena(model);
    Ok(swapped)
}

/// Folds every [`DequantizeU8`] input of an [`AddRelu`] or a
/// [`QuantizeConcat`] into that op ([`Operand::U8`]): it reads the `u8`
/// tensor and dequantizes it on the fly. A DequantizeU8 left without
/// consumers is dropped when the model is optimised. Returns how many
/// inputs were folded.
fn fold_dequantizers(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let mut operands: TVec<Operand> = if let Some(op) = node.op_as::<AddRelu>() {
            op.operands.into_iter().collect()
        } else if let Some(op) = node.op_as::<QuantizeConcat>() {
            op.operands.clone()
        } else {
            continue;
        };
        let mut inputs = node.inputs.clone();
        let mut changed = 0;
        for (input, operand) in inputs.iter_mut().zip(operands.iter_mut()) {
            let producer = model.node(input.node);
            if let (Some(dq), Operand::F32) = (producer.op_as::<DequantizeU8>(), *operand) {
                *operand = Operand::U8 {
                    scale: dq.scale,
                    zero_point: dq.zero_point,
                };
                *input = producer.inputs[0];
                changed += 1;
            }
        }
        if changed == 0 {
            continue;
        }
        let op: Box<dyn TypedOp> = if let Some(op) = node.op_as::<AddRelu>() {
            Box::new(AddRelu {
                operands: [operands[0], operands[1]],
                ..op.clone()
            })
        } else if let Some(op) = node.op_as::<QuantizeConcat>() {
            Box::new(QuantizeConcat {
                operands,
                ..op.clone()
            })
        } else {
            unreachable!("only AddRelu and QuantizeConcat have operands")
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
        folded += changed;
    }
    Ok(folded)
}

/// Folds every [`DepthwiseUpsample`] whose only consumer is a
/// [`QuantizeConcat`] into it: the up-sampler then runs inside, a band of
/// rows at a time, and its `f32` output is never written whole. Returns
/// how many were folded.
fn fold_upsamplers(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(concat) = node.op_as::<QuantizeConcat>() else {
            continue;
        };
        let mut concat = concat.clone();
        let mut inputs = node.inputs.clone();
        let mut changed = 0;
        for (i, input) in inputs.iter_mut().enumerate() {
            let producer = model.node(input.node);
            let Some(up) = producer.op_as::<DepthwiseUpsample>() else {
                continue;
            };
            let only_here = only_successor(model, producer)?.is_some_and(|n| n.id == node.id);
            if !only_here || concat.operands[i] != Operand::F32 || concat.upsamplers[i].is_some() {
                continue;
            }
            concat.upsamplers[i] = Some(up.clone());
            *input = producer.inputs[0];
            changed += 1;
        }
        if changed == 0 {
            continue;
        }
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, concat)?;
        patch.apply(model)?;
        folded += changed;
    }
    Ok(folded)
}

/// Hands every op of ours in `model` the same [`Arena`], so that a tensor
/// one op's output no longer needs serves another op's output.
fn share_one_arena(model: &mut TypedModel) {
    fn set<O: Op>(node: &mut TypedNode, arena: &Arena, field: fn(&mut O) -> &mut Arena) {
        if let Some(op) = node.op_as_mut::<O>() {
            *field(op) = arena.clone();
        }
    }
    let arena = Arena::default();
    for id in 0..model.nodes().len() {
        let node = model.node_mut(id);
        set::<Int8Conv>(node, &arena, |op| &mut op.arena);
        set::<F32Conv>(node, &arena, |op| &mut op.arena);
        set::<MaxPool2d>(node, &arena, |op| &mut op.arena);
        set::<DepthwiseUpsample>(node, &arena, |op| &mut op.arena);
        set::<QuantizeU8>(node, &arena, |op| &mut op.arena);
        set::<QuantizeConcat>(node, &arena, |op| &mut op.quantize.arena);
        set::<DequantizeU8>(node, &arena, |op| &mut op.arena);
        set::<AddRelu>(node, &arena, |op| &mut op.arena);
        set::<FlatConcat>(node, &arena, |op| &mut op.arena);
    }
}

/// The constant behind `outlet`: a Const, or what a chain of nodes computes
/// from constants alone (tract-onnx wires QLinearConv's parameters through
/// Casts and ConvTranspose's kernel through a reshape), folded here.
fn constant(model: &TypedModel, outlet: OutletId) -> TractResult<Arc<Tensor>> {
    if let Some(k) = &model.outlet_fact(outlet)?.konst {
        return Ok(k.clone());
    }
    let node = model.node(outlet.node);
    let inputs = node
        .inputs
        .iter()
        .map(|&i| constant(model, i).map(TValue::from_const))
        .collect::<TractResult<TVec<_>>>()
        .with_context(|| format!("input {} of the operator is not a constant", node.name))?;
    ensure!(
        !inputs.is_empty(),
        "input {} of the operator is not a constant",
        node.name
    );
    let outputs = node
        .op
        .eval_out_of_plan(inputs)?
        .with_context(|| format!("{} cannot be folded", node.name))?;
    Ok(outputs[outlet.slot].clone().into_arc_tensor())
}

/// `n` values from a scalar or an `n`-vector.
fn per_channel<T: Datum + Copy>(t: &Tensor, n: usize, what: &str) -> TractResult<Vec<T>> {
    let t = t.cast_to::<T>()?;
    let v = t.try_as_plain_ram()?.as_slice::<T>()?;
    match v.len() {
        1 => Ok(vec![v[0]; n]),
        len if len == n => Ok(v.to_vec()),
        len => bail!("{what} has {len} values for {n} channels"),
    }
}

fn scalar<T: Datum + Copy>(t: &Tensor, what: &str) -> TractResult<T> {
    let t = t.cast_to::<T>()?;
    let v = t.try_as_plain_ram()?.as_slice::<T>()?;
    ensure!(v.len() == 1, "{what} is not a scalar");
    Ok(v[0])
}

/// The concrete `[1, C, H, W]` input and output shapes of a 2-D NCHW
/// operator with a batch of 1: what all our operators take.
fn nchw_shapes<'a>(
    spec: &PoolSpec,
    input: &'a TypedFact,
    output: &'a TypedFact,
) -> TractResult<(&'a [usize], &'a [usize])> {
    ensure!(
        spec.data_format == DataFormat::NCHW && spec.kernel_shape.len() == 2,
        "only 2-D NCHW"
    );
    let in_shape = input
        .shape
        .as_concrete()
        .context("input shape not concrete")?;
    let out_shape = output
        .shape
        .as_concrete()
        .context("output shape not concrete")?;
    ensure!(
        in_shape.len() == 4 && in_shape[0] == 1,
        "batch of 1 only, input {in_shape:?}"
    );
    Ok((in_shape, out_shape))
}

/// The node `node`'s output goes to alone, when that is not a model output.
fn only_successor<'m>(
    model: &'m TypedModel,
    node: &TypedNode,
) -> TractResult<Option<&'m TypedNode>> {
    let successors = &node.outputs[0].successors;
    if node.outputs.len() != 1
        || successors.len() != 1
        || model.output_outlets()?.contains(&node.id.into())
    {
        return Ok(None);
    }
    Ok(Some(model.node(successors[0].node)))
}

/// Whether `node` adds two `f32` tensors of one concrete shape (no
/// broadcasting).
fn is_plain_add(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(false);
    };
    if bin.0.name() != "Add" || node.inputs.len() != 2 {
        return Ok(false);
    }
    let (a, b) = (
        model.outlet_fact(node.inputs[0])?,
        model.outlet_fact(node.inputs[1])?,
    );
    let float = a.datum_type == f32::datum_type() && b.datum_type == f32::datum_type();
    let concrete = a.shape.as_concrete().is_some() && a.konst.is_none() && b.konst.is_none();
    Ok(float && concrete && a.shape == b.shape)
}

/// The concrete output shape of `node` when it is a Concat of `f32`
/// tensors that is a flat copy (every axis before the concatenation axis
/// has size 1).
fn flat_float_concat(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TVec<usize>>> {
    let Some(op) = node.op_as::<TypedConcat>() else {
        return Ok(None);
    };
    let Some(shape) = model
        .outlet_fact(node.id.into())?
        .shape
        .as_concrete()
        .map(TVec::from)
    else {
        return Ok(None);
    };
    let flat = shape[..op.axis].iter().all(|&d| d == 1);
    let float_inputs = node.inputs.iter().all(|&i| {
        model
            .outlet_fact(i)
            .is_ok_and(|f| f.datum_type == f32::datum_type())
    });
    Ok((flat && float_inputs).then_some(shape))
}

/// A [`DequantizeU8`] for a DequantizeLinear of `u8`.
fn dequantize_u8(
    model: &TypedModel,
    node: &TypedNode,
    dq: &DequantizeLinearF32,
) -> TractResult<Option<DequantizeU8>> {
    let input = model.outlet_fact(node.inputs[0])?;
    ensure!(
        input.datum_type == u8::datum_type(),
        "input is {:?}",
        input.datum_type
    );
    ensure!(input.shape.as_concrete().is_some(), "symbolic shape");
    Ok(Some(DequantizeU8 {
        scale: dq.scale,
        zero_point: dq.zero_point,
        arena: Arena::default(),
    }))
}

/// Whether `node` is a ReLU: tract-onnx writes ONNX Relu as `max(x, 0)` with
/// a constant zero (broadcast from a scalar).
fn is_relu(model: &TypedModel, node: &TypedNode) -> bool {
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return false;
    };
    if bin.0.name() != "Max" || node.inputs.len() != 2 {
        return false;
    }
    let floor_is_zero = model
        .outlet_fact(node.inputs[1])
        .ok()
        .and_then(|f| f.konst.as_ref())
        .is_some_and(|k| scalar::<f32>(k, "ReLU floor").is_ok_and(|v| v == 0.0));
    let x = model.outlet_fact(node.inputs[0]);
    floor_is_zero && x.is_ok_and(|f| f.datum_type == f32::datum_type())
}

/// The geometry of a 2-D NCHW batch-1 dense convolution `node`.
fn conv_geometry(conv: &Conv, input: &TypedFact, output: &TypedFact) -> TractResult<Geometry> {
    ensure!(conv.group == 1, "grouped ({} groups)", conv.group);
    ensure!(
        conv.kernel_fmt == KernelFormat::OIHW,
        "kernel format {:?}",
        conv.kernel_fmt
    );
    let spec = &conv.pool_spec;
    let (in_shape, out_shape) = nchw_shapes(spec, input, output)?;
    let (cin, h, w) = (in_shape[1], in_shape[2], in_shape[3]);
    let cout = out_shape[1];
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let strides = spec.strides();
    let dilations = spec.dilations();
    let padding = match &spec.padding {
        PaddingSpec::Valid => (0, 0, 0, 0),
        PaddingSpec::Explicit(before, after) => (before[0], before[1], after[0], after[1]),
        other => {
            let dims = other.compute(&[h, w], &[kh, kw], &dilations, &strides);
            (
                dims[0].pad_before,
                dims[1].pad_before,
                dims[0].pad_after,
                dims[1].pad_after,
            )
        }
    };
    Ok(Geometry {
        in_channels: cin,
        in_size: (h, w),
        out_channels: cout,
        out_size: (out_shape[2], out_shape[3]),
        kernel: (kh, kw),
        stride: (strides[0], strides[1]),
        dilation: (dilations[0], dilations[1]),
        padding,
    })
}

/// An [`F32Conv`] for the float convolution `node`.
fn f32_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<F32Conv>> {
    let input = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?.clone();
    ensure!(
        input.datum_type == f32::datum_type() && output.datum_type == f32::datum_type(),
        "only f32 ({:?} in, {:?} out)",
        input.datum_type,
        output.datum_type
    );
    ensure!(node.inputs.len() == 3, "{} inputs", node.inputs.len());
    let geometry = conv_geometry(conv, input, &output)?;
    let cout = geometry.out_channels;
    let weights = constant(model, node.inputs[1])?;
    ensure!(
        weights.len() == geometry.k() * cout,
        "weights have {} values",
        weights.len()
    );
    let weights = weights.cast_to::<f32>()?;
    let bias = per_channel::<f32>(&*constant(model, node.inputs[2])?, cout, "bias")?;
    Ok(Some(F32Conv::new(
        geometry,
        weights.try_as_plain_ram()?.as_slice::<f32>()?,
        &bias,
        &node.name,
        output,
    )))
}

/// An [`Int8Conv`] for the quantized convolution `node`.
fn int8_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Int8Conv>> {
    let input = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?.clone();
    ensure!(
        input.datum_type.unquantized() == u8::datum_type()
            && output.datum_type.unquantized() == u8::datum_type(),
        "only u8 activations ({:?} in, {:?} out)",
        input.datum_type,
        output.datum_type
    );
    ensure!(node.inputs.len() == 9, "{} inputs", node.inputs.len());
    let geometry = conv_geometry(conv, input, &output)?;
    let cout = geometry.out_channels;
    let weights = constant(model, node.inputs[1])?;
    ensure!(
        weights.datum_type().unquantized() == i8::datum_type(),
        "weights are {:?}",
        weights.datum_type()
    );
    ensure!(
        weights.len() == geometry.k() * cout,
        "weights have {} values",
        weights.len()
    );
    let weights = weights.cast_to::<i8>()?;
    let bias = per_channel::<i32>(&*constant(model, node.inputs[2])?, cout, "bias")?;
    let x_zero_point = scalar::<i32>(&*constant(model, node.inputs[3])?, "input zero point")?;
    let x_scale = scalar::<f32>(&*constant(model, node.inputs[4])?, "input scale")?;
    let w_zero_point = per_channel::<i32>(
        &*constant(model, node.inputs[5])?,
        cout,
        "weight zero point",
    )?;
    let w_scale = per_channel::<f32>(&*constant(model, node.inputs[6])?, cout, "weight scale")?;
    let y_zero_point = scalar::<i32>(&*constant(model, node.inputs[7])?, "output zero point")?;
    let y_scale = scalar::<f32>(&*constant(model, node.inputs[8])?, "output scale")?;
    let spec = QuantizedConv {
        geometry,
        weights: weights.try_as_plain_ram()?.as_slice::<i8>()?,
        w_zero_point: &w_zero_point,
        w_scale: &w_scale,
        bias: &bias,
        x: (x_zero_point, x_scale),
        y: (y_zero_point, y_scale),
    };
    Ok(Some(Int8Conv::new(&spec, &node.name, output)))
}

/// A [`QuantizeU8`] for a QuantizeLinear to `u8` over `f32`.
fn quantize_u8(
    model: &TypedModel,
    node: &TypedNode,
    q: &QuantizeLinearU8,
) -> TractResult<Option<QuantizeU8>> {
    let input = model.outlet_fact(node.inputs[0])?;
    ensure!(
        input.datum_type == f32::datum_type(),
        "input is {:?}",
        input.datum_type
    );
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    Ok(Some(QuantizeU8 {
        inverse_scale: q.scale,
        zero_point: q.zero_point,
        output_type: output.datum_type,
        arena: Arena::default(),
    }))
}

/// A [`MaxPool2d`] for a 2-D max pool over `f32` or `u8` without index
/// output or dilation.
fn max_pool(
    model: &TypedModel,
    node: &TypedNode,
    pool: &MaxPool,
) -> TractResult<Option<MaxPool2d>> {
    ensure!(pool.with_index_outputs.is_none(), "index output");
    let spec = &pool.pool_spec;
    let input = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let datum_type = input.datum_type;
    ensure!(
        datum_type == f32::datum_type() || datum_type.unquantized() == u8::datum_type(),
        "input is {datum_type:?}"
    );
    let (in_shape, out_shape) = nchw_shapes(spec, input, output)?;
    ensure!(spec.dilations().iter().all(|&d| d == 1), "dilated");
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let strides = spec.strides();
    let pad = match &spec.padding {
        PaddingSpec::Valid => (0, 0),
        PaddingSpec::Explicit(before, _) => (before[0], before[1]),
        other => {
            let dims = other.compute(&in_shape[2..], &[kh, kw], &[1, 1], &strides);
            (dims[0].pad_before, dims[1].pad_before)
        }
    };
    ensure!(
        pad.0 < kh && pad.1 < kw,
        "padding {pad:?} as wide as the window"
    );
    Ok(Some(MaxPool2d {
        channels: in_shape[1],
        in_size: (in_shape[2], in_shape[3]),
        out_size: (out_shape[2], out_shape[3]),
        kernel: (kh, kw),
        stride: (strides[0], strides[1]),
        pad,
        datum_type: if datum_type == f32::datum_type() {
            datum_type
        } else {
            u8::datum_type()
        },
        replaces: node.name.clone(),
        arena: Arena::default(),
    }))
}

/// A [`DepthwiseUpsample`] for a depthwise 2-D ConvTranspose over `f32`.
fn depthwise_upsample(
    model: &TypedModel,
    node: &TypedNode,
    deconv: &Deconv,
) -> TractResult<Option<DepthwiseUpsample>> {
    let spec = &deconv.pool_spec;
    let input = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    ensure!(
        input.datum_type == f32::datum_type(),
        "input is {:?}",
        input.datum_type
    );
    let (in_shape, out_shape) = nchw_shapes(spec, input, output)?;
    let channels = in_shape[1];
    ensure!(
        deconv.group == channels && out_shape[1] == channels,
        "not depthwise ({} groups, {} -> {} channels)",
        deconv.group,
        channels,
        out_shape[1]
    );
    ensure!(spec.dilations().iter().all(|&d| d == 1), "dilated");
    let pad = match &spec.padding {
        PaddingSpec::Valid => (0, 0),
        PaddingSpec::Explicit(before, _) => (before[0], before[1]),
        other => bail!("padding {other:?}"),
    };
    ensure!(node.inputs.len() == 3, "{} inputs", node.inputs.len());
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let weights = constant(model, node.inputs[1])?;
    ensure!(
        weights.len() == channels * kh * kw,
        "weights have {} values",
        weights.len()
    );
    let weights = weights
        .cast_to::<f32>()?
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .to_vec();
    let bias = per_channel::<f32>(&*constant(model, node.inputs[2])?, channels, "bias")?;
    let strides = spec.strides();
    Ok(Some(DepthwiseUpsample::new(
        channels,
        (in_shape[2], in_shape[3]),
        (out_shape[2], out_shape[3]),
        (kh, kw),
        (strides[0], strides[1]),
        pad,
        weights,
        bias,
        &node.name,
    )))
}
