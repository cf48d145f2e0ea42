//! The default CPU backend on tract: pure Rust, SIMD kernels on x86_64 and
//! aarch64, no system libraries, so the same binary runs on a laptop and a Pi.
//!
//! The plan is optimised once at construction; each run reuses the same state
//! and input tensor. Threads come from a private rayon pool scoped to this
//! backend (no process-wide executor), so two models in one process can run
//! with different thread counts; its workers are bound to cores when they
//! fill the CPUs ([`Pinning`]).
//!
//! When the network ends in our up-sampler (DLA's final x4 ConvTranspose),
//! the plan stops at its input and a [`LabelsHead`] runs it: [`Backend::run`]
//! computes the whole logits from there, [`Backend::run_labels`] goes
//! straight to labels a band of rows at a time (`segment`, `stream`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{SimplePlan, SimpleState};

use super::labels_head::LabelsHead;
use super::workers::{self, Pinning};
use super::{describe_pinning, Backend, Logits};
use crate::error::{Error, Result};
use crate::model::Model;

/// Runs a [`Model`] with tract on the CPU.
pub struct TractBackend {
    state: TypedSimpleState,
    executor: Executor,
    /// The CPU each worker of `executor` is bound to (empty: free).
    pinned: Vec<usize>,
    input: Arc<Tensor>,
    /// What the plan computed last: the logits, or with a `head` its input.
    output: Arc<Tensor>,
    /// The shape the plan's output must have.
    plan_output_shape: [usize; 4],
    /// The logits' shape, `[1, classes, height, width]`.
    output_shape: [usize; 4],
    /// An empty tensor `output` points at while a run computes the next
    /// one, so the previous one goes back to the model's arena for it.
    placeholder: Arc<Tensor>,
    /// The network's final up-sampler, run outside the plan so that
    /// [`Backend::run_labels`] can go from its input straight to labels.
    head: Option<LabelsHead>,
    /// The logits [`Backend::run`] computes through the `head` (empty until
    /// the first such run: labels-only frames never need them).
    logits: Vec<f32>,
}

fn fail(reason: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "tract",
        reason: reason.to_string(),
    }
}

impl TractBackend {
    /// Optimises `model` for this CPU and prepares a plan using `threads`
    /// threads, bound to cores when they fill the CPUs ([`Pinning::Auto`]).
    pub fn new(model: &Model, threads: usize) -> Result<TractBackend> {
        TractBackend::with_pinning(model, threads, Pinning::Auto)
    }

    /// [`TractBackend::new`] with the workers bound to cores as `pinning` says.
    pub fn with_pinning(model: &Model, threads: usize, pinning: Pinning) -> Result<TractBackend> {
        if !crate::ops::enabled() {
            warn_if_slow_int8(model);
        }
        let mut typed = model.graph().clone().into_typed().map_err(|e| {
            fail(format!(
                "{}: cannot analyse the graph: {e:#}",
                model.path().display()
            ))
        })?;
        if crate::ops::enabled() {
            let swapped = crate::ops::use_our_ops(&mut typed).map_err(|e| {
                fail(format!(
                    "{}: cannot prepare our operators: {e:#}",
                    model.path().display()
                ))
            })?;
            log::debug!("our operators in place of tract's (DLA_OPS=tract: none): {swapped:?}");
        }
        let mut optimized = typed.into_optimized().map_err(|e| {
            fail(format!(
                "{}: cannot optimise the graph: {e:#}",
                model.path().display()
            ))
        })?;
        let head = split_head(&mut optimized)?;
        let plan =
            SimplePlan::new(optimized).map_err(|e| fail(format!("cannot build a plan: {e:#}")))?;
        let state =
            SimpleState::new(&plan).map_err(|e| fail(format!("cannot create a state: {e:#}")))?;
        let (h, w) = model.input_size();
        let input = Arc::new(Tensor::zero::<f32>(&[1, 3, h as usize, w as usize]).map_err(fail)?);
        let shape = model.output_shape();
        let plan_output_shape = head.as_ref().map_or(shape, LabelsHead::input_shape);
        let output = Arc::new(Tensor::zero::<f32>(&plan_output_shape).map_err(fail)?);
        let (executor, pinned) = if threads > 1 {
            workers::pool(threads, pinning)
                .map_err(|e| fail(format!("cannot start {threads} inference threads: {e}")))?
        } else {
            (Executor::SingleThread, Vec::new())
        };
        log::debug!(
            "tract backend ready: {} threads{}, output {:?}",
            threads.max(1),
            describe_pinning(&pinned),
            shape
        );
        Ok(TractBackend {
            state,
            executor,
            pinned,
            input,
            output,
            plan_output_shape,
            output_shape: shape,
            placeholder: Arc::new(Tensor::zero::<f32>(&[0]).map_err(fail)?),
            head,
            logits: Vec::new(),
        })
    }
}

/// Takes the network's last node out of the plan when it is our
/// up-sampler with one `f32` input (DLA's final x4 `ConvTranspose`): the
/// plan then ends at that node's input and a [`LabelsHead`] runs the rest.
fn split_head(model: &mut TypedModel) -> Result<Option<LabelsHead>> {
    let [output] = model.output_outlets().map_err(fail)? else {
        return Ok(None);
    };
    let node = model.node(output.node);
    let Some(up) = node.op_as::<crate::ops::DepthwiseUpsample>() else {
        return Ok(None);
    };
    let [input] = node.inputs[..] else {
        return Ok(None);
    };
    let head = LabelsHead::new(up.clone(), &node.name);
    let fact = model.outlet_fact(input).map_err(fail)?;
    let shape = fact.shape.as_concrete().map(|s| s.to_vec());
    if fact.datum_type != f32::datum_type() || shape != Some(head.input_shape().to_vec()) {
        return Ok(None);
    }
    model.select_output_outlets(&[input]).map_err(fail)?;
    log::debug!(
        "the final up-sampler {} runs as the labels head",
        head.name()
    );
    Ok(Some(head))
}

/// Runs `f` with `executor` as our operators' pool, on one of its workers:
/// their parallel loops then queue jobs on that worker's own deque. Started
/// from outside the pool, each loop would go through rayon's global
/// injector, which allocates a block every 63 jobs. The other workers spin
/// meanwhile rather than sleep between the loops
/// ([`crate::ops::with_workers_awake`]).
fn in_pool<R: Send>(executor: &Executor, f: impl FnOnce() -> R + Send) -> R {
    let run = || multithread_tract_scope(executor.clone(), f);
    match executor {
        Executor::MultiThread(pool) => {
            let threads = pool.current_num_threads();
            pool.install(|| crate::ops::with_workers_awake(threads, run))
        }
        _ => run(),
    }
}

/// Stock tract 0.23's only int8 matmul kernel for x86_64 CPUs without
/// AVX-512 VNNI (`avx2_mmm_i32_8x8`) ran DLA-tiny's int8 convolutions about
/// 50x slower than its fp32 kernel on an AVX2 EPYC (docs/PERFORMANCE.md).
/// Our own operators (crate::ops) replace it by default; with `DLA_OPS=tract`
/// tell the user rather than let them wonder.
fn warn_if_slow_int8(model: &Model) {
    let ops = &model.summary().op_histogram;
    let int8 = [
        "QLinearConv",
        "ConvInteger",
        "MatMulInteger",
        "QLinearMatMul",
    ]
    .iter()
    .any(|op| ops.contains_key(*op));
    if int8 && slow_int8_cpu() {
        log::warn!(
            "{}: int8 convolutions run on tract's generic x86 int8 kernel on this CPU (no \
             AVX-512 VNNI), which is much slower than fp32; use the fp32 model here",
            model.path().display()
        );
    }
}

#[cfg(target_arch = "x86_64")]
fn slow_int8_cpu() -> bool {
    !std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn slow_int8_cpu() -> bool {
    false
}

/// Time spent in one node of the optimised plan during a profiled run.
#[derive(Debug, Clone)]
pub struct NodeTiming {
    /// Node name in the optimised plan (ONNX names, with tract's suffixes).
    pub name: String,
    /// The operator tract runs there after optimisation.
    pub op: String,
    /// tract's own description of the node (kernel choice, shapes).
    pub info: Vec<String>,
    /// Wall time of the node.
    pub time: Duration,
}

/// The micro-kernel one of our convolutions runs on (chosen at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvKernel {
    /// Node name in the optimised plan.
    pub node: String,
    /// Window, stride, channels, output size, MMAC.
    pub shape: String,
    /// The kernel's name, e.g. `neon dotprod s8 (sdot) 4x16`.
    pub kernel: &'static str,
    /// An int8 convolution whose kernel reads an image of quad words in
    /// place (channel or column quads) instead of gathering a panel per 16
    /// pixels.
    pub reads_in_place: bool,
}

impl TractBackend {
    /// Which kernel each of our convolutions in the plan runs on, in plan
    /// order; empty with `DLA_OPS=tract` (tract picks its own per node).
    pub fn conv_kernels(&self) -> Vec<ConvKernel> {
        use crate::ops::{F32Conv, Int8Conv};
        self.state
            .plan()
            .model()
            .nodes()
            .iter()
            .filter_map(|node| {
                let (shape, kernel, reads_in_place) = if let Some(conv) = node.op_as::<Int8Conv>() {
                    let kernel = conv.kernel().name();
                    (conv.geometry.describe(), kernel, conv.reads_in_place())
                } else {
                    let conv = node.op_as::<F32Conv>()?;
                    (conv.geometry.describe(), conv.kernel().name(), false)
                };
                Some(ConvKernel {
                    node: node.name.clone(),
                    shape,
                    kernel,
                    reads_in_place,
                })
            })
            .collect()
    }

    /// The arena our operators' outputs come from (the first op's; they all
    /// share one), or `None` with `DLA_OPS=tract`.
    pub fn arena(&self) -> Option<crate::ops::Arena> {
        use crate::ops::{F32Conv, Int8Conv};
        self.state.plan().model().nodes().iter().find_map(|node| {
            node.op_as::<Int8Conv>()
                .map(|op| op.arena.clone())
                .or_else(|| node.op_as::<F32Conv>().map(|op| op.arena.clone()))
        })
    }

    /// Runs the network once on the current input and times every node of
    /// the optimised plan: where the time goes, for the speed work. Slower
    /// than [`Backend::run`] (one clock read per node) and leaves the logits
    /// of that run in place.
    pub fn profile(&mut self) -> Result<Vec<NodeTiming>> {
        let input = TValue::from_const(self.input.clone());
        let state = &mut self.state;
        let mut timings = Vec::new();
        // On a pool worker, as `run` does: from outside the pool every
        // parallel loop would be a cross-thread handoff, and small nodes
        // would look slower on 2 threads than on 1.
        let outputs = in_pool(&self.executor, || {
            state.run_plan_with_eval(tvec![input], |ctx, op_state, node, inputs| {
                let start = Instant::now();
                let result = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                timings.push(NodeTiming {
                    name: node.name.clone(),
                    op: node.op().name().to_string(),
                    info: node.op().info().unwrap_or_default(),
                    time: start.elapsed(),
                });
                result
            })
        })
        .map_err(|e| fail(format!("profiled inference failed: {e:#}")))?;
        if let (Some(head), Some(features)) = (&self.head, outputs.into_iter().next()) {
            let (name, info) = (head.name().to_string(), head.info());
            self.output = features.into_arc_tensor();
            let start = Instant::now();
            self.head_logits();
            timings.push(NodeTiming {
                name,
                op: "DepthwiseUpsample".to_string(),
                info,
                time: start.elapsed(),
            });
        }
        Ok(timings)
    }
}

impl TractBackend {
    /// Runs the plan on the current input into `output`.
    fn run_plan(&mut self) -> Result<()> {
        // Let go of the last result: the arena of our operators then writes
        // this frame's into it instead of keeping a second copy.
        self.output = self.placeholder.clone();
        let input = TValue::from_const(self.input.clone());
        let state = &mut self.state;
        let outputs = in_pool(&self.executor, || state.run(tvec![input]));
        let mut outputs = outputs.map_err(|e| fail(format!("inference failed: {e:#}")))?;
        let out = outputs.remove(0).into_arc_tensor();
        let contiguous = out
            .to_plain_array_view::<f32>()
            .ok()
            .is_some_and(|v| v.to_slice().is_some());
        if !contiguous || out.shape() != self.plan_output_shape {
            return Err(fail(format!(
                "output is {:?} {:?}; expected f32 {:?}",
                out.datum_type(),
                out.shape(),
                self.plan_output_shape
            )));
        }
        self.output = out;
        Ok(())
    }

    /// With a head, the whole logits from the plan's last output.
    fn head_logits(&mut self) {
        if let Some(head) = &self.head {
            self.logits.resize(self.output_shape.iter().product(), 0.0);
            let (features, logits) = (Self::plan_output(&self.output), &mut self.logits);
            in_pool(&self.executor, || head.logits(features, logits));
        }
    }

    /// The plan's last output as a slice (contiguous `f32`, checked).
    fn plan_output(output: &Tensor) -> &[f32] {
        output
            .to_plain_array_view::<f32>()
            .ok()
            .and_then(|view| view.to_slice())
            .expect("output checked to be a contiguous f32 tensor after each run")
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn conv_kernels(&self) -> Vec<ConvKernel> {
        TractBackend::conv_kernels(self)
    }

    fn pinned_cpus(&self) -> &[usize] {
        &self.pinned
    }

    fn input_mut(&mut self) -> &mut [f32] {
        // The plan drops its reference to the input when a run ends, so this
        // does not copy in steady state.
        Arc::make_mut(&mut self.input)
            .to_plain_array_view_mut::<f32>()
            .ok()
            .and_then(|view| view.into_slice())
            .expect("input tensor is a contiguous f32 tensor by construction")
    }

    fn run(&mut self) -> Result<()> {
        let result = self.run_plan();
        if result.is_err() {
            // Logits stay readable (zeros) after a failed run.
            self.output = Arc::new(Tensor::zero::<f32>(&self.plan_output_shape).map_err(fail)?);
        }
        self.head_logits();
        result
    }

    fn logits(&self) -> Logits<'_> {
        let [_, classes, height, width] = self.output_shape;
        let data = match self.head {
            Some(_) => &self.logits,
            None => Self::plan_output(&self.output),
        };
        Logits {
            data,
            classes,
            height,
            width,
        }
    }

    /// With a [`LabelsHead`]: the plan, then the final up-sampler a band of
    /// rows at a time into the argmax (and the resize), never the whole
    /// logits.
    fn run_labels(&mut self, labels: &mut [u8], size: (usize, usize)) -> Result<bool> {
        if self.head.is_none() {
            return Ok(false);
        }
        if labels.len() != size.0 * size.1 {
            return Err(fail(format!(
                "{} labels for a {}x{} map",
                labels.len(),
                size.0,
                size.1
            )));
        }
        self.run_plan()?;
        let features = Self::plan_output(&self.output);
        let head = self.head.as_mut().expect("checked above");
        in_pool(&self.executor, || head.labels(features, labels, size));
        Ok(true)
    }

    fn labels_exact(&self) -> bool {
        self.head.is_some()
    }
}
